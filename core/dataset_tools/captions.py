"""Caption files (``image.txt`` next to ``image.png``, UTF-8): read, write, bulk edits, tag counts.

Captions are read like the trainer reads them (``core.data.dataset.read_caption``: UTF-8, legacy
encodings as a fallback, white space folded) and always written as UTF-8. Tags are the comma-separated
parts of a caption.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from core.config.toml_io import atomic_write_text
from core.data.dataset import add_trigger, read_caption

from .inspect import Progress, scan

__all__ = ["add_trigger", "add_prefix", "add_suffix", "replace_text", "remove_tags", "tag_counts", "bulk_edit",
           "list_images", "load_caption", "save_caption", "split_tags", "join_tags", "BulkResult", "OPS"]


def split_tags(caption: str) -> list[str]:
    return [t.strip() for t in caption.split(",") if t.strip()]


def join_tags(tags: Iterable[str]) -> str:
    return ", ".join(t for t in tags if t)


def tidy(caption: str) -> str:
    """Fold white space and drop empty tags left by an edit (", ," and leading or trailing commas)."""
    caption = " ".join(caption.split())
    return join_tags(split_tags(caption)) if "," in caption else caption


def add_prefix(caption: str, prefix: str) -> str:
    """``prefix, caption`` unless the caption already starts with the prefix."""
    prefix = prefix.strip().strip(",").strip()
    if not prefix or caption.lower().startswith(prefix.lower()):
        return caption
    return f"{prefix}, {caption}" if caption else prefix


def add_suffix(caption: str, suffix: str) -> str:
    """``caption, suffix`` unless the caption already ends with the suffix."""
    suffix = suffix.strip().strip(",").strip()
    if not suffix or caption.lower().endswith(suffix.lower()):
        return caption
    return f"{caption}, {suffix}" if caption else suffix


def replace_text(caption: str, find: str, replacement: str) -> str:
    """Replace every occurrence of ``find`` (exact, case-sensitive text)."""
    return tidy(caption.replace(find, replacement)) if find else caption


def remove_tags(caption: str, tags: str | Iterable[str]) -> str:
    """Drop the tags equal to any of ``tags`` (ignoring case); ``tags`` may be one comma-separated string."""
    drop = {t.lower() for t in (split_tags(tags) if isinstance(tags, str) else tags)}
    return join_tags(t for t in split_tags(caption) if t.lower() not in drop)


def tag_counts(captions: Iterable[str]) -> list[tuple[str, int]]:
    """How many captions hold each tag, most frequent first."""
    counts = Counter(tag for c in captions for tag in dict.fromkeys(split_tags(c)))
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0].lower()))


# The bulk operations by name: each takes (caption, value, value2).
OPS: dict[str, Callable[[str, str, str], str]] = {
    "trigger": lambda c, v, _: add_trigger(c, v.strip()),
    "prefix": lambda c, v, _: add_prefix(c, v),
    "suffix": lambda c, v, _: add_suffix(c, v),
    "replace": lambda c, v, r: replace_text(c, v, r),
    "remove": lambda c, v, _: remove_tags(c, v),
}


def list_images(folder: str | Path, caption_ext: str = ".txt") -> list[Path]:
    """The images below ``folder`` (recursively, sorted, hidden files left out)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"Folder not found: {folder}")
    return scan(folder, caption_ext)[0]


def load_caption(image: Path, caption_ext: str = ".txt") -> str:
    """The image's caption, "" without a caption file."""
    cap = Path(image).with_suffix(caption_ext)
    return read_caption(cap)[0] if cap.is_file() else ""


def save_caption(image: Path, text: str, caption_ext: str = ".txt") -> Path:
    """Write the caption (white space folded) next to the image, as UTF-8, atomically."""
    cap = Path(image).with_suffix(caption_ext)
    atomic_write_text(cap, " ".join(text.split()))
    return cap


@dataclass
class BulkResult:
    images: int = 0
    changed: list[Path] = field(default_factory=list)  # caption files written (or, dry run, to be written)

    def text(self, op: str) -> str:
        return f"{op}: changed {len(self.changed)} of {self.images} captions."


def bulk_edit(folder: str | Path, op: str, value: str, value2: str = "", *, caption_ext: str = ".txt",
              dry_run: bool = False, progress: Progress | None = None) -> BulkResult:
    """Apply one of ``OPS`` to every caption below ``folder``; only changed captions are written.

    An image without a caption file counts as having the caption ""; a file is created for it only when the
    edit gives it a caption (adding a trigger word, prefix or suffix).
    """
    if op not in OPS:
        raise ValueError(f"unknown caption operation {op!r}: one of {', '.join(OPS)}")
    images = list_images(folder, caption_ext)
    result = BulkResult(len(images))
    for i, image in enumerate(images):
        if progress:
            progress(i, len(images), f"Editing {image.name}")
        cap = image.with_suffix(caption_ext)
        old = read_caption(cap)[0] if cap.is_file() else None
        new = OPS[op](old or "", value, value2)
        if new != (old or ""):
            result.changed.append(cap)
            if not dry_run:
                save_caption(image, new, caption_ext)
    return result


def folder_tag_counts(folder: str | Path, caption_ext: str = ".txt") -> list[tuple[str, int]]:
    return tag_counts(load_caption(p, caption_ext) for p in list_images(folder, caption_ext))
