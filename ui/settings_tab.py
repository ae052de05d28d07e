"""The Settings tab: folders, the Hugging Face token (only ever shown as set / not set), and the
system check from core.doctor when that module is installed.

What the buttons do is in ui.settings_actions (plain functions); this module lays out the controls and wires them.
"""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from . import settings_actions as act
from .context import AppContext
from .settings import Settings
from .settings_actions import token_line


# ---------------------------------------------------------------------------- layout
def _folders_and_token(s: Settings) -> SimpleNamespace:
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
    return SimpleNamespace(models=models, more=more, find_btn=find_btn, found_md=found_md, loras=loras,
                           outputs=outputs, datasets=datasets, token_md=token_md, token=token, save_btn=save_btn,
                           clear_btn=clear_btn, msg=msg)


def _system() -> None:
    gr.Markdown("### System")
    gr.Markdown(act.system_line(gr.__version__), elem_classes=["lw-small"])
    if not act.has_doctor():
        return
    doctor_btn = gr.Button("Run the system check", elem_id="doctor-btn")
    report = gr.Textbox(label="System check", lines=16, max_lines=40, interactive=False, visible=False,
                        buttons=["copy"], elem_id="doctor-report")
    doctor_btn.click(lambda: gr.update(value=act.doctor_text(), visible=True), None, [report])


def build(ctx: AppContext) -> None:
    f = _folders_and_token(ctx.settings)
    _wire(ctx, f)
    _system()


# ---------------------------------------------------------------------------- wiring (thin adapters)
def _wire(ctx: AppContext, f: SimpleNamespace) -> None:
    s = ctx.settings

    def on_find(current: str):
        text, message = act.find_model_folders(current, s.models_dir)
        return gr.skip() if text is None else text, message

    def on_save(models: str, more: str, loras: str, outputs: str, datasets: str, token: str):
        res = act.save_settings(s, models, more, loras, outputs, datasets, token)
        if not res.ok:
            return gr.skip(), "", res.message
        ctx.allow(s.outputs_dir)
        ctx.allow(s.loras_dir)
        return res.token_line, "", res.message

    def on_clear():
        line, message = act.clear_token(s)
        return gr.skip() if line is None else line, message

    f.find_btn.click(on_find, f.more, [f.more, f.found_md])
    f.save_btn.click(on_save, [f.models, f.more, f.loras, f.outputs, f.datasets, f.token], [f.token_md, f.token, f.msg])
    f.clear_btn.click(on_clear, None, [f.token_md, f.msg])
