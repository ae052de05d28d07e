"""Loss masks (sd-scripts' masked_loss): one mask per training image, from a mask folder or the image's alpha.

A mask is read as sd-scripts reads it: a mask image's red channel (grayscale: its value), or the alpha channel
with `alpha_mask`, 0..255 -> 0..1. It goes through its image's bucket resize, crop and flip, then is shrunk to the
latent size by area averaging (sd-scripts' apply_masked_loss: `interpolate(mode="area")`) and multiplies the
per-element loss before the mean. Regularization images are always learned whole (their mask is all ones).

Checked before the model loads, with the file named: a missing mask file (and where it was looked for), a mask whose
aspect ratio differs from its image's (the same aspect ratio at another size is resized, with a warning), an
all-black mask or fully transparent image, alpha_mask on images without transparency (learned whole, with a
warning; refused when no image has any).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image, ImageOps

from .cache_file import save_tensors
from .dataset import DatasetError, ImageItem

MASK_VERSION = "1"
MASK_EXTS = (".png", ".webp", ".jpg", ".jpeg", ".bmp")  # the first one found wins
SHOWN = 5  # files named in one message


@dataclass(frozen=True)
class MaskSource:
    kind: str  # "alpha" (the image's own alpha channel) or "file" (a mask image)
    path: Path  # the file the mask is read from (the image itself for "alpha")
    size: tuple[int, int]  # (width, height) of the mask as stored, after EXIF rotation


def _listing(lines: list[str]) -> str:
    more = f"; and {len(lines) - SHOWN} more" if len(lines) > SHOWN else ""
    return "; ".join(lines[:SHOWN]) + more


def has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info


def _mask_channel(im: Image.Image, kind: str) -> Image.Image:
    """The mask as an 'L' image: the alpha channel, or the red channel of a mask image (grayscale: its value)."""
    im = ImageOps.exif_transpose(im)
    if kind == "alpha":
        return im.convert("RGBA").getchannel("A")
    return im.convert("RGB").getchannel("R")


def mask_candidates(root: Path, folder: str, image: Path) -> list[Path]:
    """Where the mask of `image` (in concept folder `folder`) may be: <root>/<folder>/<stem>.<ext>, then
    <root>/<stem>.<ext>."""
    return [d / (image.stem + ext) for d in (root / folder, root) for ext in MASK_EXTS]


def find_mask_file(root: Path, folder: str, image: Path) -> Path | None:
    return next((p for p in mask_candidates(root, folder, image) if p.is_file()), None)


def image_has_alpha(path: Path) -> bool:
    """From the file's header only (cheap enough for a live preview)."""
    try:
        with Image.open(path) as im:
            return has_alpha(im)
    except Exception:  # noqa: BLE001 - an unreadable file is reported elsewhere
        return False


def _same_aspect(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return abs(a[0] * b[1] - a[1] * b[0]) <= 0.01 * max(a[0] * b[1], a[1] * b[0])


def attach_masks(items: list[ImageItem], source: str, mask_dir: str = "") -> list[str]:
    """Give every training item its MaskSource (source "alpha" or "folder"); returns warnings, raises DatasetError
    with every problem file named."""
    missing, bad_size, black, unreadable, resized, opaque = [], [], [], [], [], []
    root = Path(mask_dir) if source == "folder" else None
    if root is not None and not root.is_dir():
        raise DatasetError(f"conditioning_data_dir {root} is not a folder. Set it to the folder of your mask images "
                           "(one per training image, same file name), or turn alpha_mask on to use transparency.")
    for it in items:
        if root is not None:
            path = find_mask_file(root, it.folder, it.path)
            if path is None:
                missing.append(f"{it.path} (expected {root / it.folder / it.path.stem}.png or "
                               f"{root / it.path.stem}.png)")
                continue
            if path.resolve() == it.path.resolve():
                raise DatasetError(f"conditioning_data_dir {root} holds the training images themselves ({path}): "
                                   "it must be a separate folder of black-and-white mask images.")
        else:
            path = it.path
        try:
            with Image.open(path) as im:
                if source == "alpha" and not has_alpha(im):
                    opaque.append(it.path)
                    continue
                ch = _mask_channel(im, "alpha" if source == "alpha" else "file")
        except Exception as e:  # noqa: BLE001 - any unreadable file, said plainly
            unreadable.append(f"{path} ({type(e).__name__}: {e})")
            continue
        if ch.getextrema()[1] == 0:
            black.append(str(path))
            continue
        if ch.size != it.size:
            line = f"{path} is {ch.size[0]}x{ch.size[1]}, its image {it.path.name} {it.size[0]}x{it.size[1]}"
            (resized if _same_aspect(ch.size, it.size) else bad_size).append(line)
        it.mask = MaskSource("alpha" if source == "alpha" else "file", path, ch.size)
    problems = []
    if missing:
        problems.append(f"masked_loss: no mask for {len(missing)} training image(s) in conditioning_data_dir "
                        f"{root}: {_listing(missing)}. Give every image a mask with the same file name (white = "
                        "learned, black = left out), or move the images without one out of train_data_dir.")
    if unreadable:
        problems.append(f"masked_loss: {len(unreadable)} mask(s) cannot be read: {_listing(unreadable)}.")
    if bad_size:
        problems.append(f"masked_loss: {len(bad_size)} mask(s) do not have the shape of their image: "
                        f"{_listing(bad_size)}. A mask must cover its image exactly (the same size, or the same "
                        "aspect ratio, then it is resized).")
    if black:
        what = "fully transparent" if source == "alpha" else "all black"
        problems.append(f"masked_loss: {len(black)} {'image(s) are' if source == 'alpha' else 'mask(s) are'} {what}, "
                        f"so nothing of them would be learned: {_listing(black)}. White (opaque) marks what is "
                        "learned: check that the mask is not inverted, or leave the image out.")
    if source == "alpha" and opaque and len(opaque) == len(items):
        problems.append(f"alpha_mask: none of the {len(items)} training images has an alpha channel (transparency), "
                        "so there is nothing to mask. Save the images as PNG or WebP with the background made "
                        "transparent, or use mask images in conditioning_data_dir instead.")
    if problems:
        raise DatasetError(" ".join(problems))
    warnings = []
    if opaque:
        warnings.append(f"alpha_mask: {len(opaque)} of {len(items)} training image(s) have no alpha channel and are "
                        f"learned whole: {_listing([p.name for p in opaque])}.")
    if resized:
        warnings.append(f"masked_loss: {len(resized)} mask(s) differ in size from their image and are resized to "
                        f"it: {_listing(resized)}.")
    return warnings


# ----------------------------------------------------------------- the mask tensors
def load_mask(item: ImageItem, flip: bool = False):
    """The item's mask at its bucket size, (H, W) float32 in [0, 1]: resized, cropped and flipped as its image."""
    import numpy as np
    import torch

    src = item.mask
    with Image.open(src.path) as im:
        ch = _mask_channel(im, src.kind)
    if ch.size != item.size:
        ch = ch.resize(item.size, Image.Resampling.LANCZOS)
    pl = item.placement
    ch = ch.resize(pl.resized, Image.Resampling.LANCZOS)  # the same resampling as load_image
    left, top = pl.crop_left_top
    ch = ch.crop((left, top, left + pl.bucket[0], top + pl.bucket[1]))
    if flip:
        ch = ImageOps.mirror(ch)
    return torch.from_numpy(np.asarray(ch, dtype=np.float32) / 255.0)


def latent_mask(item: ImageItem, flip: bool, hw: tuple[int, int]):
    """The mask at latent size (1, h, w), area-averaged as sd-scripts' apply_masked_loss; all ones without a mask."""
    import torch

    if item.mask is None:
        return torch.ones(1, *hw)
    m = load_mask(item, flip)[None, None]
    return torch.nn.functional.interpolate(m, size=tuple(hw), mode="area")[0]


def mask_key(item: ImageItem, flip: bool, hw: tuple[int, int]) -> str:
    """Covers the mask's content (the mask file, or the image for alpha), its placement, flip and latent size."""
    from .latents import file_digest

    src, pl = item.mask, item.placement
    text = (f"{MASK_VERSION}|{src.kind}|{file_digest(src.path)}|{src.size}|{item.size}|{pl.bucket}|{pl.resized}|"
            f"{pl.crop_left_top}|{flip}|{tuple(hw)}")
    return hashlib.sha1(text.encode()).hexdigest()


class MaskStore:
    """The latent-size mask of every (image, flip) a run uses: computed once, kept in memory and, with the on-disk
    latent cache, next to the latents as mask_<key>.safetensors."""

    def __init__(self, items: list[ImageItem], disk_dir: Path | None = None):
        self.items = items
        self.disk_dir = disk_dir
        self.mem: dict[tuple[int, bool], object] = {}
        self.hits = 0
        self.computed = 0
        self.empty: set[int] = set()  # items whose mask is all zero inside their bucket crop

    def get(self, idx: int, flip: bool, hw: tuple[int, int]):
        hw = tuple(int(x) for x in hw)
        m = self.mem.get((idx, flip))
        if m is not None and tuple(m.shape[-2:]) == hw:
            return m
        item = self.items[idx]
        if item.mask is None:
            m = latent_mask(item, flip, hw)
        else:
            m = self._load_or_make(item, flip, hw)
            if not bool(m.any()):
                self.empty.add(idx)
        self.mem[(idx, flip)] = m
        return m

    def _load_or_make(self, item: ImageItem, flip: bool, hw: tuple[int, int]):
        from safetensors.torch import load_file

        path = self.disk_dir / f"mask_{mask_key(item, flip, hw)}.safetensors" if self.disk_dir else None
        if path is not None and path.is_file():
            self.hits += 1
            return load_file(path)["mask"]
        m = latent_mask(item, flip, hw).contiguous()
        self.computed += 1
        if path is not None:
            save_tensors({"mask": m}, path)
        return m

    def build(self, needed: list[tuple[int, bool]], hw_of: Callable[[int, bool], tuple[int, int]]) -> None:
        for idx, flip in needed:
            self.get(idx, flip, hw_of(idx, flip))

    def batch(self, samples, hw: tuple[int, int]):
        """(B, 1, h, w) masks of one batch of dataset Samples."""
        import torch

        return torch.stack([self.get(s.item_index, s.flip, hw) for s in samples])

    def empty_note(self) -> str | None:
        if not self.empty:
            return None
        names = [self.items[i].path.name for i in sorted(self.empty)]
        return (f"masked_loss: {len(names)} image(s) have nothing left to learn inside their bucket crop (the white "
                f"part of the mask is cut off): {_listing(names)}.")
