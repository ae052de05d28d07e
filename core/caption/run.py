"""Caption every image of a folder: the batch loop shared by the command line and the GUI.

Captions are written next to the images (``image.txt``, UTF-8, atomically). Images that already have
a caption are skipped, overwritten or appended to; a file that cannot be read or captioned is
reported with the reason and the others go on. The model is unloaded at the end (memory back for
training).
"""
from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image, ImageOps

from core.dataset_tools.captions import add_prefix, join_tags, list_images, load_caption, save_caption, split_tags
from core.dataset_tools.inspect import MAX_PIXELS, open_image
from core.dataset_tools.prepare import to_rgb

from .base import CaptionError, Captioner

EXISTING = {
    "skip": "keep existing captions, caption only the images without one",
    "overwrite": "replace existing captions",
    "append": "add the new caption after the existing one",
}


@dataclass
class FileResult:
    path: Path
    status: str  # captioned | skipped | failed
    caption: str = ""
    reason: str = ""


@dataclass
class Progress:
    done: int
    total: int
    message: str = ""
    eta_s: float | None = None

    @property
    def text(self) -> str:
        parts = [f"{self.done}/{self.total} images"]
        if self.eta_s is not None and self.done < self.total:
            parts.append(f"about {format_seconds(self.eta_s)} left")
        if self.message:
            parts.append(self.message)
        return " · ".join(parts)


@dataclass
class Summary:
    folder: Path
    backend: str
    model: str
    results: list[FileResult] = field(default_factory=list)
    cancelled: bool = False
    seconds: float = 0.0

    def of(self, status: str) -> list[FileResult]:
        return [r for r in self.results if r.status == status]

    @property
    def captioned(self) -> list[FileResult]:
        return self.of("captioned")

    @property
    def skipped(self) -> list[FileResult]:
        return self.of("skipped")

    @property
    def failed(self) -> list[FileResult]:
        return self.of("failed")

    @property
    def headline(self) -> str:
        text = (f"Captioned {len(self.captioned)}, skipped {len(self.skipped)}, failed {len(self.failed)} "
                f"in {format_seconds(self.seconds)}")
        return text + (" (cancelled: the other images were left as they were)." if self.cancelled else ".")

    def lines(self) -> list[str]:
        """The headline, then one line per failed file (and why)."""
        out = [self.headline]
        out += [f"  failed: {rel(r.path, self.folder)}: {r.reason}" for r in self.failed]
        return out

    def to_dict(self) -> dict:
        d = asdict(self)
        d["folder"] = str(self.folder)
        d["results"] = [{**asdict(r), "path": str(r.path)} for r in self.results]
        d.update(captioned=len(self.captioned), skipped=len(self.skipped), failed=len(self.failed))
        return d


def format_seconds(s: float) -> str:
    s = max(0, round(s))
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def open_rgb(path: Path) -> Image.Image:
    """The image as the models see it: EXIF-rotated, RGB, transparency on white."""
    with open_image(path) as im:
        return to_rgb(ImageOps.exif_transpose(im)).convert("RGB")


def new_text(caption: str, old: str, existing: str, prefix: str) -> str:
    """The caption file's new text; "append" adds only the parts (tags) the old caption lacks."""
    caption = caption.strip().strip(",").strip()
    if existing == "append" and old:
        have = {t.lower() for t in split_tags(old)}
        caption = join_tags([*split_tags(old), *(t for t in split_tags(caption) if t.lower() not in have)])
    return add_prefix(caption, prefix)


def _cancelled(cancel) -> bool:
    if cancel is None:
        return False
    return cancel.is_set() if isinstance(cancel, threading.Event) else bool(cancel())


def _reason(e: Exception) -> str:
    text = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
    if "out of memory" in text.lower():
        return "the GPU ran out of memory: lower the batch size, or use the CPU (--device cpu)"
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def caption_folder(folder: str | Path, captioner: Captioner, *, prefix: str = "", existing: str = "skip",
                   caption_ext: str = ".txt", batch_size: int | None = None,
                   progress: Callable[[Progress], None] | None = None,
                   cancel: threading.Event | Callable[[], bool] | None = None) -> Summary:
    """Caption the images below ``folder`` (sub-folders included) and write the caption files."""
    if existing not in EXISTING:
        raise CaptionError(f"existing must be one of {', '.join(EXISTING)}, not '{existing}'.")
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise CaptionError(f"Folder not found: {folder}")
    started = time.monotonic()
    summary = Summary(folder, captioner.name, captioner.model)
    images = list_images(folder, caption_ext)
    todo: list[tuple[Path, str]] = []
    for img in images:
        old = load_caption(img, caption_ext)
        if img.with_suffix(caption_ext).is_file() and existing == "skip":
            summary.results.append(FileResult(img, "skipped", old, "already has a caption"))
        else:
            todo.append((img, old))
    total = len(todo)
    report = progress or (lambda p: None)
    if not todo:
        summary.seconds = time.monotonic() - started
        report(Progress(0, 0, "nothing to caption" if images else f"no images in {folder}"))
        return summary

    batch_size = max(1, int(batch_size or captioner.batch_size))
    report(Progress(0, total, f"loading {captioner.title}"))
    try:
        if not captioner.loaded:
            captioner.load(lambda msg: report(Progress(0, total, msg)))
        t0, done = time.monotonic(), 0
        for start in range(0, total, batch_size):
            if _cancelled(cancel):
                summary.cancelled = True
                break
            batch = todo[start:start + batch_size]
            summary.results += _caption_batch(captioner, batch, existing, prefix, caption_ext)
            done += len(batch)
            eta = (time.monotonic() - t0) / done * (total - done)
            last = summary.results[-1]
            report(Progress(done, total, f"{last.path.name}: {last.caption or last.reason}", eta))
    finally:
        captioner.unload()
        summary.seconds = time.monotonic() - started
    return summary


def _caption_batch(captioner: Captioner, batch: list[tuple[Path, str]], existing: str, prefix: str,
                   caption_ext: str) -> list[FileResult]:
    results: dict[Path, FileResult] = {}
    opened: list[tuple[Path, str, Image.Image]] = []
    for path, old in batch:
        try:
            opened.append((path, old, open_rgb(path)))
        except Image.UnidentifiedImageError:
            results[path] = FileResult(path, "failed",
                                       reason="cannot be read as an image (not an image file, or a damaged one)")
        except Image.DecompressionBombError:
            results[path] = FileResult(path, "failed", reason="is too large to open safely (over "
                                       f"{MAX_PIXELS // 1_000_000} million pixels, or a damaged header); "
                                       "scale it down in an image editor")
        except Exception as e:
            why = _reason(e).replace(f"'{path}'", "").replace(str(path), path.name)
            results[path] = FileResult(path, "failed", reason=f"cannot be read as an image ({why})")
    try:
        captions = captioner.caption([im for _, _, im in opened]) if opened else []
    except CaptionError:
        raise
    except Exception as e:  # find the image that fails: one at a time
        if len(opened) == 1:
            captions = [e]
        else:
            captions = []
            for _, _, im in opened:
                try:
                    captions.append(captioner.caption([im])[0])
                except CaptionError:
                    raise
                except Exception as e1:
                    captions.append(e1)
    for (path, old, _), cap in zip(opened, captions):
        if isinstance(cap, Exception):
            results[path] = FileResult(path, "failed", reason=f"captioning failed ({_reason(cap)})")
        elif not cap.strip():
            hint = f" ({captioner.empty_hint})" if captioner.empty_hint else ""
            results[path] = FileResult(path, "failed", reason=f"the model gave no caption{hint}")
        else:
            text = new_text(cap, old, existing, prefix)
            try:
                save_caption(path, text, caption_ext)
                results[path] = FileResult(path, "captioned", " ".join(text.split()))
            except OSError as e:
                results[path] = FileResult(path, "failed", reason=f"could not write {path.with_suffix(caption_ext)} "
                                                                  f"({_reason(e)})")
    return [results[p] for p, _ in batch]
