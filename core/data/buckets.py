"""Aspect-ratio buckets: every image trains near its own aspect ratio, its crop recorded."""
from __future__ import annotations

import math
from dataclasses import dataclass


def make_buckets(resolution: tuple[int, int], min_reso: int, max_reso: int, step: int) -> list[tuple[int, int]]:
    """All (width, height) pairs, multiples of `step`, with area at most width*height of `resolution`."""
    max_area = resolution[0] * resolution[1]
    side = int(math.sqrt(max_area) // step) * step
    resos = {(side, side)}
    w = min_reso
    while w <= max_reso:
        h = min(max_reso, int((max_area // w) // step) * step)
        if h >= min_reso:
            resos.add((w, h))
            resos.add((h, w))
        w += step
    return sorted(resos)


@dataclass(frozen=True)
class Placement:
    """Where one image goes: its bucket, the size it is resized to and the crop taken from that."""

    bucket: tuple[int, int]  # (width, height) of the training image
    resized: tuple[int, int]  # (width, height) after resizing, before the crop
    crop_left_top: tuple[int, int]  # (left, top) offset of the crop inside the resized image


def place(size: tuple[int, int], bucket: tuple[int, int]) -> Placement:
    """Resize so the image covers the bucket, then center-crop to it."""
    w, h = size
    bw, bh = bucket
    scale = max(bw / w, bh / h)
    rw, rh = max(bw, round(w * scale)), max(bh, round(h * scale))
    return Placement(bucket, (rw, rh), ((rw - bw) // 2, (rh - bh) // 2))


class BucketChooser:
    """Assigns images to buckets the way kohya's sd-scripts does (nearest aspect ratio)."""

    def __init__(self, resolution: tuple[int, int], *, enable: bool = True, min_reso: int = 256,
                 max_reso: int = 1024, step: int = 64, no_upscale: bool = False):
        self.resolution = resolution
        self.enable = enable
        self.step = step
        self.no_upscale = no_upscale
        self.max_area = resolution[0] * resolution[1]
        self.buckets = make_buckets(resolution, min_reso, max_reso, step) if enable else [resolution]

    def choose(self, size: tuple[int, int]) -> Placement:
        if not self.enable:
            return place(size, self.resolution)
        w, h = size
        if self.no_upscale and w * h <= self.max_area:
            bw, bh = max(self.step, w - w % self.step), max(self.step, h - h % self.step)
            return place(size, (bw, bh))
        ar = w / h
        bucket = min(self.buckets, key=lambda b: (abs(b[0] / b[1] - ar), -b[0] * b[1]))
        return place(size, bucket)
