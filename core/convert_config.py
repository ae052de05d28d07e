"""Convert a kohya_ss GUI config (.json) or an sd-scripts config (.toml) into our TOML.

    python -m core convert-config my_kohya_config.json > run.toml
    python -m core convert-config sd-scripts.toml -o run.toml

Every key of the source ends up in exactly one place: converted into the output, converted with a
note (a changed name, a nearest choice, a computed value), listed as "not converted" with its value
and the reason, or, for empty/off/default GUI fields, named in one "ignored" line. The report goes to
stderr as lines starting with "# " and is also written as a comment header at the top of the TOML,
so nothing is lost when the output is redirected to a file. The converted values are checked with
:func:`core.config_io.validate`; a value it rejects is reported and left out, so the TOML always loads.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from .config_io import ConfigError, atomic_write_text, flatten, to_toml, validate
from .schema import TrainConfig, literal_choices

KOHYA_GUI = "kohya_ss GUI"
SD_SCRIPTS = "sd-scripts"
OURS = "LoRA Workshop"

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}

# Keys that only the kohya_ss GUI writes: any of them means a GUI config.
_GUI_MARKERS = {"LoRA_type", "epoch", "max_resolution", "lr_warmup", "additional_parameters", "model_list",
                "optimizer", "save_as_bool", "training_preset", "sdxl_no_half_vae", "lora_network_weights"}
# Keys that only our own TOML has.
_OUR_MARKERS = {"model_family", "trigger_word", "save_state_every_n_steps", "export_diffusers_format", "lora_ff",
                "lora_proj", "use_dora", "base_config_dir", "cache_dir"}

# Fields handled by a dedicated step, never copied as they are.
_SPECIAL = {"learning_rate", "unet_lr", "text_encoder_lr", "network_train_unet_only", "network_train_text_encoder_only",
            "optimizer_type", "optimizer_args", "max_train_epochs", "max_train_steps", "lr_warmup_steps",
            "lr_scheduler", "sample_prompts", "sample_sampler", "sdpa", "conv_dim", "conv_alpha", "use_dora",
            "mixed_precision", "save_precision", "model_family", "v_parameterization"}

# ------------------------------------------------------------------ name tables
_OPTIMIZERS = {"adamw": "AdamW", "adamw8bit": "AdamW8bit", "lion": "Lion", "lion8bit": "Lion8bit",
               "prodigy": "Prodigy", "adafactor": "Adafactor", "sgd": "SGD"}
# sd-scripts name (lower case) -> (ours, extra optimizer_args, note)
_OPTIMIZER_NEAR: dict[str, tuple[str, list[str], str]] = {
    "pagedadamw8bit": ("AdamW8bit", ["is_paged=True"], "the same bitsandbytes optimizer with is_paged=True"),
    "pagedlion8bit": ("Lion8bit", ["is_paged=True"], "the same bitsandbytes optimizer with is_paged=True"),
    "pagedadamw": ("AdamW", [], "nearest available: plain AdamW (not paged)"),
    "pagedadamw32bit": ("AdamW", [], "nearest available: plain AdamW (not paged)"),
    "sgdnesterov": ("SGD", ["nesterov=True"], "SGD with nesterov=True, as sd-scripts does"),
    "sgdnesterov8bit": ("SGD", ["nesterov=True"], "nearest available: SGD with nesterov=True (not 8-bit)"),
    "adamwschedulefree": ("AdamW", [], "nearest available: AdamW (not schedule-free)"),
    "prodigyplusschedulefree": ("Prodigy", [], "nearest available: Prodigy (not schedule-free)"),
}
for _n in ("dadaptation", "dadaptadam", "dadaptadampreprint", "dadaptadagrad", "dadaptadan", "dadaptadanip",
           "dadaptlion", "dadaptsgd"):
    _OPTIMIZER_NEAR[_n] = ("Prodigy", [], "nearest available: Prodigy, which like D-Adaptation finds the step size "
                                          "itself; keep learning_rate near 1.0")
# Arguments each optimizer accepts, used only when the optimizer is replaced by a different one.
_PRODIGY_ARGS = {"betas", "beta3", "eps", "weight_decay", "decouple", "use_bias_correction", "safeguard_warmup",
                 "d0", "d_coef", "growth_rate", "fsdp_in_use", "slice_p"}
_ADAMW_ARGS = {"betas", "eps", "weight_decay", "amsgrad"}

_SCHEDULERS = set(literal_choices(TrainConfig.model_fields["lr_scheduler"].annotation) or [])
_SCHEDULER_NEAR = {"cosine_with_min_lr": "cosine", "warmup_stable_decay": "constant_with_warmup"}

_SAMPLERS = list(literal_choices(TrainConfig.model_fields["sample_sampler"].annotation) or [])
# name -> (ours, why); names already ours map to themselves without a note.
_SAMPLER_NEAR: dict[str, tuple[str, str]] = {
    "k_euler": ("euler", "the same sampler"),
    "k_euler_a": ("euler_a", "the same sampler"),
    "k_lms": ("lms", "the same sampler"),
    "plms": ("pndm", "the same sampler"),
    "dpmsolver": ("dpmsolver++", "nearest available: the multistep version"),
    "dpmsingle": ("dpmsolver++", "nearest available: the multistep version"),
    "dpm_2": ("heun", "nearest available: both are second-order samplers"),
    "k_dpm_2": ("heun", "nearest available: both are second-order samplers"),
    "dpm_2_a": ("euler_a", "nearest available: both are ancestral samplers"),
    "k_dpm_2_a": ("euler_a", "nearest available: both are ancestral samplers"),
    "dpm++_2m": ("dpmsolver++", "the same sampler"),
    "dpmpp_2m": ("dpmsolver++", "the same sampler"),
    "dpm++_2m_karras": ("dpm++2m_karras", "the same sampler"),
    "dpmpp_2m_karras": ("dpm++2m_karras", "the same sampler"),
}
try:  # A1111 display names ("Euler a", "DPM++ 2M Karras") as well
    from .samplers import A1111_NAMES

    for _ours, _a1111 in A1111_NAMES.items():
        _SAMPLER_NEAR.setdefault(_a1111.lower(), (_ours, "the same sampler"))
except ImportError:  # pragma: no cover
    pass

_LYCORIS_LOCON_TYPES = {"LoCon", "LyCORIS/LoCon"}

# ------------------------------------------------------------ leftover classes
# Settings about processes, logging and uploads: nothing to convert, listed in one line.
_RUNTIME = {
    "max_data_loader_n_workers", "persistent_data_loader_workers", "num_cpu_threads_per_process", "num_processes",
    "num_machines", "multi_gpu", "gpu_ids", "main_process_port", "dynamo_backend", "dynamo_mode",
    "dynamo_use_fullgraph", "dynamo_use_dynamic", "extra_accelerate_launch_args", "vae_batch_size", "lowram",
    "lowvram", "highvram", "logging_dir", "log_with", "log_prefix", "log_tracker_name", "log_tracker_config",
    "log_config", "use_wandb", "wandb_api_key", "wandb_run_name", "huggingface_repo_id", "huggingface_token",
    "huggingface_repo_type", "huggingface_repo_visibility", "huggingface_path_in_repo", "save_state_to_huggingface",
    "resume_from_huggingface", "async_upload", "skip_cache_check", "model_list", "save_as_bool", "training_preset",
    "file_path", "api_name", "console_log_level", "console_log_file", "console_log_simple", "ddp_timeout",
    "ddp_gradient_as_bucket_view", "ddp_static_graph", "deepspeed", "zero_stage", "output_config", "config_file",
    "tokenizer_cache_dir", "disable_mmap_load_safetensors", "show_timesteps", "mem_eff_save",
}
# Flux.1 / SD3 settings of newer kohya_ss versions (always written, used only with those models).
_FLUX_SD3 = {
    "ae", "clip_l", "clip_g", "t5xxl", "t5xxl_device", "t5xxl_dtype", "t5xxl_max_token_length", "t5xxl_lr",
    "apply_t5_attn_mask", "split_mode", "split_qkv", "train_t5xxl", "enable_all_linear", "guidance_scale",
    "discrete_flow_shift", "model_prediction_type", "timestep_sampling", "train_blocks", "blocks_to_swap",
    "single_blocks_to_swap", "double_blocks_to_swap", "img_attn_dim", "img_mlp_dim", "img_mod_dim", "single_dim",
    "txt_attn_dim", "txt_mlp_dim", "txt_mod_dim", "single_mod_dim", "in_dims", "train_double_block_indices",
    "train_single_block_indices", "clip_g_dropout_rate", "logit_mean", "logit_std", "mode_scale",
    "pos_emb_random_crop_rate", "save_clip", "save_t5xxl", "weighting_scheme", "cpu_offload_checkpointing",
    "fp8_base_unet", "sigmoid_scale",
}
_FLUX_SD3_PREFIXES = ("flux1_", "sd3_")
# LyCORIS-only GUI fields (written for every LoRA_type).
_LYCORIS_KEYS = {"LyCORIS_preset", "factor", "use_cp", "use_tucker", "use_scalar", "rank_dropout_scale", "constrain",
                 "rescaled", "train_norm", "decompose_both", "train_on_input", "unit", "bypass_mode"}
# Values the GUI writes by default; equal to these, the key is noise.
_GUI_DEFAULTS: dict[str, Any] = {
    "max_token_length": 75, "noise_offset_type": "Original", "save_model_as": "safetensors", "LyCORIS_preset": "full",
    "factor": -1, "unit": 1, "train_on_input": True, "max_timestep": 1000, "min_timestep": 0, "loss_type": "l2",
    "huber_schedule": "snr", "huber_c": 0.1, "huber_scale": 1, "dynamo_backend": "no", "dynamo_mode": "default",
    "num_processes": 1, "num_machines": 1, "num_cpu_threads_per_process": 2, "training_preset": "none",
    "t5xxl_dtype": "bf16", "logit_std": 1, "mode_scale": 1.29, "weighting_scheme": "logit_normal",
    "train_blocks": "all", "train_double_block_indices": "all", "train_single_block_indices": "all",
    "timestep_sampling": "sigma", "model_prediction_type": "sigma_scaled", "discrete_flow_shift": 3,
    "guidance_scale": 3.5, "t5xxl_max_token_length": 512, "sd3_text_encoder_batch_size": 1, "ggpo_sigma": 0.03,
    "ggpo_beta": 0.01, "model_list": "custom", "lr_scheduler_type": "",
}
_SECRET = re.compile(r"(api_key|password|secret|(^|_)token)$", re.I)

# Why a key has no equivalent (plain words); anything else gets the generic reason.
_REASONS: dict[str, str] = {
    "color_aug": "colour augmentation is not supported",
    "random_crop": "random crop is not supported (images are resized into their bucket)",
    "face_crop_aug_range": "face-crop augmentation is not supported",
    "full_fp16": "not supported: LoRA weights stay in fp32 and mixed_precision gives the speed",
    "full_bf16": "not supported: LoRA weights stay in fp32 and mixed_precision gives the speed",
    "fp8_base": "fp8 base weights are not supported",
    "no_half_vae": "not needed: the VAE precision is chosen per model family (SDXL's VAE runs in fp32)",
    "sdxl_no_half_vae": "not needed: the VAE precision is chosen per model family (SDXL's VAE runs in fp32)",
    "scale_weight_norms": "max-norm regularization is not supported",
    "noise_offset_type": "only the original noise offset is supported",
    "multires_noise_iterations": "multires noise is not supported (noise_offset is)",
    "multires_noise_discount": "multires noise is not supported (noise_offset is)",
    "adaptive_noise_scale": "adaptive noise scale is not supported",
    "noise_offset_random_strength": "random noise-offset strength is not supported",
    "ip_noise_gamma": "input perturbation noise is not supported",
    "ip_noise_gamma_random_strength": "input perturbation noise is not supported",
    "v_pred_like_loss": "this loss variant is not supported",
    "scale_v_pred_loss_like_noise_pred": "this loss variant is not supported",
    "zero_terminal_snr": "zero terminal SNR is not supported",
    "debiased_estimation_loss": "this loss variant is not supported",
    "loss_type": "only the L2 (MSE) loss is supported",
    "huber_c": "only the L2 (MSE) loss is supported",
    "huber_schedule": "only the L2 (MSE) loss is supported",
    "huber_scale": "only the L2 (MSE) loss is supported",
    "min_timestep": "the timestep range is not configurable",
    "max_timestep": "the timestep range is not configurable",
    "max_token_length": "captions are limited to 75 tokens",
    "caption_dropout_every_n_epochs": "not supported (caption_dropout_rate is)",
    "caption_tag_dropout_rate": "tag dropout is not supported (caption_dropout_rate is)",
    "caption_suffix": "not supported (trigger_word adds a word in front)",
    "weighted_captions": "weighted captions are not supported",
    "masked_loss": "masked loss is not supported",
    "alpha_mask": "masked loss is not supported",
    "network_weights": "starting from an existing LoRA's weights is not supported",
    "lora_network_weights": "starting from an existing LoRA's weights is not supported",
    "dim_from_weights": "starting from an existing LoRA's weights is not supported",
    "stop_text_encoder_training": "stopping text-encoder training part-way is not supported",
    "stop_text_encoder_training_pct": "stopping text-encoder training part-way is not supported",
    "rank_dropout": "not supported (network_dropout is)",
    "module_dropout": "not supported (network_dropout is)",
    "loraplus_lr_ratio": "LoRA+ is not supported",
    "loraplus_unet_lr_ratio": "LoRA+ is not supported",
    "loraplus_text_encoder_lr_ratio": "LoRA+ is not supported",
    "train_lora_ggpo": "GGPO is not supported",
    "save_last_n_steps": "old LoRA files are kept; delete them by hand",
    "save_last_n_steps_state": "old LoRA files are kept; delete them by hand",
    "save_last_n_epochs": "old LoRA files are kept; delete them by hand",
    "save_last_n_epochs_state": "old LoRA files are kept; delete them by hand",
    "save_n_epoch_ratio": "not supported (save_every_n_epochs is)",
    "save_model_as": "LoRAs are always saved as .safetensors",
    "resume": "to continue a run use `python -m core train --config run.toml --resume`",
    "lr_scheduler_args": "scheduler arguments are not supported",
    "lr_scheduler_type": "custom scheduler classes are not supported",
    "lr_decay_steps": "not supported",
    "lr_scheduler_min_lr_ratio": "not supported",
    "lr_scheduler_timescale": "not supported",
    "cache_text_encoder_outputs_to_disk": "text-encoder outputs are cached in memory only",
    "metadata_title": "not supported (training_comment is stored in the LoRA)",
    "metadata_author": "not supported (training_comment is stored in the LoRA)",
    "metadata_description": "not supported (training_comment is stored in the LoRA)",
    "metadata_license": "not supported (training_comment is stored in the LoRA)",
    "metadata_tags": "not supported (training_comment is stored in the LoRA)",
    "token_warmup_min": "token warmup is not supported",
    "token_warmup_step": "token warmup is not supported",
    "clip_skip": "clip_skip is not used for SDXL",
    "block_lr_zero_threshold": "block-wise ranks and learning rates are not supported",
}
for _k in ("down_lr_weight", "mid_lr_weight", "up_lr_weight", "block_dims", "block_alphas", "conv_block_dims",
           "conv_block_alphas"):
    _REASONS[_k] = "block-wise ranks and learning rates are not supported"

# sd-scripts' own defaults where they differ from ours (used when an sd-scripts TOML leaves the key out).
_SD_SCRIPTS_DEFAULTS: dict[str, Any] = {
    "network_dim": 4, "network_alpha": 1.0, "learning_rate": 2e-6, "caption_extension": ".caption",
    "enable_bucket": False, "sample_every_n_epochs": 0, "sample_sampler": "ddim",
}
# argparse options of sd-scripts that take several values.
_LIST_OPTIONS = {"network_args", "optimizer_args", "lr_scheduler_args", "text_encoder_lr"}
# Keys a dataset_config file may set for the whole dataset, in sd-scripts names.
_DATASET_KEYS = {"resolution", "batch_size", "enable_bucket", "min_bucket_reso", "max_bucket_reso", "bucket_reso_steps",
                 "bucket_no_upscale", "caption_extension", "shuffle_caption", "keep_tokens", "flip_aug",
                 "caption_dropout_rate", "color_aug", "random_crop", "caption_prefix", "caption_suffix",
                 "caption_dropout_every_n_epochs", "caption_tag_dropout_rate", "face_crop_aug_range",
                 "token_warmup_min", "token_warmup_step", "keep_tokens_separator"}


# ------------------------------------------------------------------ result
@dataclass
class Conversion:
    """What :func:`convert_file` found: the converted keys and everything the report says."""

    path: Path
    kind: str
    data: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    unmapped: dict[str, Any] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    runtime: dict[str, Any] = field(default_factory=dict)
    flux_sd3: dict[str, Any] = field(default_factory=dict)
    invalid: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    origin: dict[str, str] = field(default_factory=dict)  # our key -> the source key it came from

    @property
    def report(self) -> list[str]:
        lines = [f"converted from {self.kind} config {self.path}"]
        lines += [f"converted: {n}" for n in self.notes]
        for key, value in self.unmapped.items():
            lines.append(f"NOT converted: {key} = {_fmt(key, value)} ({self.reasons.get(key, 'no equivalent here')})")
        if self.flux_sd3:
            lines.append("NOT converted (Flux.1 / SD3 settings; only SD1.5, SD2 and SDXL are supported): "
                         + ", ".join(f"{k} = {_fmt(k, v)}" for k, v in self.flux_sd3.items()))
        lines += [f"invalid, left out: {n}" for n in self.invalid]
        if self.runtime:
            lines.append("not needed here (process, logging and upload settings): "
                         + ", ".join(f"{k} = {_fmt(k, v)}" for k, v in self.runtime.items()))
        if self.ignored:
            lines.append("ignored (empty, off or default in the source): " + ", ".join(self.ignored))
        return lines


# ------------------------------------------------------------------ helpers
def _fmt(key: str, value: Any, limit: int = 160) -> str:
    if _SECRET.search(key) and value not in (None, "", False):
        return '"<hidden>"'
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (int, float)):
        text = repr(value)
    else:
        try:
            text = json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError):
            text = repr(value)
    text = text.replace("\n", "\\n").replace("\r", "")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _blank(v: Any) -> bool:
    return v is None or v == [] or v == {} or (isinstance(v, str) and not v.strip())


def _off(v: Any) -> bool:
    """Empty, false or zero: a GUI field that is simply not in use."""
    if _blank(v) or v is False:
        return True
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return v == 0
    if isinstance(v, str):
        s = v.strip().lower()
        if s in ("false", "none", "no"):
            return True
        try:
            return float(s) == 0
        except ValueError:
            return False
    return False


def _same(a: Any, b: Any) -> bool:
    if isinstance(b, bool) or isinstance(a, bool):
        return a is b or (isinstance(a, str) and a.strip().lower() == str(b).lower())
    if isinstance(b, (int, float)):
        try:
            return float(a) == float(b)
        except (TypeError, ValueError):
            return False
    return a == b


class _Bad(ValueError):
    pass


def _to_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.strip().lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
        return v.strip().lower() in ("true", "1", "yes", "on")
    raise _Bad("not true or false")


def _to_float(v: Any) -> float:
    if isinstance(v, bool):
        raise _Bad("not a number")
    try:
        return float(str(v).strip()) if isinstance(v, str) else float(v)
    except (TypeError, ValueError):
        raise _Bad("not a number") from None


def _to_int(v: Any) -> int:
    f = _to_float(v)
    if not math.isfinite(f) or f != int(f):
        raise _Bad("not a whole number")
    return int(f)


def _to_lines(v: Any) -> list[str]:
    if isinstance(v, str):
        return [ln.strip() for ln in v.splitlines() if ln.strip()]
    if isinstance(v, (list, tuple)):
        return [str(x).strip() for x in v if str(x).strip()]
    raise _Bad("not a list of text lines")


def _coerce(name: str, v: Any) -> Any:
    """Turn a source value (GUI configs keep many numbers as strings) into the type of field `name`."""
    ann = TrainConfig.model_fields[name].annotation
    origin = get_origin(ann)
    if ann is bool:
        return _to_bool(v)
    if ann is int:
        return _to_int(v)
    if ann is float or (origin is Union and float in get_args(ann)):
        return _to_float(v)
    if origin is list:
        return _to_lines(v)
    if origin is Literal:
        return str(v).strip()
    if ann is str:
        if isinstance(v, float) and v == int(v):
            v = int(v)
        if isinstance(v, (list, tuple)) and name == "resolution":
            return ",".join(str(int(_to_float(x))) for x in v)
        return str(v).strip() if not isinstance(v, str) else v
    return v


def split_args(text: str) -> list[str]:
    """Split a GUI 'key=value key=value' string; brackets and quotes keep their spaces ('betas=(0.9, 0.99)')."""
    out: list[str] = []
    buf, depth, quote = "", 0, ""
    for ch in text:
        if quote:
            if ch == quote:
                quote = ""
            else:
                buf += ch
            continue
        if ch in "\"'":
            quote = ch
            continue
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(0, depth - 1)
        if ch.isspace() and depth == 0:
            if buf:
                out.append(buf)
                buf = ""
            continue
        buf += ch
    if buf:
        out.append(buf)
    merged: list[str] = []
    for tok in out:  # 'betas=0.9, 0.99' -> one item
        if merged and "=" not in tok:
            merged[-1] += tok if merged[-1].endswith(",") else " " + tok
        else:
            merged.append(tok)
    return merged


def parse_cli_args(text: str) -> tuple[dict[str, Any], list[str]]:
    """'--max_grad_norm=0 --network_args "conv_dim=4" "conv_alpha=1" --flag' -> {name: value}, stray tokens."""
    try:
        tokens = shlex.split(text)
    except ValueError:
        tokens = text.split()
    found: dict[str, list[str]] = {}
    stray: list[str] = []
    current = None
    for tok in tokens:
        if tok.startswith("--") and len(tok) > 2:
            name, eq, value = tok[2:].partition("=")
            current = name.replace("-", "_")
            found[current] = [value] if eq else []
        elif current is None:
            stray.append(tok)
        else:
            found[current].append(tok)
    out: dict[str, Any] = {}
    for name, values in found.items():
        if name in _LIST_OPTIONS:
            out[name] = values
        elif not values:
            out[name] = True
        else:
            out[name] = values[0] if len(values) == 1 else values
    return out, stray


def prompt_dict_to_line(d: dict[str, Any]) -> tuple[str, list[str]]:
    """One sd-scripts prompt-file entry (.toml/.json) -> a kohya prompt line, and the options it had to drop."""
    text = str(d.get("prompt", "")).strip()
    opts = {"negative_prompt": "n", "width": "w", "height": "h", "seed": "d", "sample_steps": "s", "steps": "s",
            "scale": "l", "guidance_scale": "l", "cfg_scale": "l", "sample_sampler": "ss", "sampler": "ss"}
    parts, dropped = [text], []
    for key, value in d.items():
        if key in ("prompt", "subset"):
            continue
        if key in opts and not _blank(value):
            parts.append(f"--{opts[key]} {value}")
        elif not _blank(value):
            dropped.append(key)
    return " ".join(p for p in parts if p), dropped


def read_prompt_file(path: Path) -> tuple[list[str], list[str]]:
    """Prompts from an sd-scripts prompt file (.txt lines, .toml [prompt]/[[prompt.subset]], .json list)."""
    text = path.read_text(encoding="utf-8-sig")
    suffix = path.suffix.lower()
    dropped: list[str] = []
    if suffix == ".toml":
        data = tomllib.loads(text)
        base = data.get("prompt", {})
        common = {k: v for k, v in base.items() if k != "subset"}
        entries = [{**common, **s} for s in base.get("subset", [])] or ([common] if common.get("prompt") else [])
    elif suffix == ".json":
        loaded = json.loads(text)
        entries = loaded if isinstance(loaded, list) else [loaded]
    else:
        return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")], []
    lines = []
    for e in entries:
        if isinstance(e, str):
            lines.append(e.strip())
        elif isinstance(e, dict):
            line, lost = prompt_dict_to_line(e)
            lines.append(line)
            dropped += lost
    return [ln for ln in lines if ln], sorted(set(dropped))


def _read_source(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError([f"config file not found: {path}"])
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError([f"{path}: cannot read it: {e}"]) from None
    as_json = path.suffix.lower() == ".json" or (path.suffix.lower() != ".toml" and text.lstrip().startswith("{"))
    try:
        data = json.loads(text) if as_json else tomllib.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError([f"{path}: not valid JSON: {e}"]) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{path}: not valid TOML: {e}"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: expected a JSON object of settings"])
    return data


# ------------------------------------------------------------------ converter
class _Converter:
    def __init__(self, path: Path, raw: dict[str, Any]):
        self.path = path
        self.base = path.resolve().parent
        self.src: dict[str, Any] = flatten(raw)
        keys = set(self.src)
        if keys & _GUI_MARKERS:
            kind = KOHYA_GUI
        elif keys & _OUR_MARKERS:
            kind = OURS
        else:
            kind = SD_SCRIPTS
        self.c = Conversion(path=path, kind=kind)
        self.out: dict[str, Any] = {}
        self.origin: dict[str, str] = {}  # our key -> source key it came from
        self.used: set[str] = set()
        self.flux_sd3 = False

    # -- small tools
    @property
    def gui(self) -> bool:
        return self.c.kind == KOHYA_GUI

    def has(self, key: str) -> bool:
        return key in self.src

    def take(self, key: str) -> Any:
        """The source value (None when absent); the key counts as handled."""
        if key in self.src:
            self.used.add(key)
        return self.src.get(key)

    def note(self, text: str) -> None:
        self.c.notes.append(text)

    def ignore(self, key: str) -> None:
        if key in self.src and key not in self.c.ignored:
            self.c.ignored.append(key)
        self.used.add(key)

    def unmapped(self, key: str, value: Any, reason: str | None = None) -> None:
        self.used.add(key)
        self.c.unmapped[key] = value
        reason = reason or _REASONS.get(key)
        if reason:
            self.c.reasons[key] = reason

    def put(self, ours: str, value: Any, src_key: str | None = None) -> bool:
        """Set one of our keys from a source value, converting its type; a bad value is reported, not set."""
        src_key = src_key or ours
        try:
            self.out[ours] = _coerce(ours, value)
        except _Bad as e:
            self.c.invalid.append(f"{src_key} = {_fmt(src_key, value)}: {e}")
            return False
        self.origin[ours] = src_key
        return True

    def number(self, key: str) -> float | None:
        """A numeric source value, or None when absent/empty/not a number (the latter is reported)."""
        v = self.take(key)
        if _blank(v):
            if key in self.src:
                self.ignore(key)
            return None
        try:
            return _to_float(v)
        except _Bad as e:
            self.c.invalid.append(f"{key} = {_fmt(key, v)}: {e}")
            return None

    def flag(self, key: str) -> bool:
        v = self.take(key)
        if v is None:
            return False
        try:
            return _to_bool(v)
        except _Bad:
            return not _off(v)

    def find_dir(self, text: str) -> Path | None:
        if _blank(text):
            return None
        p = Path(str(text)).expanduser()
        for cand in ([p] if p.is_absolute() else [Path.cwd() / p, self.base / p]):
            if cand.is_dir():
                return cand
        return None

    def find_file(self, text: str) -> tuple[Path | None, list[Path]]:
        p = Path(str(text).strip()).expanduser()
        cands = [p] if p.is_absolute() else [self.base / p, Path.cwd() / p]
        for cand in cands:
            if cand.is_file():
                return cand, cands
        return None, cands

    # -- steps
    def run(self) -> Conversion:
        if self.c.kind == OURS:
            self.step_direct(all_fields=True)
        else:
            self.step_additional_parameters()
            self.step_dataset_config()
            self.step_model()
            self.step_network()
            self.step_direct()
            self.step_precision()
            self.step_learning_rates()
            self.step_optimizer()
            self.step_attention()
            self.step_samples()
            self.step_length()
            self.step_scheduler()
            self.step_warmup()
            if self.c.kind == SD_SCRIPTS:
                self.step_sd_scripts_defaults()
        self.step_leftovers()
        self.step_validate()
        self.c.data = self.out
        self.c.origin = {k: v for k, v in self.origin.items() if k in self.out}
        return self.c

    def step_additional_parameters(self) -> None:
        """GUI 'additional_parameters' are extra sd-scripts options; they come last, so they win."""
        text = self.take("additional_parameters")
        if _blank(text):
            self.ignore("additional_parameters")
            return
        found, stray = parse_cli_args(str(text))
        if found:
            self.note(f"additional_parameters = {_fmt('x', text)} read as sd-scripts options: "
                      + ", ".join(f"--{n}" for n in found))
        for name, value in found.items():
            if name in self.src and not _blank(self.src[name]) and not _same(self.src[name], value):
                self.note(f"additional_parameters --{name} {_fmt(name, value)} replaces {name} = "
                          f"{_fmt(name, self.src[name])}")
            self.src[name] = value
            self.used.discard(name)
        if stray:
            self.unmapped("additional_parameters (unparsed part)", " ".join(stray),
                          "not understood: expected --option value")

    def step_dataset_config(self) -> None:
        """sd-scripts dataset_config: its dataset-wide settings win over the top-level ones, as in sd-scripts."""
        value = self.take("dataset_config")
        if _blank(value):
            self.ignore("dataset_config")
            return
        path, cands = self.find_file(str(value))
        reason = ("dataset config files are not supported: put the images into '<repeats>_<name>' folders under "
                  "train_data_dir")
        if path is None:
            self.unmapped("dataset_config", value, reason + " (file not found here, so its settings were not read)")
            return
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8-sig")) if path.suffix.lower() != ".json" \
                else json.loads(path.read_text(encoding="utf-8-sig"))
        except (OSError, ValueError) as e:
            self.unmapped("dataset_config", value, f"{reason} (cannot read it: {e})")
            return
        datasets = data.get("datasets") or []
        merged = dict(data.get("general") or {})
        if datasets:
            merged.update({k: v for k, v in datasets[0].items() if k != "subsets"})
        subsets = [s for ds in datasets for s in (ds.get("subsets") or [])]
        if len(subsets) == 1:
            merged.update({k: v for k, v in subsets[0].items() if k in _DATASET_KEYS})
        desc = "; ".join(
            f"{'reg ' if s.get('is_reg') else ''}image_dir {_fmt('x', s.get('image_dir', ''))} x{s.get('num_repeats', 1)}"
            + (f" class_tokens {_fmt('x', s['class_tokens'])}" if s.get("class_tokens") else "")
            for s in subsets)
        taken = []
        for k, v in merged.items():
            name = "train_batch_size" if k == "batch_size" else k
            if k in _DATASET_KEYS:
                self.src[name] = v
                self.used.discard(name)
                taken.append(name)
        extra = f"; its settings {', '.join(taken)} were used" if taken else ""
        if len(datasets) > 1:
            extra += "; it has several datasets, only the first one's settings were used"
        self.unmapped("dataset_config", value, f"{reason}. Subsets: {desc or 'none'}{extra}")

    def step_model(self) -> None:
        sdxl, v2 = self.flag("sdxl"), self.flag("v2")
        flux = self.flag("flux1_checkbox") or str(self.src.get("LoRA_type", "")).startswith("Flux")
        sd3 = self.flag("sd3_checkbox")
        for key in ("sdxl", "v2", "flux1_checkbox", "sd3_checkbox"):
            if key in self.src and not self.flag(key):
                self.ignore(key)
        if flux or sd3:
            key = "flux1_checkbox" if flux else "sd3_checkbox"
            self.unmapped(key, True, "Flux.1 and SD3 models are not supported (SD1.5, SD2 and SDXL are)")
        if sdxl:
            self.put("model_family", "sdxl", "sdxl")
            self.note("sdxl = true -> model_family = \"sdxl\"")
        elif v2:
            self.put("model_family", "sd2", "v2")
            self.note("v2 = true -> model_family = \"sd2\"")
        self.flux_sd3 = flux or sd3
        if self.has("v_parameterization"):
            self.put("v_parameterization", self.take("v_parameterization"))
        # GUI: SDXL text-encoder caching has its own checkbox
        for key, ours in (("sdxl_cache_text_encoder_outputs", "cache_text_encoder_outputs"),):
            if key in self.src:
                v = self.take(key)
                if sdxl and not _off(v) and "cache_text_encoder_outputs" not in self.src:
                    self.put(ours, v, key)
                    self.note(f"{key} = true -> {ours} = true")
                else:
                    self.ignore(key)
        if "sdxl_no_half_vae" in self.src and not sdxl:
            self.ignore("sdxl_no_half_vae")

    def step_network(self) -> None:
        lora_type = self.take("LoRA_type")
        module = self.take("network_module")
        raw_args = self.take("network_args")
        args: dict[str, str] = {}
        items = split_args(raw_args) if isinstance(raw_args, str) else list(raw_args or [])
        for item in items:
            k, eq, v = str(item).partition("=")
            if not eq:
                self.unmapped(f"network_args {item}", item, "not key=value")
                continue
            args[k.strip()] = v.strip()
        conv_from_keys = False
        lycoris = False
        other_network = ""  # a network type we cannot train: its conv settings are not ours either
        if self.gui:
            lt = "Standard" if _blank(lora_type) else str(lora_type)
            lycoris = lt.startswith("LyCORIS") or lt == "LoCon"
            if lt == "Standard":
                self.ignore("LoRA_type")
                for key in ("conv_dim", "conv_alpha"):
                    self.ignore(key)
            elif lt == "Kohya LoCon":
                conv_from_keys = True
                self.note("LoRA_type = \"Kohya LoCon\" -> conv_dim / conv_alpha (LoRA on the convolution layers too)")
            elif lt in _LYCORIS_LOCON_TYPES:
                conv_from_keys = True
                self.note(f"LoRA_type = \"{lt}\" -> kohya-style LoCon with conv_dim / conv_alpha (nearest: the same "
                          "idea; the file uses kohya's key names, not LyCORIS')")
            else:
                self.unmapped("LoRA_type", lt, "not supported: converted as a standard LoRA with the same "
                                               "network_dim / network_alpha")
                for key in ("conv_dim", "conv_alpha"):
                    v = self.take(key)
                    if key in self.src and not _off(v) and not _same(v, 1):
                        self.unmapped(key, v, f"belongs to LoRA_type {lt}")
                    else:
                        self.ignore(key)
            for key in _LYCORIS_KEYS:
                if key not in self.src:
                    continue
                v = self.take(key)
                if not lycoris or _off(v) or (key in _GUI_DEFAULTS and _same(v, _GUI_DEFAULTS[key])):
                    self.ignore(key)
                else:
                    self.unmapped(key, v, "LyCORIS option, not supported")
        elif not _blank(lora_type):
            self.unmapped("LoRA_type", lora_type)
        if conv_from_keys:
            dim = self.take("conv_dim")
            if not _off(dim):
                self.put("conv_dim", dim)
                alpha = self.take("conv_alpha")
                if not _off(alpha):
                    self.put("conv_alpha", alpha)
                else:
                    self.ignore("conv_alpha")
            else:
                self.ignore("conv_dim")
                self.ignore("conv_alpha")
        if not _blank(module):
            m = str(module).strip()
            if m == "networks.lora":
                self.note("network_module = \"networks.lora\": kohya's standard LoRA, as trained here")
            elif m == "lycoris.kohya":
                algo = args.pop("algo", "lora").lower()
                if algo in ("lora", "locon"):
                    self.note(f"network_module = \"lycoris.kohya\" (algo {algo}) -> kohya-style LoRA"
                              + (" with conv_dim / conv_alpha" if "conv_dim" in args else "")
                              + " (nearest: the same idea; the file uses kohya's key names)")
                else:
                    other_network = f"LyCORIS algo {algo}"
                    self.unmapped("network_module", f"{m} (algo={algo})",
                                  "LyCORIS algorithms other than LoRA/LoCon are not supported: converted as a "
                                  "standard LoRA with the same network_dim / network_alpha")
                if str(args.get("preset", "full")).lower() == "full":
                    args.pop("preset", None)
            else:
                other_network = m
                self.unmapped("network_module", m, "only networks.lora is supported: converted as a standard LoRA "
                                                   "with the same network_dim / network_alpha")
        else:
            self.ignore("network_module")
        if other_network:
            for k in ("conv_dim", "conv_rank", "conv_alpha"):
                if k in args:
                    self.unmapped(f"network_args {k}", args.pop(k), f"belongs to {other_network}")
        if "conv_dim" in args or "conv_rank" in args:
            dim = args.pop("conv_dim", None) or args.pop("conv_rank", None)
            if self.put("conv_dim", dim, "network_args conv_dim"):
                self.note(f"network_args conv_dim={dim} -> conv_dim = {self.out['conv_dim']}")
            if "conv_alpha" in args:
                alpha = args.pop("conv_alpha")
                if self.put("conv_alpha", alpha, "network_args conv_alpha"):
                    self.note(f"network_args conv_alpha={alpha} -> conv_alpha = {self.out['conv_alpha']}")
        elif "conv_alpha" in args:
            self.unmapped("network_args conv_alpha", args.pop("conv_alpha"), "conv_alpha without conv_dim has no effect")
        if "dora_wd" in args:
            v = args.pop("dora_wd")
            if self.put("use_dora", v, "network_args dora_wd") and self.out["use_dora"]:
                self.note("network_args dora_wd=True -> use_dora = true")
        if "dropout" in args:
            v = args.pop("dropout")
            if self.put("network_dropout", v, "network_args dropout"):
                self.note(f"network_args dropout={v} -> network_dropout")
        for k, v in args.items():
            if _off(v):
                self.c.ignored.append(f"network_args {k}")
            else:
                self.unmapped(f"network_args {k}", v, _REASONS.get(k, "network argument not supported"))
        # GUI DoRA checkbox (LyCORIS types)
        if "dora_wd" in self.src:
            v = self.take("dora_wd")
            if not _off(v) and self.put("use_dora", v, "dora_wd"):
                self.note("dora_wd = true -> use_dora = true")
            else:
                self.ignore("dora_wd")
        if self.has("use_dora"):
            self.put("use_dora", self.take("use_dora"))

    def step_direct(self, all_fields: bool = False) -> None:
        """Keys with the same name and meaning here (and a few plain renames)."""
        renames = {"max_resolution": "resolution"}
        for key in list(self.src):
            if key in self.used:
                continue
            ours = renames.get(key, key)
            if ours not in TrainConfig.model_fields or (ours in _SPECIAL and not all_fields):
                continue
            value = self.take(key)
            if ours in self.out and self.origin.get(ours) != key:
                self.unmapped(key, value, f"{ours} is already set from {self.origin.get(ours)}")
                continue
            if _blank(value):
                self.ignore(key)
                continue
            if ours == "clip_skip" and self.out.get("model_family") == "sdxl":
                if not _same(value, 1) and not _same(value, 0):
                    self.unmapped(key, value)
                else:
                    self.ignore(key)
                continue
            if ours == "clip_skip" and _same(value, 0):
                self.ignore(key)  # sd-scripts: None/0 = not set
                continue
            if self.put(ours, value, key) and ours != key:
                self.note(f"{key} = {_fmt(key, value)} -> {ours} = {_fmt(ours, self.out[ours])}")
        if all_fields:
            return
        if "caption_prefix" in self.src and "trigger_word" not in self.out:
            v = self.take("caption_prefix")
            word = str(v or "").strip().strip(",").strip()
            if word:
                self.put("trigger_word", word, "caption_prefix")
                self.note(f"caption_prefix = {_fmt('x', v)} -> trigger_word = {_fmt('x', word)} (nearest: the word "
                          "is added in front of captions that lack it)")
            else:
                self.ignore("caption_prefix")

    def step_precision(self) -> None:
        v = self.take("mixed_precision")
        if not _blank(v):
            s = str(v).strip().lower()
            mapped = {"fp32": "no", "float": "no", "none": "no", "float32": "no"}.get(s, s)
            if self.put("mixed_precision", mapped) and mapped != str(v):
                self.note(f"mixed_precision = {_fmt('x', v)} -> \"{mapped}\"")
        elif self.has("mixed_precision"):
            self.ignore("mixed_precision")
        elif self.c.kind == SD_SCRIPTS:
            self.note("mixed_precision is not in the file (sd-scripts takes it from `accelerate config`): "
                      "left at our default fp16")
        v = self.take("save_precision")
        if not _blank(v):
            s = str(v).strip().lower()
            mapped = {"fp32": "float", "float32": "float"}.get(s, s)
            if self.put("save_precision", mapped) and mapped != str(v):
                self.note(f"save_precision = {_fmt('x', v)} -> \"{mapped}\"")
        else:
            self.ignore("save_precision")

    def step_learning_rates(self) -> None:
        lr = self.number("learning_rate")
        unet = self.number("unet_lr")
        te_raw = self.take("text_encoder_lr")
        te: float | None = None
        if isinstance(te_raw, (list, tuple)):
            vals = []
            for x in te_raw:
                try:
                    vals.append(_to_float(x))
                except _Bad:
                    self.c.invalid.append(f"text_encoder_lr = {_fmt('x', te_raw)}: not a number")
            if vals:
                te = vals[0]
                if len(set(vals)) > 1:
                    self.note(f"text_encoder_lr = {_fmt('x', te_raw)} -> {te} for both text encoders "
                              "(separate rates per SDXL text encoder are not supported)")
        elif not _blank(te_raw):
            try:
                te = _to_float(te_raw)
            except _Bad as e:
                self.c.invalid.append(f"text_encoder_lr = {_fmt('x', te_raw)}: {e}")
        elif "text_encoder_lr" in self.src:
            self.ignore("text_encoder_lr")
        unet_only = self.flag("network_train_unet_only")
        te_only = self.flag("network_train_text_encoder_only")
        for key in ("network_train_unet_only", "network_train_text_encoder_only"):
            if key in self.src and not self.flag(key):
                self.ignore(key)
        if te == 0 and unet == 0:
            self.note("unet_lr = 0 and text_encoder_lr = 0: both use learning_rate")
            te = unet = None
        elif te == 0:
            unet_only = True
            te = None
            self.note("text_encoder_lr = 0 -> network_train_unet_only = true (the text encoder is not trained)")
        elif unet == 0 and te is not None:
            te_only = True
            unet = None
            self.note("unet_lr = 0 -> network_train_text_encoder_only = true (the UNet is not trained)")
        elif unet == 0:
            unet = None
            self.ignore("unet_lr")
        if (lr is None or lr <= 0) and unet is not None and unet > 0 and (lr is not None or self.gui):
            was = "empty" if lr is None else f"{lr:g}"
            self.note(f"learning_rate = {was} -> {unet:g} (from unet_lr; here it is only the fallback rate)")
            lr = unet
        if lr is not None:
            self.put("learning_rate", lr)
        if unet is not None:
            self.put("unet_lr", unet)
        if te is not None:
            self.put("text_encoder_lr", te)
        if unet_only:
            self.put("network_train_unet_only", True)
        if te_only:
            self.put("network_train_text_encoder_only", True)

    def step_optimizer(self) -> None:
        args_raw = self.take("optimizer_args")
        args = split_args(args_raw) if isinstance(args_raw, str) else [str(a) for a in (args_raw or [])]
        if not args and "optimizer_args" in self.src:
            self.ignore("optimizer_args")
        key = "optimizer" if self.has("optimizer") else "optimizer_type"
        name = self.take(key)
        legacy = [k for k in ("use_8bit_adam", "use_lion_optimizer") if self.has(k)]
        for k in legacy:
            if self.flag(k):
                if _blank(name):
                    name, key = ("AdamW8bit" if k == "use_8bit_adam" else "Lion"), k
                    self.note(f"{k} = true -> optimizer_type = \"{name}\"")
                else:
                    self.c.ignored.append(k)
            else:
                self.ignore(k)
        if _blank(name):
            if self.has(key):
                self.ignore(key)
            if args:
                self.put("optimizer_args", args, "optimizer_args")
            return
        text = str(name).strip()
        low = text.lower()
        short = low.rsplit(".", 1)[-1] if "." in low else low
        if low in _OPTIMIZERS or short in _OPTIMIZERS:
            ours = _OPTIMIZERS.get(low) or _OPTIMIZERS[short]
            self.put("optimizer_type", ours, key)
            if ours != text:
                self.note(f"{key} = {_fmt('x', text)} -> optimizer_type = \"{ours}\"")
        elif short in _OPTIMIZER_NEAR:
            ours, extra, why = _OPTIMIZER_NEAR[short]
            self.put("optimizer_type", ours, key)
            allowed = _PRODIGY_ARGS if ours == "Prodigy" else _ADAMW_ARGS if ours == "AdamW" else None
            if allowed is not None and not short.startswith("paged"):
                kept = [a for a in args if a.split("=", 1)[0].strip() in allowed]
                for a in args:
                    if a not in kept:
                        self.unmapped(f"optimizer_args {a.split('=', 1)[0].strip()}", a,
                                      f"not accepted by {ours}")
                args = kept
            names = {a.split("=", 1)[0].strip() for a in args}
            args += [e for e in extra if e.split("=", 1)[0] not in names]
            if short.startswith("sgdnesterov") and "momentum" not in names:
                args.append("momentum=0.9")  # sd-scripts' default for SGDNesterov
            added = [a for a in args if a in extra or a == "momentum=0.9" and short.startswith("sgdnesterov")]
            self.note(f"{key} = {_fmt('x', text)} -> optimizer_type = \"{ours}\" ({why})"
                      + (f", optimizer_args + {', '.join(added)}" if added else ""))
        else:
            self.unmapped(key, text, "optimizer not available here (AdamW, AdamW8bit, Lion, Lion8bit, Prodigy, "
                                     "Adafactor, SGD): left at AdamW; check learning_rate and optimizer_args")
        if args:
            self.put("optimizer_args", args, "optimizer_args")
            if isinstance(args_raw, str):
                self.note(f"optimizer_args = {_fmt('x', args_raw)} -> {_fmt('x', self.out.get('optimizer_args'))}")

    def step_attention(self) -> None:
        chosen, plain, keys = [], [], []
        for key in ("xformers", "sdpa", "mem_eff_attn"):
            if key not in self.src:
                continue
            v = self.take(key)
            if isinstance(v, str) and v.strip().lower() in ("xformers", "sdpa"):
                chosen.append(f"{key} = \"{v.strip()}\"")
                keys.append(key)
            elif isinstance(v, str) and v.strip().lower() == "none":
                plain.append(f"{key} = \"none\"")
            elif not _off(v):
                chosen.append(f"{key} = true")
                keys.append(key)
            else:
                self.ignore(key)
        if chosen:
            self.put("sdpa", True, keys[0])
            if chosen != ["sdpa = true"]:
                self.note(f"{', '.join(chosen)} -> sdpa = true (PyTorch's built-in memory-efficient attention)")
        elif plain:
            self.note(f"{', '.join(plain)} (plain attention): sdpa left on; it gives the same results, faster "
                      "and with less memory")

    def step_samples(self) -> None:
        if self.has("sample_prompts"):
            v = self.take("sample_prompts")
            looks_like_file = isinstance(v, str) and v.strip() and "\n" not in v.strip() and (
                self.c.kind == SD_SCRIPTS or v.strip().lower().endswith((".txt", ".toml", ".json")))
            if looks_like_file:
                path, cands = self.find_file(v)
                if path is None and (Path(v.strip()).suffix or "/" in v or "\\" in v):
                    self.unmapped("sample_prompts", v, "prompt file not found; looked at "
                                  + ", ".join(str(c) for c in cands))
                elif path is None:
                    self.put("sample_prompts", v)
                    self.note("sample_prompts is not a file name: used as one prompt line")
                else:
                    try:
                        lines, dropped = read_prompt_file(path)
                    except (OSError, ValueError) as e:
                        self.unmapped("sample_prompts", v, f"cannot read the prompt file: {e}")
                    else:
                        if self.put("sample_prompts", lines):
                            self.note(f"sample_prompts = {_fmt('x', v)} -> {len(lines)} prompt line(s) read from "
                                      f"{path}")
                        if dropped:
                            self.note(f"prompt file options without an equivalent, dropped: {', '.join(dropped)}")
            elif _blank(v):
                self.ignore("sample_prompts")
            else:
                self.put("sample_prompts", v)
        if self.has("sample_sampler"):
            v = self.take("sample_sampler")
            if _blank(v):
                self.ignore("sample_sampler")
                return
            name = str(v).strip()
            low = name.lower()
            if low in _SAMPLERS:
                self.put("sample_sampler", low)
            elif low in _SAMPLER_NEAR:
                ours, why = _SAMPLER_NEAR[low]
                self.put("sample_sampler", ours)
                self.note(f"sample_sampler = \"{name}\" -> \"{ours}\" ({why})")
            else:
                self.put("sample_sampler", name)  # validation reports it with the choices

    def step_length(self) -> None:
        """Epochs or steps. In sd-scripts max_train_epochs overrides max_train_steps; here steps win when > 0."""
        epochs, epochs_key = None, None
        for key in ("max_train_epochs", "epoch"):
            if key in self.src:
                v = self.number(key)
                if v is not None and v > 0 and epochs is None:
                    epochs, epochs_key = v, key
                elif v is not None and v > 0:
                    if v != epochs:
                        self.unmapped(key, self.src[key], f"{epochs_key} = {epochs:g} is used instead")
                else:
                    self.ignore(key)
        steps = self.number("max_train_steps") if self.has("max_train_steps") else None
        if epochs is not None:
            self.put("max_train_epochs", epochs, epochs_key)
            if epochs_key != "max_train_epochs":
                self.note(f"{epochs_key} = {epochs:g} -> max_train_epochs = {self.out.get('max_train_epochs')}")
            if steps:
                self.unmapped("max_train_steps", self.src["max_train_steps"],
                              f"left out: {epochs_key} is set, and kohya trains by epochs when both are given; "
                              "here max_train_steps would win")
        elif steps:
            self.put("max_train_steps", steps)
        elif self.has("max_train_steps"):
            self.ignore("max_train_steps")

    def step_scheduler(self) -> None:
        v = self.take("lr_scheduler")
        if _blank(v):
            self.ignore("lr_scheduler")
            return
        name = str(v).strip()
        low = name.lower()
        if low in _SCHEDULERS:
            self.put("lr_scheduler", low)
        elif low == "adafactor":
            self.put("lr_scheduler", "constant_with_warmup")
            self.note("lr_scheduler = \"adafactor\" -> \"constant_with_warmup\" (nearest: a fixed rate; Adafactor "
                      "runs with relative_step=False here)")
        elif low in _SCHEDULER_NEAR:
            self.put("lr_scheduler", _SCHEDULER_NEAR[low])
            self.note(f"lr_scheduler = \"{name}\" -> \"{_SCHEDULER_NEAR[low]}\" (nearest available)")
        else:
            self.put("lr_scheduler", name)  # validation reports it with the choices

    def _steps_per_epoch(self) -> tuple[int | None, str]:
        d = self.find_dir(self.out.get("train_data_dir", ""))
        if d is None:
            where = self.out.get("train_data_dir") or "(empty)"
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
        reg = 2 if self.out.get("reg_data_dir") else 1
        batch = int(self.out.get("train_batch_size", 1))
        accum = int(self.out.get("gradient_accumulation_steps", 1))
        spe = math.ceil(math.ceil(uses * reg / batch) / accum)
        how = f"{n_img} images, {uses} uses with repeats" + (" x2 for regularization" if reg == 2 else "") \
            + f", batch {batch}" + (f" x {accum} accumulation" if accum > 1 else "") + f" = {spe} steps per epoch"
        return spe, how

    def _total_steps(self) -> tuple[int | None, str]:
        if self.out.get("max_train_steps"):
            return int(self.out["max_train_steps"]), f"max_train_steps {self.out['max_train_steps']}"
        epochs = self.out.get("max_train_epochs")
        if not epochs:
            return None, "neither epochs nor steps are set"
        spe, how = self._steps_per_epoch()
        if spe is None:
            return None, how
        return spe * int(epochs), f"{how}, x {epochs} epochs"

    def step_warmup(self) -> None:
        steps = self.number("lr_warmup_steps") if self.has("lr_warmup_steps") else None
        pct = self.number("lr_warmup") if self.has("lr_warmup") else None  # GUI: percent of all steps
        ratio = None
        if steps is not None and 0 < steps < 1:
            ratio, label = steps, f"lr_warmup_steps = {steps:g} (a fraction of all steps)"
            what = "a fraction of all steps"
            if pct:
                self.unmapped("lr_warmup", self.src["lr_warmup"], "lr_warmup_steps is set and wins")
        elif steps is not None and steps >= 1:
            self.put("lr_warmup_steps", round(steps), "lr_warmup_steps")
            if pct:
                self.unmapped("lr_warmup", self.src["lr_warmup"], "lr_warmup_steps is set and wins, as in kohya_ss")
            return
        elif pct:
            ratio, label = pct / 100.0, f"lr_warmup = {pct:g} (percent of all steps)"
            what = "percent of all steps"
            self.ignore("lr_warmup_steps")
        else:
            for key in ("lr_warmup_steps", "lr_warmup"):
                self.ignore(key)
            return
        total, how = self._total_steps()
        src_key = "lr_warmup_steps" if steps is not None and 0 < steps < 1 else "lr_warmup"
        if total is None:
            self.unmapped(src_key, self.src[src_key], f"{what}, but the total step count is unknown here: {how}; "
                                                     "lr_warmup_steps was not set, set it by hand")
            return
        warm = round(ratio * total)
        self.put("lr_warmup_steps", warm, src_key)
        self.note(f"{label} -> lr_warmup_steps = {warm} (of {total} steps: {how})")
        if self.out.get("lr_scheduler", "constant") == "constant" and warm > 0:
            self.note("lr_scheduler \"constant\" has no warmup; use \"constant_with_warmup\" for the warmup to count")

    def step_sd_scripts_defaults(self) -> None:
        filled = []
        rates_set = "unet_lr" in self.out and ("text_encoder_lr" in self.out or self.out.get("network_train_unet_only"))
        for key, value in _SD_SCRIPTS_DEFAULTS.items():
            if key == "learning_rate" and rates_set:
                continue
            if key not in self.out and key not in self.src and not (key == "sample_sampler"
                                                                       and not self.out.get("sample_prompts")):
                self.out[key] = value
                filled.append(f"{key} = {_fmt(key, value)}")
        if "max_train_epochs" not in self.out and "max_train_steps" not in self.out \
                and not self.has("max_train_epochs") and not self.has("max_train_steps"):
            self.out["max_train_steps"] = 1600
            filled.append("max_train_steps = 1600")
        if filled:
            self.note("not in the file, set to sd-scripts' own default so the run matches: " + ", ".join(filled))

    def step_leftovers(self) -> None:
        lora_type = str(self.src.get("LoRA_type") or "Standard")
        multires = not _off(self.src.get("multires_noise_iterations"))
        huber = str(self.src.get("loss_type", "l2")).lower() not in ("l2", "")
        for key, value in self.src.items():
            if key in self.used:
                continue
            self.used.add(key)
            if _off(value) or (key in _GUI_DEFAULTS and _same(value, _GUI_DEFAULTS[key])):
                self.c.ignored.append(key)
            elif key == "multires_noise_discount" and not multires:
                self.c.ignored.append(key)
            elif key.startswith("huber_") and not huber:
                self.c.ignored.append(key)
            elif key in ("ggpo_sigma", "ggpo_beta") and _off(self.src.get("train_lora_ggpo")):
                self.c.ignored.append(key)
            elif key in _LYCORIS_KEYS and not lora_type.startswith("LyCORIS"):
                self.c.ignored.append(key)
            elif key in _FLUX_SD3 or key.startswith(_FLUX_SD3_PREFIXES):
                if self.flux_sd3:
                    self.c.flux_sd3[key] = value
                else:
                    self.c.ignored.append(key)
            elif key in _RUNTIME:
                self.c.runtime[key] = value
            elif key in ("save_state", "save_state_on_train_end"):
                self.note(f"{key} = true: resumable state is always saved here (every save_state_every_n_steps "
                          "steps and at the end)")
            else:
                self.c.unmapped[key] = value
                if key in _REASONS:
                    self.c.reasons[key] = _REASONS[key]

    def step_validate(self) -> None:
        """Keep only what config_io.validate accepts; report the rest with the reason and the source key."""
        for _ in range(len(self.out) + 2):
            try:
                validate(self.out)
                return
            except ConfigError as e:
                bad: set[str] = set()
                for line in e.lines:
                    m = re.match(r"^(\w+) = ", line) or re.match(r"^unknown key '(\w+)'", line)
                    keys = [m.group(1)] if m else [k for k in self.out if re.search(rf"\b{re.escape(k)}\b", line)]
                    keys = [k for k in keys if k in self.out]
                    for k in keys:
                        src = self.origin.get(k, k)
                        where = f" (from {src})" if src != k else ""
                        self.c.invalid.append(f"{line}{where}" if m else f"{line}: {k} = {_fmt(k, self.out[k])}{where}")
                    bad.update(keys)
                if not bad:  # not attributable: test the keys one by one
                    for k in list(self.out):
                        try:
                            validate({k: self.out[k]})
                        except ConfigError as e1:
                            self.c.invalid.append("; ".join(e1.lines))
                            bad.add(k)
                    if not bad:
                        self.c.invalid.append("; ".join(e.lines) + " (all converted values left out)")
                        bad = set(self.out)
                for k in bad:
                    self.out.pop(k, None)


# ------------------------------------------------------------------ API
def convert_file(path: str | Path) -> Conversion:
    """Read a kohya_ss GUI .json or sd-scripts .toml and convert it; raises ConfigError if it cannot be read."""
    p = Path(path)
    return _Converter(p, _read_source(p)).run()


def convert(path: str | Path) -> tuple[dict[str, Any], list[str]]:
    """(converted keys, report lines). The keys always pass config_io.validate."""
    c = convert_file(path)
    return c.data, c.report


def render(c: Conversion) -> str:
    """The output TOML: a comment header with the whole report, then the converted keys grouped as usual."""
    head = ["# LoRA Workshop training config, made by `python -m core convert-config`.",
            "# Check the notes; keys listed as NOT converted have no equivalent here."]
    head += ["# " + line for line in c.report]
    body = to_toml(c.data, grouped=True) if c.data else ""
    return "\n".join(head) + "\n\n" + body


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="kohya_ss GUI config (.json, as saved by 'Save config') or sd-scripts "
                                       "config (.toml, as given to --config_file)")
    parser.add_argument("-o", "--output", help="write the TOML to this file instead of standard output")


def run(args: argparse.Namespace) -> int:
    try:
        c = convert_file(args.source)
    except ConfigError as e:
        for line in e.lines:
            print(f"# error: {line}", file=sys.stderr)
        return 2
    text = render(c)
    for line in c.report:
        print("# " + line, file=sys.stderr)
    if getattr(args, "output", None):
        atomic_write_text(args.output, text)
        print(f"# written to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core convert-config",
                                     description="Convert a kohya_ss GUI .json or sd-scripts .toml config to ours. "
                                                 "The TOML goes to stdout, the report to stderr.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
