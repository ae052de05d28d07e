"""The Dataset tab: bring pictures in (upload or a folder), check them, make the kohya training folder,
then edit the captions (ui.dataset_captions).

All the work is done by core.dataset_tools; this module only lays out the page and shows the results.
"""
from __future__ import annotations

import time
from pathlib import Path

import gradio as gr

from core.dataset_tools import CROPS, PrepareError, check_folder, prepare
from core.dataset_tools.inspect import DEFAULT_RESOLUTION
from core.dataset_tools.prepare import copy_uploads

from . import dataset_captions, run_view
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


def report_view(report) -> tuple[str, list[list[str]]]:
    """The summary line (HTML) and the table rows of a core.dataset_tools Report."""
    errors = any(p.severity == "error" for p in report.problems)
    kind = "warn" if errors else "ok"
    text = report.summary() + ("" if report.problems else " No problems found.")
    return run_view.notice_html(text, kind), report.rows()


def build(ctx: AppContext) -> None:
    gr.Markdown("Bring in your pictures, let LoRA Workshop check them, and make a training folder from them. "
                "**Your original files are never changed**: everything is written to a new folder.",
                elem_classes=["lw-small"])
    # ---------------------------------------------------------------- step 1
    gr.Markdown("### 1 · Your pictures")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=320):
            upload = gr.File(file_count="multiple", label="Upload pictures (you can add their .txt captions too)",
                             file_types=["image", ".txt", ".webp"], height=150, elem_id="ds-upload")
        with gr.Column(scale=1, min_width=320):
            src_box = gr.Textbox(label="…or the folder on this computer that holds them",
                                 placeholder="/home/me/pictures/my_dog", elem_id="ds-src",
                                 info="Sub-folders are included. Uploaded pictures are copied into a new folder "
                                      "and it is filled in here.")
            check_btn = gr.Button("Check the pictures", variant="primary", elem_id="ds-check")
    summary = gr.HTML("", elem_id="ds-summary")
    report = gr.Dataframe(value=[], headers=REPORT_HEADERS, interactive=False, wrap=True, max_height=420,
                          label="Problems found (the training folder is made without the files that are left out)",
                          column_widths=["24%", "46%", "30%"], elem_id="ds-report")
    # ---------------------------------------------------------------- step 2
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
        out_box = gr.Textbox(label="Save the training folder in", elem_id="ds-out", scale=3,
                             placeholder=str(Path(ctx.settings.datasets_dir) / "<name>"),
                             info="Leave empty for a folder named after the name, in the datasets folder.")
        background = gr.ColorPicker(value="#ffffff", label="Fill for transparent parts", elem_id="ds-bg", scale=1)
    with gr.Row(equal_height=True):
        keep_small = gr.Checkbox(False, label="Keep pictures that are too small (they will look blurry)",
                                 elem_id="ds-keep-small")
        overwrite = gr.Checkbox(False, label="Replace the pictures already in that training folder",
                                elem_id="ds-overwrite")
    prepare_btn = gr.Button("Make the training folder", variant="primary", elem_id="ds-prepare")
    prep_msg = gr.HTML("", elem_id="ds-prep-msg")
    with gr.Row(equal_height=True):
        prepared = gr.Textbox(label="Training images folder (the Training tab's train_data_dir)", scale=4,
                              interactive=False, buttons=["copy"], visible=False, elem_id="ds-prepared")
        use_btn = gr.Button("Use it for training", variant="primary", scale=1, visible=False, elem_id="ds-use")
    # ---------------------------------------------------------------- step 3
    gr.Markdown("### 3 · Captions")
    editor = dataset_captions.build(ctx)

    # ---------------------------------------------------------------- handlers
    def on_upload(files: list[str] | None):
        if not files:
            return gr.skip()
        dest = Path(ctx.settings.datasets_dir) / "uploads" / time.strftime("%Y%m%d-%H%M%S")
        return str(copy_uploads(files, dest))

    def on_check(src: str, size_: int, keep: bool, progress=gr.Progress()):
        if not (src or "").strip():
            return run_view.notice_html("Upload pictures or type a folder first.", "warn"), []
        try:
            rep = check_folder(src.strip(), resolution=int(size_ or DEFAULT_RESOLUTION), keep_small=keep,
                               progress=core_progress(progress))
        except FileNotFoundError as e:
            return run_view.notice_html(str(e), "err"), []
        return report_view(rep)

    def on_prepare(src, name_, repeats_, size_, crop_, out, bg, keep, replace, progress=gr.Progress()):
        name_ = (name_ or "").strip()
        out = (out or "").strip() or str(Path(ctx.settings.datasets_dir) / (name_ or "dataset"))
        hide = gr.update(visible=False)
        if not (src or "").strip():
            return (run_view.notice_html("Upload pictures or type a folder first (step 1).", "warn"), gr.skip(), hide,
                    gr.skip(), hide)
        try:
            res = prepare(src.strip(), out, name=name_, repeats=int(repeats_ or 0), resolution=int(size_) or None,
                          crop=crop_, background=bg or "white", keep_small=keep, overwrite=replace,
                          progress=core_progress(progress))
        except (PrepareError, OSError) as e:
            return run_view.notice_html(str(e).split("\n")[0], "err"), gr.skip(), hide, gr.skip(), hide
        ctx.allow(res.train_data_dir)
        msg = run_view.notice_html(f"Done: {len(res.written)} pictures are in {res.folder}. Edit their captions in "
                                   "step 3, then press Use it for training, and in the Training tab choose the preset "
                                   "and the base model for your model (SD1.5 or SDXL).", "ok")
        return (msg, report_view(res.report)[1], gr.update(value=str(res.train_data_dir), visible=True), str(res.folder),
                gr.update(visible=True))

    upload.upload(on_upload, [upload], [src_box]).then(on_check, [src_box, size, keep_small], [summary, report])
    check_btn.click(on_check, [src_box, size, keep_small], [summary, report])
    src_box.submit(on_check, [src_box, size, keep_small], [summary, report])
    prepare_btn.click(on_prepare, [src_box, name, repeats, size, crop, out_box, background, keep_small, overwrite],
                      [prep_msg, report, prepared, editor.folder, use_btn]).then(
        editor.load, editor.load_inputs, editor.load_outputs)

    def wire_use_for_training() -> None:
        """Once the Training tab exists: fill in its data folder and trigger word, and switch to it."""
        target = [ctx.components.get(k) for k in ("train.train_data_dir", "train.trigger_word", "tabs")]
        if any(c is None for c in target):
            return

        def use(folder: str, trigger: str):
            if not (folder or "").strip():
                return gr.skip(), gr.skip(), gr.skip()
            return folder, (trigger or "").strip() or gr.skip(), gr.Tabs(selected="training")

        use_btn.click(use, [prepared, name], target)

    ctx.after_build.append(wire_use_for_training)
