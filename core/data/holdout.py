"""Which training images are held out for the validation loss (validation_split): torch-free, so the step count
shown before training (core/runs/steps_plan.py) and the trainer choose the same images.

Images are named by their path relative to train_data_dir ("10_zqx/001.png"); the choice is a seeded sample of
the sorted names, so the same folder and seed always hold out the same images. A run records its choice in
validation.json in its run folder and a resume reads it back from there, whatever was added to the folder since.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

RECORD = "validation.json"


def held_out_count(n_images: int, split: float) -> int:
    """How many of `n_images` a validation_split holds out: a fraction (at least one image) or a count."""
    if split <= 0 or n_images <= 0:
        return 0
    if split < 1:
        return max(1, round(split * n_images))
    return int(split)


def choose_held_out(names: list[str], split: float, seed: int) -> list[str]:
    """The names held out, sorted. Raises ValueError when nothing would be left to train on."""
    k = held_out_count(len(names), split)
    if k == 0:
        return []
    if k >= len(names):
        raise ValueError(f"validation_split = {split:g} holds out {k} of the {len(names)} training image(s), which "
                         "leaves none to train on: use a smaller validation_split, add images, or set it to 0")
    return sorted(random.Random(seed).sample(sorted(names), k))


def read_record(run_dir: Path) -> dict | None:
    """The held-out choice a run recorded, or None."""
    try:
        data = json.loads((run_dir / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("images"), list) else None


def record(run_dir: Path, *, source: str, images: list[str], seed: int, split: float) -> None:
    from ..config.toml_io import atomic_write_text

    atomic_write_text(run_dir / RECORD, json.dumps(
        {"source": source, "split": split, "seed": seed, "images": images}, indent=1, ensure_ascii=False))
