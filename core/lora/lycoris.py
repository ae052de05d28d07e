"""LyCORIS LoHa and LoKr (network_type loha / lokr) through peft's LoHa / LoKr layers, and their file form.

File form: the kohya module names (`lora_unet_..._to_q`, `lora_te_...`, SDXL in sgm names) with LyCORIS' tensor
names, exactly as peft names its parameters: LoHa `.hada_w1_a` `.hada_w1_b` `.hada_w2_a` `.hada_w2_b` (+ `.hada_t1`
`.hada_t2` with use_tucker), LoKr `.lokr_w1` or `.lokr_w1_a`/`.lokr_w1_b`, `.lokr_w2` or `.lokr_w2_a`/`.lokr_w2_b`
(+ `.lokr_t2`), and `.alpha` (float32, 0-dim). peft's layouts are LyCORIS' (its code is a copy of LyCORIS'), so
ComfyUI (`comfy/weight_adapter/loha.py`, `lokr.py`), AUTOMATIC1111 and Forge rebuild the same weights:
LoHa `(w1a @ w1b) * (w2a @ w2b)`, LoKr `kron(w1, w2)`, Tucker cores by the same einsum.

Scale. The loaders multiply by alpha / rank with rank = rows of hada_w1_b (LoHa) or of the decomposed LoKr factor
(lokr_w2_b, else lokr_w1_b), and by 1 when neither LoKr factor is decomposed. peft multiplies every layer by its
`scaling` (alpha / r). The file's alpha is therefore written as scaling x the rank the loaders read, and a LoKr
layer without a decomposed factor gets its scaling folded into lokr_w1: whatever peft trained with, the file
applies exactly that change. Training itself follows LyCORIS: a LoKr layer whose two factors are both full
matrices (small layers, or a large network_dim) trains at scale 1, alpha unused (peft would use alpha / r).
"""
from __future__ import annotations

import torch
from torch import nn

ADAPTER = "default"
ALGO_TITLES = {"loha": "LoHa", "lokr": "LoKr"}


def lycoris_config(spec, targets: list[str], rank_pattern: dict, alpha_pattern: dict):
    """peft's LoHaConfig / LoKrConfig for a NetworkSpec of kind loha / lokr."""
    common = dict(r=spec.dim, alpha=spec.alpha, rank_dropout=spec.rank_dropout, module_dropout=spec.module_dropout,
                  use_effective_conv2d=spec.use_tucker, target_modules=targets, rank_pattern=rank_pattern,
                  alpha_pattern=alpha_pattern, init_weights=True)
    if spec.kind == "loha":
        from peft import LoHaConfig

        return LoHaConfig(**common)
    from peft import LoKrConfig

    # rank_dropout_scale: the kept rows are scaled up, as peft's LoHa always does and sd-scripts' rank_dropout
    return LoKrConfig(**common, decompose_both=spec.decompose_both, decompose_factor=spec.factor,
                      rank_dropout_scale=True)


def lycoris_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The peft LoHa / LoKr layers of `model` that hold our adapter, by module path."""
    from peft.tuners.lycoris_utils import LycorisLayer

    return [(n, m) for n, m in model.named_modules() if isinstance(m, LycorisLayer) and ADAPTER in m.r]


def _lokr_full(layer: nn.Module) -> bool:
    return ADAPTER in getattr(layer, "lokr_w1", {}) and ADAPTER in getattr(layer, "lokr_w2", {})


def after_inject(model: nn.Module) -> None:
    """LyCORIS' rule: a LoKr layer without a decomposed factor trains at scale 1 (alpha = its rank)."""
    for _, layer in lycoris_layers(model):
        if _lokr_full(layer):
            layer.alpha[ADAPTER] = layer.r[ADAPTER]
            layer.scaling[ADAPTER] = 1.0


def to_lycoris(model: nn.Module, prefix: str, dtype: torch.dtype, rename=lambda m: m) -> dict[str, torch.Tensor]:
    """One model's LoHa / LoKr layers as LyCORIS file tensors under kohya module names (see the module doc)."""
    from .kohya_format import kohya_name

    out: dict[str, torch.Tensor] = {}
    for module, layer in lycoris_layers(model):
        params = {n: getattr(layer, n)[ADAPTER].detach().to("cpu", torch.float32)
                  for n in layer.adapter_layer_names if ADAPTER in getattr(layer, n)}
        scale = float(layer.scaling[ADAPTER])
        if "hada_w1_b" in params:
            alpha = scale * params["hada_w1_b"].shape[0]
        elif "lokr_w2_b" in params or "lokr_w1_b" in params:
            alpha = scale * params["lokr_w2_b" if "lokr_w2_b" in params else "lokr_w1_b"].shape[0]
        else:  # no decomposed factor: the loaders apply kron(w1, w2) as it is
            params["lokr_w1"] = params["lokr_w1"] * scale
            alpha = float(layer.r[ADAPTER])
        name = kohya_name(prefix, rename(module))
        for n, t in params.items():
            out[f"{name}.{n}"] = t.to(dtype).contiguous()
        out[f"{name}.alpha"] = torch.tensor(float(alpha), dtype=torch.float32)
    return out


def delta_and_factors(layer: nn.Module) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(the layer's change as peft applies it, two parameters whose product scales that change linearly): LoHa
    w1a and w2a, LoKr w1 (or w1a) and w2 (or w2a). For max-norm regularisation (scale_weight_norms)."""
    delta = layer.get_delta_weight(ADAPTER)
    if hasattr(layer, "hada_w1_a"):
        return delta, [layer.hada_w1_a[ADAPTER], layer.hada_w2_a[ADAPTER]]
    w1 = layer.lokr_w1[ADAPTER] if ADAPTER in layer.lokr_w1 else layer.lokr_w1_a[ADAPTER]
    w2 = layer.lokr_w2[ADAPTER] if ADAPTER in layer.lokr_w2 else layer.lokr_w2_a[ADAPTER]
    return delta, [w1, w2]


def network_args(cfg) -> dict[str, str]:
    """ss_network_args of a LoHa / LoKr file, as LyCORIS' kohya wrapper writes them (strings)."""
    args = {"algo": cfg.network_type}
    if cfg.conv_dim:
        args.update(conv_dim=str(cfg.conv_dim), conv_alpha=str(cfg.conv_alpha))
    if cfg.network_type == "lokr":
        args.update(factor=str(cfg.factor), decompose_both=str(cfg.decompose_both))
    if cfg.use_tucker:
        args["use_tucker"] = "True"
    return args


def parameter_count(kind: str, out_dim: int, in_dim: int, kernel: int, r: int, factor: int = -1,
                    decompose_both: bool = False, use_tucker: bool = False) -> int:
    """Trainable parameters of one peft LoHa / LoKr layer (kernel = kh * kw, 1 for Linear), by peft's own shape
    rules (the VRAM estimate; tests compare it with injected layers)."""
    tucker = use_tucker and kernel > 1
    if kind == "loha":
        return 2 * (r * out_dim + r * in_dim + r * r * kernel) if tucker else 2 * r * (out_dim + in_dim * kernel)
    from peft.tuners.lokr.layer import factorization

    out_l, out_k = factorization(out_dim, factor)
    in_m, in_n = factorization(in_dim, factor)
    full_w1 = not (decompose_both and r < max(out_l, in_m) / 2)
    n = out_l * in_m if full_w1 else r * (out_l + in_m)
    if not r < max(out_k, in_n) / 2:
        return n + out_k * in_n * kernel
    return n + (r * r * kernel + r * (out_k + in_n) if tucker else r * out_k + r * in_n * kernel)
