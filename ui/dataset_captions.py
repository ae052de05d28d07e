"""The caption editor of the Dataset tab: a gallery of the pictures, the caption of the chosen one editable
in place (Enter saves and goes to the next one), bulk edits and the tag frequency table.

Captions are read and written by core.dataset_tools.captions (UTF-8 .txt files next to the pictures).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from core.dataset_tools import captions as cap

from . import run_view
from .context import AppContext

TAG_HEADERS = ["Tag", "Pictures"]
# Page Up / Page Down in the caption box: save and go to the previous / next picture.
KEYS_JS = """() => {
  if (window.lwCaptionKeys) return; window.lwCaptionKeys = true;
  document.addEventListener('keydown', (e) => {
    if (!e.target.closest || !e.target.closest('#ds-caption')) return;
    const id = e.key === 'PageDown' ? 'ds-next' : e.key === 'PageUp' ? 'ds-prev' : null;
    if (!id) return;
    e.preventDefault();
    document.getElementById(id)?.click();
  });
}"""
BULK = [  # op, button label, first field label, placeholder, second field label or None
    ("trigger", "Add to all captions", "Trigger word (put first where it is missing)", "zqx", None),
    ("prefix", "Add in front of all", "Text for the start of every caption", "a photo of zqx", None),
    ("suffix", "Add at the end of all", "Text for the end of every caption", "high quality", None),
    ("replace", "Replace in all", "Find", "dog", "Replace with"),
    ("remove", "Remove from all", "Tags to remove (comma-separated)", "watermark, text", None),
]


@dataclass
class Editor:
    folder: gr.Textbox
    load: Callable[..., Any]
    load_inputs: list
    load_outputs: list


def _view(paths: list[str], index: int) -> tuple[Any, str, str]:
    """The picture, its caption and the position text for ``index``."""
    if not paths:
        return None, "", "No pictures loaded."
    p = Path(paths[index])
    return str(p), cap.load_caption(p), f"Picture {index + 1} of {len(paths)}: **{p.name}**"


def build(ctx: AppContext) -> Editor:
    with gr.Row(equal_height=True):
        folder = gr.Textbox(label="Folder of the pictures to caption", scale=4, elem_id="ds-cap-folder",
                            info="Filled in when you make the training folder; you can type any folder.")
        load_btn = gr.Button("Load the pictures", scale=1, elem_id="ds-cap-load")
    gallery = gr.Gallery(label="Click a picture to edit its caption", columns=8, height=260, allow_preview=False,
                         object_fit="cover", elem_id="ds-gallery", fit_columns=False)
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=260):
            image = gr.Image(label="Picture", type="filepath", interactive=False, height=300, elem_id="ds-image",
                             buttons=[])
        with gr.Column(scale=2, min_width=360):
            position = gr.Markdown("No pictures loaded.", elem_id="ds-position")
            caption = gr.Textbox(label="Caption", lines=1, max_lines=6, elem_id="ds-caption",
                                 info="Enter: save and go to the next picture. Page Up / Page Down: save and go "
                                      "back / forward. Separate tags with commas.")
            with gr.Row():
                prev_btn = gr.Button("◀ Save and previous", elem_id="ds-prev")
                save_btn = gr.Button("Save", elem_id="ds-save")
                next_btn = gr.Button("Save and next ▶", variant="primary", elem_id="ds-next")
            msg = gr.HTML("", elem_id="ds-cap-msg")
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=360):
            gr.Markdown("**Change all captions at once** (pictures without a caption count as empty)")
            bulk_parts = []
            for op, label, field, placeholder, second in BULK:
                with gr.Row(equal_height=True):
                    v1 = gr.Textbox(label=field, placeholder=placeholder, scale=3, elem_id=f"ds-bulk-{op}")
                    v2 = gr.Textbox(label=second, scale=2, elem_id=f"ds-bulk-{op}-2") if second else gr.State("")
                    btn = gr.Button(label, scale=1, elem_id=f"ds-bulk-{op}-btn")
                bulk_parts.append((op, v1, v2, btn))
            bulk_msg = gr.HTML("", elem_id="ds-bulk-msg")
        with gr.Column(scale=1, min_width=260):
            tags = gr.Dataframe(value=[], headers=TAG_HEADERS, interactive=False, max_height=360,
                                label="Tags, most used first", elem_id="ds-tags")
    paths = gr.State([])
    index = gr.State(0)

    # ---------------------------------------------------------------- handlers
    def tag_rows(items: list[str]) -> list[list[Any]]:
        return [[t, n] for t, n in cap.tag_counts(cap.load_caption(Path(p)) for p in items)]

    def on_load(folder_: str):
        folder_ = (folder_ or "").strip()
        if not folder_:
            return [], [], 0, None, "", "No pictures loaded.", run_view.notice_html("Type a folder first.", "warn"), []
        try:
            found = [str(p) for p in cap.list_images(folder_)]
        except FileNotFoundError as e:
            return [], [], 0, None, "", "No pictures loaded.", run_view.notice_html(str(e), "err"), []
        ctx.allow(folder_)
        note = "" if found else run_view.notice_html(f"No pictures in {folder_}.", "warn")
        return (found, [(p, Path(p).name) for p in found], 0, *_view(found, 0), note, tag_rows(found))

    def save(items: list[str], i: int, text: str) -> str:
        if not items:
            return run_view.notice_html("Load the pictures first.", "warn")
        p = cap.save_caption(Path(items[i]), text or "")
        return run_view.notice_html(f"Saved {p.name}.", "ok")

    def on_move(items: list[str], i: int, text: str, step: int):
        note = save(items, i, text)
        if not items:
            return i, gr.skip(), gr.skip(), gr.skip(), note, gr.skip()
        j = min(max(i + step, 0), len(items) - 1)
        if step and j == i:
            note += run_view.notice_html("That was the " + ("last" if step > 0 else "first") + " picture.", "note")
        return j, *_view(items, j), note, tag_rows(items)

    def on_select(items: list[str], evt: gr.SelectData):
        i = evt.index if isinstance(evt.index, int) else 0
        if not items or not 0 <= i < len(items):
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return i, *_view(items, i), ""

    def on_bulk(op: str, folder_: str, items: list[str], i: int, v1: str, v2: str, progress=gr.Progress()):
        if not items:
            return run_view.notice_html("Load the pictures first.", "warn"), gr.skip(), gr.skip()
        if not (v1 or "").strip():
            return run_view.notice_html("Fill in the text field next to the button first.", "warn"), gr.skip(), gr.skip()
        try:
            res = cap.bulk_edit(folder_.strip(), op, v1, v2 or "",
                                progress=lambda d, t, m: progress((d, t), desc=m))
        except FileNotFoundError as e:
            return run_view.notice_html(str(e), "err"), gr.skip(), gr.skip()
        done = f"Changed {len(res.changed)} of {res.images} captions."
        return run_view.notice_html(done, "ok"), _view(items, i)[1], tag_rows(items)

    # ---------------------------------------------------------------- wiring
    load_inputs = [folder]
    load_outputs = [paths, gallery, index, image, caption, position, msg, tags]
    load_btn.click(on_load, load_inputs, load_outputs)
    folder.submit(on_load, load_inputs, load_outputs)
    move_outputs = [index, image, caption, position, msg, tags]
    for trigger, step in ((next_btn.click, 1), (caption.submit, 1), (prev_btn.click, -1), (save_btn.click, 0)):
        trigger(partial(on_move, step=step), [paths, index, caption], move_outputs)
    gallery.select(on_select, [paths], [index, image, caption, position, msg])
    for op, v1, v2, btn in bulk_parts:
        btn.click(partial(on_bulk, op), [folder, paths, index, v1, v2], [bulk_msg, caption, tags])
    if ctx.blocks is not None:
        ctx.blocks.load(None, None, None, js=KEYS_JS)
    return Editor(folder, on_load, load_inputs, load_outputs)
