"""Predicted peak VRAM of a training run, in parts, and the cheapest changes that make it fit a card.

The parts follow what the trainer does: the denoiser's weights at their precision (base_precision, minus the blocks
blocks_to_swap keeps in RAM, plus the one block being computed), the text encoders and the VAE while they are on the
GPU (cache_text_encoder_outputs / cache_latents free them after caching, as core/train/caching.py does; Flux's T5-XXL
with its Linear weights in fp8 under t5xxl_precision fp8), the LoRA's
weights, gradients and optimizer state, the activations (a per-family coefficient per latent token, with and without
gradient checkpointing) and a fixed CUDA context / workspace overhead. Two phases are estimated: caching (the encoders
and the VAE at work; the denoiser waits in RAM until then, in every mode) and training;
the peak is the larger. Calibrated against published figures (docs/benchmarks.md); not yet measured on a GPU here.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .. import families
from .counts import config_folder, lora_counts, model_counts

GB = 1024 ** 3
# Bytes of optimizer state per trainable parameter (besides the fp32 weight and its fp32 gradient).
OPTIMIZER_STATE = {"AdamW": 8.0, "AdamW8bit": 2.0, "Lion": 4.0, "Lion8bit": 1.0, "Prodigy": 16.0,
                   "Adafactor": 0.5, "SGD": 0.0}
NF4_BYTES = 0.53  # 4 bits + one fp32 absmax per 64 weights, double-quantised (bitsandbytes' defaults)
# Activation bytes per latent token per image at 2-byte compute (x2 in fp32), without and with gradient
# checkpointing, and the image pixels per token side: each family's (core/families, FamilySpec.estimate). A token is
# one latent pixel (8x8 image pixels) for the UNets, one packed 2x2 latent patch (16x16 pixels) for Flux.
VAE_ENCODE_BYTES_PER_PIXEL = 2400  # fp32 VAE encoder activations while caching latents
OVERHEAD_GB = 0.8  # CUDA context, cuBLAS/cuDNN workspaces
FRAGMENTATION = 0.05  # allocator slack on top of what is allocated


@dataclass
class Estimate:
    family: str
    peak_vram_gb: float
    parts: dict[str, float]  # the training phase, GB
    caching_gb: float  # peak while latents / text-encoder outputs are cached
    training_gb: float
    phase: str  # which phase sets the peak
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    fits: bool | None = None
    vram_gb: float | None = None
    suggestions: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _compute_bytes(cfg) -> int:
    return 4 if cfg.mixed_precision == "no" else 2


def resolve_family(cfg, family: str | None = None) -> tuple[str, str]:
    """(family, config folder): from --family, the config's model_family, or the base model on disk."""
    from pathlib import Path

    model = cfg.pretrained_model_name_or_path
    fam = family or (cfg.model_family if cfg.model_family != "auto" else None)
    local = bool(model) and Path(model).expanduser().exists()
    if fam is None:
        if not local:
            raise ValueError("pretrained_model_name_or_path is empty or not on this computer: give the family with "
                             f"--family {'|'.join(families.names())} (the shipped configs are used then)")
        from ..models.loading import detect_family

        fam = detect_family(model, "auto", cfg.base_config_dir)[0]
    spec = families.find(fam)
    if spec is None:
        raise ValueError(f"family {fam!r}: use {', '.join(families.names())}")
    if cfg.base_config_dir and (Path(cfg.base_config_dir).expanduser() / "model_index.json").is_file():
        return fam, str(Path(cfg.base_config_dir).expanduser())
    variant = spec.variant_of(model) if local and spec.variant_of else None  # a single file: its size / variant
    return fam, str(config_folder(fam, model if local else "", variant))


def estimate(cfg, family: str | None = None) -> Estimate:
    """Predicted peak VRAM of training `cfg` (a TrainConfig) on one GPU."""
    from ..train.memory import check_modes

    fam, folder = resolve_family(cfg, family)
    spec = families.get(fam)
    est = spec.estimate
    counts = model_counts(folder, fam)
    den = counts.denoiser
    check_modes(cfg.base_precision, cfg.blocks_to_swap, len(den.blocks), spec.block_words)
    cb = _compute_bytes(cfg)
    notes: list[str] = []
    prec, swap = cfg.base_precision, cfg.blocks_to_swap
    checkpointing = cfg.gradient_checkpointing or prec == "fp8" or swap > 0

    # denoiser weights
    if prec == "fp8":
        weights = den.linear * 1 + (den.total - den.linear) * cb
        storage = 1.0
    elif prec == "nf4":
        weights = den.block_linear * NF4_BYTES + (den.total - den.block_linear) * cb
        storage = NF4_BYTES
    else:
        weights = den.total * cb
        storage = float(cb)
    swapped = 0.0
    if swap:
        moved = den.blocks[len(den.blocks) - swap:]
        ratio = (den.linear / den.total) if prec == "fp8" else 1.0
        per = (ratio * 1 + (1 - ratio) * cb) if prec == "fp8" else storage
        swapped = sum(moved) * per - max(moved) * per  # the block being computed is on the GPU
    base_gb = (weights - swapped) / GB

    # text encoders and VAE
    trained_tes = []
    if cfg.train_text_encoder:
        trainable = range(len(counts.text_encoders))
        trained_tes = [i for i in trainable if spec.lora_text_encoders is None or i in spec.lora_text_encoders]
    static_captions = not cfg.shuffle_caption and cfg.caption_dropout_rate == 0
    te_bytes = [n * cb for n in counts.text_encoders]
    fp8_te = est.fp8_encoder
    te_fp8 = fp8_te is not None and getattr(cfg, est.fp8_setting) == "fp8" and len(te_bytes) > fp8_te
    if te_fp8:  # Linear weights in float8, the embeddings and norms in the compute dtype (core/models/t5_fp8.py)
        te_bytes[fp8_te] = counts.te_linear[fp8_te] * 1 + (counts.text_encoders[fp8_te] - counts.te_linear[fp8_te]) * cb
    for other in sorted({f.estimate.fp8_setting for f in families.all_families()} - {est.fp8_setting, ""}):
        if getattr(cfg, other) != "auto":
            only = ", ".join(families.title(f) for f in families.using(other))
            notes.append(f"{other} = \"{getattr(cfg, other)}\" applies to {only} only; ignored for {spec.title}")
    if est.always_caches_text:  # the encoders that are not trained are cached whenever the captions stay the same
        cached = static_captions
        te_train = sum(b for i, b in enumerate(te_bytes) if i in trained_tes or not cached)
    else:
        cached = cfg.cache_text_encoder_outputs and not trained_tes and static_captions
        te_train = 0 if cached else sum(te_bytes)
    vae_cb = 4 if spec.vae_fp32 or cb == 4 else cb
    vae_bytes = counts.vae * vae_cb
    w, h = cfg.resolution_wh
    pixels = w * h * cfg.train_batch_size
    vae_train = 0 if cfg.cache_latents else vae_bytes + pixels * VAE_ENCODE_BYTES_PER_PIXEL * vae_cb / 4

    # LoRA, gradients, optimizer
    lora_den, lora_te = lora_counts(counts, cfg, trained_tes)
    lora_n = lora_den + lora_te
    lora_gb = lora_n * (4 + 4 + OPTIMIZER_STATE.get(cfg.optimizer_type, 8.0)) / GB

    # activations
    tokens = (w // est.token_pixels) * (h // est.token_pixels) * cfg.train_batch_size
    per_token = est.activations[1 if checkpointing else 0] * cb / 2
    act_gb = tokens * per_token / GB + (0.1 if trained_tes else 0.0)

    parts = {"base_weights": base_gb, "text_encoders": te_train / GB, "vae": vae_train / GB,
             "lora_and_optimizer": lora_gb, "activations": act_gb, "overhead": OVERHEAD_GB}
    subtotal = sum(parts.values())
    parts["fragmentation"] = (subtotal - OVERHEAD_GB) * FRAGMENTATION
    training = sum(parts.values())
    if swap:
        parts["swapped_to_ram"] = -swapped / GB  # already left out of base_weights; shown for information

    # caching phase: the encoders (and the VAE encoder) at work; the denoiser waits in RAM until caching is done
    # (core/train/memory.py), in every mode
    enc = sum(te_bytes) / GB
    vae_cache = (vae_bytes + w * h * VAE_ENCODE_BYTES_PER_PIXEL * vae_cb / 4) / GB if cfg.cache_latents else 0
    caching = (enc + vae_cache) * (1 + FRAGMENTATION) + OVERHEAD_GB
    peak = max(training, caching)
    phase = "training" if training >= caching else "caching"
    if phase == "caching":
        words = est.fp8_encoder_words
        t5 = (f" ({words}, stored in fp8)" if te_fp8 else f" ({words})") if words else ""
        notes.append("the peak is while caching: the text encoders" + t5 + " and the VAE are on the GPU then")
    if swap and not cfg.gradient_checkpointing or prec == "fp8" and not cfg.gradient_checkpointing:
        notes.append("gradient_checkpointing is turned on by base_precision fp8 / blocks_to_swap")
    settings = {"resolution": cfg.resolution, "train_batch_size": cfg.train_batch_size, "network_dim": cfg.network_dim,
                "mixed_precision": cfg.mixed_precision, "base_precision": prec, "blocks_to_swap": swap,
                **({est.fp8_setting: getattr(cfg, est.fp8_setting)} if fp8_te is not None else {}),
                "gradient_checkpointing": checkpointing, "optimizer_type": cfg.optimizer_type,
                "cache_latents": cfg.cache_latents, "text_encoder_outputs_cached": cached,
                "lora_parameters": lora_n, "denoiser_parameters": den.total, "blocks": len(den.blocks),
                "configs": folder}
    r = lambda x: round(x, 2)  # noqa: E731
    return Estimate(fam, r(peak), {k: r(v) for k, v in parts.items()}, r(caching), r(training), phase, settings,
                    notes)


# ------------------------------------------------------------------------------------------- what makes it fit
def _candidates(cfg, fam: str) -> list[tuple[str, dict[str, Any]]]:
    """Changes in the order they cost (speed or quality), cheapest first."""
    out: list[tuple[str, dict[str, Any]]] = []
    if not cfg.gradient_checkpointing:
        out.append(("turn on gradient_checkpointing (slower steps, same result)", {"gradient_checkpointing": True}))
    if not families.get(fam).estimate.always_caches_text and not (cfg.cache_text_encoder_outputs
                                                                  and not cfg.train_text_encoder):
        out.append(("train the UNet only and cache the text-encoder outputs",
                    {"network_train_unet_only": True, "cache_text_encoder_outputs": True}))
    if not cfg.cache_latents:
        out.append(("cache the latents", {"cache_latents": True}))
    if cfg.optimizer_type in ("AdamW", "Prodigy", "Lion"):
        out.append(("use an 8-bit optimizer", {"optimizer_type": "AdamW8bit" if cfg.optimizer_type != "Lion"
                                               else "Lion8bit"}))
    if cfg.base_precision == "auto":
        out.append(("store the base weights in fp8", {"base_precision": "fp8"}))
    out.append(("swap blocks to CPU RAM", {"blocks_to_swap": None}))  # the smallest N that fits
    out.append(("4-bit NF4 base weights (QLoRA) instead of fp8 and block swapping",
                {"base_precision": "nf4", "blocks_to_swap": 0}))
    if cfg.train_batch_size > 1:
        out.append(("batch size 1 (raise gradient_accumulation_steps to keep the effective batch)",
                    {"train_batch_size": 1,
                     "gradient_accumulation_steps": cfg.gradient_accumulation_steps * cfg.train_batch_size}))
    w, h = cfg.resolution_wh
    for side in (768, 512):
        if max(w, h) > side:
            out.append((f"lower the resolution to {side}", {"resolution": str(side)}))
    return out


def encoder_fp8(family: str) -> tuple[str, dict[str, str]] | None:
    """Flux's T5-XXL / klein's Qwen3 in fp8: offered whenever the caching phase sets the peak, that encoder being the
    largest part of it (the denoiser waits in RAM while caching), before the next change is tried."""
    est = families.get(family).estimate
    if est.fp8_encoder is None:
        return None
    return (f"store {est.fp8_encoder_words} in fp8 while the captions are cached (about half its size; the cached "
            "captions differ slightly)", {est.fp8_setting: "fp8"})


def _apply(base: Estimate, current, why: str, change: dict[str, Any], vram_gb: float, family: str | None,
           keep: bool = False):
    """`change` on top of `current`, listed in base.suggestions unless it lowers nothing (`keep`: listed anyway,
    for a block swap, which lowers the training phase only). Returns (the config now, whether it fits)."""
    from ..config.toml_io import validate

    trial = validate({**current.model_dump(), **change})
    est = estimate(trial, family)
    if est.peak_vram_gb >= estimate(current, family).peak_vram_gb and not keep:
        return current, False  # changes nothing here
    base.suggestions.append({"change": why, "set": change, "peak_vram_gb": est.peak_vram_gb,
                             "fits": est.peak_vram_gb <= vram_gb})
    return trial, est.peak_vram_gb <= vram_gb


def suggest(cfg, vram_gb: float, family: str | None = None) -> Estimate:
    """The estimate of `cfg`, whether it fits `vram_gb`, and the cheapest changes (applied one after the other)
    that make it fit, each with the estimate it gives."""
    base = estimate(cfg, family)
    base.vram_gb = vram_gb
    base.fits = base.peak_vram_gb <= vram_gb
    if base.fits:
        return base
    fam = base.family
    current = cfg
    te_fp8 = encoder_fp8(fam)
    te_left = te_fp8 is not None and getattr(cfg, next(iter(te_fp8[1]))) == "auto"
    for why, change in _candidates(cfg, fam) + [("", {})]:
        if te_left and estimate(current, family).phase == "caching":
            te_left = False
            current, fits = _apply(base, current, *te_fp8, vram_gb, family)
            if fits:
                break
        if not change:
            break
        swap = "blocks_to_swap" in change and change["blocks_to_swap"] is None
        if swap:
            if current.base_precision == "nf4":
                continue
            best = None
            for n in range(1, base.settings["blocks"] + 1):  # swapping lowers the training phase only
                trial = current.model_copy(update={"blocks_to_swap": n})
                if estimate(trial, family).training_gb <= vram_gb:
                    best = n
                    break
            n = best or base.settings["blocks"]
            change = {"blocks_to_swap": n}
            why = f"swap {n} of {base.settings['blocks']} blocks to CPU RAM (slower steps, same result)"
        current, fits = _apply(base, current, why, change, vram_gb, family, keep=swap)
        if fits:
            break
    return base
