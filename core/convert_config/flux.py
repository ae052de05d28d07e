"""Flux.1: telling a Flux config apart, and its settings (model files, noise levels, guidance, ...) -> ours.

Both kohya_ss's GUI (flux1_checkbox, LoRA_type "Flux1") and sd-scripts' flux_train_network.py use the same option
names as ours (clip_l, t5xxl, ae, timestep_sampling, ...). Their defaults are sd-scripts' argparse defaults, which
differ from ours, so a Flux config always gets these written out, taken from the file or filled with the default
the source program would have used. fp8_base and blocks_to_swap map to base_precision (fp8_base without
fp8_base_unet also to t5xxl_precision) and blocks_to_swap (convert_config/memory.py); options we lack (CPU offloading, per-part block swapping, T5 training, block selection,
per-part ranks) are reported one by one with the reason.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..config.schema import TrainConfig
from .coerce import blank, off, same
from .keys import (FLUX_LOW_VRAM, FLUX_PART_DIMS, FLUX_SD3, FLUX_SD3_PREFIXES, GUI_DEFAULTS, GUI_FLUX_DEFAULTS,
                   SD_SCRIPTS_FLUX_DEFAULTS)
from .report import fmt

if TYPE_CHECKING:
    from .converter import Converter

FLUX_MODULES = ("networks.lora_flux", "networks.oft_flux")
FILE_KEYS = ("clip_l", "t5xxl", "ae")

LOW_VRAM = ("low-VRAM option not available here: use base_precision (fp8 or nf4) and blocks_to_swap instead, and see "
            "`python -m core estimate`")
NOT_FOR_FLUX = "does not apply to Flux; sd-scripts' Flux training does not use it either"
T5_NEVER = "T5 is never trained here: only the Flux transformer and, unless network_train_unet_only, CLIP-L"
SOME_BLOCKS = "training only some blocks is not supported: all double and single blocks are trained"
NO_CONV = "Flux has no convolution layers to train"


def flux_source(cv: Converter) -> str | None:
    """Why the config is a Flux.1 one ("flux1_checkbox = true", ...), or None."""
    if cv.gui:
        if cv.flag("flux1_checkbox"):
            return "flux1_checkbox = true"
        lora_type = str(cv.src.get("LoRA_type") or "")
        if lora_type.startswith("Flux") and off(cv.src.get("sd3_checkbox")):  # with sd3_checkbox: SD3 is trained
            return f"LoRA_type = {fmt('x', lora_type)}"
        return None
    module = str(cv.src.get("network_module") or "").strip()
    if module in FLUX_MODULES:
        return f"network_module = {fmt('x', module)}"
    if module == "networks.lora_sd3" or not blank(cv.src.get("clip_g")):
        return None  # sd3_train_network.py also takes clip_l and t5xxl
    if str(cv.src.get("model_type") or "").strip().lower() in ("flux", "chroma"):
        return f"model_type = {fmt('x', cv.src['model_type'])}"
    given = [k for k in FILE_KEYS if not blank(cv.src.get(k))]
    return f"{' / '.join(given)} set (options of flux_train_network.py)" if given else None


def _ignore(cv: Converter, label: str) -> None:
    """A source key or network argument that is off, empty or the default: listed as ignored."""
    if label in cv.src:
        cv.ignore(label)
    elif label not in cv.c.ignored:
        cv.c.ignored.append(label)


def flux_network_option(cv: Converter, key: str, value: Any, label: str) -> bool:
    """One networks.lora_flux argument (a network_args item, or the GUI field kohya_ss turns into one).
    `label` names it in the report; False when `key` is not a Flux network argument."""
    if key == "train_blocks":
        v = str(value).strip().lower()
        if blank(value) or v == "all":
            _ignore(cv, label)
        else:
            cv.unmapped(label, value, f"training only the {v} blocks is not supported: all double and single blocks "
                                      "are trained; flux_lora_layers = \"attention\" is the smaller choice")
    elif key == "split_qkv":
        if off(value):
            _ignore(cv, label)
        else:
            cv.used.add(label)
            cv.note(f"{label} = {fmt('x', value)}: q, k and v always get separate LoRAs here (diffusers' layout), "
                    "as with split_qkv")
    elif key == "train_t5xxl":
        if off(value):
            _ignore(cv, label)
        else:
            cv.unmapped(label, value, T5_NEVER)
    elif key == "enable_all_linear":
        if off(value):
            _ignore(cv, label)
        else:
            cv.unmapped(label, value, "an option of LoRA_type \"Flux1 OFT\" (OFT is not supported); a LoRA here "
                                      "goes on every Linear layer of the blocks with flux_lora_layers = \"all\", "
                                      "the default")
    elif key in FLUX_PART_DIMS:
        if blank(value):
            _ignore(cv, label)
        else:
            cv.unmapped(label, value, "ranks for single parts are not supported: every trained layer gets "
                                      "network_dim; flux_lora_layers = \"attention\" trains the attention layers only")
    elif key == "in_dims":
        if blank(value):
            _ignore(cv, label)
        else:
            cv.unmapped(label, value, "the input layers (img_in, txt_in, time_in, vector_in, guidance_in) are not "
                                      "trained here")
    elif key in ("train_double_block_indices", "train_single_block_indices"):
        if blank(value) or str(value).strip().lower() == "all":
            _ignore(cv, label)
        else:
            cv.unmapped(label, value, SOME_BLOCKS)
    elif key == "verbose":
        if off(value):
            _ignore(cv, label)
        else:
            cv.used.add(label)
            cv.c.runtime[label] = value
    else:
        return False
    return True


def _put_values(cv: Converter) -> None:
    """clip_l / t5xxl / ae, and the noise-level and guidance settings, with the source program's defaults."""
    for key in FILE_KEYS:
        if key in cv.src:
            v = cv.take(key)
            if blank(v):
                cv.ignore(key)
            else:
                cv.put_checked(key, str(v).strip(), key)
    defaults = GUI_FLUX_DEFAULTS if cv.gui else SD_SCRIPTS_FLUX_DEFAULTS
    who = "kohya_ss's" if cv.gui else "sd-scripts'"
    kept, filled = [], []
    for key, default in defaults.items():
        ours_default = TrainConfig.model_fields[key].default
        v = cv.take(key)
        if not blank(v):
            if key in ("timestep_sampling", "model_prediction_type"):
                v = str(v).strip().lower()
            if cv.put_checked(key, v, key) and same(cv.out[key], default) and not same(default, ours_default):
                kept.append(f"{key} = {fmt(key, cv.out[key])}")
            continue
        if key in cv.src:
            cv.ignore(key)
        cv.out[key] = default
        filled.append(f"{key} = {fmt(key, default)}")
    if kept:
        cv.note(f"{', '.join(kept)}: {who} Flux default{'s' if len(kept) > 1 else ''}, kept because ours "
                f"differ{'s' if len(kept) == 1 else ''}")
    if filled:
        cv.note(f"not set in the file, so {who} Flux default applies; written explicitly: {', '.join(filled)}")


def _not_for_flux(cv: Converter) -> None:
    """SD settings of no use for Flux (the trainer here ignores them too)."""
    for key in ("min_snr_gamma", "noise_offset"):
        if key in cv.src:
            cv.refuse_unless_off(key, f"{key} {NOT_FOR_FLUX}")
    if "clip_skip" in cv.src:
        cv.refuse_unless_off("clip_skip", f"clip_skip {NOT_FOR_FLUX}", lambda v: off(v) or same(v, 1))
    if "vae" in cv.src:
        cv.refuse_unless_off("vae", "Flux's autoencoder is given with ae; vae is for SD models, and sd-scripts' Flux "
                                    "training does not read it either", blank)


def _text_encoders(cv: Converter) -> None:
    """T5 options (T5 is never trained here) and text-encoder output caching."""
    if "t5xxl_lr" in cv.src:
        cv.refuse_unless_off("t5xxl_lr", T5_NEVER)
    if "apply_t5_attn_mask" in cv.src:
        cv.refuse_unless_off("apply_t5_attn_mask", "the T5 attention mask is not applied here: captions are "
                                                   "encoded as sd-scripts does without apply_t5_attn_mask")
    mem_key = "flux1_cache_text_encoder_outputs" if cv.gui else "cache_text_encoder_outputs"
    disk_key = "flux1_cache_text_encoder_outputs_to_disk" if cv.gui else "cache_text_encoder_outputs_to_disk"
    mem = cv.flag(mem_key) if mem_key in cv.src else False
    disk = cv.flag(disk_key) if disk_key in cv.src else False
    if disk:
        cv.put("cache_text_encoder_outputs_to_disk", True, disk_key)
        if disk_key != "cache_text_encoder_outputs_to_disk":
            cv.note(f"{disk_key} = true -> cache_text_encoder_outputs_to_disk = true")
    elif disk_key in cv.src:
        cv.ignore(disk_key)
    if mem or disk:
        cv.put("cache_text_encoder_outputs", True, mem_key if mem else disk_key)
        if mem_key != "cache_text_encoder_outputs" and mem:
            cv.note(f"{mem_key} = true -> cache_text_encoder_outputs = true")
    elif mem_key in cv.src:
        cv.ignore(mem_key)


def _low_vram(cv: Converter) -> None:
    """fp8 base weights (step_memory) and block swapping have an equivalent; CPU offloading and the rest do not."""
    from .memory import flux_blocks_to_swap

    for key in FLUX_LOW_VRAM:
        if key not in cv.src or key in cv.used:
            continue
        v = cv.take(key)
        if key == "blocks_to_swap":
            flux_blocks_to_swap(cv, v)
        elif off(v):
            cv.ignore(key)
        elif key == "split_mode":
            cv.unmapped(key, v, LOW_VRAM + "; split_mode is sd-scripts' deprecated block swapping, and kohya_ss also "
                                         "trains only the single blocks with it")
        else:
            cv.unmapped(key, v, LOW_VRAM)


def _model_type(cv: Converter) -> None:
    if "model_type" not in cv.src:
        return
    v = cv.take("model_type")
    if blank(v) or str(v).strip().lower() == "flux":
        cv.ignore("model_type")
    elif str(v).strip().lower() == "chroma":
        cv.unmapped("model_type", v, "Chroma is not supported: the base model must be Flux.1 dev or schnell")
    else:
        cv.unmapped("model_type", v, "only Flux.1 (dev or schnell) is supported")


def _sd3_and_weighting(cv: Converter) -> None:
    """What is left of the GUI's Flux/SD3 fields: SD3 settings, and sd-scripts' loss weighting options."""
    weighting = str(cv.src.get("weighting_scheme") or "none").strip().lower()
    unused = []
    for key, value in list(cv.src.items()):
        if key in cv.used or not (key in FLUX_SD3 or key.startswith(FLUX_SD3_PREFIXES)):
            continue
        if not cv.gui and key == "weighting_scheme":
            if weighting == "none":
                cv.ignore(key)
            else:
                cv.unmapped(key, value, "loss weighting schemes are not supported; sd-scripts' Flux default is "
                                        "\"none\", as here")
        elif not cv.gui and key in ("logit_mean", "logit_std", "mode_scale"):
            if weighting == "none":
                cv.ignore(key)
            else:
                cv.unmapped(key, value, f"belongs to weighting_scheme {fmt('x', weighting)}")
        elif off(value) or (key in GUI_DEFAULTS and same(value, GUI_DEFAULTS[key])):
            cv.ignore(key)
        elif cv.gui:
            cv.used.add(key)
            unused.append(f"{key} = {fmt(key, value)}")
        else:
            cv.unmapped(key, value, "not an option of flux_train_network.py (an SD3 one)")
    if unused:
        cv.note("SD3 settings the kohya_ss GUI saves with every config, not used for Flux (kohya_ss passes them only "
                "for SD3): " + ", ".join(unused))


def step_flux(cv: Converter) -> None:
    """A Flux config's own settings; for other configs nothing (the GUI's Flux fields stay ignored)."""
    if not cv.flux:
        return
    _put_values(cv)
    _not_for_flux(cv)
    _text_encoders(cv)
    split_mode = cv.gui and not off(cv.src.get("split_mode"))  # kohya_ss then passes train_blocks=single
    for key in ("train_blocks", "split_qkv", "train_t5xxl", "enable_all_linear", *FLUX_PART_DIMS, "in_dims",
                "train_double_block_indices", "train_single_block_indices"):
        if key not in cv.src:
            continue
        v = cv.take(key)
        if key == "train_blocks" and split_mode and (blank(v) or str(v).strip().lower() == "all"):
            cv.unmapped(key, v, "split_mode = true makes kohya_ss train only the single blocks; " + SOME_BLOCKS)
            continue
        flux_network_option(cv, key, v, key)
    _low_vram(cv)
    _model_type(cv)
    _sd3_and_weighting(cv)


def flux_prompt_line(line: str) -> tuple[str, str | None]:
    """A sample prompt line without its --l (true CFG in sd-scripts' Flux sampling), and the --l value removed."""
    parts = (" " + line.strip()).split(" --")
    if not any(p.partition(" ")[0] == "l" for p in parts[1:]):
        return line, None
    kept, removed = [parts[0].strip()], None
    for part in parts[1:]:
        flag, _, value = part.partition(" ")
        if flag == "l":
            removed = value.strip()
        elif part.strip():
            kept.append("--" + part.strip())
    return " ".join(k for k in kept if k), removed


def step_flux_samples(cv: Converter) -> None:
    """Flux sample prompts: sd-scripts reads --l as a true-CFG scale (with the negative prompt) and --g as the
    distilled guidance (default 3.5); here --l would be taken as the guidance, so it is removed."""
    lines = cv.out.get("sample_prompts")
    if not cv.flux or not lines:
        return
    new, removed = [], []
    for line in lines:
        text, value = flux_prompt_line(line)
        new.append(text)
        if value is not None:
            removed.append(value)
    if removed:
        cv.out["sample_prompts"] = new
        cv.note(f"sample_prompts: --l {', '.join(sorted(set(removed)))} removed from {len(removed)} line(s): in "
                "sd-scripts' Flux sampling --l is a true-CFG scale with the negative prompt, not available here; "
                "the samples use the distilled guidance --g (default 3.5), as sd-scripts does")
