"""The caption editor of the Dataset tab: a gallery of the pictures, the caption of the chosen one editable
in place (Enter saves and goes to the next one), bulk edits and the tag frequency table.

Captions are read and written by core.dataset_tools.captions (UTF-8 .txt files next to the pictures), through
the plain functions of ui.dataset_actions; this module lays out the editor and wires it to them.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from types import SimpleNamespace
from typing import Any, Callable

import gradio as gr

from . import dataset_actions as act
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


# ---------------------------------------------------------------------------- layout
def _picture_editor() -> SimpleNamespace:
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
            position = gr.Markdown(act.NO_PICTURES, elem_id="ds-position")
            caption = gr.Textbox(label="Caption", lines=1, max_lines=6, elem_id="ds-caption",
                                 info="Enter: save and go to the next picture. Page Up / Page Down: save and go "
                                      "back / forward. Separate tags with commas.")
            with gr.Row():
                prev_btn = gr.Button("◀ Save and previous", elem_id="ds-prev")
                save_btn = gr.Button("Save", elem_id="ds-save")
                next_btn = gr.Button("Save and next ▶", variant="primary", elem_id="ds-next")
            msg = gr.HTML("", elem_id="ds-cap-msg")
    return SimpleNamespace(folder=folder, load_btn=load_btn, gallery=gallery, image=image, position=position,
                           caption=caption, prev_btn=prev_btn, save_btn=save_btn, next_btn=next_btn, msg=msg)


def _bulk_edits() -> SimpleNamespace:
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=360):
            gr.Markdown("**Change all captions at once** (pictures without a caption count as empty)")
            parts = []
            for op, label, field, placeholder, second in BULK:
                with gr.Row(equal_height=True):
                    v1 = gr.Textbox(label=field, placeholder=placeholder, scale=3, elem_id=f"ds-bulk-{op}")
                    v2 = gr.Textbox(label=second, scale=2, elem_id=f"ds-bulk-{op}-2") if second else gr.State("")
                    btn = gr.Button(label, scale=1, elem_id=f"ds-bulk-{op}-btn")
                parts.append((op, v1, v2, btn))
            msg = gr.HTML("", elem_id="ds-bulk-msg")
        with gr.Column(scale=1, min_width=260):
            tags = gr.Dataframe(value=[], headers=TAG_HEADERS, interactive=False, max_height=360,
                                label="Tags, most used first", elem_id="ds-tags")
    return SimpleNamespace(parts=parts, msg=msg, tags=tags)


def build(ctx: AppContext) -> Editor:
    ed = _picture_editor()
    bulk = _bulk_edits()
    paths = gr.State([])
    index = gr.State(0)
    return _wire(ctx, ed, bulk, paths, index)


# ---------------------------------------------------------------------------- wiring (thin adapters)
def on_move(items: list[str], i: int, text: str, step: int):
    j, note, moved = act.save_and_move(items, i, text, step)
    if not moved:  # nothing loaded, or not saved: the box keeps the user's text
        return j, gr.skip(), gr.skip(), gr.skip(), note, gr.skip()
    return j, *act.picture_view(items, j), note, act.tag_rows(items)


def on_select(items: list[str], evt: gr.SelectData):
    i = act.selected_index(items, evt.index)
    if i is None:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
    return i, *act.picture_view(items, i), ""


def on_bulk(op: str, folder: str, items: list[str], i: int, v1: str, v2: str, progress=gr.Progress()):
    note, caption, tags = act.bulk_edit(op, folder, items, i, v1, v2, lambda d, t, m: progress((d, t), desc=m))
    return note, gr.skip() if caption is None else caption, gr.skip() if tags is None else tags


def _wire(ctx: AppContext, ed: SimpleNamespace, bulk: SimpleNamespace, paths, index) -> Editor:
    def on_load(folder: str):
        view = act.load_pictures(folder)
        if view.paths:
            ctx.allow(folder.strip())
        return tuple(view)

    load_inputs = [ed.folder]
    load_outputs = [paths, ed.gallery, index, ed.image, ed.caption, ed.position, ed.msg, bulk.tags]
    ed.load_btn.click(on_load, load_inputs, load_outputs)
    ed.folder.submit(on_load, load_inputs, load_outputs)
    move_outputs = [index, ed.image, ed.caption, ed.position, ed.msg, bulk.tags]
    for trigger, step in ((ed.next_btn.click, 1), (ed.caption.submit, 1), (ed.prev_btn.click, -1),
                          (ed.save_btn.click, 0)):
        trigger(partial(on_move, step=step), [paths, index, ed.caption], move_outputs)
    ed.gallery.select(on_select, [paths], [index, ed.image, ed.caption, ed.position, ed.msg])
    for op, v1, v2, btn in bulk.parts:
        btn.click(partial(on_bulk, op), [ed.folder, paths, index, v1, v2], [bulk.msg, ed.caption, bulk.tags])
    if ctx.blocks is not None:
        ctx.blocks.load(None, None, None, js=KEYS_JS)
    return Editor(ed.folder, on_load, load_inputs, load_outputs)
