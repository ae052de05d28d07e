"""Training length (epochs or steps), learning-rate scheduler and warmup."""
from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from .coerce import blank
from .values import SCHEDULER_NEAR, SCHEDULERS

if TYPE_CHECKING:
    from .converter import Converter

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def step_length(cv: Converter) -> None:
    """Epochs or steps. In sd-scripts max_train_epochs overrides max_train_steps; here steps win when > 0."""
    epochs, epochs_key = None, None
    for key in ("max_train_epochs", "epoch"):
        if key in cv.src:
            v = cv.number(key)
            if v is not None and v > 0 and epochs is None:
                epochs, epochs_key = v, key
            elif v is not None and v > 0:
                if v != epochs:
                    cv.unmapped(key, cv.src[key], f"{epochs_key} = {epochs:g} is used instead")
            else:
                cv.ignore(key)
    steps = cv.number("max_train_steps") if cv.has("max_train_steps") else None
    if epochs is not None:
        cv.put("max_train_epochs", epochs, epochs_key)
        if epochs_key != "max_train_epochs":
            cv.note(f"{epochs_key} = {epochs:g} -> max_train_epochs = {cv.out.get('max_train_epochs')}")
        if steps:
            cv.unmapped("max_train_steps", cv.src["max_train_steps"],
                        f"left out: {epochs_key} is set, and kohya trains by epochs when both are given; "
                        "here max_train_steps would win")
    elif steps:
        cv.put("max_train_steps", steps)
    elif cv.has("max_train_steps"):
        cv.ignore("max_train_steps")


def step_scheduler(cv: Converter) -> None:
    """lr_scheduler; names we lack -> the nearest one (others are left for validation to report)."""
    v = cv.take("lr_scheduler")
    if blank(v):
        cv.ignore("lr_scheduler")
        return
    name = str(v).strip()
    low = name.lower()
    if low in SCHEDULERS:
        cv.put("lr_scheduler", low)
    elif low == "adafactor":
        cv.put("lr_scheduler", "constant_with_warmup")
        cv.note("lr_scheduler = \"adafactor\" -> \"constant_with_warmup\" (nearest: a fixed rate; Adafactor "
                "runs with relative_step=False here)")
    elif low in SCHEDULER_NEAR:
        cv.put("lr_scheduler", SCHEDULER_NEAR[low])
        cv.note(f"lr_scheduler = \"{name}\" -> \"{SCHEDULER_NEAR[low]}\" (nearest available)")
    else:
        cv.put("lr_scheduler", name)  # validation reports it with the choices


def steps_per_epoch(cv: Converter) -> tuple[int | None, str]:
    """Steps per epoch from the images in train_data_dir's '<repeats>_<name>' folders, and how it was counted."""
    d = cv.find_dir(cv.out.get("train_data_dir", ""))
    if d is None:
        where = cv.out.get("train_data_dir") or "(empty)"
        return None, f"train_data_dir {where} is not found here"
    uses = n_img = 0
    for sub in sorted(d.iterdir()):
        m = re.match(r"^(\d+)_", sub.name)
        if sub.is_dir() and m:
            n = sum(1 for f in sub.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTS)
            n_img += n
            uses += n * int(m.group(1))
    if not uses:
        return None, f"train_data_dir {d} has no images in '<repeats>_<name>' folders"
    reg = 2 if cv.out.get("reg_data_dir") else 1
    batch = int(cv.out.get("train_batch_size", 1))
    accum = int(cv.out.get("gradient_accumulation_steps", 1))
    spe = math.ceil(math.ceil(uses * reg / batch) / accum)
    how = f"{n_img} images, {uses} uses with repeats" + (" x2 for regularization" if reg == 2 else "") \
        + f", batch {batch}" + (f" x {accum} accumulation" if accum > 1 else "") + f" = {spe} steps per epoch"
    return spe, how


def total_steps(cv: Converter) -> tuple[int | None, str]:
    """All training steps (None when they cannot be known here), and how they were counted."""
    if cv.out.get("max_train_steps"):
        return int(cv.out["max_train_steps"]), f"max_train_steps {cv.out['max_train_steps']}"
    epochs = cv.out.get("max_train_epochs")
    if not epochs:
        return None, "neither epochs nor steps are set"
    spe, how = steps_per_epoch(cv)
    if spe is None:
        return None, how
    return spe * int(epochs), f"{how}, x {epochs} epochs"


def step_warmup(cv: Converter) -> None:
    """Warmup in steps; a fraction (lr_warmup_steps < 1) or percentage (GUI lr_warmup) of the total steps."""
    steps = cv.number("lr_warmup_steps") if cv.has("lr_warmup_steps") else None
    pct = cv.number("lr_warmup") if cv.has("lr_warmup") else None  # GUI: percent of all steps
    if steps is not None and 0 < steps < 1:
        ratio, label = steps, f"lr_warmup_steps = {steps:g} (a fraction of all steps)"
        what, src_key = "a fraction of all steps", "lr_warmup_steps"
        if pct:
            cv.unmapped("lr_warmup", cv.src["lr_warmup"], "lr_warmup_steps is set and wins")
    elif steps is not None and steps >= 1:
        cv.put("lr_warmup_steps", round(steps), "lr_warmup_steps")
        if pct:
            cv.unmapped("lr_warmup", cv.src["lr_warmup"], "lr_warmup_steps is set and wins, as in kohya_ss")
        return
    elif pct:
        ratio, label = pct / 100.0, f"lr_warmup = {pct:g} (percent of all steps)"
        what, src_key = "percent of all steps", "lr_warmup"
        cv.ignore("lr_warmup_steps")
    else:
        for key in ("lr_warmup_steps", "lr_warmup"):
            cv.ignore(key)
        return
    total, how = total_steps(cv)
    if total is None:
        cv.unmapped(src_key, cv.src[src_key], f"{what}, but the total step count is unknown here: {how}; "
                                              "lr_warmup_steps was not set, set it by hand")
        return
    warm = round(ratio * total)
    cv.put("lr_warmup_steps", warm, src_key)
    cv.note(f"{label} -> lr_warmup_steps = {warm} (of {total} steps: {how})")
    if cv.out.get("lr_scheduler", "constant") == "constant" and warm > 0:
        cv.note("lr_scheduler \"constant\" has no warmup; use \"constant_with_warmup\" for the warmup to count")
