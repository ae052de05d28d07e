"""The last steps: sd-scripts' defaults for keys its file leaves out, and every key no step took."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .coerce import off, same
from .keys import FLUX_SD3, FLUX_SD3_PREFIXES, GUI_DEFAULTS, LYCORIS_KEYS, RUNTIME, SD_SCRIPTS_DEFAULTS
from .report import fmt

if TYPE_CHECKING:
    from .converter import Converter


def step_sd_scripts_defaults(cv: Converter) -> None:
    """An sd-scripts file leaves out what it keeps at sd-scripts' defaults: set those where ours differ."""
    filled = []
    rates_set = "unet_lr" in cv.out and ("text_encoder_lr" in cv.out or cv.out.get("network_train_unet_only"))
    for key, value in SD_SCRIPTS_DEFAULTS.items():
        if key == "learning_rate" and rates_set:
            continue
        if key in cv.out or key in cv.src or (key == "sample_sampler" and (not cv.out.get("sample_prompts")
                                                                            or cv.flux)):  # Flux: one sampler
            continue
        cv.out[key] = value
        filled.append(f"{key} = {fmt(key, value)}")
    if "max_train_epochs" not in cv.out and "max_train_steps" not in cv.out \
            and not cv.has("max_train_epochs") and not cv.has("max_train_steps"):
        cv.out["max_train_steps"] = 1600
        filled.append("max_train_steps = 1600")
    if filled:
        cv.note("not in the file, set to sd-scripts' own default so the run matches: " + ", ".join(filled))


def step_leftovers(cv: Converter) -> None:
    """Every key no step took: ignored (off, default, unused), Flux/SD3, runtime, or not converted."""
    lora_type = str(cv.src.get("LoRA_type") or "Standard")
    multires = not off(cv.src.get("multires_noise_iterations"))
    huber = str(cv.src.get("loss_type", "l2")).lower() not in ("l2", "")
    for key, value in cv.src.items():
        if key in cv.used:
            continue
        cv.used.add(key)
        if off(value) or (key in GUI_DEFAULTS and same(value, GUI_DEFAULTS[key])):
            cv.c.ignored.append(key)
        elif key == "multires_noise_discount" and not multires:
            cv.c.ignored.append(key)
        elif key.startswith("huber_") and not huber:
            cv.c.ignored.append(key)
        elif key in ("ggpo_sigma", "ggpo_beta") and off(cv.src.get("train_lora_ggpo")):
            cv.c.ignored.append(key)
        elif key in LYCORIS_KEYS and not lora_type.startswith("LyCORIS"):
            cv.c.ignored.append(key)
        elif key in FLUX_SD3 or key.startswith(FLUX_SD3_PREFIXES):
            if cv.flux_sd3:
                cv.c.flux_sd3[key] = value
            else:
                cv.c.ignored.append(key)
        elif key in RUNTIME:
            cv.c.runtime[key] = value
        elif key in ("save_state", "save_state_on_train_end"):
            cv.note(f"{key} = true: resumable state is always saved here (every save_state_every_n_steps "
                    "steps and at the end)")
        else:
            cv.unmapped(key, value)
