"""The Tools tab: inspect a LoRA, check it against a base model, merge, resize, extract, convert.

Each section calls core.lora.tools (the same code as `python -m core lora ...`); nothing here touches weights.
LoRAs are written into the LoRA folder (Settings), merged checkpoints into the models folder; an existing file is
never replaced unless "Overwrite" is ticked.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from .generate_choices import lora_choices, model_choices, model_label
from .tools_view import (check_html, error_html, error_of, inspect_html, output_path, raw_metadata, stem,
                         summary_html)

MERGE_SLOTS = 4
PRECISIONS = [("Default (the input's; fp16 for checkpoints)", ""), ("fp16", "fp16"), ("bf16", "bf16"), ("float32", "float")]
DYNAMIC = [("None (fixed rank)", ""), ("sv_ratio", "sv_ratio"), ("sv_fro", "sv_fro"), ("sv_cumulative", "sv_cumulative")]
NO_BASE = "(none: merge into a new LoRA)"
INTRO = ("Look inside LoRA files and work on them: **Inspect** what a file holds, **Check** that it fits a base "
         "model, **Merge** LoRAs (into one LoRA, or into a checkpoint), **Resize** to a lower rank, **Extract** a LoRA "
         "from a fine-tuned model, **Convert** between the kohya and diffusers key forms. New LoRAs are written to "
         "the LoRA folder, checkpoints to the models folder; existing files are only replaced with *Overwrite*.")


def core_progress(progress: gr.Progress):
    return lambda done, total, text: progress((done, max(total, 1)), desc=text)


def build(ctx: Any) -> None:
    settings = ctx.settings

    def lora_folder() -> str:
        return settings.loras_dir or settings.outputs_dir

    def loras() -> list[tuple[str, str]]:
        return lora_choices(settings, ctx, None)[0]

    def models() -> list[tuple[str, str]]:
        return [(model_label(m), m) for m in model_choices(settings.models_dir)]

    lora_pickers: list[gr.Dropdown] = []
    model_pickers: list[gr.Dropdown] = []

    def lora_dd(label: str, elem_id: str, **kw) -> gr.Dropdown:
        dd = gr.Dropdown(choices=[], value=None, allow_custom_value=True, label=label, elem_id=elem_id, **kw)
        lora_pickers.append(dd)
        return dd

    def model_dd(label: str, elem_id: str, first: tuple[str, str] | None = None, **kw) -> gr.Dropdown:
        dd = gr.Dropdown(choices=[first] if first else [], value=first[1] if first else None,
                         allow_custom_value=True, label=label, elem_id=elem_id, **kw)
        model_pickers.append((dd, first))
        return dd

    def out_row(elem: str, placeholder: str, precision_default: str = ""):
        with gr.Row(equal_height=True):
            name = gr.Textbox(label="Output name", placeholder=placeholder, elem_id=f"{elem}-out", scale=4,
                              info="A file name (.safetensors is added) or a full path. Empty: a name made from the input's.")
            prec = gr.Dropdown(choices=PRECISIONS, value=precision_default, label="Save precision", scale=2,
                               elem_id=f"{elem}-precision")
            over = gr.Checkbox(False, label="Overwrite", elem_id=f"{elem}-overwrite", scale=1,
                               info="Replace a file of that name")
        return name, prec, over

    gr.Markdown(INTRO, elem_classes=["lw-small"])
    refresh_btn = gr.Button("Refresh file lists", size="sm", scale=0, min_width=180, elem_id="tools-refresh")
    with gr.Tabs():
        # ------------------------------------------------------------------ Inspect
        with gr.Tab("Inspect", id="tools-inspect-tab"):
            with gr.Row(equal_height=True):
                ins_dd = lora_dd("LoRA", "tools-inspect-lora", scale=5,
                                 info="LoRA files in your LoRA and output folders, newest first.")
                ins_path = gr.Textbox(label="Or any file", placeholder="/path/to/some_lora.safetensors", scale=4,
                                      elem_id="tools-inspect-path", info="A path here wins over the list.")
                ins_btn = gr.Button("Inspect", variant="primary", scale=1, min_width=120, elem_id="tools-inspect-run")
            ins_head = gr.HTML("", elem_id="tools-inspect-status")
            with gr.Row(equal_height=False):
                ins_left = gr.HTML("", elem_id="tools-inspect-summary")
                ins_right = gr.HTML("", elem_id="tools-inspect-parts")
            with gr.Accordion("Raw metadata (JSON)", open=False, elem_id="tools-inspect-raw"):
                ins_raw = gr.JSON(value={}, elem_id="tools-inspect-json")
        # ------------------------------------------------------------------ Check
        with gr.Tab("Check", id="tools-check-tab"):
            gr.Markdown("Does the LoRA fit this base model? Compares the families, then matches every module of the "
                        "LoRA to a layer of the model (name and shape).", elem_classes=["lw-small"])
            with gr.Row(equal_height=True):
                chk_lora = lora_dd("LoRA", "tools-check-lora", scale=4)
                chk_model = model_dd("Base model", "tools-check-model", scale=4,
                                     info="Models in your models folder, or a path.")
                chk_btn = gr.Button("Check", variant="primary", scale=1, min_width=120, elem_id="tools-check-run")
            chk_cfg = gr.Textbox(label="Configs folder (optional)", elem_id="tools-check-config",
                                 info="Only for a single-file checkpoint of a non-standard layout: a diffusers folder "
                                      "whose configs describe it.")
            chk_out = gr.HTML("", elem_id="tools-check-result")
        # ------------------------------------------------------------------ Merge
        with gr.Tab("Merge", id="tools-merge-tab"):
            gr.Markdown("Add LoRAs together, each at its strength (negative subtracts; 0 or an empty row is left "
                        "out). Without a base model the result is one LoRA (exact with rank 0: the ranks are stacked); "
                        "with one, a single-file checkpoint with the LoRAs baked in.", elem_classes=["lw-small"])
            mg_dds, mg_strengths = [], []
            with gr.Group():
                for i in range(MERGE_SLOTS):
                    with gr.Row(equal_height=True):
                        mg_dds.append(lora_dd(f"LoRA {i + 1}", f"tools-merge-lora-{i + 1}", scale=5))
                        mg_strengths.append(gr.Slider(-2.0, 2.0, value=1.0, step=0.05, label="Strength", scale=2,
                                                      elem_id=f"tools-merge-strength-{i + 1}"))
            with gr.Row(equal_height=True):
                mg_base = model_dd("Merge into a checkpoint (optional)", "tools-merge-base", (NO_BASE, ""), scale=4,
                                   info="A base model: the output is then a checkpoint in the models folder.")
                mg_rank = gr.Number(0, precision=0, minimum=0, label="Rank (LoRA output)", scale=2,
                                    elem_id="tools-merge-rank", info="0 = exact (ranks stacked); N = SVD to rank N")
            mg_name, mg_prec, mg_over = out_row("tools-merge", "e.g. my_style_mix")
            mg_btn = gr.Button("Merge", variant="primary", elem_id="tools-merge-run")
            mg_out = gr.HTML("", elem_id="tools-merge-result")
        # ------------------------------------------------------------------ Resize
        with gr.Tab("Resize", id="tools-resize-tab"):
            gr.Markdown("Lower a LoRA's rank (exact SVD of each module), keeping its strength. A smaller file, "
                        "usually with little visible change; the summary says how much of each module is kept.",
                        elem_classes=["lw-small"])
            with gr.Row(equal_height=True):
                rs_lora = lora_dd("LoRA", "tools-resize-lora", scale=5)
                rs_rank = gr.Number(8, precision=0, minimum=0, label="Rank", scale=1, elem_id="tools-resize-rank",
                                    info="With a dynamic method: the largest (0 = no cap)")
                rs_dyn = gr.Dropdown(choices=DYNAMIC, value="", label="Dynamic rank", scale=2,
                                     elem_id="tools-resize-dynamic",
                                     info="Choose each module's rank from its singular values")
                rs_param = gr.Number(0.9, label="Dynamic parameter", scale=1, elem_id="tools-resize-param",
                                     info="sv_ratio: X >= 1; sv_fro / sv_cumulative: 0-1")
            rs_name, rs_prec, rs_over = out_row("tools-resize", "e.g. my_style_r8")
            rs_btn = gr.Button("Resize", variant="primary", elem_id="tools-resize-run")
            rs_out = gr.HTML("", elem_id="tools-resize-result")
        # ------------------------------------------------------------------ Extract
        with gr.Tab("Extract", id="tools-extract-tab"):
            gr.Markdown("Make a LoRA from what a fine-tuned model changed compared with its base (truncated SVD per "
                        "layer). Both models are loaded: this takes memory and time.", elem_classes=["lw-small"])
            with gr.Row(equal_height=True):
                ex_base = model_dd("Base model (original)", "tools-extract-base", scale=1)
                ex_tuned = model_dd("Fine-tuned model", "tools-extract-tuned", scale=1)
            with gr.Row(equal_height=True):
                ex_rank = gr.Number(32, precision=0, minimum=1, label="Rank", elem_id="tools-extract-rank")
                ex_conv = gr.Number(0, precision=0, minimum=0, label="Conv rank", elem_id="tools-extract-conv",
                                    info="3x3 convolutions (0 = left out)")
                ex_clamp = gr.Number(0.99, minimum=0, maximum=1, label="Clamp quantile", elem_id="tools-extract-clamp",
                                     info="1 = no clamping")
                ex_min = gr.Number(0.01, minimum=0, label="Min diff", elem_id="tools-extract-min-diff",
                                   info="Text encoders changed less are left out")
            ex_cfg = gr.Textbox(label="Configs folder (optional)", elem_id="tools-extract-config",
                                info="Only for single-file checkpoints of a non-standard layout.")
            ex_name, ex_prec, ex_over = out_row("tools-extract", "e.g. my_finetune_extracted", "fp16")
            ex_btn = gr.Button("Extract", variant="primary", elem_id="tools-extract-run")
            ex_out = gr.HTML("", elem_id="tools-extract-result")
        # ------------------------------------------------------------------ Convert
        with gr.Tab("Convert", id="tools-convert-tab"):
            gr.Markdown("Rewrite a LoRA with the other key names: **kohya** (sd-scripts, A1111, Forge, ComfyUI) or "
                        "**diffusers** (peft). The change it applies is the same. Flux in kohya form uses sd-scripts' names "
                        "(q/k/v fused into one module per block).", elem_classes=["lw-small"])
            with gr.Row(equal_height=True):
                cv_lora = lora_dd("LoRA", "tools-convert-lora", scale=5)
                cv_to = gr.Radio(["kohya", "diffusers"], value="diffusers", label="Convert to", scale=2,
                                 elem_id="tools-convert-to")
            cv_name, cv_prec, cv_over = out_row("tools-convert", "e.g. my_style_diffusers")
            cv_btn = gr.Button("Convert", variant="primary", elem_id="tools-convert-run")
            cv_out = gr.HTML("", elem_id="tools-convert-result")

    # ------------------------------------------------------------------ callbacks
    def refresh_updates() -> list:
        lc, mc = loras(), models()
        return ([gr.Dropdown(choices=lc) for _ in lora_pickers]
                + [gr.Dropdown(choices=([first] if first else []) + mc) for _, first in model_pickers])

    all_pickers = [*lora_pickers, *(dd for dd, _ in model_pickers)]

    def on_inspect(pick, path):
        target = (path or "").strip() or pick
        if not target:
            return error_html("Choose a LoRA from the list, or write the path of a file."), "", "", {}
        from core.lora.tools import inspect_lora

        try:
            info = inspect_lora(target)
        except Exception as e:  # noqa: BLE001 - shown as an error line
            return error_of(e), "", "", {}
        head, left, right = inspect_html(info)
        return head, left, right, raw_metadata(info["metadata"])

    def on_check(lora, model, cfg):
        if not lora or not model:
            return error_html("Choose a LoRA and a base model.")
        from core.lora.tools import check_lora

        try:
            return check_html(check_lora(lora, model, (cfg or "").strip()))
        except Exception as e:  # noqa: BLE001
            return error_of(e)

    def wrote(text: str) -> list:
        return [text, *refresh_updates()]

    def on_merge(*args, progress=gr.Progress()):
        picks, strengths = args[:MERGE_SLOTS], args[MERGE_SLOTS:2 * MERGE_SLOTS]
        base, rank, name, prec, over = args[2 * MERGE_SLOTS:]
        items = [(p, float(s)) for p, s in zip(picks, strengths) if p and float(s or 0) != 0]
        if not items:
            return wrote(error_html("Choose at least one LoRA with a strength other than 0."))
        from core.lora.tools import merge_into_base, merge_loras

        first = stem(items[0][0])
        try:
            if base:
                if int(rank or 0):
                    return wrote(error_html("Rank is for merging into a LoRA; a checkpoint holds the full weights. "
                                            "Set the rank to 0, or choose no base model."))
                out = output_path(settings.models_dir, name, f"{stem(base)}_{first}")
                s = merge_into_base(base, items, out, save_precision=prec or "fp16", overwrite=bool(over),
                                    progress=core_progress(progress))
                return wrote(summary_html(s, f"The checkpoint is in {Path(out).parent}: choose it as a base model "
                                             "in Training or Generate."))
            out = output_path(lora_folder(), name, f"{first}_merged")
            s = merge_loras(items, out, rank=int(rank) if int(rank or 0) > 0 else None, save_precision=prec or None,
                            overwrite=bool(over), progress=core_progress(progress))
            return wrote(summary_html(s))
        except Exception as e:  # noqa: BLE001
            return wrote(error_of(e))

    def on_resize(lora, rank, dyn, param, name, prec, over, progress=gr.Progress()):
        if not lora:
            return wrote(error_html("Choose a LoRA to resize."))
        from core.lora.tools import resize_lora

        r = int(rank or 0) or None
        if r is None and not dyn:
            return wrote(error_html("Set a rank, or choose a dynamic method (with a rank 0 = no cap)."))
        out = output_path(lora_folder(), name, f"{stem(lora)}_{dyn or 'r'}{r or ''}")
        try:
            s = resize_lora(lora, out, rank=r, dynamic=dyn or None, param=float(param) if dyn else None,
                            save_precision=prec or None, overwrite=bool(over), progress=core_progress(progress))
            return wrote(summary_html(s))
        except Exception as e:  # noqa: BLE001
            return wrote(error_of(e))

    def on_extract(base, tuned, rank, conv, clamp, min_diff, cfg, name, prec, over, progress=gr.Progress()):
        if not base or not tuned:
            return wrote(error_html("Choose the base model and the fine-tuned model."))
        from core.lora.tools import extract_lora

        out = output_path(lora_folder(), name, f"{stem(tuned)}_extracted_r{int(rank or 0)}")
        try:
            s = extract_lora(base, tuned, out, rank=int(rank or 0), conv_rank=int(conv or 0), clamp=float(clamp),
                             min_diff=float(min_diff), save_precision=prec or "fp16", config_dir=(cfg or "").strip(),
                             overwrite=bool(over), progress=core_progress(progress))
            return wrote(summary_html(s))
        except Exception as e:  # noqa: BLE001
            return wrote(error_of(e))

    def on_convert(lora, to, name, prec, over, progress=gr.Progress()):
        if not lora:
            return wrote(error_html("Choose a LoRA to convert."))
        from core.lora.tools import convert_lora

        out = output_path(lora_folder(), name, f"{stem(lora)}_{to}")
        try:
            s = convert_lora(lora, to, out, save_precision=prec or None, overwrite=bool(over),
                             progress=core_progress(progress))
            return wrote(summary_html(s))
        except Exception as e:  # noqa: BLE001
            return wrote(error_of(e))

    ins_outputs = [ins_head, ins_left, ins_right, ins_raw]
    ins_btn.click(on_inspect, [ins_dd, ins_path], ins_outputs)
    ins_path.submit(on_inspect, [ins_dd, ins_path], ins_outputs)
    ins_dd.input(on_inspect, [ins_dd, ins_path], ins_outputs)
    chk_btn.click(on_check, [chk_lora, chk_model, chk_cfg], chk_out)
    heavy = dict(concurrency_id="lora-tools", concurrency_limit=1)
    mg_btn.click(on_merge, [*mg_dds, *mg_strengths, mg_base, mg_rank, mg_name, mg_prec, mg_over],
                 [mg_out, *all_pickers], show_progress_on=[mg_out], **heavy)
    rs_btn.click(on_resize, [rs_lora, rs_rank, rs_dyn, rs_param, rs_name, rs_prec, rs_over], [rs_out, *all_pickers],
                 show_progress_on=[rs_out], **heavy)
    ex_btn.click(on_extract, [ex_base, ex_tuned, ex_rank, ex_conv, ex_clamp, ex_min, ex_cfg, ex_name, ex_prec,
                              ex_over], [ex_out, *all_pickers], show_progress_on=[ex_out], **heavy)
    cv_btn.click(on_convert, [cv_lora, cv_to, cv_name, cv_prec, cv_over], [cv_out, *all_pickers],
                 show_progress_on=[cv_out], **heavy)
    refresh_btn.click(refresh_updates, None, all_pickers)
    if ctx.blocks is not None:  # the lists are read when the page opens (file headers only)
        ctx.blocks.load(refresh_updates, None, all_pickers)
