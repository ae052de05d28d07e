"""The Dataset tab: bring pictures in (upload or a folder), check them, make the kohya training folder,
then edit the captions (ui.dataset_captions).

All the work is done by core.dataset_tools through ui.dataset_actions (plain functions); this module lays out
the page (one builder per step) and wires the controls to those functions.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from core.dataset_tools import CROPS

from . import dataset_actions as act
from . import dataset_captions
from .context import AppContext

REPORT_HEADERS = ["File", "Problem", "What is done about it"]
SIZES = [("Keep the size", 0), ("512 px (SD 1.5)", 512), ("768 px", 768), ("1024 px (SDXL)", 1024)]
CROP_CHOICES = [("Keep the whole picture", "none"), ("Square from the centre", "center"),
                ("Square around the most detail", "focus")]
assert [c for _, c in CROP_CHOICES] == list(CROPS)
CROP_HELP = ("Keep the whole picture: the trainer handles any shape; with a size, big pictures are only scaled "
             "down. Square from the centre: cuts the middle square. Square around the most detail: cuts the "
             "square where the picture has the most edges and texture (good when the subject is off-centre).")


def core_progress(progress: gr.Progress):
    """A core progress callback (done, total, message) that drives a gr.Progress bar."""
    return lambda done, total, message: progress((done, total), desc=message)


# ---------------------------------------------------------------------------- layout
def _pictures_step() -> SimpleNamespace:
    gr.Markdown("### 1 · Your pictures")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=320):
            upload = gr.File(file_count="multiple", label="Upload pictures (you can add their .txt captions too)",
                             file_types=["image", ".txt", ".webp"], height=150, elem_id="ds-upload")
        with gr.Column(scale=1, min_width=320):
            src = gr.Textbox(label="…or the folder on this computer that holds them",
                             placeholder="/home/me/pictures/my_dog", elem_id="ds-src",
                             info="Sub-folders are included. Uploaded pictures are copied into a new folder "
                                  "and it is filled in here.")
            check_btn = gr.Button("Check the pictures", variant="primary", elem_id="ds-check")
    summary = gr.HTML("", elem_id="ds-summary")
    report = gr.Dataframe(value=[], headers=REPORT_HEADERS, interactive=False, wrap=True, max_height=420,
                          label="Problems found (the training folder is made without the files that are left out)",
                          column_widths=["24%", "46%", "30%"], elem_id="ds-report")
    return SimpleNamespace(upload=upload, src=src, check_btn=check_btn, summary=summary, report=report)


def _folder_step(datasets_dir: str) -> SimpleNamespace:
    gr.Markdown("### 2 · Make the training folder")
    with gr.Row(equal_height=True):
        name = gr.Textbox(value="zqx", label="Name (your trigger word)", elem_id="ds-name", scale=2,
                          info="A made-up word the LoRA learns, e.g. zqx. It becomes the folder name.")
        repeats = gr.Number(value=10, precision=0, minimum=1, label="Repeats", elem_id="ds-repeats", scale=1,
                            info="How often each picture is used per epoch.")
        size = gr.Dropdown(choices=SIZES, value=0, label="Picture size", elem_id="ds-size", scale=2,
                           info="The training resolution. Pictures under half of it (of 512 px when you keep the size) are left out.")
    crop = gr.Radio(choices=CROP_CHOICES, value="none", label="Cropping", info=CROP_HELP, elem_id="ds-crop")
    with gr.Row(equal_height=True):
        out = gr.Textbox(label="Save the training folder in", elem_id="ds-out", scale=3,
                         placeholder=str(Path(datasets_dir) / "<name>"),
                         info="Leave empty for a folder named after the name, in the datasets folder.")
        background = gr.ColorPicker(value="#ffffff", label="Fill for transparent parts", elem_id="ds-bg", scale=1)
    with gr.Row(equal_height=True):
        keep_small = gr.Checkbox(False, label="Keep pictures that are too small (they will look blurry)",
                                 elem_id="ds-keep-small")
        overwrite = gr.Checkbox(False, label="Replace the pictures already in that training folder",
                                elem_id="ds-overwrite")
    prepare_btn = gr.Button("Make the training folder", variant="primary", elem_id="ds-prepare")
    msg = gr.HTML("", elem_id="ds-prep-msg")
    with gr.Row(equal_height=True):
        prepared = gr.Textbox(label="Training images folder (the Training tab's train_data_dir)", scale=4,
                              interactive=False, buttons=["copy"], visible=False, elem_id="ds-prepared")
        use_btn = gr.Button("Use it for training", variant="primary", scale=1, visible=False, elem_id="ds-use")
    return SimpleNamespace(name=name, repeats=repeats, size=size, crop=crop, out=out, background=background,
                           keep_small=keep_small, overwrite=overwrite, prepare_btn=prepare_btn, msg=msg,
                           prepared=prepared, use_btn=use_btn)


def build(ctx: AppContext) -> None:
    gr.Markdown("Bring in your pictures, let LoRA Workshop check them, and make a training folder from them. "
                "**Your original files are never changed**: everything is written to a new folder.",
                elem_classes=["lw-small"])
    pics = _pictures_step()
    step2 = _folder_step(ctx.settings.datasets_dir)
    gr.Markdown("### 3 · Captions")
    editor = dataset_captions.build(ctx)
    _wire(ctx, pics, step2, editor)


# ---------------------------------------------------------------------------- wiring
def _wire(ctx: AppContext, pics: SimpleNamespace, step2: SimpleNamespace, editor: dataset_captions.Editor) -> None:
    def on_upload(files: list[str] | None):
        folder = act.upload_folder(files, ctx.settings.datasets_dir)
        return gr.skip() if folder is None else folder

    def on_check(src: str, size: int, keep: bool, progress=gr.Progress()):
        return act.check(src, size, keep, core_progress(progress))

    def on_prepare(src, name, repeats, size, crop, out, bg, keep, replace, progress=gr.Progress()):
        res = act.make_training_folder(src, name, repeats, size, crop, out, bg, keep, replace,
                                       datasets_dir=ctx.settings.datasets_dir, progress=core_progress(progress))
        if not res.ok:
            hide = gr.update(visible=False)
            return res.message, gr.skip(), hide, gr.skip(), hide
        ctx.allow(res.train_data_dir)
        return (res.message, res.rows, gr.update(value=res.train_data_dir, visible=True), res.folder,
                gr.update(visible=True))

    check_in, check_out = [pics.src, step2.size, step2.keep_small], [pics.summary, pics.report]
    pics.upload.upload(on_upload, [pics.upload], [pics.src]).then(on_check, check_in, check_out)
    pics.check_btn.click(on_check, check_in, check_out)
    pics.src.submit(on_check, check_in, check_out)
    step2.prepare_btn.click(
        on_prepare, [pics.src, step2.name, step2.repeats, step2.size, step2.crop, step2.out, step2.background,
                     step2.keep_small, step2.overwrite],
        [step2.msg, pics.report, step2.prepared, editor.folder, step2.use_btn]).then(
        editor.load, editor.load_inputs, editor.load_outputs)

    def wire_use_for_training() -> None:
        """Once the Training tab exists: fill in its data folder and trigger word, and switch to it."""
        target = [ctx.components.get(k) for k in ("train.train_data_dir", "train.trigger_word", "tabs")]
        if any(c is None for c in target):
            return

        def use(folder: str, trigger: str):
            values = act.training_values(folder, trigger)
            if values is None:
                return gr.skip(), gr.skip(), gr.skip()
            return values[0], gr.skip() if values[1] is None else values[1], gr.Tabs(selected="training")

        step2.use_btn.click(use, [step2.prepared, step2.name], target)

    ctx.after_build.append(wire_use_for_training)
