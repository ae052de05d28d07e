"""Header metadata of a saved LoRA: kohya's `ss_*` keys and ModelSpec 1.0.1 (`modelspec.*`)."""
from __future__ import annotations

import datetime as dt
import json
from typing import Any

from ..config.schema import TrainConfig


def build_metadata(cfg: TrainConfig, family, *, epoch: int, step: int, num_epochs: int, num_images: int,
                   dataset_dirs: dict, tag_frequency: dict, started_at: float, base_model_name: str) -> dict[str, str]:
    now = dt.datetime.now(dt.timezone.utc)
    w, h = cfg.resolution_wh
    network_args: dict[str, Any] = {}
    lycoris = cfg.network_type in ("loha", "lokr")
    if lycoris:  # as LyCORIS' kohya wrapper: module lycoris.kohya, {"algo": "loha", ...}
        from .lycoris import network_args as lycoris_args

        network_args.update(lycoris_args(cfg))
    elif cfg.conv_dim:
        network_args.update(conv_dim=str(cfg.conv_dim), conv_alpha=str(cfg.conv_alpha))
    if cfg.use_dora:
        network_args["dora_wd"] = "True"
    for key in ("rank_dropout", "module_dropout"):
        if getattr(cfg, key):
            network_args[key] = str(getattr(cfg, key))
    if cfg.lora_ff or cfg.lora_proj:
        network_args["targets"] = ",".join(["attn"] + (["ff"] if cfg.lora_ff else []) + (["proj"] if cfg.lora_proj else []))
    meta = {
        "ss_network_module": "lycoris.kohya" if lycoris else "networks.lora",
        "ss_network_dim": cfg.network_dim,
        "ss_network_alpha": cfg.network_alpha,
        "ss_network_dropout": cfg.network_dropout,
        "ss_network_args": json.dumps(network_args),
        "ss_base_model_version": family.ss_base_model_version,
        "ss_v2": family.ss_v2,
        "ss_sd_model_name": base_model_name,
        "ss_output_name": cfg.output_name,
        "ss_resolution": f"({w}, {h})",
        "ss_num_train_images": num_images,
        "ss_num_epochs": num_epochs,
        "ss_epoch": epoch,
        "ss_steps": step,
        "ss_max_train_steps": cfg.max_train_steps,
        "ss_learning_rate": cfg.learning_rate,
        "ss_unet_lr": cfg.effective_unet_lr,
        "ss_text_encoder_lr": cfg.effective_text_encoder_lr,
        "ss_network_train_unet_only": cfg.network_train_unet_only,
        "ss_optimizer": cfg.optimizer_type + (f"({' '.join(cfg.optimizer_args)})" if cfg.optimizer_args else ""),
        "ss_lr_scheduler": cfg.lr_scheduler,
        "ss_lr_warmup_steps": cfg.lr_warmup_steps,
        "ss_batch_size_per_device": cfg.train_batch_size,
        "ss_gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "ss_mixed_precision": cfg.mixed_precision,
        "ss_max_grad_norm": cfg.max_grad_norm,
        "ss_seed": cfg.seed,
        "ss_clip_skip": cfg.clip_skip,
        "ss_noise_offset": cfg.noise_offset,
        "ss_min_snr_gamma": cfg.min_snr_gamma,
        "ss_noise_offset_random_strength": cfg.noise_offset_random_strength,
        "ss_adaptive_noise_scale": cfg.adaptive_noise_scale or None,
        "ss_multires_noise_iterations": cfg.multires_noise_iterations or None,
        "ss_multires_noise_discount": cfg.multires_noise_discount,
        "ss_ip_noise_gamma": cfg.ip_noise_gamma or None,
        "ss_ip_noise_gamma_random_strength": cfg.ip_noise_gamma_random_strength,
        "ss_debiased_estimation": cfg.debiased_estimation_loss,
        "ss_scale_weight_norms": cfg.scale_weight_norms or None,
        "ss_shuffle_caption": cfg.shuffle_caption,
        "ss_keep_tokens": cfg.keep_tokens,
        "ss_caption_dropout_rate": cfg.caption_dropout_rate,
        "ss_flip_aug": cfg.flip_aug,
        "ss_enable_bucket": cfg.enable_bucket,
        "ss_min_bucket_reso": cfg.min_bucket_reso,
        "ss_max_bucket_reso": cfg.max_bucket_reso,
        "ss_bucket_no_upscale": cfg.bucket_no_upscale,
        "ss_cache_latents": cfg.cache_latents,
        "ss_gradient_checkpointing": cfg.gradient_checkpointing,
        "ss_prior_loss_weight": cfg.prior_loss_weight,
        "ss_v_parameterization": cfg.v_parameterization,
        "ss_dataset_dirs": json.dumps(dataset_dirs, ensure_ascii=False),
        "ss_tag_frequency": json.dumps(tag_frequency, ensure_ascii=False),
        "ss_training_comment": cfg.training_comment,
        "ss_training_started_at": started_at,
        "ss_training_finished_at": now.timestamp(),
        "modelspec.sai_model_spec": "1.0.1",
        "modelspec.architecture": family.modelspec_architecture,
        "modelspec.implementation": "https://github.com/huggingface/diffusers",
        "modelspec.title": cfg.output_name + (f" (epoch {epoch})" if epoch < num_epochs else ""),
        "modelspec.description": cfg.training_comment or f"LoRA trained with LoRA Workshop on {base_model_name}",
        "modelspec.date": now.replace(microsecond=0).isoformat(),
        "modelspec.resolution": f"{w}x{h}",
        "modelspec.prediction_type": "v" if cfg.v_parameterization else "epsilon",
    }
    if cfg.trigger_word:
        meta["modelspec.trigger_phrase"] = cfg.trigger_word
    if cfg.use_dora:
        meta.update(DORA_LOADERS)
    return {k: str(v) for k, v in meta.items()}


# Where a DoRA file of ours applies the trained weights, measured against each loader's code
# (docs/architecture.md, "DoRA files"; bench/dora_loaders.py).
# dora_scale is peft's magnitude m, one per output row, shaped (out, 1) / (out, 1, 1, 1).
DORA_LOADERS = {
    "lw_dora_formula": "W' = dora_scale * (W + dW) / ||W + dW||, norms per output row (peft, the DoRA paper)",
    "lw_dora_exact_in": "peft and loaders that use the DoRA formula per output row",
    "lw_dora_approximate_in": "ComfyUI, Forge (they divide by ||W||, the base weight's row norm, instead of "
                              "||W + dW||: each row's length is off by ||W + dW|| / ||W||)",
    "lw_dora_not_in": "AUTOMATIC1111 (normalises per input column), diffusers (ignores dora_scale for SD/SDXL)",
}


_HASHES: dict[tuple, dict[str, str]] = {}


def source_hashes(base_model: str, image_paths: list) -> dict[str, str]:
    """Hashes that tie a LoRA to what it was trained from, computed once per run:
    `ss_sd_model_hash` (sd-scripts' and A1111's legacy hash: sha256 of 64 KiB at offset 1 MiB, 8 hex digits) and
    `ss_new_sd_model_hash` (sha256 of the whole file) for a single-file base model; `lw_dataset_hash`, the sha256
    of the training pictures' names and contents."""
    import hashlib
    import os
    from pathlib import Path

    key = (base_model, tuple(str(p) for p in image_paths))
    if key in _HASHES:
        return _HASHES[key]
    out: dict[str, str] = {}
    p = Path(base_model).expanduser()
    if p.is_file():
        with open(p, "rb") as f:
            f.seek(0x100000)
            out["ss_sd_model_hash"] = hashlib.sha256(f.read(0x10000)).hexdigest()[:8]
            f.seek(0)
            h = hashlib.sha256()
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
            out["ss_new_sd_model_hash"] = h.hexdigest()
    h = hashlib.sha256()
    for path in sorted(Path(x) for x in image_paths):
        h.update(os.path.basename(path).encode("utf-8", "surrogateescape"))
        try:
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        except OSError:
            continue
    out["lw_dataset_hash"] = h.hexdigest()
    _HASHES[key] = out
    return out
