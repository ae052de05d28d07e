"""Check every file of an image folder and say, per file, what is wrong and what preparing it does about it.

``check_folder`` never writes anything. It reads each image completely (so truncated and damaged files are
found), looks at its colour mode, EXIF rotation and size, its caption file, and compares all images with
each other (exact copies by SHA-256, near copies by perceptual hash).
"""
from __future__ import annotations

import hashlib
import json
import re
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image, ImageOps

from core.data.dataset import IMAGE_EXTS, read_caption

from . import phash

# What we read (the trainer reads IMAGE_EXTS; the others are converted to PNG when preparing).
SCAN_EXTS = IMAGE_EXTS | {".gif", ".tif", ".tiff"}
DEFAULT_RESOLUTION = 512
MAX_PIXELS = 89_478_485  # Pillow's own limit for "decompression bomb" images (about 9459 x 9459)
SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}
ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
FORMAT_EXTS = {"JPEG": {".jpg", ".jpeg"}, "PNG": {".png"}, "WEBP": {".webp"}, "BMP": {".bmp"}, "GIF": {".gif"},
               "TIFF": {".tif", ".tiff"}}

LEFT_OUT = "Left out of the prepared copy"
Progress = Callable[[int, int, str], None]


@dataclass
class Problem:
    file: str  # path relative to the checked folder
    kind: str  # empty, not_an_image, unreadable, truncated, corrupt, too_large, too_small, duplicate,
    #           near_duplicate, cmyk, 16bit, alpha, palette, unusual_mode, exif_rotated, wrong_extension,
    #           no_caption, empty_caption, caption_encoding, orphan_caption
    message: str
    action: str
    severity: str = "warning"  # "error": the file is left out; "warning": fixed or kept

    def line(self) -> str:
        return f"{self.file}: {self.message}. -> {self.action}."


@dataclass
class ImageFile:
    """A readable image and what preparing it needs."""

    path: Path
    rel: str
    format: str
    mode: str
    size: tuple[int, int]  # (width, height) upright, after EXIF rotation
    orientation: int = 1
    has_alpha: bool = False
    caption: str | None = None  # None: no caption file
    sha256: str = ""
    hashes: tuple[int, int] = (0, 0)
    usable: bool = True

    @property
    def needs_convert(self) -> bool:
        """Whether the pixels must be converted (to RGB) before the trainer should see them."""
        return self.mode not in ("RGB", "L") or self.has_alpha


@dataclass
class Report:
    root: Path
    files_checked: int = 0
    images: list[ImageFile] = field(default_factory=list)  # readable images, usable or not
    problems: list[Problem] = field(default_factory=list)

    @property
    def usable(self) -> list[ImageFile]:
        return [im for im in self.images if im.usable]

    def summary(self) -> str:
        left_out = sorted({p.file for p in self.problems if p.severity == "error"})
        notes = [p for p in self.problems if p.severity != "error"]
        return (f"Checked {_n(self.files_checked, 'file')} in {self.root}: {_n(len(self.usable), 'image')} can be used, "
                f"{_n(len(left_out), 'file')} left out, {_n(len(notes), 'note')} about files that are fixed or kept.")

    def text(self) -> str:
        out = [self.summary()]
        errors = [p for p in self.problems if p.severity == "error"]
        notes = [p for p in self.problems if p.severity != "error"]
        for title, group in (("Left out:", errors), ("Fixed or kept (with a note):", notes)):
            if group:
                out += ["", title] + [f"  {p.line()}" for p in group]
        if not self.problems:
            out.append("No problems found.")
        return "\n".join(out)

    def rows(self) -> list[list[str]]:
        """One row per problem: file, problem, what is done (for tables)."""
        return [[p.file, p.message, p.action] for p in self.problems]

    def to_json(self) -> str:
        return json.dumps({"root": str(self.root), "files_checked": self.files_checked,
                           "usable": [im.rel for im in self.usable],
                           "problems": [asdict(p) for p in self.problems]}, indent=1, ensure_ascii=False)


def scan(root: Path, caption_ext: str = ".txt", skip: Path | None = None) -> tuple[list[Path], list[Path]]:
    """(images, caption files) below ``root``, sorted; hidden files and folders and ``skip`` left out."""
    images, captions = [], []
    for p in sorted(root.rglob("*")):
        rel_parts = p.relative_to(root).parts
        if any(part.startswith(".") for part in rel_parts) or not p.is_file():
            continue
        if skip is not None and (p == skip or skip in p.parents):
            continue
        ext = p.suffix.lower()
        if ext in SCAN_EXTS:
            images.append(p)
        elif ext == caption_ext:
            captions.append(p)
    return images, captions


def _looks_like_text(head: bytes) -> bool:
    if not head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:  # a cut multi-byte character at the end is still text
        if e.start < len(head) - 4:
            return False
    return all(b >= 32 or b in (9, 10, 13) for b in head)


def open_image(path: Path) -> Image.Image:
    """Open and fully decode an image, refusing decompression bombs before decoding them."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        im = Image.open(path)
    w, h = im.size
    if w * h > MAX_PIXELS:
        im.close()
        raise Image.DecompressionBombError(f"{w} x {h}")
    im.load()
    return im


def _read_failure(path: Path, rel: str, exc: Exception) -> Problem:
    ext = path.suffix.lower()
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        m = re.search(r"(\d+) x (\d+)", str(exc)) or re.search(r"\((\d+) pixels\)", str(exc))
        pixels = int(m.group(1)) * int(m.group(2)) if m and m.lastindex == 2 else int(m.group(1)) if m else 0
        size = (f"{m.group(1)} x {m.group(2)} pixels ({pixels / 1e6:.0f} megapixels)" if m and m.lastindex == 2
                else f"{pixels / 1e6:.0f} megapixels")
        return Problem(rel, "too_large", f"Says it is {size}, more than the safety limit of "
                       f"{MAX_PIXELS / 1e6:.0f} megapixels (a 'decompression bomb' could fill the memory)",
                       LEFT_OUT + " without decoding it", "error")
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as e:
        return Problem(rel, "unreadable", f"Cannot be opened ({e.strerror or e})", LEFT_OUT, "error")
    if not head:
        return Problem(rel, "empty", "The file is empty (0 bytes)", LEFT_OUT, "error")
    if _looks_like_text(head):
        return Problem(rel, "not_an_image", f"Is not an image although its name ends in {ext}: it holds text",
                       LEFT_OUT, "error")
    text = str(exc)
    if isinstance(exc, Image.UnidentifiedImageError):
        return Problem(rel, "unreadable", "Cannot be read as an image: unknown or badly damaged format",
                       LEFT_OUT, "error")
    if "truncated" in text.lower():
        return Problem(rel, "truncated", "The file is cut off (truncated): part of the image is missing",
                       LEFT_OUT, "error")
    return Problem(rel, "corrupt", f"The image data is damaged ({type(exc).__name__}: {text})", LEFT_OUT, "error")


def _mode_problems(rel: str, im: Image.Image, info: ImageFile, background: str) -> list[Problem]:
    mode, out = im.mode, []
    if mode == "P" and "transparency" in im.info or mode in ALPHA_MODES:
        info.has_alpha = True
        out.append(Problem(rel, "alpha", f"Has transparent parts (mode {mode})",
                           f"Transparent parts filled with {background}, saved as RGB"))
    elif mode == "P":
        out.append(Problem(rel, "palette", "Uses a colour palette (mode P)", "Converted to RGB"))
    elif mode == "CMYK":
        out.append(Problem(rel, "cmyk", "Uses CMYK colours (a print format)", "Converted to RGB"))
    elif mode in SIXTEEN_BIT:
        out.append(Problem(rel, "16bit", f"Has 16-bit or high-precision pixels (mode {mode})",
                           "Converted to 8-bit RGB"))
    elif mode not in ("RGB", "L"):
        out.append(Problem(rel, "unusual_mode", f"Uses the unusual colour mode {mode}", "Converted to RGB"))
    return out


def inspect_image(path: Path, rel: str, *, background: str = "white") -> tuple[ImageFile | None, list[Problem]]:
    """Read one image completely; its facts, or None when it cannot be used, and its problems."""
    try:
        im = open_image(path)
    except Exception as e:  # anything Pillow raises on a bad file: we report it and go on
        return None, [_read_failure(path, rel, e)]
    with im:
        fmt = im.format or "?"
        orientation = im.getexif().get(0x0112, 1) or 1
        w, h = im.size
        info = ImageFile(path, rel, fmt, im.mode, (h, w) if orientation in (5, 6, 7, 8) else (w, h), orientation)
        problems = _mode_problems(rel, im, info, background)
        if fmt in FORMAT_EXTS and path.suffix.lower() not in FORMAT_EXTS[fmt]:
            problems.append(Problem(rel, "wrong_extension", f"Is a {fmt} file although its name ends in "
                                    f"{path.suffix}", "Saved under the right extension"))
        if orientation != 1:
            problems.append(Problem(rel, "exif_rotated", f"Is stored sideways or mirrored; its EXIF data says to "
                                    f"turn it (orientation {orientation})", "Turned upright"))
            upright = ImageOps.exif_transpose(im)
        else:
            upright = im
        gray = upright.convert("L")
        gray.thumbnail((128, 128))  # fast, and the hashes only look at 32 x 32 pixels
        info.hashes = phash.image_hashes(gray)
    info.sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    return info, problems


def _caption_problems(info: ImageFile, caption_ext: str) -> list[Problem]:
    cap = info.path.with_suffix(caption_ext)
    if not cap.is_file():
        return [Problem(info.rel, "no_caption", f"Has no caption file ({cap.name})",
                        "Kept; without a caption the folder's name is its caption")]
    text, note = read_caption(cap)
    info.caption = text
    out = []
    if note:
        enc = note.rsplit(" ", 1)[-1]
        out.append(Problem(info.rel, "caption_encoding", f"Its caption {cap.name} is not UTF-8 (read as {enc})",
                           "Caption written as UTF-8"))
    if not text:
        out.append(Problem(info.rel, "empty_caption", f"Its caption file {cap.name} is empty",
                           "Kept; write a caption in the caption editor"))
    return out


def _compare(images: list[ImageFile], min_side: int, keep_small: bool, resolution: int) -> list[Problem]:
    out: list[Problem] = []
    by_sha: dict[str, ImageFile] = {}
    images = sorted(images, key=lambda im: (len(im.rel), im.rel))  # of two copies, the shorter name is kept
    for im in images:
        if min(im.size) < min_side:
            w, h = im.size
            msg = f"Is only {w} x {h} pixels: its shorter side is under half of the {resolution} px training size"
            if keep_small:
                out.append(Problem(im.rel, "too_small", msg, "Kept as asked; it will be upscaled and look blurry"))
            else:
                im.usable = False
                out.append(Problem(im.rel, "too_small", msg, LEFT_OUT + " (keep small images to use it)", "error"))
        first = by_sha.setdefault(im.sha256, im)
        if first is not im:
            im.usable = False
            out.append(Problem(im.rel, "duplicate", f"Is an exact copy of {first.rel}",
                               LEFT_OUT + f" ({first.rel} is kept)", "error"))
    unique = [im for im in images if by_sha[im.sha256] is im]
    for i, a in enumerate(unique):
        for b in unique[:i]:
            d = phash.is_near(a.hashes, b.hashes)
            if d is not None:
                out.append(Problem(a.rel, "near_duplicate", f"Looks almost the same as {b.rel} (a resized, "
                                   f"recompressed or slightly edited copy?)",
                                   "Kept; delete one of the two if they are the same picture"))
                break
    return out


def check_folder(root: str | Path, *, resolution: int = DEFAULT_RESOLUTION, keep_small: bool = False,
                 caption_ext: str = ".txt", background: str = "white", skip: Path | None = None,
                 progress: Progress | None = None) -> Report:
    """Check every image below ``root`` (recursively). Raises FileNotFoundError for a missing folder."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"Folder not found: {root}")
    paths, captions = scan(root, caption_ext, skip)
    report = Report(root, files_checked=len(paths))
    for i, path in enumerate(paths):
        rel = path.relative_to(root).as_posix()
        if progress:
            progress(i, len(paths), f"Checking {rel}")
        info, problems = inspect_image(path, rel, background=background)
        report.problems += problems
        if info is not None:
            report.problems += _caption_problems(info, caption_ext)
            report.images.append(info)
    if progress:
        progress(len(paths), len(paths), "Comparing the images")
    report.problems += _compare(report.images, resolution // 2, keep_small, resolution)
    stems = {p.with_suffix("") for p in paths}
    for cap in captions:
        if cap.with_suffix("") not in stems:
            report.problems.append(Problem(cap.relative_to(root).as_posix(), "orphan_caption",
                                           "Is a caption file without an image of the same name", "Ignored"))
    order = {p.relative_to(root).as_posix(): i for i, p in enumerate(paths + captions)}
    report.problems.sort(key=lambda p: (order.get(p.file, 0), p.severity != "error"))
    return report


def _n(count: int, noun: str) -> str:
    """``1 file``, ``3 files``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
