"""A starting config for a family, a subject, a GPU's VRAM and a dataset's image count, with the reasons in words.

`recipe_values` combines the three layers of core/config/recipes.py (no torch: the generated presets use it);
`suggest_config` also checks the result with the VRAM estimate (core/estimate) and, where it does not fit, applies
the estimate's cheapest changes, or says that nothing fits. `python -m core suggest` prints it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from .recipes import (FAMILIES, IMAGE_USES_MAX, IMAGE_USES_MIN, MEMORY, STEPS_SOURCE, TIERS, Family, Subject,
                      a, family_of, num, subject_of, tier_for)


@dataclass
class Suggestion:
    family: str
    subject: str
    vram_gb: float
    tier: int
    images: int
    values: dict[str, Any]  # TrainConfig keys
    reasons: list[str]  # one line per decision, in plain words
    fits: bool | None = None  # by the estimate; None when it was not estimated
    peak_vram_gb: float | None = None
    message: str = ""  # what to do when nothing fits
    changes: list[dict[str, Any]] = field(default_factory=list)  # the estimate's changes applied to make it fit

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lr_for(reference_lr: float, reference_scale: float, rank: int, alpha: float) -> float:
    """The reference LR moved to this LoRA scale: the change per step grows with alpha/rank, so LR x scale stays."""
    return float(f"{reference_lr * reference_scale / (alpha / rank):.3g}")


def total_steps(subject: Subject, images: int, batch: int, accumulation: int = 1) -> tuple[int, int]:
    """(steps, image uses): images x the subject's uses per image, kept within IMAGE_USES_MIN..MAX, per batch."""
    uses = min(max(images * subject.uses_per_image[1], IMAGE_USES_MIN), IMAGE_USES_MAX)
    return math.ceil(uses / (batch * accumulation)), uses


def uses_range(subject: Subject, images: int) -> tuple[int, int]:
    """The total image uses (steps x batch x accumulation) the subject's range allows for this many images."""
    clamp = lambda n: min(max(n, IMAGE_USES_MIN), IMAGE_USES_MAX)  # noqa: E731
    return clamp(images * subject.uses_per_image[0]), clamp(images * subject.uses_per_image[2])


def _every(steps: int) -> int:
    """Save and sample about 4 times per run, on a round number of steps."""
    n = max(steps // 4, 25)
    return int(round(n / 25) * 25) or 25


def recipe_values(family: str, subject: str, tier: int, images: int | None = None) -> tuple[dict[str, Any], list[str]]:
    """The config values of one cell of the table (family x subject x tier) for `images` images, and the reasons."""
    fam: Family = family_of(family)
    sub: Subject = subject_of(subject)
    if tier not in MEMORY[fam.name]:
        raise ValueError(f"VRAM tier {tier} GB: use one of {', '.join(map(str, TIERS))}")
    mem = MEMORY[fam.name][tier]
    values: dict[str, Any] = {}  # model_family stays auto: a preset must not force the family of another model
    why_of: dict[str, str] = {}  # a later layer's reason replaces an earlier one's
    for layer in (fam.values, sub.values, mem.values):
        for key, (value, why) in layer.items():
            values[key] = value
            why_of[key] = f"{key} = {_show(value)}: {why}"
    reasons = list(why_of.values())
    rank, alpha = mem.rank or (fam.rank, fam.alpha)
    rank, alpha = rank * sub.rank_factor, alpha * sub.rank_factor
    values.update(network_dim=rank, network_alpha=alpha)
    why = [mem.rank_reason] if mem.rank else []
    why.append(sub.rank_reason)
    reasons.append(f"network_dim = {rank}, network_alpha = {alpha:g} (scale {alpha / rank:g}): {'; '.join(why)}")

    optimizer = values.get("optimizer_type", "AdamW")
    values["optimizer_type"] = optimizer
    trains_te = not values.get("network_train_unet_only", False)
    if optimizer == "Prodigy":
        values.update(learning_rate=1.0, unet_lr=None, text_encoder_lr=None)
        reasons.append("learning_rate = 1: Prodigy estimates the step size itself, its README says LR 1")
    else:
        ref = fam.reference
        lr = lr_for(ref.lr, ref.scale, rank, alpha)
        values.update(learning_rate=lr, unet_lr=None, text_encoder_lr=None)
        text = f"learning_rate = {num(lr)}: {ref.source}"
        if ref.scale != alpha / rank:
            text += f", moved from scale {ref.scale:g} to {alpha / rank:g} (LR x alpha/rank kept)"
        if trains_te and ref.text_encoder_lr:
            values["text_encoder_lr"] = lr_for(ref.text_encoder_lr, ref.scale, rank, alpha)
            text += f"; text_encoder_lr = {num(values['text_encoder_lr'])}"
        reasons.append(text)

    typical = images is None or images <= 0
    n = sub.typical_images if typical else int(images)
    if not typical:
        held, why = validation_choice(n)
        reasons.append(why)
        if held:
            values["validation_split"] = held
            n -= held
    batch = int(values.get("train_batch_size", 1))
    steps, uses = total_steps(sub, n, batch)
    every = _every(steps)
    values.update(max_train_steps=steps, save_every_n_steps=every, sample_every_n_steps=every,
                  save_every_n_epochs=0, sample_every_n_epochs=0)
    count = f"{n} images ({'a typical count; the real count changes it' if typical else 'your dataset'})"
    reasons.append(f"max_train_steps = {steps}: {count} x {sub.uses_per_image[1]} uses each for {a(sub.label)} "
                   f"({sub.uses_source}) = {n * sub.uses_per_image[1]} image uses"
                   + (f", kept to {uses} ({STEPS_SOURCE})" if uses != n * sub.uses_per_image[1] else "")
                   + (f", / batch {batch}" if batch > 1 else ""))
    reasons.append(f"save_every_n_steps = sample_every_n_steps = {every}: a LoRA and samples about 4 times per run, "
                   "to pick the best one afterwards (peers save and sample often: ai-toolkit every 250 steps)")
    return values, reasons


VALIDATION_MIN_IMAGES = 12


def validation_choice(images: int) -> tuple[int, str]:
    """How many of the user's images to hold out for the validation loss (0 = none), and why."""
    if images < VALIDATION_MIN_IMAGES:
        return 0, (f"validation_split = 0: with {images} images each one is needed for training, and a validation "
                   f"loss from one or two held-out images says little (from {VALIDATION_MIN_IMAGES} images on, a "
                   "tenth is held out); pick the epoch from the samples")
    held = min(8, max(2, round(images / 10)))
    return held, (f"validation_split = {held}: {held} of your {images} images are held out of training; their loss, "
                  "measured for every saved file, names the best one and warns when the run starts to overfit")


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return " ".join(map(str, value))
    if isinstance(value, float):
        return num(value)
    return str(value)


def suggest_config(family: str, vram_gb: float, images: int | None, subject: str) -> Suggestion:
    """The table's config for this GPU and dataset, checked with the VRAM estimate: it fits `vram_gb`, or the
    estimate's cheapest changes are applied, or `fits` is False and `message` says why."""
    from ..estimate.vram import estimate, suggest
    from .toml_io import validate

    if vram_gb <= 0:
        raise ValueError(f"--vram {vram_gb:g}: give your GPU's memory in GB, e.g. 8, 12, 16 or 24")
    fam, sub = family_of(family), subject_of(subject)
    tier = tier_for(vram_gb) or TIERS[0]
    values, reasons = recipe_values(fam.name, sub.name, tier, images)
    if tier != vram_gb:
        reasons.insert(0, f"{vram_gb:g} GB of VRAM: the {tier} GB settings"
                       + (" (the smallest tier), then checked with the estimate" if vram_gb < tier else ""))
    n = images if images and images > 0 else sub.typical_images
    out = Suggestion(fam.name, sub.name, vram_gb, tier, n, values, reasons)
    cfg = validate(values)
    est = suggest(cfg, vram_gb, fam.name)
    out.peak_vram_gb, out.fits = est.peak_vram_gb, est.fits
    if est.fits:
        out.reasons.append(f"Estimated peak VRAM {est.peak_vram_gb:.1f} GB: fits in {vram_gb:g} GB")
        return out
    if est.suggestions and est.suggestions[-1]["fits"]:
        for change in est.suggestions:
            values.update(change["set"])
            out.reasons.append(f"to fit {vram_gb:g} GB: {change['change']} ({_sets(change['set'])}) -> "
                               f"{change['peak_vram_gb']:.1f} GB")
        out.changes = est.suggestions
        final = estimate(validate(values), fam.name)
        out.peak_vram_gb, out.fits = final.peak_vram_gb, final.peak_vram_gb <= vram_gb
        steps, _ = total_steps(sub, n, int(values.get("train_batch_size", 1)), int(values.get("gradient_accumulation_steps", 1)))
        values["max_train_steps"] = steps
        out.reasons.append(f"Estimated peak VRAM {final.peak_vram_gb:.1f} GB: fits in {vram_gb:g} GB")
        return out
    lowest = min([est.peak_vram_gb] + [s["peak_vram_gb"] for s in est.suggestions])
    out.fits = False
    out.peak_vram_gb = lowest
    tried = "; ".join(s["change"] for s in est.suggestions) or "nothing left to change"
    why = MEMORY[fam.name][tier].no_fit
    if not why:  # the phase that sets the lowest peak, in the estimate's words
        tried_values = {**values, **{k: v for c in est.suggestions for k, v in c["set"].items()}}
        why = next((n for n in estimate(validate(tried_values), fam.name).notes if n.startswith("the peak is")), "")
    out.message = (f"Nothing fits {vram_gb:g} GB for {fam.label}: even with every memory saving ({tried}) the "
                   f"estimate is {lowest:.1f} GB" + (f" ({why})" if why else "") + ". Use a GPU "
                   "with more memory or a smaller family" + _smaller(fam.name) + ".")
    out.reasons.append(out.message)
    return out


def _smaller(family: str) -> str:
    """' (SDXL or SD1.5)': the families the table lists before `family` (it lists them smallest first)."""
    before = [f.label for f in FAMILIES.values()][:list(FAMILIES).index(family)][::-1]
    return f" ({' or '.join(before)})" if before else ""


def _sets(change: dict[str, Any]) -> str:
    return ", ".join(f"{k} = {_show(v)}" for k, v in change.items())


def table_cells() -> list[tuple[str, str, int]]:
    """Every (family, subject, tier) of the table."""
    return [(f, s, t) for f in FAMILIES for s in ("character", "style", "concept", "clothing") for t in TIERS]
