"""Training images in kohya's folder convention, their captions, and the batches of each epoch."""
from __future__ import annotations

import math
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageOps

from .buckets import BucketChooser, Placement

if TYPE_CHECKING:
    from .masks import MaskSource

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
FOLDER_RE = re.compile(r"^(\d+)_(.+)$")


class DatasetError(ValueError):
    """A problem with the training images, phrased for the user."""


@dataclass
class ImageItem:
    path: Path
    caption: str
    folder: str
    repeats: int
    is_reg: bool
    size: tuple[int, int]  # (width, height) after EXIF rotation
    placement: Placement
    warnings: list[str] = field(default_factory=list)
    mask: MaskSource | None = None  # masked_loss: where its loss mask comes from (core/data/masks.py)


def read_caption(path: Path) -> tuple[str, str | None]:
    """Read a caption file as UTF-8; fall back to legacy encodings with a warning."""
    raw = path.read_bytes()
    for enc in ("utf-8-sig", "cp1252", "latin-1"):
        try:
            text = raw.decode(enc)
        except UnicodeDecodeError:
            continue
        note = None if enc == "utf-8-sig" else f"{path.name}: caption is not UTF-8, read it as {enc}"
        return " ".join(text.split()), note
    raise AssertionError("latin-1 decodes everything")


def add_trigger(caption: str, trigger: str) -> str:
    """Prepend the trigger word unless the caption already contains it as a word."""
    if not trigger:
        return caption
    if re.search(rf"(^|[\s,]){re.escape(trigger)}($|[\s,])", caption, flags=re.IGNORECASE):
        return caption
    return f"{trigger}, {caption}" if caption else trigger


def concept_folders(root: Path, what: str) -> list[tuple[Path, int, str]]:
    """The '<repeats>_<name>' sub-folders of `root`, with a clear message for the common mistakes."""
    if not root.is_dir():
        raise DatasetError(f"{what} folder not found: {root}")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS]
    good, bad = [], []
    for d in subdirs:
        m = FOLDER_RE.match(d.name)
        (good if m and int(m.group(1)) > 0 else bad).append(d)
    if bad and not good or (loose and not good):
        example = (bad[0].name if bad else "my_concept")
        raise DatasetError(
            f"{what} folder {root} needs sub-folders named '<repeats>_<name>', e.g. '10_{example}': the number is how "
            f"many times each image is used per epoch. Found "
            + (f"images directly in {root}" if loose else f"folders without that prefix: {', '.join(p.name for p in bad)}")
            + f". Move the images into {root / ('10_' + example)}.")
    out = []
    for d in good:
        m = FOLDER_RE.match(d.name)
        out.append((d, int(m.group(1)), m.group(2).strip()))
    return out


def scan_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
    except Exception as e:
        raise DatasetError(f"{path}: cannot be read as an image ({type(e).__name__}: {e}). Remove or replace it.") from None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def load_items(root: Path, *, is_reg: bool, trigger: str, caption_ext: str, chooser: BucketChooser) -> list[ImageItem]:
    items: list[ImageItem] = []
    what = "reg_data_dir" if is_reg else "train_data_dir"
    for folder, repeats, name in concept_folders(root, what):
        images = scan_images(folder)
        if not images:
            continue
        for img in images:
            warnings = []
            cap_file = img.with_suffix(caption_ext)
            if cap_file.is_file():
                caption, note = read_caption(cap_file)
                if note:
                    warnings.append(note)
            else:
                caption = name  # kohya: the folder's class tokens are the caption
            if not is_reg:
                caption = add_trigger(caption, trigger)
            size = image_size(img)
            items.append(ImageItem(img, caption, folder.name, repeats, is_reg, size, chooser.choose(size), warnings))
    return items


def load_image(item: ImageItem, flip: bool = False):
    """The training tensor for an item: EXIF-rotated, RGB, resized, cropped, in [-1, 1], CHW."""
    import numpy as np
    import torch

    with Image.open(item.path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA", "P", "PA"):
            im = im.convert("RGBA")
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, im)
        im = im.convert("RGB")
        pl = item.placement
        im = im.resize(pl.resized, Image.Resampling.LANCZOS)
        left, top = pl.crop_left_top
        im = im.crop((left, top, left + pl.bucket[0], top + pl.bucket[1]))
        if flip:
            im = ImageOps.mirror(im)
        arr = np.asarray(im, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def sdxl_meta(item: ImageItem) -> dict:
    """Size/crop conditioning in the original image's pixels, (height, width) order like diffusers."""
    w, h = item.size
    pl = item.placement
    scale = pl.resized[0] / w
    left, top = pl.crop_left_top
    return {"original_size": (h, w), "crop_top_left": (round(top / scale), round(left / scale)),
            "target_size": (pl.bucket[1], pl.bucket[0])}


@dataclass
class Sample:
    """One use of one image in an epoch."""

    item_index: int
    flip: bool


class TrainingSet:
    """The images plus the deterministic batch order of every epoch (so resume replays it exactly)."""

    def __init__(self, items: list[ImageItem], reg_items: list[ImageItem], batch_size: int, seed: int, flip_aug: bool,
                 val_items: list[ImageItem] | None = None):
        if not items:
            raise DatasetError("No training images found. Put .png/.jpg/.webp images into the '<repeats>_<name>' folders.")
        val_items = val_items or []
        self.items = items + reg_items + val_items  # validation images last: in no epoch's batches
        self.n_train = len(items)
        self.n_reg = len(reg_items)
        self.val_indices = list(range(len(items) + len(reg_items), len(self.items)))
        self.batch_size = batch_size
        self.seed = seed
        self.flip_aug = flip_aug
        uses = [i for i, it in enumerate(items) for _ in range(it.repeats)]
        reg_uses = [len(items) + i for i, it in enumerate(reg_items) for _ in range(it.repeats)]
        if reg_uses:  # kohya: as many regularization uses as training uses per epoch
            reg_uses = (reg_uses * math.ceil(len(uses) / len(reg_uses)))[: len(uses)]
        self.uses = uses + reg_uses

    def epoch_batches(self, epoch: int) -> list[list[Sample]]:
        rng = random.Random(self.seed * 100003 + epoch)
        by_bucket: dict[tuple[int, int], list[int]] = {}
        for idx in self.uses:
            by_bucket.setdefault(self.items[idx].placement.bucket, []).append(idx)
        batches = []
        for bucket in sorted(by_bucket):
            idxs = by_bucket[bucket]
            rng.shuffle(idxs)
            for i in range(0, len(idxs), self.batch_size):
                batches.append([Sample(j, self.flip_aug and rng.random() < 0.5) for j in idxs[i:i + self.batch_size]])
        rng.shuffle(batches)
        return batches

    def bucket_counts(self) -> list[dict]:
        counts = Counter(self.items[i].placement.bucket for i in self.uses)
        return [{"width": w, "height": h, "count": c} for (w, h), c in sorted(counts.items())]

    def folder_stats(self) -> dict[str, dict]:
        stats: dict[str, dict] = {}
        for it in self.items[: self.n_train]:
            s = stats.setdefault(it.folder, {"n_repeats": it.repeats, "img_count": 0})
            s["img_count"] += 1
        return stats

    def tag_frequency(self) -> dict[str, dict[str, int]]:
        freq: dict[str, Counter] = {}
        for it in self.items[: self.n_train]:
            c = freq.setdefault(it.folder, Counter())
            for tag in (t.strip() for t in it.caption.split(",")):
                if tag:
                    c[tag] += 1
        return {k: dict(v) for k, v in freq.items()}


def process_caption(caption: str, rng: random.Random, *, shuffle: bool, keep_tokens: int, dropout: float) -> str:
    """Caption as used in one step: optional dropout, and tag shuffle keeping the first `keep_tokens` tags."""
    if dropout > 0 and rng.random() < dropout:
        return ""
    if shuffle:
        tags = [t.strip() for t in caption.split(",") if t.strip()]
        head, tail = tags[:keep_tokens], tags[keep_tokens:]
        rng.shuffle(tail)
        caption = ", ".join(head + tail)
    return caption
