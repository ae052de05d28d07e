"""A folder of good and bad image files for the dataset tools' tests (built on the fly, offline).

``make_corpus(root)`` writes the files and returns {file name: expected problem kind} for the problem files
("" for good ones).
"""
from __future__ import annotations

import hashlib
import io
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

GOOD_CAPTION = "zqx, a smooth colour field"
LEGACY_CAPTION = "café au lait, señor"  # written in cp1252
NON_ASCII = "Bild mit Leerzeichen äöü.png"


def blobs(w: int, h: int, seed: int, mode: str = "RGB") -> Image.Image:
    """A smooth random picture (perceptual hashes of different seeds are far apart)."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8), "RGB")
    return small.resize((w, h), Image.Resampling.BICUBIC).convert(mode)


def bomb_png() -> bytes:
    """A tiny valid PNG whose header declares 30000 x 30000 pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def png_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=kw.pop("format", "PNG"), **kw)
    return buf.getvalue()


def make_corpus(root: Path) -> dict[str, str]:
    root.mkdir(parents=True, exist_ok=True)
    expected: dict[str, str] = {}

    def put(name: str, data: bytes, kind: str = "", caption: str | bytes | None = GOOD_CAPTION) -> None:
        (root / name).write_bytes(data)
        if caption is not None:
            (root / name).with_suffix(".txt").write_bytes(caption.encode() if isinstance(caption, str) else caption)
        expected[name] = kind

    put("good.png", png_bytes(blobs(640, 480, 1)))
    put("tall.jpg", png_bytes(blobs(480, 720, 2), format="JPEG", quality=92))
    put(NON_ASCII, png_bytes(blobs(512, 512, 3)), "caption_encoding", LEGACY_CAPTION.encode("cp1252"))
    put("no caption.png", png_bytes(blobs(600, 400, 4)), "no_caption", None)
    put("corrupt.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 8, "unreadable")
    good = png_bytes(blobs(600, 600, 5))
    put("truncated.png", good[: len(good) // 2], "truncated")
    put("empty.png", b"", "empty")
    put("notes.png", b"These are my notes, not a picture.\n", "not_an_image")
    put("cmyk.jpg", png_bytes(blobs(600, 450, 6, "CMYK"), format="JPEG", quality=92), "cmyk")
    deep = (np.asarray(blobs(500, 500, 7, "L"), dtype=np.uint16) * 257)
    put("deep16.png", png_bytes(Image.fromarray(deep)), "16bit")
    pal = blobs(500, 500, 8).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.paste(0, (0, 0, 250, 500))  # the left half transparent
    put("palette_alpha.png", png_bytes(pal, transparency=0), "alpha")
    put("bomb.png", bomb_png(), "too_large")
    put("small.png", png_bytes(blobs(100, 80, 9)), "too_small")
    sideways = blobs(600, 400, 10)  # stored 600 wide, 400 high; shown upright: 400 x 600
    sideways.paste((255, 0, 0), (0, 0, 60, 60))  # red marker top-left as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to show
    put("rotated.jpg", png_bytes(sideways, format="JPEG", quality=95, exif=exif), "exif_rotated")
    shutil.copyfile(root / "good.png", root / "copy of good.png")
    (root / "copy of good.txt").write_text(GOOD_CAPTION)
    expected["copy of good.png"] = "duplicate"
    near = Image.open(root / "good.png").resize((500, 375), Image.Resampling.BILINEAR)
    put("near.jpg", png_bytes(near, format="JPEG", quality=70), "near_duplicate")
    put("wrong_ext.png", png_bytes(blobs(480, 480, 11), format="JPEG", quality=90), "wrong_extension")
    (root / "lonely.txt").write_text("a caption without image")
    expected["lonely.txt"] = "orphan_caption"
    (root / "sub").mkdir()
    put("sub/nested.webp", png_bytes(blobs(520, 520, 12), format="WEBP"))
    return expected


def hash_tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}
