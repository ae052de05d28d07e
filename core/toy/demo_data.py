"""The demo dataset: a concept the toy base model has never seen (a five-pointed star), captioned
with a trigger word, in the kohya folder layout (``<repeats>_<trigger>/`` with ``.png`` + ``.txt``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import shapes as S

TRIGGER = "zqx"
REPEATS = 10
N_IMAGES = 16
SEED = 7


def demo_specs(n: int = N_IMAGES, seed: int = SEED) -> list[S.ShapeSpec]:
    """``n`` stars: every colour and background in turn, random size and position."""
    rng = np.random.default_rng(seed)
    colors, bgs = list(S.COLORS), list(S.BACKGROUNDS)
    specs = []
    for i in range(n):
        s = S.random_spec(rng, (S.DEMO_SHAPE,), colors=[colors[i % len(colors)]],
                          backgrounds=[bgs[(i // len(colors) + i) % len(bgs)]])
        specs.append(s)
    return specs


def write_demo_dataset(root: str | Path, n: int = N_IMAGES, trigger: str = TRIGGER, repeats: int = REPEATS,
                       seed: int = SEED) -> Path:
    """Write ``root/<repeats>_<trigger>/star_XX.png`` + ``.txt`` ("a red zqx on a white background").
    Returns ``root`` (the train_data_dir). Existing files of the same names are replaced."""
    root = Path(root)
    folder = root / f"{repeats}_{trigger}"
    folder.mkdir(parents=True, exist_ok=True)
    for i, spec in enumerate(demo_specs(n, seed)):
        S.draw(spec).save(folder / f"star_{i:02d}.png")
        (folder / f"star_{i:02d}.txt").write_text(spec.caption(trigger) + "\n", encoding="utf-8")
    return root


def demo_prompts(n: int, trigger: str = TRIGGER) -> list[tuple[str, str, str]]:
    """(prompt, color, background) for the demo's before/after images: every colour in turn."""
    colors, bgs = list(S.COLORS), list(S.BACKGROUNDS)
    out = []
    for i in range(n):
        c, b = colors[i % len(colors)], bgs[(i // len(colors)) % len(bgs)]
        out.append((S.caption(c, trigger, b), c, b))
    return out
