"""Perceptual hashes (dHash and pHash, 64 bits each) to find near-duplicate images, with PIL and numpy only.

Two pictures that differ only by resizing, recompression or a small colour change get hashes a few bits
apart; different pictures are usually 20+ bits apart. An image counts as a near duplicate of another when
both hashes are within ``NEAR_BITS``.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

NEAR_BITS = 6  # at most this many of the 64 bits differ, in both hashes


def _gray(im: Image.Image, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(im.convert("L").resize(size, Image.Resampling.LANCZOS), dtype=np.float64)


def _bits(mask: np.ndarray) -> int:
    value = 0
    for bit in mask.ravel():
        value = (value << 1) | int(bit)
    return value


def dhash(im: Image.Image) -> int:
    """Difference hash: is each pixel of a 9x8 thumbnail brighter than its right neighbour."""
    px = _gray(im, (9, 8))
    return _bits(px[:, 1:] > px[:, :-1])


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2 / n)
    m[0] /= np.sqrt(2)
    return m


_DCT32 = _dct_matrix(32)


def phash(im: Image.Image) -> int:
    """DCT hash: the 8x8 lowest frequencies of a 32x32 thumbnail, each above or below their median."""
    px = _gray(im, (32, 32))
    low = (_DCT32 @ px @ _DCT32.T)[:8, :8].ravel()
    return _bits(low > np.median(low[1:]))


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def image_hashes(im: Image.Image) -> tuple[int, int]:
    return dhash(im), phash(im)


def is_near(a: tuple[int, int], b: tuple[int, int], bits: int = NEAR_BITS) -> int | None:
    """The larger distance of the two hashes when both are within ``bits``, else None."""
    d = max(hamming(a[0], b[0]), hamming(a[1], b[1]))
    return d if d <= bits else None
