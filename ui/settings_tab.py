"""The Settings tab: folders, the Hugging Face token (only ever shown as set / not set), and the
system check from core.doctor when that module is installed."""
from __future__ import annotations

import importlib
import importlib.util
import platform
import sys

import gradio as gr

from .context import AppContext
from .run_view import esc, notice_html


def _has_doctor() -> bool:
    try:
        return importlib.util.find_spec("core.doctor") is not None
    except (ImportError, ValueError):
        return False


def token_line(state: str) -> str:
    return f"Hugging Face token: **{state}**"


def build(ctx: AppContext) -> None:
    s = ctx.settings
    gr.Markdown("### Folders")
    models = gr.Textbox(s.models_dir, label="Models folder", elem_id="set-models",
                        info="Base models (.safetensors checkpoints, diffusers folders) here are offered in the "
                             "Training tab's Base model list.")
    more = gr.Textbox(s.model_folders, label="More model folders (one per line)", lines=2, elem_id="set-more-models",
                      info="Models folders you already have: a ComfyUI models folder, an AUTOMATIC1111 / Forge "
                           "models folder. Files are recognised by content (checkpoints, transformers, text encoders, "
                           "VAEs); nothing is copied or moved.")
    with gr.Row():
        find_btn = gr.Button("Look for ComfyUI / A1111 / Forge folders", size="sm", elem_id="find-model-folders")
    found_md = gr.Markdown("", elem_id="found-model-folders")
    loras = gr.Textbox(s.loras_dir, label="LoRA folder", elem_id="set-loras",
                       info="Where finished LoRAs are looked for when generating images.")
    outputs = gr.Textbox(s.outputs_dir, label="Outputs folder", elem_id="set-outputs",
                         info="Default output folder of new trainings (LoRA files and run folders); the run history "
                              "lists the runs in it.")
    datasets = gr.Textbox(s.datasets_dir, label="Datasets folder", elem_id="set-datasets",
                          info="Where the Dataset tab keeps uploaded pictures and makes training folders.")
    gr.Markdown("### Hugging Face token")
    gr.Markdown("Needed only for gated models on the Hugging Face hub. It is stored in settings.json, readable only "
                "by your user, passed to the trainer, and never shown here again.", elem_classes=["lw-small"])
    token_md = gr.Markdown(token_line(s.token_state), elem_id="token-state")
    token = gr.Textbox("", type="password", label="New token", placeholder="hf_...  (leave empty to keep the current one)",
                       elem_id="set-token")
    with gr.Row():
        save_btn = gr.Button("Save settings", variant="primary", elem_id="save-settings")
        clear_btn = gr.Button("Remove the token", elem_id="clear-token")
    msg = gr.HTML("")

    def on_find(current: str):
        from core.models.library import usual_folders

        have = [line.strip() for line in current.splitlines() if line.strip()]
        new = [f for f in usual_folders() if f not in have and f != s.models_dir]
        if not new:
            return gr.skip(), "No ComfyUI, AUTOMATIC1111 or Forge models folder was found at the usual places."
        return "\n".join(have + new), (f"Added {len(new)} folder(s) found at the usual places; press **Save "
                                         "settings** to keep them.")

    find_btn.click(on_find, more, [more, found_md])

    def on_save(m: str, mm: str, l: str, o: str, d: str, t: str):
        s.models_dir, s.loras_dir, s.outputs_dir, s.datasets_dir = m.strip(), l.strip(), o.strip(), d.strip()
        s.model_folders = "\n".join(line.strip() for line in mm.splitlines() if line.strip())
        if t and t.strip():
            s.hf_token = t.strip()
        try:
            s.save()
        except OSError as e:
            return gr.skip(), "", notice_html(f"Cannot write {s.path}: {e}", "err")
        ctx.allow(s.outputs_dir)
        ctx.allow(s.loras_dir)
        from pathlib import Path

        gone = [f for f in s.model_dirs() if not Path(f).expanduser().is_dir()]
        note = (f" Not found now (an unplugged drive or a moved folder? skipped until it is back): "
                f"{', '.join(gone)}." if gone else "")
        return token_line(s.token_state), "", notice_html(f"Saved to {s.path}.{note}", "warn" if gone else "note")

    def on_clear():
        s.hf_token = ""
        try:
            s.save()
        except OSError as e:
            return gr.skip(), notice_html(f"Cannot write {s.path}: {e}", "err")
        return token_line(s.token_state), notice_html("The token was removed.")

    save_btn.click(on_save, [models, more, loras, outputs, datasets, token], [token_md, token, msg])
    clear_btn.click(on_clear, None, [token_md, msg])

    gr.Markdown("### System")
    gr.Markdown(f"Python {esc(platform.python_version())} · Gradio {esc(gr.__version__)} · {esc(sys.executable)}",
                elem_classes=["lw-small"])
    if _has_doctor():
        doctor_btn = gr.Button("Run the system check", elem_id="doctor-btn")
        report = gr.Textbox(label="System check", lines=16, max_lines=40, interactive=False, visible=False,
                            buttons=["copy"], elem_id="doctor-report")

        def on_doctor():
            doctor = importlib.import_module("core.doctor")
            try:
                text = doctor.doctor_report_text()
            except Exception as e:  # the check itself must never take the GUI down
                text = f"The system check failed: {type(e).__name__}: {e}"
            return gr.update(value=text, visible=True)

        doctor_btn.click(on_doctor, None, [report])
