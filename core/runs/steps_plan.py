"""The steps arithmetic shown before training: images x repeats / batch = steps per epoch, x epochs.

Counts the ``<repeats>_<name>`` folders the way the trainer will (before bucketing), and says in words
what is wrong with a folder that would not be used.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..config.schema import TrainConfig

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
FOLDER_RE = re.compile(r"^(\d+)_(.+)$")


@dataclass
class ConceptFolder:
    name: str
    repeats: int
    images: int


@dataclass
class StepsPlan:
    folders: list[ConceptFolder] = field(default_factory=list)
    reg_folders: list[ConceptFolder] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    images: int = 0
    uses_per_epoch: int = 0
    reg_uses_per_epoch: int = 0
    batch_size: int = 1
    gradient_accumulation_steps: int = 1
    epochs: int = 0
    steps_per_epoch: int = 0
    total_steps: int = 0
    text: str = ""
    masks: str = ""  # masked_loss: how many training images have a mask
    held_out: int = 0  # validation_split: images held out of training for the validation loss

    @property
    def ok(self) -> bool:
        return self.total_steps > 0


def _count_images(folder: Path) -> int:
    try:
        return sum(1 for e in os.scandir(folder) if e.is_file() and e.name.lower().endswith(IMAGE_EXTS))
    except OSError:
        return 0


def scan_concepts(root: str | os.PathLike, what: str = "Training images") -> tuple[list[ConceptFolder], list[str]]:
    """The ``<repeats>_<name>`` folders of ``root`` with their image counts, and problems in words."""
    problems: list[str] = []
    if not str(root).strip():
        return [], [f"{what} folder is not set."]
    root = Path(root)
    if not root.is_dir():
        return [], [f"{what} folder not found: {root}"]
    folders: list[ConceptFolder] = []
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as e:
        return [], [f"{what} folder cannot be read: {e}"]
    loose = 0
    for e in entries:
        if e.name.startswith("."):
            continue
        if e.is_file():
            loose += e.name.lower().endswith(IMAGE_EXTS)
            continue
        if not e.is_dir():
            continue
        n = _count_images(Path(e.path))
        m = FOLDER_RE.match(e.name)
        if not m:
            problems.append(
                f"Folder '{e.name}' ({n} images) is not used: its name lacks the '<repeats>_' prefix. "
                f"Rename it to e.g. '10_{e.name}' (10 = how often each image is used per epoch).")
            continue
        repeats = int(m.group(1))
        if repeats == 0:
            problems.append(f"Folder '{e.name}' is not used: 0 repeats. Use a number of 1 or more, e.g. '10_{m.group(2)}'.")
            continue
        if n == 0:
            problems.append(f"Folder '{e.name}' holds no images ({' '.join(IMAGE_EXTS)}).")
        folders.append(ConceptFolder(e.name, repeats, n))
    if loose:
        problems.append(
            f"{loose} images lie directly in {root} and are not used: move them into a sub-folder named "
            "'<repeats>_<name>', e.g. '10_zqx'.")
    if not folders and not problems:
        problems.append(f"{what} folder {root} is empty: add a sub-folder such as '10_zqx' with your images.")
    return folders, problems


def steps_plan(train_data_dir: str | os.PathLike, cfg: TrainConfig) -> StepsPlan:
    """images x repeats x epochs / batch = steps, as the trainer will count them (before bucketing)."""
    plan = StepsPlan(batch_size=cfg.train_batch_size, gradient_accumulation_steps=cfg.gradient_accumulation_steps)
    plan.folders, plan.problems = scan_concepts(train_data_dir)
    plan.images = sum(f.images for f in plan.folders)
    plan.uses_per_epoch = sum(f.images * f.repeats for f in plan.folders)
    _hold_out(plan, Path(train_data_dir), cfg)
    if cfg.reg_data_dir:
        plan.reg_folders, reg_problems = scan_concepts(cfg.reg_data_dir, "Regularization images")
        plan.problems += reg_problems
        if any(f.images for f in plan.reg_folders):
            plan.reg_uses_per_epoch = plan.uses_per_epoch  # kohya: as many as training uses
    if plan.uses_per_epoch == 0:
        if not plan.problems:
            plan.problems.append("No training images found.")
        plan.text = "No steps: " + " ".join(plan.problems)
        return plan
    uses = plan.uses_per_epoch + plan.reg_uses_per_epoch
    batches = math.ceil(uses / cfg.train_batch_size)
    plan.steps_per_epoch = math.ceil(batches / cfg.gradient_accumulation_steps)
    if cfg.max_train_steps > 0:
        plan.total_steps = cfg.max_train_steps
        plan.epochs = math.ceil(plan.total_steps / plan.steps_per_epoch)
    else:
        plan.epochs = cfg.max_train_epochs
        plan.total_steps = plan.epochs * plan.steps_per_epoch
        if plan.epochs == 0:
            plan.problems.append("max_train_epochs and max_train_steps are both 0: set one of them.")

    used = [f for f in plan.folders if f.images]
    if plan.held_out:
        text = (f"{plan.images} images, {plan.held_out} held out for validation: "
                f"{plan.uses_per_epoch} uses per epoch with repeats")
    elif len(used) == 1:
        text = f"{used[0].images} images x {used[0].repeats} repeats = {plan.uses_per_epoch} per epoch"
    else:
        detail = " + ".join(f"{f.images} x {f.repeats}" for f in used)
        text = f"{plan.images} images with repeats ({detail}) = {plan.uses_per_epoch} per epoch"
    if plan.reg_uses_per_epoch:
        text += f" (+{plan.reg_uses_per_epoch} regularization = {uses})"
    text += f"; / batch {cfg.train_batch_size}"
    if cfg.gradient_accumulation_steps > 1:
        text += f" / {cfg.gradient_accumulation_steps} accumulation"
    text += f" = {plan.steps_per_epoch} steps per epoch"
    if cfg.max_train_steps > 0:
        text += f"; max_train_steps = {plan.total_steps} steps (about {plan.total_steps / plan.steps_per_epoch:.1f} epochs)"
    else:
        text += f"; x {plan.epochs} epochs = {plan.total_steps} steps"
    if cfg.enable_bucket and cfg.train_batch_size > 1:
        text += " (aspect-ratio buckets can add a few steps: each image size fills its own batches)"
    plan.text = text
    plan.masks, missing = mask_summary(train_data_dir, cfg)
    plan.problems += missing
    return plan


def _hold_out(plan: StepsPlan, root: Path, cfg: TrainConfig) -> None:
    """validation_split: the images the trainer will hold out (core/data/holdout.py), taken out of the counts."""
    if cfg.validation_split <= 0 or cfg.validation_data_dir.strip() or not plan.images:
        return
    from ..data.holdout import choose_held_out

    names: dict[str, int] = {}
    for f in plan.folders:
        try:
            for e in os.scandir(root / f.name):
                if e.is_file() and e.name.lower().endswith(IMAGE_EXTS):
                    names[f"{f.name}/{e.name}"] = f.repeats
        except OSError:
            continue
    try:
        held = choose_held_out(list(names), cfg.validation_split, cfg.effective_validation_seed)
    except ValueError as e:
        plan.problems.append(str(e))
        plan.uses_per_epoch = 0
        return
    plan.held_out = len(held)
    plan.uses_per_epoch -= sum(names[n] for n in held)


def mask_summary(train_data_dir: str | os.PathLike, cfg: TrainConfig) -> tuple[str, list[str]]:
    """masked_loss: 'Masks: n of m training images ...' and, for a mask folder, the images without a mask."""
    from ..data.masks import SHOWN, find_mask_file, image_has_alpha, mask_candidates

    if not cfg.mask_source:
        return "", []
    root = Path(train_data_dir)
    images = [(f, p) for f in scan_concepts(root)[0] for p in sorted((root / f.name).iterdir())
              if p.is_file() and p.suffix.lower() in IMAGE_EXTS]
    if cfg.mask_source == "alpha":
        n = sum(image_has_alpha(p) for _, p in images)
        return (f"Masks: {n} of {len(images)} training images have transparency (alpha_mask); the others are "
                "learned whole."), ([] if n or not images else ["alpha_mask: no training image has transparency."])
    masks = Path(cfg.conditioning_data_dir)
    if not masks.is_dir():
        return "", [f"conditioning_data_dir {masks} is not a folder."]
    missing = [(f, p) for f, p in images if find_mask_file(masks, f.name, p) is None]
    text = f"Masks: {len(images) - len(missing)} of {len(images)} training images have a mask in {masks}."
    problems = [f"No mask for {p.name} (expected {mask_candidates(masks, f.name, p)[0]})" for f, p in missing[:SHOWN]]
    if len(missing) > SHOWN:
        problems.append(f"... and {len(missing) - SHOWN} more images without a mask.")
    return text, problems
