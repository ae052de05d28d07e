"""The Captioning tab: write a caption file next to every image of a folder with BLIP, CLIP Interrogator,
WD14 or Florence-2.

The work is ``core.caption.run.caption_folder`` in a background thread (one run at a time), started and
watched by the plain functions of ui.caption_actions; the Start handler shows progress with the time left,
then the summary and the images with their new captions. The backends import their ML libraries only when a
run starts. This module lays out the controls, then wires them to those functions.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import gradio as gr

from core.caption.base import Captioner, backends
from core.caption.run import EXISTING, Summary

from . import caption_actions as act
from .caption_actions import backend_info, caption_rows, gallery_items, model_choices

EXISTING_LABELS = {"skip": "Skip images that already have a caption", "overwrite": "Overwrite existing captions",
                   "append": "Append to existing captions"}
DEVICES = [("Automatic (GPU when there is one)", "auto"), ("CPU", "cpu"), ("GPU (CUDA)", "cuda")]
DEFAULT_BACKEND = "blip"


def _option_component(opt, elem_id: str):
    info = opt.help
    if opt.choices:
        return gr.Radio(choices=list(opt.choices), value=opt.default, label=opt.label or opt.name, info=info,
                        elem_id=elem_id)
    if opt.kind in (int, float) and opt.minimum is not None and opt.maximum is not None:
        step = 1 if opt.kind is int else 0.01
        return gr.Slider(opt.minimum, opt.maximum, value=opt.default, step=step, label=opt.label or opt.name,
                         info=info, elem_id=elem_id)
    if opt.kind in (int, float):
        return gr.Number(value=opt.default, label=opt.label or opt.name, info=info, elem_id=elem_id,
                         precision=0 if opt.kind is int else None)
    return gr.Textbox(value=opt.default, label=opt.label or opt.name, info=info, elem_id=elem_id)


# ---------------------------------------------------------------------------- layout
def _backend_options(found: dict[str, type[Captioner]], default: str) -> tuple[list, dict]:
    """One group of option controls per backend (the default's shown): [(backend, option, control)], groups."""
    option_boxes: list[tuple[str, str, Any]] = []
    groups = {}
    for name, cls in found.items():
        with gr.Group(visible=name == default, elem_id=f"cap-options-{name}") as grp:
            for opt in (o for o in cls.options if o.gui):
                comp = _option_component(opt, f"cap-{name}-{opt.name.replace('_', '-')}")
                option_boxes.append((name, opt.name, comp))
        groups[name] = grp
    return option_boxes, groups


def _run_column(found: dict[str, type[Captioner]], default: str, models_dir: str) -> SimpleNamespace:
    folder = gr.Textbox(label="Image folder", elem_id="cap-folder",
                        placeholder="/path/to/my_dataset  (sub-folders included)",
                        info="The folder with your training images.")
    backend = gr.Radio(choices=[(cls.title, name) for name, cls in found.items()], value=default,
                       label="Captioning model", elem_id="cap-backend")
    backend_md = gr.Markdown(backend_info(found[default]), elem_id="cap-backend-info", elem_classes=["lw-small"])
    model = gr.Dropdown(choices=model_choices(models_dir, found[default]), value=found[default].default_model,
                        allow_custom_value=True, label="Model", elem_id="cap-model",
                        info=act.model_info(found[default], models_dir))
    option_boxes, groups = _backend_options(found, default)
    prefix = gr.Textbox(label="Prefix (your trigger word)", placeholder="zqx, ", elem_id="cap-prefix",
                        info="Put in front of every caption, e.g. 'zqx, '. Not added twice.")
    existing = gr.Radio(choices=[(EXISTING_LABELS[k], k) for k in EXISTING], value="skip",
                        label="Images that already have a caption", elem_id="cap-existing")
    device = gr.Dropdown(choices=DEVICES, value="auto", label="Run on", elem_id="cap-device")
    with gr.Row():
        start_btn = gr.Button("Start captioning", variant="primary", elem_id="cap-start", scale=3)
        cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cap-cancel", scale=1, min_width=120,
                               interactive=False)
    return SimpleNamespace(folder=folder, backend=backend, backend_md=backend_md, model=model,
                           option_boxes=option_boxes, groups=groups, prefix=prefix, existing=existing, device=device,
                           start_btn=start_btn, cancel_btn=cancel_btn)


def _results_column() -> SimpleNamespace:
    status = gr.HTML("", elem_id="cap-status")
    summary = gr.Markdown("", elem_id="cap-summary")
    gallery = gr.Gallery(label="Images and their new captions", columns=4, height=360, object_fit="contain",
                         preview=False, visible=False, elem_id="cap-gallery")
    table = gr.Dataframe(headers=["Image", "Caption"], value=None, label="New captions", wrap=True,
                         interactive=False, visible=False, elem_id="cap-table", column_widths=["25%", "75%"])
    return SimpleNamespace(status=status, summary=summary, gallery=gallery, table=table)


def build(ctx: Any) -> None:
    """Create the tab's contents in the current Blocks context (inside the caller's gr.Tab)."""
    settings = ctx.settings
    found = backends()
    default = DEFAULT_BACKEND if DEFAULT_BACKEND in found else next(iter(found))

    def models_dir() -> str:
        return getattr(settings, "models_dir", "") or ""

    gr.Markdown("Let an AI model write a caption for every image of a folder: a text file with the same name "
                "next to each image (`cat.png` → `cat.txt`), which training reads. Models are downloaded the "
                "first time (0.4-3 GB) and then run on your GPU, or slowly on the CPU.", elem_classes=["lw-small"])
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=380):
            run = _run_column(found, default, models_dir())
        with gr.Column(scale=6, min_width=380):
            out = _results_column()
    _wire(found, models_dir, run, out)


# ---------------------------------------------------------------------------- wiring (thin adapters)
def idle(status_text: Any, summary_text: str, summary: Summary | None = None) -> tuple:
    """The results column and the buttons when no run is going (status None: leave it as it is)."""
    rows = caption_rows(summary) if summary is not None else []
    results = ((gr.Gallery(value=gallery_items(summary), visible=True), gr.Dataframe(value=rows, visible=True))
               if rows else (gr.Gallery(visible=False), gr.Dataframe(visible=False)))
    status = gr.update() if status_text is None else status_text
    return (status, summary_text, *results, gr.Button(interactive=True), gr.Button(interactive=False))


def running(status_text: str) -> tuple:
    return (status_text, "", gr.Gallery(visible=False), gr.Dataframe(visible=False), gr.Button(interactive=False),
            gr.Button(interactive=True))


def _wire(found: dict[str, type[Captioner]], models_dir, run: SimpleNamespace, out: SimpleNamespace) -> None:
    def on_backend(name):
        cls = found[name]
        return [backend_info(cls),
                gr.Dropdown(choices=model_choices(models_dir(), cls), value=cls.default_model,
                            info=act.model_info(cls, models_dir())),
                *(gr.Group(visible=n == name) for n in run.groups)]

    def on_start(folder, backend, model, prefix, existing, device, *values):
        options = {opt: v for (b, opt, _), v in zip(run.option_boxes, values) if b == backend}
        job = act.start(folder, found[backend], model, prefix, existing, device, options)
        if isinstance(job, act.Outcome):
            yield idle(job.status, job.summary, job.result)
            return
        for text in act.watch(job):
            yield running(text)
        end = act.finish(job)
        yield idle(end.status, end.summary, end.result)

    def on_cancel():
        text = act.cancel()
        return gr.update() if text is None else text

    run.backend.change(on_backend, run.backend, [run.backend_md, run.model, *run.groups.values()])
    run.start_btn.click(on_start, [run.folder, run.backend, run.model, run.prefix, run.existing, run.device,
                                   *(c for _, _, c in run.option_boxes)],
                        [out.status, out.summary, out.gallery, out.table, run.start_btn, run.cancel_btn],
                        concurrency_id="captioning", concurrency_limit=1, show_progress="hidden")
    run.cancel_btn.click(on_cancel, None, out.status, concurrency_limit=None)
