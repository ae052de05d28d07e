"""Copy a folder of images into kohya's training layout (``OUT/<repeats>_<name>/``), fixing what can be fixed.

The originals are only read. Each usable image is copied: byte for byte when nothing needs changing,
otherwise re-encoded as PNG after these steps: EXIF rotation applied, colour mode converted to RGB
(CMYK, palette, 16-bit; transparent parts filled with the background colour), then optionally cropped
and resized. Captions are copied as UTF-8. Every file is written atomically.

Resizing (``resolution`` R) and cropping (``crop``):

- ``none``: the aspect ratio is kept; images larger than R x R pixels in area are scaled down to about that
  area (the trainer's aspect-ratio buckets do the rest). Smaller images are not scaled up.
- ``center``: the largest centred square is cut out, then scaled to R x R.
- ``focus``: the largest square is cut out where the picture has the most detail (the window along the long
  side with the highest edge energy, i.e. the most brightness changes between neighbouring pixels; a flat
  background has little), then scaled to R x R. With equal detail everywhere it is the centre square.

Without a resolution, ``center`` and ``focus`` only cut the square and nothing is resized.
"""
from __future__ import annotations

import io
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageColor, ImageOps

from core.config.toml_io import atomic_write_bytes, atomic_write_text
from core.data.dataset import IMAGE_EXTS

from .captions import save_caption
from .inspect import SCAN_EXTS, SIXTEEN_BIT, FORMAT_EXTS, ImageFile, Progress, Report, check_folder, open_image

CROPS = ("none", "center", "focus")
REPORT_NAME = "prepare_report.txt"


class PrepareError(ValueError):
    """Bad input for prepare, phrased for the user."""


@dataclass
class PrepareResult:
    report: Report
    train_data_dir: Path  # what to give the trainer as train_data_dir
    folder: Path  # the concept folder <repeats>_<name> inside it
    written: list[Path] = field(default_factory=list)  # the image files written

    def text(self) -> str:
        return (f"{self.report.text()}\n\nWrote {len(self.written)} images to {self.folder}\n"
                f"Use this as the training images folder (train_data_dir): {self.train_data_dir}")


def concept_folder_name(name: str, repeats: int) -> str:
    name = " ".join(str(name).split())
    if not name or any(c in name for c in '/\\:*?"<>|') or name in (".", ".."):
        raise PrepareError(f"The name {name!r} cannot be a folder name: use letters, digits, spaces, _ or -.")
    if int(repeats) < 1:
        raise PrepareError("Repeats must be 1 or more (how often each image is used per epoch).")
    return f"{int(repeats)}_{name}"


def to_rgb(im: Image.Image, background: str = "white") -> Image.Image:
    """An RGB (or grayscale L) image of any mode: alpha composited onto ``background``, 16-bit scaled to 8."""
    if im.mode in SIXTEEN_BIT:
        arr = np.asarray(im, dtype=np.float64)
        if arr.max() > 255:
            arr = arr / 257.0
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info or im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, ImageColor.getrgb(background)[:3] + (255,))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return im if im.mode in ("RGB", "L") else im.convert("RGB")


def focus_offset(im: Image.Image, side: int) -> tuple[int, int]:
    """(left, top) of the ``side`` x ``side`` window with the most edge energy (ties: nearest the centre)."""
    w, h = im.size
    if w == h:
        return 0, 0
    small = im.convert("L")
    scale = min(1.0, 256 / max(w, h))
    small = small.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)
    px = np.asarray(small, dtype=np.float64)
    energy = np.zeros_like(px)
    energy[:, 1:] += np.abs(np.diff(px, axis=1))
    energy[1:, :] += np.abs(np.diff(px, axis=0))
    profile = energy.sum(axis=0 if w > h else 1)  # energy per column (wide image) or per row (tall image)
    win = max(1, min(len(profile), round(side * scale)))
    sums = np.convolve(profile, np.ones(win), mode="valid")
    centre = (len(sums) - 1) / 2
    best = max(range(len(sums)), key=lambda i: (round(sums[i], 6), -abs(i - centre)))
    room = (w if w > h else h) - side
    offset = room // 2 if abs(best - centre) < 1 else min(round(best / scale), room)
    return (offset, 0) if w > h else (0, offset)


def crop_and_resize(im: Image.Image, resolution: int | None, crop: str) -> Image.Image:
    if crop not in CROPS:
        raise PrepareError(f"crop must be one of {', '.join(CROPS)}, not {crop!r}")
    w, h = im.size
    if crop != "none":
        side = min(w, h)
        left, top = focus_offset(im, side) if crop == "focus" else ((w - side) // 2, (h - side) // 2)
        im = im.crop((left, top, left + side, top + side))
        if resolution and side != resolution:
            im = im.resize((resolution, resolution), Image.Resampling.LANCZOS)
        return im
    if resolution and w * h > resolution * resolution:
        scale = (resolution * resolution / (w * h)) ** 0.5
        im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
    return im


def _changes_pixels(info: ImageFile, resolution: int | None, crop: str) -> bool:
    w, h = info.size
    return (info.needs_convert or info.orientation != 1 or info.path.suffix.lower() not in IMAGE_EXTS
            or crop != "none" or bool(resolution and w * h > resolution * resolution))


def prepared_bytes(info: ImageFile, resolution: int | None, crop: str, background: str) -> tuple[bytes, str]:
    """The bytes of the prepared copy and its extension: the original bytes when nothing changes."""
    if not _changes_pixels(info, resolution, crop):
        ext = info.path.suffix.lower()
        if info.format in FORMAT_EXTS and ext not in FORMAT_EXTS[info.format]:
            ext = sorted(FORMAT_EXTS[info.format])[0] if info.format != "JPEG" else ".jpg"
        return info.path.read_bytes(), ext
    with open_image(info.path) as im:
        out = crop_and_resize(to_rgb(ImageOps.exif_transpose(im), background), resolution, crop)
    buf = io.BytesIO()
    out.save(buf, format="PNG", optimize=False)
    return buf.getvalue(), ".png"


def _unique_name(stem: str, ext: str, taken: set[str]) -> str:
    """``stem + ext``, the stem numbered when already used (an image and its caption share the stem)."""
    unique, n = stem, 1
    while unique.lower() in taken:
        n += 1
        unique = f"{stem}_{n}"
    taken.add(unique.lower())
    return unique + ext


def _clear_folder(folder: Path, caption_ext: str, overwrite: bool) -> None:
    old = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SCAN_EXTS | {caption_ext}] \
        if folder.is_dir() else []
    if old and not overwrite:
        raise PrepareError(f"{folder} already holds {len(old)} images or captions. Choose another output folder, "
                           f"or allow replacing them (--overwrite).")
    for p in old:
        p.unlink()


def prepare(src: str | Path, out: str | Path, *, name: str, repeats: int = 10, resolution: int | None = None,
            crop: str = "none", background: str = "white", keep_small: bool = False, caption_ext: str = ".txt",
            overwrite: bool = False, progress: Progress | None = None) -> PrepareResult:
    """Check ``src`` and write the usable images (and captions) into ``out/<repeats>_<name>/``."""
    src, out = Path(src).expanduser().resolve(), Path(out).expanduser().resolve()
    folder = out / concept_folder_name(name, repeats)
    if crop not in CROPS:
        raise PrepareError(f"crop must be one of {', '.join(CROPS)}, not {crop!r}")
    try:
        ImageColor.getrgb(background)
    except ValueError:
        raise PrepareError(f"Unknown background colour {background!r}: use a name (white) or #rrggbb.") from None
    if folder == src or folder in src.parents:
        raise PrepareError(f"The source folder {src} is the output folder {folder} (or inside it): choose another "
                           "output folder, the originals are never changed.")
    if not src.is_dir():
        raise PrepareError(f"Folder not found: {src}")
    report = check_folder(src, resolution=resolution or 512, keep_small=keep_small, caption_ext=caption_ext,
                          background=background, skip=folder, progress=progress)
    usable = report.usable
    if not usable:
        raise PrepareError(f"No usable images in {src}.\n{report.text()}")
    _clear_folder(folder, caption_ext, overwrite)
    folder.mkdir(parents=True, exist_ok=True)
    result = PrepareResult(report, out, folder)
    taken: set[str] = set()
    for i, info in enumerate(usable):
        if progress:
            progress(i, len(usable), f"Writing {info.rel}")
        data, ext = prepared_bytes(info, resolution, crop, background)
        target = folder / _unique_name(Path(info.rel).stem, ext, taken)
        atomic_write_bytes(target, data)
        if info.caption is not None:
            save_caption(target, info.caption, caption_ext)
        result.written.append(target)
    if progress:
        progress(len(usable), len(usable), "Done")
    atomic_write_text(out / REPORT_NAME, result.text() + "\n")
    return result


def copy_uploads(paths: list[str | Path], dest: str | Path) -> Path:
    """Copy uploaded files (images and captions) into ``dest`` under their own names; the folder."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for p in map(Path, paths):
        shutil.copyfile(p, dest / p.name)
    return dest
