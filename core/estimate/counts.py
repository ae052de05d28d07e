"""Parameter counts of a base model's real-size architecture, from its configs, without loading any weight.

Each part (denoiser, text encoders, VAE) is built on the meta device from a diffusers folder's config.json files or
the configs shipped in core/models/configs, and its parameters are counted: in total, in Linear layers (what fp8 stores
in float8; for the text encoders what t5xxl_precision fp8 stores of T5-XXL), in the blocks' Linear layers (what NF4
quantises), per block (what blocks_to_swap moves), and the LoRA a network spec puts on it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from torch import nn

from .. import families
from ..lora import network as net
from ..models.blocks import block_prefixes, denoiser_blocks
from ..models.meta import meta_diffusers, meta_transformers
from ..models.loading import CONFIG_ROOT

TE_FOLDERS = ("text_encoder", "text_encoder_2")


@dataclass
class DenoiserCounts:
    total: int
    linear: int  # stored in fp8 by base_precision fp8
    block_linear: int  # quantised by base_precision nf4
    blocks: list[int] = field(default_factory=list)  # frozen parameters of each block, in forward order
    hidden: int = 0  # width of the block stream (Flux 3072, SD UNets the widest block's channels)


@dataclass
class ModelCounts:
    family: str
    source: str  # the folder the configs came from
    denoiser: DenoiserCounts
    text_encoders: list[int]
    vae: int
    te_linear: list[int] = field(default_factory=list)  # parameters in Linear layers (what t5xxl_precision fp8 stores)
    _model: object = None  # the meta denoiser (for LoRA counts)
    _tes: list = field(default_factory=list)


def config_folder(family: str, model: str = "", variant: str | None = None) -> Path:
    """A diffusers folder that holds configs for `model`: the model's own, or the shipped one of its family."""
    p = Path(model).expanduser() if model else None
    if p is not None and p.is_dir() and (p / "model_index.json").is_file():
        return p
    return CONFIG_ROOT / families.get(family).config_folder_for(variant)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _denoiser_counts(model: nn.Module) -> DenoiserCounts:
    prefixes = block_prefixes(model)
    linear = block_linear = 0
    for name, mod in model.named_modules():
        if type(mod) is nn.Linear and not any(s in name for s in ("pos_embed", "patch_embed")):
            n = _count(mod)
            linear += n
            if name.startswith(prefixes):
                block_linear += n
    blocks = [_count(b) for _, b in denoiser_blocks(model)]
    cfg = model.config
    hidden = max(cfg.get("block_out_channels") or [0]) or cfg.get("num_attention_heads", 0) * cfg.get("attention_head_dim", 0)
    return DenoiserCounts(_count(model), linear, block_linear, blocks, hidden)


@lru_cache(maxsize=8)
def model_counts(folder: str, family: str) -> ModelCounts:
    root = Path(folder)
    sub = families.get(family).denoiser
    den = meta_diffusers(root / sub)
    tes = [meta_transformers(root / t) for t in TE_FOLDERS if (root / t / "config.json").is_file()]
    vae = meta_diffusers(root / "vae") if (root / "vae" / "config.json").is_file() else None
    te_linear = [sum(_count(m) for m in t.modules() if isinstance(m, nn.Linear)) for t in tes]
    return ModelCounts(family, str(root), _denoiser_counts(den), [_count(t) for t in tes],
                       _count(vae) if vae is not None else 0, te_linear, den, tes)


def _lora_size(model: nn.Module, names: list[str], rank: int, dora: bool, spec=None) -> int:
    mods = dict(model.named_modules())
    n = 0
    for name in names:
        m = mods[name]
        if spec is not None and spec.lycoris:  # LoHa / LoKr
            from ..lora.lycoris import parameter_count

            conv = isinstance(m, nn.Conv2d)
            n += parameter_count(spec.kind, m.out_channels if conv else m.out_features,
                                 m.in_channels // m.groups if conv else m.in_features,
                                 m.kernel_size[0] * m.kernel_size[1] if conv else 1, rank, spec.factor,
                                 spec.decompose_both, spec.use_tucker)
        elif isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1]
            n += rank * m.in_channels * k + m.out_channels * rank
        else:
            n += rank * (m.in_features + m.out_features)
        if dora:
            n += m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
    return n


def lora_counts(counts: ModelCounts, cfg, trained_tes: list[int]) -> tuple[int, int]:
    """(LoRA parameters on the denoiser, on the trained text encoders)."""
    spec = net.NetworkSpec.from_config(cfg)
    fam = families.family_module(counts.family)
    den = 0
    if cfg.train_unet:
        main, conv = fam.denoiser_targets(counts._model, spec)
        den = _lora_size(counts._model, main, spec.dim, spec.dora, spec)
        den += _lora_size(counts._model, conv, spec.conv_dim, spec.dora, spec) if conv else 0
    te = 0
    for i in trained_tes:
        if i < len(counts._tes):
            te += _lora_size(counts._tes[i], net.text_encoder_targets(counts._tes[i]), spec.dim, spec.dora, spec)
    return den, te
