"""What the Dataset tab does, as plain functions (no Gradio): bring uploads into a folder, check a folder,
make the kohya training folder, and the caption editor's load / save / move / bulk edits.

They take the values of the controls and return what the page shows (HTML notices, table rows, texts).
A ``progress`` argument is a core progress callback ``(done, total, message)``, or None.
The tabs (ui.dataset_tab, ui.dataset_captions) lay out the controls and turn these results into updates.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple

from core.dataset_tools import PrepareError, check_folder, prepare
from core.dataset_tools import captions as cap
from core.dataset_tools.inspect import DEFAULT_RESOLUTION
from core.dataset_tools.prepare import copy_uploads

from .run_view import notice_html

Progress = Callable[[int, int, str], None]
NO_PICTURES = "No pictures loaded."


# ---------------------------------------------------------------------------- steps 1 and 2
def report_view(report) -> tuple[str, list[list[str]]]:
    """The summary line (HTML) and the table rows of a core.dataset_tools Report."""
    errors = any(p.severity == "error" for p in report.problems)
    kind = "warn" if errors else "ok"
    text = report.summary() + ("" if report.problems else " No problems found.")
    return notice_html(text, kind), report.rows()


def upload_folder(files: list[str] | None, datasets_dir: str, stamp: str | None = None) -> str | None:
    """Copy the uploaded files into a new folder under ``datasets_dir``/uploads; its path (None: nothing uploaded)."""
    if not files:
        return None
    dest = Path(datasets_dir) / "uploads" / (stamp or time.strftime("%Y%m%d-%H%M%S"))
    return str(copy_uploads(files, dest))


def check(src: str, size: int | None, keep_small: bool, progress: Progress | None = None) -> tuple[str, list]:
    """Check the pictures of ``src``: (the summary as HTML, the problem table's rows)."""
    if not (src or "").strip():
        return notice_html("Upload pictures or type a folder first.", "warn"), []
    try:
        rep = check_folder(src.strip(), resolution=int(size or DEFAULT_RESOLUTION), keep_small=keep_small,
                           progress=progress)
    except FileNotFoundError as e:
        return notice_html(str(e), "err"), []
    return report_view(rep)


def default_out(datasets_dir: str, name: str) -> str:
    """Where the training folder goes when the user leaves the field empty: the name, in the datasets folder."""
    return str(Path(datasets_dir) / ((name or "").strip() or "dataset"))


@dataclass
class Prepared:
    """What making the training folder shows: the message, and on success the report rows and the folders."""
    message: str  # HTML
    rows: list[list[str]] | None = None  # None: the problem table stays as it is
    train_data_dir: str = ""  # "" when nothing was made
    folder: str = ""  # the concept folder, whose captions the editor loads

    @property
    def ok(self) -> bool:
        return bool(self.train_data_dir)


def make_training_folder(src: str, name: str, repeats: Any, size: Any, crop: str, out: str, background: str,
                         keep_small: bool, overwrite: bool, *, datasets_dir: str,
                         progress: Progress | None = None) -> Prepared:
    """Make the kohya training folder from ``src`` (the originals are never changed)."""
    name = (name or "").strip()
    out = (out or "").strip() or default_out(datasets_dir, name)
    if not (src or "").strip():
        return Prepared(notice_html("Upload pictures or type a folder first (step 1).", "warn"))
    try:
        res = prepare(src.strip(), out, name=name, repeats=int(repeats or 0), resolution=int(size or 0) or None,
                      crop=crop, background=background or "white", keep_small=keep_small, overwrite=overwrite,
                      progress=progress)
    except (PrepareError, OSError) as e:
        return Prepared(notice_html(str(e).split("\n")[0], "err"))
    msg = notice_html(f"Done: {len(res.written)} pictures are in {res.folder}. Edit their captions in step 3, then "
                      "press Use it for training, and in the Training tab choose the preset and the base model for "
                      "your model (SD1.5 or SDXL).", "ok")
    return Prepared(msg, report_view(res.report)[1], str(res.train_data_dir), str(res.folder))


def training_values(folder: str, trigger: str) -> tuple[str, str | None] | None:
    """What "Use it for training" puts into the Training tab: (data folder, trigger word or None to leave it);
    None when no folder was made."""
    if not (folder or "").strip():
        return None
    return folder, (trigger or "").strip() or None


# ---------------------------------------------------------------------------- step 3: the caption editor
class EditorView(NamedTuple):
    """What the caption editor shows after loading a folder (in the order of its outputs)."""
    paths: list[str]
    gallery: list[tuple[str, str]]
    index: int
    image: str | None
    caption: str
    position: str
    message: str  # HTML
    tags: list[list[Any]]


def picture_view(paths: list[str], index: int) -> tuple[str | None, str, str]:
    """The picture, its caption and the position text for ``index``."""
    if not paths:
        return None, "", NO_PICTURES
    p = Path(paths[index])
    return str(p), cap.load_caption(p), f"Picture {index + 1} of {len(paths)}: **{p.name}**"


def tag_rows(items: list[str]) -> list[list[Any]]:
    """(tag, number of pictures) rows, the most used first."""
    return [[t, n] for t, n in cap.tag_counts(cap.load_caption(Path(p)) for p in items)]


def load_pictures(folder: str) -> EditorView:
    """The pictures below ``folder`` with the first one shown, or an empty editor with the reason."""
    folder = (folder or "").strip()
    if not folder:
        return EditorView([], [], 0, None, "", NO_PICTURES, notice_html("Type a folder first.", "warn"), [])
    try:
        found = [str(p) for p in cap.list_images(folder)]
    except FileNotFoundError as e:
        return EditorView([], [], 0, None, "", NO_PICTURES, notice_html(str(e), "err"), [])
    note = "" if found else notice_html(f"No pictures in {folder}.", "warn")
    return EditorView(found, [(p, Path(p).name) for p in found], 0, *picture_view(found, 0), note, tag_rows(found))


def save_caption(items: list[str], i: int, text: str) -> tuple[bool, str]:
    """Write the caption of picture ``i`` (atomically: the old caption stays whole if writing fails).
    (whether it was saved, the message as HTML)."""
    if not items:
        return False, notice_html("Load the pictures first.", "warn")
    if not 0 <= i < len(items):
        return False, notice_html("That picture is no longer in the list: load the pictures again.", "warn")
    image = Path(items[i])
    try:
        p = cap.save_caption(image, text or "")
    except OSError as e:
        return False, notice_html(f"Could not save the caption of {image.name}: {e.strerror or e}. "
                                  "Your text is still in the box.", "err")
    return True, notice_html(f"Saved {p.name}.", "ok")


def save_and_move(items: list[str], i: int, text: str, step: int) -> tuple[int, str, bool]:
    """Save picture ``i``'s caption and go ``step`` pictures on (0: stay).
    (the picture to show, the message as HTML, whether the shown picture and tags are to be refreshed).
    When saving fails the editor stays where it is, with the user's text in the box."""
    saved, note = save_caption(items, i, text)
    if not saved:
        return i, note, False
    j = min(max(i + step, 0), len(items) - 1)
    if step and j == i:
        note += notice_html("That was the " + ("last" if step > 0 else "first") + " picture.", "note")
    return j, note, True


def selected_index(items: list[str], index: Any) -> int | None:
    """The gallery's clicked picture as an index into ``items``, None when it is not one of them."""
    i = index if isinstance(index, int) else 0
    return i if items and 0 <= i < len(items) else None


def bulk_edit(op: str, folder: str, items: list[str], i: int, value: str, value2: str,
              progress: Progress | None = None) -> tuple[str, str | None, list | None]:
    """One of the bulk caption edits on every caption of ``folder``:
    (the message as HTML, the shown picture's new caption and the tag rows, both None when nothing changed)."""
    if not items:
        return notice_html("Load the pictures first.", "warn"), None, None
    if not (value or "").strip():
        return notice_html("Fill in the text field next to the button first.", "warn"), None, None
    try:
        res = cap.bulk_edit((folder or "").strip(), op, value, value2 or "", progress=progress)
    except FileNotFoundError as e:
        return notice_html(str(e), "err"), None, None
    except OSError as e:  # a caption file that cannot be written: those before it are changed
        where = Path(e.filename).parent if e.filename else (folder or "").strip()
        return (notice_html(f"Could not write the captions in {where}: {e.strerror or e}. Those before it were "
                            "changed.", "err"), picture_view(items, i)[1], tag_rows(items))
    done = f"Changed {len(res.changed)} of {res.images} captions."
    return notice_html(done, "ok"), picture_view(items, i)[1], tag_rows(items)
