"""Warnings about a config before training starts: each names the field and the fix. Nothing here refuses a
run; the GUI shows them above Start. No torch: the checks read the config, file headers and the dataset folder.

- the base model's family differs from the preset's;
- the steps are far outside the subject's range (core/config/recipes.py, at most half of its low end or more
  than twice its high end);
- Prodigy with a learning rate other than 1;
- fewer images than the subject needs;
- the trigger word is missing from captions (or not set);
- the resolution is below the family's native size;
- an 8-bit optimizer without an NVIDIA GPU.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from .. import families
from .recipes import a, subject_of
from .schema import TrainConfig
from .suggest import uses_range



@dataclass
class Guardrail:
    key: str  # the field to change
    kind: str  # family, steps, prodigy_lr, images, trigger, resolution, optimizer
    message: str


def base_family(cfg: TrainConfig) -> str | None:
    """The base model's family: model_family when set, else read from the model's files (None: not known yet)."""
    if cfg.model_family != "auto":
        return cfg.model_family
    from ..models.choose import describe_base

    return describe_base(cfg.pretrained_model_name_or_path, cfg.base_config_dir)[0]


def native_resolution(cfg: TrainConfig, family: str) -> int | None:
    """The smallest side the family trains well at: an SD diffusers folder's own VAE sample_size (so the built-in
    32 px toy model is not warned about), else the family's (core/families)."""
    spec = families.find(family)
    p = Path(cfg.pretrained_model_name_or_path or "").expanduser()
    if spec and spec.denoiser == "unet" and (p / "vae" / "config.json").is_file():
        try:
            size = json.loads((p / "vae" / "config.json").read_text(encoding="utf-8")).get("sample_size")
            if isinstance(size, int) and size > 0:
                return size
        except (OSError, ValueError):
            pass
    return spec.min_resolution if spec else None


def captions(cfg: TrainConfig, limit: int = 2000) -> list[tuple[str, str]]:
    """(image file name, caption the trainer would read before adding the trigger word) for the training images:
    the caption file, or the folder's name without its repeats when there is none (kohya)."""
    from ..runs.steps_plan import FOLDER_RE, IMAGE_EXTS

    root = Path(cfg.train_data_dir or "").expanduser()
    out: list[tuple[str, str]] = []
    if not cfg.train_data_dir or not root.is_dir():
        return out
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and FOLDER_RE.match(p.name)):
        name = FOLDER_RE.match(folder.name).group(2).strip()
        for img in sorted(folder.iterdir()):
            if not (img.is_file() and img.suffix.lower() in IMAGE_EXTS):
                continue
            cap = img.with_suffix(cfg.caption_extension)
            try:
                text = cap.read_text(encoding="utf-8", errors="replace") if cap.is_file() else name
            except OSError:
                text = name
            out.append((f"{folder.name}/{img.name}", " ".join(text.split())))
            if len(out) >= limit:
                return out
    return out


def has_word(caption: str, word: str) -> bool:
    """As the trainer's add_trigger decides (core/data/dataset.py): the word, between start/end, spaces or commas."""
    return bool(re.search(rf"(^|[\s,]){re.escape(word)}($|[\s,])", caption, flags=re.IGNORECASE))


def check(cfg: TrainConfig, *, family: str | None = None, preset_family: str | None = None,
          subject: str | None = None, plan=None, cuda: bool | None = None) -> list[Guardrail]:
    """The warnings for `cfg`. `family`: the base model's (read from its files when None); `preset_family`: the
    family of the preset in use; `subject`: what the LoRA is of (recipes.SUBJECTS); `plan`: its StepsPlan (made
    when None); `cuda`: whether an NVIDIA GPU is there (None: not known, no check)."""
    from ..runs.steps_plan import steps_plan

    out: list[Guardrail] = []
    family = family or base_family(cfg)
    if family and preset_family and family != preset_family:
        want, have = families.title(preset_family), families.title(family)
        out.append(Guardrail("pretrained_model_name_or_path", "family",
                             f"The preset is made for {want}, but the base model is {have}: choose a {have} preset, "
                             f"or a {want} base model (pretrained_model_name_or_path)."))
    if cfg.optimizer_type == "Prodigy":
        bad = [(k, v) for k, v in (("learning_rate", cfg.learning_rate), ("unet_lr", cfg.unet_lr),
                                   ("text_encoder_lr", cfg.text_encoder_lr)) if v is not None and v != 1.0]
        for key, value in bad:
            out.append(Guardrail(key, "prodigy_lr", f"{key} = {value:g} with Prodigy: Prodigy finds the step size "
                                 f"itself and expects 1.0 (its README); set {key} to 1"
                                 + (" or leave it empty." if key != "learning_rate" else ".")))
    if family:
        native = native_resolution(cfg, family)
        side = min(cfg.resolution_wh)
        if native and side < native:
            out.append(Guardrail("resolution", "resolution",
                                 f"resolution {cfg.resolution} is below {families.title(family)}'s native "
                                 f"{native} px: the LoRA learns blurry detail and shifts the model's look. Set "
                                 f"resolution to {native}."))
    if cuda is False and cfg.optimizer_type in ("AdamW8bit", "Lion8bit"):
        out.append(Guardrail("optimizer_type", "optimizer",
                             f"optimizer_type {cfg.optimizer_type} needs an NVIDIA GPU (bitsandbytes) and none was found: "
                             f"training would stop at the start. Use AdamW{' or Lion' if 'Lion' in cfg.optimizer_type else ''}."))
    caps = captions(cfg)
    if cfg.trigger_word.strip():
        missing = [name for name, text in caps if not has_word(text, cfg.trigger_word.strip())]
        if missing:
            out.append(Guardrail("trigger_word", "trigger",
                                 f"The trigger word '{cfg.trigger_word.strip()}' is missing from {len(missing)} of "
                                 f"{len(caps)} captions (e.g. {missing[0]}): the trainer puts it in front, but a LoRA "
                                 "learns it better where the caption names the subject. Add it to the captions "
                                 "(Dataset tab: Add trigger word) or fix trigger_word."))
    elif caps:
        out.append(Guardrail("trigger_word", "trigger",
                             "trigger_word is empty: no word calls the LoRA up in prompts. Set a rare word such as "
                             "zqx (it is put in front of each caption that lacks it)."))
    if subject:
        sub = subject_of(subject)
        plan = plan or steps_plan(cfg.train_data_dir, cfg)
        if plan.images and plan.images < sub.min_images:
            out.append(Guardrail("train_data_dir", "images",
                                 f"Only {plan.images} images for {a(sub.label)}: use at least {sub.min_images} "
                                 f"({sub.images_source}); add pictures to train_data_dir."))
        if plan.images and plan.total_steps:
            share = plan.uses_per_epoch / max(1, plan.uses_per_epoch + plan.reg_uses_per_epoch)
            uses = plan.total_steps * cfg.train_batch_size * cfg.gradient_accumulation_steps * share
            lo, hi = uses_range(sub, plan.images)
            key = "max_train_steps" if cfg.max_train_steps else "max_train_epochs"
            per = uses / plan.images
            good = f"{sub.uses_per_image[0]}-{sub.uses_per_image[2]} times"
            if uses < lo / 2 or uses > hi * 2:
                aim = round(min(max(uses, lo), hi) / (cfg.train_batch_size * cfg.gradient_accumulation_steps * share))
                out.append(Guardrail(key, "steps",
                                     f"{plan.total_steps} steps show each of the {plan.images} images about {per:.0f} "
                                     f"times: {'far too few' if uses < lo / 2 else 'far too many'} for {a(sub.label)} "
                                     f"(each image {good}; {sub.uses_source}). Set {key} so the run has about "
                                     f"{aim} steps" + (" (max_train_steps overrides the epochs)." if key ==
                                                       "max_train_steps" else "; or set max_train_steps.")))
    return out

