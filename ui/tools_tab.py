"""The Tools tab: inspect a LoRA, check it against a base model, merge, resize, extract, convert.

Each section calls a plain function of ui/tools_actions.py (which calls core.lora.tools, the same code as
`python -m core lora ...`); nothing here touches weights. The layout comes first (a short builder per tool), then
the wiring (thin adapters from the form's values to those functions).
LoRAs are written into the LoRA folder (Settings), merged checkpoints into the models folder; an existing file is
never replaced unless "Overwrite" is ticked.
"""
from __future__ import annotations

from types import SimpleNamespace as Parts
from typing import Any

import gradio as gr

from . import tools_actions as act
from .generate_choices import lora_choices, model_choices, model_label

MERGE_SLOTS = 4
PRECISIONS = [("Default (the input's; fp16 for checkpoints)", ""), ("fp16", "fp16"), ("bf16", "bf16"), ("float32", "float")]
DYNAMIC = [("None (fixed rank)", ""), ("sv_ratio", "sv_ratio"), ("sv_fro", "sv_fro"), ("sv_cumulative", "sv_cumulative")]
NO_BASE = "(none: merge into a new LoRA)"
INTRO = ("Look inside LoRA files and work on them: **Inspect** what a file holds, **Check** that it fits a base "
         "model, **Merge** LoRAs (into one LoRA, or into a checkpoint), **Resize** to a lower rank, **Extract** a LoRA "
         "from a fine-tuned model, **Convert** between the kohya and diffusers key forms. New LoRAs are written to "
         "the LoRA folder, checkpoints to the models folder; existing files are only replaced with *Overwrite*.")




class Pickers:
    """The tab's file lists: every LoRA and model dropdown, refreshed together (after a tool writes a file)."""

    def __init__(self) -> None:
        self.loras: list[gr.Dropdown] = []
        self.models: list[tuple[gr.Dropdown, tuple[str, str] | None]] = []  # (dropdown, its fixed first choice)

    def lora(self, label: str, elem_id: str, **kw) -> gr.Dropdown:
        dd = gr.Dropdown(choices=[], value=None, allow_custom_value=True, label=label, elem_id=elem_id, **kw)
        self.loras.append(dd)
        return dd

    def model(self, label: str, elem_id: str, first: tuple[str, str] | None = None, **kw) -> gr.Dropdown:
        dd = gr.Dropdown(choices=[first] if first else [], value=first[1] if first else None,
                         allow_custom_value=True, label=label, elem_id=elem_id, **kw)
        self.models.append((dd, first))
        return dd

    def all(self) -> list[gr.Dropdown]:
        return [*self.loras, *(dd for dd, _ in self.models)]

    def updates(self, loras: list[tuple[str, str]], models: list[tuple[str, str]]) -> list:
        return ([gr.Dropdown(choices=loras) for _ in self.loras]
                + [gr.Dropdown(choices=([first] if first else []) + models) for _, first in self.models])


def core_progress(progress: gr.Progress):
    return lambda done, total, text: progress((done, max(total, 1)), desc=text)


def note(text: str) -> None:
    gr.Markdown(text, elem_classes=["lw-small"])


# --------------------------------------------------------------------------- layout, one builder per tool
def out_row(elem: str, placeholder: str, precision_default: str = "") -> tuple:
    with gr.Row(equal_height=True):
        name = gr.Textbox(label="Output name", placeholder=placeholder, elem_id=f"{elem}-out", scale=4,
                          info="A file name (.safetensors is added) or a full path. Empty: a name made from the input's.")
        prec = gr.Dropdown(choices=PRECISIONS, value=precision_default, label="Save precision", scale=2,
                           elem_id=f"{elem}-precision")
        over = gr.Checkbox(False, label="Overwrite", elem_id=f"{elem}-overwrite", scale=1,
                           info="Replace a file of that name")
    return name, prec, over


def inspect_section(p: Pickers) -> Parts:
    with gr.Tab("Inspect", id="tools-inspect-tab"):
        with gr.Row(equal_height=True):
            pick = p.lora("LoRA", "tools-inspect-lora", scale=5,
                          info="LoRA files in your LoRA and output folders, newest first.")
            path = gr.Textbox(label="Or any file", placeholder="/path/to/some_lora.safetensors", scale=4,
                              elem_id="tools-inspect-path", info="A path here wins over the list.")
            run = gr.Button("Inspect", variant="primary", scale=1, min_width=120, elem_id="tools-inspect-run")
        head = gr.HTML("", elem_id="tools-inspect-status")
        with gr.Row(equal_height=False):
            left = gr.HTML("", elem_id="tools-inspect-summary")
            right = gr.HTML("", elem_id="tools-inspect-parts")
        with gr.Accordion("Raw metadata (JSON)", open=False, elem_id="tools-inspect-raw"):
            raw = gr.JSON(value={}, elem_id="tools-inspect-json")
    return Parts(pick=pick, path=path, run=run, outputs=[head, left, right, raw])


def check_section(p: Pickers) -> Parts:
    with gr.Tab("Check", id="tools-check-tab"):
        note("Does the LoRA fit this base model? Compares the families, then matches every module of the "
             "LoRA to a layer of the model (name and shape).")
        with gr.Row(equal_height=True):
            lora = p.lora("LoRA", "tools-check-lora", scale=4)
            model = p.model("Base model", "tools-check-model", scale=4, info="Models in your models folder, or a path.")
            run = gr.Button("Check", variant="primary", scale=1, min_width=120, elem_id="tools-check-run")
        cfg = gr.Textbox(label="Configs folder (optional)", elem_id="tools-check-config",
                         info="Only for a single-file checkpoint of a non-standard layout: a diffusers folder "
                              "whose configs describe it.")
        out = gr.HTML("", elem_id="tools-check-result")
    return Parts(inputs=[lora, model, cfg], run=run, out=out)


def merge_section(p: Pickers) -> Parts:
    with gr.Tab("Merge", id="tools-merge-tab"):
        note("Add LoRAs together, each at its strength (negative subtracts; 0 or an empty row is left "
             "out). Without a base model the result is one LoRA (exact with rank 0: the ranks are stacked); "
             "with one, a single-file checkpoint with the LoRAs baked in.")
        picks, strengths = [], []
        with gr.Group():
            for i in range(MERGE_SLOTS):
                with gr.Row(equal_height=True):
                    picks.append(p.lora(f"LoRA {i + 1}", f"tools-merge-lora-{i + 1}", scale=5))
                    strengths.append(gr.Slider(-2.0, 2.0, value=1.0, step=0.05, label="Strength", scale=2,
                                               elem_id=f"tools-merge-strength-{i + 1}"))
        with gr.Row(equal_height=True):
            base = p.model("Merge into a checkpoint (optional)", "tools-merge-base", (NO_BASE, ""), scale=4,
                           info="A base model: the output is then a checkpoint in the models folder.")
            rank = gr.Number(0, precision=0, minimum=0, label="Rank (LoRA output)", scale=2,
                             elem_id="tools-merge-rank", info="0 = exact (ranks stacked); N = SVD to rank N")
        name, prec, over = out_row("tools-merge", "e.g. my_style_mix")
        run = gr.Button("Merge", variant="primary", elem_id="tools-merge-run")
        out = gr.HTML("", elem_id="tools-merge-result")
    return Parts(inputs=[*picks, *strengths, base, rank, name, prec, over], run=run, out=out)


def resize_section(p: Pickers) -> Parts:
    with gr.Tab("Resize", id="tools-resize-tab"):
        note("Lower a LoRA's rank (exact SVD of each module), keeping its strength. A smaller file, "
             "usually with little visible change; the summary says how much of each module is kept.")
        with gr.Row(equal_height=True):
            lora = p.lora("LoRA", "tools-resize-lora", scale=5)
            rank = gr.Number(8, precision=0, minimum=0, label="Rank", scale=1, elem_id="tools-resize-rank",
                             info="With a dynamic method: the largest (0 = no cap)")
            dyn = gr.Dropdown(choices=DYNAMIC, value="", label="Dynamic rank", scale=2, elem_id="tools-resize-dynamic",
                              info="Choose each module's rank from its singular values")
            param = gr.Number(0.9, label="Dynamic parameter", scale=1, elem_id="tools-resize-param",
                              info="sv_ratio: X >= 1; sv_fro / sv_cumulative: 0-1")
        name, prec, over = out_row("tools-resize", "e.g. my_style_r8")
        run = gr.Button("Resize", variant="primary", elem_id="tools-resize-run")
        out = gr.HTML("", elem_id="tools-resize-result")
    return Parts(inputs=[lora, rank, dyn, param, name, prec, over], run=run, out=out)


def extract_section(p: Pickers) -> Parts:
    with gr.Tab("Extract", id="tools-extract-tab"):
        note("Make a LoRA from what a fine-tuned model changed compared with its base (truncated SVD per "
             "layer). Both models are loaded: this takes memory and time.")
        with gr.Row(equal_height=True):
            base = p.model("Base model (original)", "tools-extract-base", scale=1)
            tuned = p.model("Fine-tuned model", "tools-extract-tuned", scale=1)
        with gr.Row(equal_height=True):
            rank = gr.Number(32, precision=0, minimum=1, label="Rank", elem_id="tools-extract-rank")
            conv = gr.Number(0, precision=0, minimum=0, label="Conv rank", elem_id="tools-extract-conv",
                             info="3x3 convolutions (0 = left out)")
            clamp = gr.Number(0.99, minimum=0, maximum=1, label="Clamp quantile", elem_id="tools-extract-clamp",
                              info="1 = no clamping")
            min_diff = gr.Number(0.01, minimum=0, label="Min diff", elem_id="tools-extract-min-diff",
                                 info="Text encoders changed less are left out")
        cfg = gr.Textbox(label="Configs folder (optional)", elem_id="tools-extract-config",
                         info="Only for single-file checkpoints of a non-standard layout.")
        name, prec, over = out_row("tools-extract", "e.g. my_finetune_extracted", "fp16")
        run = gr.Button("Extract", variant="primary", elem_id="tools-extract-run")
        out = gr.HTML("", elem_id="tools-extract-result")
    return Parts(inputs=[base, tuned, rank, conv, clamp, min_diff, cfg, name, prec, over], run=run, out=out)


def convert_section(p: Pickers) -> Parts:
    with gr.Tab("Convert", id="tools-convert-tab"):
        note("Rewrite a LoRA with the other key names: **kohya** (sd-scripts, A1111, Forge, ComfyUI) or "
             "**diffusers** (peft). The change it applies is the same. Flux in kohya form uses sd-scripts' names "
             "(q/k/v fused into one module per block).")
        with gr.Row(equal_height=True):
            lora = p.lora("LoRA", "tools-convert-lora", scale=5)
            to = gr.Radio(["kohya", "diffusers"], value="diffusers", label="Convert to", scale=2,
                          elem_id="tools-convert-to")
        name, prec, over = out_row("tools-convert", "e.g. my_style_diffusers")
        run = gr.Button("Convert", variant="primary", elem_id="tools-convert-run")
        out = gr.HTML("", elem_id="tools-convert-result")
    return Parts(inputs=[lora, to, name, prec, over], run=run, out=out)


def build(ctx: Any) -> None:
    pickers = Pickers()
    gr.Markdown(INTRO, elem_classes=["lw-small"])
    refresh_btn = gr.Button("Refresh file lists", size="sm", scale=0, min_width=180, elem_id="tools-refresh")
    with gr.Tabs():
        ins, chk, mg = inspect_section(pickers), check_section(pickers), merge_section(pickers)
        rs, ex, cv = resize_section(pickers), extract_section(pickers), convert_section(pickers)
    wire(ctx, pickers, refresh_btn, ins, chk, mg, rs, ex, cv)


# --------------------------------------------------------------------------- wiring: thin adapters
def wire(ctx: Any, pickers: Pickers, refresh_btn, ins: Parts, chk: Parts, mg: Parts, rs: Parts, ex: Parts,
         cv: Parts) -> None:
    settings = ctx.settings

    def refresh_updates() -> list:
        loras = lora_choices(settings, ctx, None)[0]
        return pickers.updates(loras, [(model_label(m), m) for m in model_choices(settings.models_dir)])

    def shown(outcome: act.Outcome) -> list:  # the result line, and the lists (with the new file)
        return [outcome.html, *refresh_updates()]

    def on_merge(*form, progress=gr.Progress()):
        n = MERGE_SLOTS
        return shown(act.merge(act.lora_folder(settings), settings.models_dir, form[:n], form[n:2 * n],
                               *form[2 * n:], progress=core_progress(progress)))

    def on_resize(*form, progress=gr.Progress()):
        return shown(act.resize(act.lora_folder(settings), *form, progress=core_progress(progress)))

    def on_extract(*form, progress=gr.Progress()):
        return shown(act.extract(act.lora_folder(settings), *form, progress=core_progress(progress)))

    def on_convert(*form, progress=gr.Progress()):
        return shown(act.convert(act.lora_folder(settings), *form, progress=core_progress(progress)))

    all_pickers = pickers.all()
    for event in (ins.run.click, ins.path.submit, ins.pick.input):
        event(act.inspect, [ins.pick, ins.path], ins.outputs)
    chk.run.click(act.check, chk.inputs, chk.out)
    heavy = dict(concurrency_id="lora-tools", concurrency_limit=1)
    for parts, fn in ((mg, on_merge), (rs, on_resize), (ex, on_extract), (cv, on_convert)):
        parts.run.click(fn, parts.inputs, [parts.out, *all_pickers], show_progress_on=[parts.out], **heavy)
    refresh_btn.click(refresh_updates, None, all_pickers)
    if ctx.blocks is not None:  # the lists are read when the page opens (file headers only)
        ctx.blocks.load(refresh_updates, None, all_pickers)
