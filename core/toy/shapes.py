"""Synthetic shape images and their captions: the toy model's whole world.

One image is one filled shape (circle, square, triangle, ... star) in one colour, at some size and
position, on a plain background, captioned ``"a red circle on a white background"``. Shapes are
drawn with Pillow at 4x the size and scaled down, so edges are anti-aliased like a photo's.
Everything is drawn from a ``numpy.random.Generator``: the same seed gives the same images.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SIZE = 32  # the toy model's native image size in pixels

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 205, 40),
    "purple": (150, 60, 190),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "gray": (128, 128, 128),
}
# What the UNet and text encoder are trained on.
BASE_SHAPES = ("circle", "square", "triangle")
# The demo concept: never shown to the UNet or the text encoder, only to the VAE (a general codec).
DEMO_SHAPE = "star"
# Extra shapes for the VAE only, so it is a general codec of flat shapes rather than of four of them.
VAE_EXTRA_SHAPES = ("diamond", "cross", "ring", "hexagon")
ALL_SHAPES = BASE_SHAPES + (DEMO_SHAPE,) + VAE_EXTRA_SHAPES

SUPERSAMPLE = 4
STAR_INNER = 0.45  # inner / outer radius of the five-pointed star


@dataclass(frozen=True)
class ShapeSpec:
    shape: str
    color: str
    background: str
    cx: float  # centre, pixels
    cy: float
    radius: float  # outer radius, pixels

    def caption(self, word: str | None = None) -> str:
        """``"a red circle on a white background"``; ``word`` replaces the shape's name (a trigger word)."""
        return caption(self.color, word or self.shape, self.background)


def caption(color: str, shape: str, background: str) -> str:
    return f"a {color} {shape} on a {background} background"


def _polygon(n: int, cx: float, cy: float, r: float, start_deg: float = -90.0) -> list[tuple[float, float]]:
    return [(cx + r * math.cos(math.radians(start_deg + 360.0 * i / n)),
             cy + r * math.sin(math.radians(start_deg + 360.0 * i / n))) for i in range(n)]


def _star(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    pts = []
    for i in range(10):
        rr = r if i % 2 == 0 else r * STAR_INNER
        a = math.radians(-90.0 + 36.0 * i)
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    return pts


def _draw_shape(d: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill, bg) -> None:
    if shape == "circle":
        rc = 0.85 * r
        d.ellipse((cx - rc, cy - rc, cx + rc, cy + rc), fill=fill)
    elif shape == "square":
        h = 0.75 * r
        d.rectangle((cx - h, cy - h, cx + h, cy + h), fill=fill)
    elif shape == "triangle":  # equilateral, pointing up, centroid at the centre
        d.polygon(_polygon(3, cx, cy + 0.12 * r, 1.05 * r), fill=fill)
    elif shape == "star":
        d.polygon(_star(cx, cy + 0.05 * r, 1.05 * r), fill=fill)
    elif shape == "diamond":
        d.polygon(_polygon(4, cx, cy, r), fill=fill)
    elif shape == "hexagon":
        d.polygon(_polygon(6, cx, cy, 0.95 * r, 0.0), fill=fill)
    elif shape == "cross":
        w = 0.32 * r
        d.rectangle((cx - r * 0.9, cy - w, cx + r * 0.9, cy + w), fill=fill)
        d.rectangle((cx - w, cy - r * 0.9, cx + w, cy + r * 0.9), fill=fill)
    elif shape == "ring":
        ro, ri = 0.9 * r, 0.5 * r
        d.ellipse((cx - ro, cy - ro, cx + ro, cy + ro), fill=fill)
        d.ellipse((cx - ri, cy - ri, cx + ri, cy + ri), fill=bg)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(ALL_SHAPES)}")


def draw(spec: ShapeSpec, size: int = SIZE) -> Image.Image:
    """Render one shape as an RGB image of ``size`` x ``size`` pixels (``spec`` is in 32-px units)."""
    k = SUPERSAMPLE * size / SIZE
    bg = BACKGROUNDS[spec.background]
    big = Image.new("RGB", (size * SUPERSAMPLE, size * SUPERSAMPLE), bg)
    _draw_shape(ImageDraw.Draw(big), spec.shape, spec.cx * k, spec.cy * k, spec.radius * k, COLORS[spec.color], bg)
    return big.resize((size, size), Image.Resampling.BOX)


def random_spec(rng: np.random.Generator, shapes=BASE_SHAPES, colors=None, backgrounds=None,
                radius: tuple[float, float] = (8.0, 12.5)) -> ShapeSpec:
    """A random shape, colour, background, size and position (the whole shape stays inside the image)."""
    colors = list(colors or COLORS)
    backgrounds = list(backgrounds or BACKGROUNDS)
    shape = shapes[int(rng.integers(len(shapes)))]
    color = colors[int(rng.integers(len(colors)))]
    bg = backgrounds[int(rng.integers(len(backgrounds)))]
    r = float(rng.uniform(*radius))
    margin = r + 1.0
    cx = float(rng.uniform(margin, SIZE - margin))
    cy = float(rng.uniform(margin, SIZE - margin))
    return ShapeSpec(shape, color, bg, cx, cy, r)


def batch(rng: np.random.Generator, n: int, shapes=BASE_SHAPES, **kw) -> tuple[np.ndarray, list[ShapeSpec]]:
    """``n`` random images as uint8 (n, 32, 32, 3) and their specs."""
    specs = [random_spec(rng, shapes, **kw) for _ in range(n)]
    return np.stack([np.asarray(draw(s)) for s in specs]), specs


def all_captions(shapes=BASE_SHAPES) -> list[str]:
    """Every caption the base model was trained on (in a fixed order)."""
    return [caption(c, s, b) for s in shapes for c in COLORS for b in BACKGROUNDS]
