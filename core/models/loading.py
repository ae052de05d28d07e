"""Load a base model from a diffusers folder, a single-file checkpoint or a hub repo id.

Everything goes through diffusers' own loaders; this module decides which one, finds the
family, ships the configs single-file loading needs (so it works offline) and turns every
failure into a message that says what to do.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from .. import families
from ..hub import HUB_ID
from .base import Components, ModelFamily

CONFIG_ROOT = Path(__file__).parent / "configs"
SINGLE_FILE_EXTS = {".safetensors", ".ckpt", ".pt", ".pth", ".bin"}


class ModelLoadError(ValueError):
    """The base model could not be loaded; the message says why and what to do."""


def source_kind(model: str) -> str:
    """'folder', 'file' or 'hub' for what the user typed."""
    if not model:
        raise ModelLoadError(
            "No base model chosen: set pretrained_model_name_or_path to a diffusers folder, a .safetensors "
            "checkpoint or a Hugging Face repo id.")
    p = Path(model).expanduser()
    if p.is_dir():
        return "folder"
    if p.is_file():
        return "file"
    if HUB_ID.match(model) and p.suffix.lower() not in SINGLE_FILE_EXTS:
        return "hub"
    if p.suffix.lower() in SINGLE_FILE_EXTS or os.sep in model or (os.altsep and os.altsep in model):
        raise ModelLoadError(f"Base model file not found: {p}. Check the path (and that the drive is connected).")
    raise ModelLoadError(
        f"'{model}' is neither an existing file or folder nor a Hugging Face repo id (owner/name).")


def detect_family(model: str, requested: str = "auto", base_config_dir: str = "") -> tuple[str, bool]:
    """Return (family name, v-prediction guess) for a local folder or file."""
    from . import detect

    kind = source_kind(model)
    if kind == "folder":
        fam = detect.detect_diffusers_folder(model)
        v_pred = _folder_prediction_type(Path(model)) == "v_prediction"
    else:
        config_family = detect.detect_diffusers_folder(base_config_dir) if base_config_dir else None
        res = detect.inspect_model_file(model, config_family)
        fam, v_pred = res.family, bool(res.is_v_pred_guess)
    if families.find(fam) is None:
        other = families.OTHER_MODELS.get(fam)
        what = other.extra["what"] if other else f"a {fam} model"
        raise ModelLoadError(
            f"{Path(model).name} is {what}, which is not supported. This version trains "
            f"{', '.join(f.title for f in families.all_families())}: choose one of those as the base model.")
    if requested != "auto" and requested != fam:
        if requested in families.get(fam).siblings:
            return requested, v_pred
        raise ModelLoadError(
            f"model_family is '{requested}' but {model} is an {families.title(fam)} model. "
            f"Set model_family = \"auto\" or \"{fam}\".")
    return fam, v_pred


def _folder_prediction_type(folder: Path) -> str:
    import json

    cfg = folder / "scheduler" / "scheduler_config.json"
    if cfg.is_file():
        return json.loads(cfg.read_text(encoding="utf-8")).get("prediction_type", "epsilon")
    return "epsilon"


def download(repo_id: str, progress: Callable[[str], None] | None = None) -> str:
    """Fetch a diffusers repo from the hub (with a progress bar) or take it from the local cache."""
    from ..hub import snapshot

    patterns = ["*.json", "*.txt", "tokenizer*/*", "unet/*.safetensors", "vae/*.safetensors",
                "text_encoder*/*.safetensors", "transformer/*.safetensors"]
    ignore = ["*.fp16.safetensors", "*non_ema*", "*.ckpt", "*.bin", "*.onnx*", "*.msgpack"]
    return snapshot(repo_id, allow_patterns=patterns, ignore_patterns=ignore, progress=progress, error=ModelLoadError,
                    advice=f"Download it on a computer with internet (for example `hf download {repo_id}`), or "
                           "download a single-file .safetensors checkpoint and set pretrained_model_name_or_path "
                           "to its path.")


def shipped_config_dir(family: str, variant: str | None = None) -> Path:
    spec = families.find(family)
    folder = CONFIG_ROOT / (spec.config_folder_for(variant) if spec else family)
    if not (folder / "model_index.json").is_file():
        raise ModelLoadError(f"The configs for single-file {family} checkpoints are missing from {CONFIG_ROOT}: reinstall.")
    return folder


def load_pipeline(
    model: str,
    *,
    family: str = "auto",
    vae: str = "",
    base_config_dir: str = "",
    dtype: torch.dtype = torch.float32,
    progress: Callable[[str], None] | None = None,
    settings: Mapping[str, Any] | None = None,
    large_model_dtype: torch.dtype | None = None,
) -> tuple[Any, ModelFamily]:
    """Load a diffusers pipeline for `model` and return it with its family.

    `settings`: the run's settings (a TrainConfig's values, or the few a caller has); the family reads the ones it
    uses, such as the separate files a transformer-only Flux file needs (clip_l, t5xxl, ae) or t5xxl_precision.
    `large_model_dtype`: the dtype for families too large to load in fp32 first (Flux)."""
    kind = source_kind(model)
    if kind == "hub":
        model = download(model, progress)
        kind = "folder"
    fam_name, _ = detect_family(model, family, base_config_dir)
    fam = families.family_module(fam_name)
    if fam.load_in_compute_dtype and large_model_dtype is not None:
        dtype = large_model_dtype
    settings = dict(settings or {})
    if progress:
        progress(f"Loading {fam.title} model from {model}")
    try:
        if kind == "folder":
            pipe = fam.load_folder(model, dtype, settings)
            if vae:
                pipe.vae = load_vae(vae, fam_name, base_config_dir, dtype)
        else:
            pipe = fam.load_file(model, dtype, base_config_dir=base_config_dir, vae=vae, settings=settings,
                                 progress=progress)
    except ModelLoadError:
        raise
    except Exception as e:  # diffusers raises many types; say which file and why
        raise ModelLoadError(
            f"Could not load {model} as a {fam.title} model: {type(e).__name__}: {str(e).splitlines()[0][:400]}. "
            "If the file is incomplete, download it again.") from e
    return pipe, fam


def load_vae(vae: str, family: str, base_config_dir: str = "", dtype: torch.dtype = torch.float32):
    from diffusers import AutoencoderKL

    p = Path(vae).expanduser()
    try:
        if p.is_dir():
            sub = "vae" if (p / "vae" / "config.json").is_file() else None
            return AutoencoderKL.from_pretrained(p, subfolder=sub, dtype=dtype, local_files_only=True)
        if p.is_file():
            config = base_config_dir or str(shipped_config_dir(family))
            return AutoencoderKL.from_single_file(p, config=config, subfolder="vae", dtype=dtype,
                                                  local_files_only=True)
    except Exception as e:
        raise ModelLoadError(f"Could not load the VAE {p}: {type(e).__name__}: {str(e).splitlines()[0][:300]}") from e
    raise ModelLoadError(f"VAE not found: {p}")


def load_components(
    model: str,
    *,
    family: str = "auto",
    vae: str = "",
    base_config_dir: str = "",
    v_parameterization: bool = False,
    progress: Callable[[str], None] | None = None,
    settings: Mapping[str, Any] | None = None,
    large_model_dtype: torch.dtype | None = None,
) -> Components:
    """Load a base model for training (fp32 on the CPU, Flux in `large_model_dtype`; the trainer moves and
    casts parts)."""
    pipe, fam = load_pipeline(model, family=family, vae=vae, base_config_dir=base_config_dir, progress=progress,
                              settings=settings, large_model_dtype=large_model_dtype)
    return fam.components(pipe, model, v_parameterization)
