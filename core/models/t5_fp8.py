"""Flux's T5-XXL in fp8 while the captions are encoded (t5xxl_precision = "fp8"); also klein's Qwen3
(qwen3_precision = "fp8"), whose feed-forward Linears are plain ones and are cast one by one.

diffusers' layerwise casting (diffusers.hooks.apply_layerwise_casting, as core/train/memory.py uses for the
denoiser) stores every Linear weight of T5 as float8_e4m3fn and casts it to the compute dtype for its forward
pass: 4.6 of T5-XXL's 4.76 B parameters, so about 4.9 GB on the GPU instead of 9.5 GB in bf16. As in sd-scripts'
fp8_base (flux_train_network.py, prepare_text_encoder_fp8), the embeddings (the shared token embedding, the
relative position bias) and the T5LayerNorm weights keep the compute dtype.

T5's feed-forward blocks (T5DenseGatedActDense: wi_0, wi_1, wo) are cast as one unit. Their forward casts the
hidden states to wo's weight dtype before calling wo (transformers keeps wo in fp32 for fp16 checkpoints, since
its outputs overflow fp16); with a hook on wo alone that dtype would be float8 there. Cast as a unit, wo is in the
compute dtype when the block looks at it. sd-scripts replaces that forward instead. The compute dtype is the
training one: with mixed_precision fp16, wo runs in fp16 as it does without this mode.
"""
from __future__ import annotations

import torch
from torch import nn

FP8 = torch.float8_e4m3fn
FEED_FORWARD = ("T5DenseGatedActDense", "T5DenseActDense")  # transformers' T5 feed-forward classes
_MARK = "_lw_t5_fp8"  # set on a T5 whose Linear weights are stored in fp8


def is_t5_fp8(model: nn.Module | None) -> bool:
    return model is not None and bool(getattr(model, _MARK, None))


def fp8_linear_weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, nn.Linear)]


def store_t5_fp8(t5: nn.Module, compute_dtype: torch.dtype, label: str = "t5xxl_precision fp8: T5-XXL") -> int:
    """Store `t5`'s Linear weights in float8_e4m3fn, computed in `compute_dtype`; everything else (embeddings,
    norms) in `compute_dtype`. Linear weights that are float8 already (an fp8 T5 file kept as it is) are not
    touched. Returns how many Linear weights are stored in fp8. Done once per model."""
    from diffusers.hooks import apply_layerwise_casting

    if is_t5_fp8(t5):
        return len(fp8_linear_weights(t5))
    linear = {id(p) for p in fp8_linear_weights(t5)}
    for p in t5.parameters():  # never the Linear weights: they go straight to fp8 (no double rounding)
        if id(p) not in linear and p.is_floating_point() and p.dtype != compute_dtype:
            p.data = p.data.to(compute_dtype)
    names = set()
    for name, mod in t5.named_modules():
        if type(mod).__name__ in FEED_FORWARD:  # the whole block at once (see the module docstring)
            apply_layerwise_casting(mod, storage_dtype=FP8, compute_dtype=compute_dtype, skip_modules_pattern=None,
                                    skip_modules_classes=None)
            names.add(name.rsplit(".", 1)[-1])
    apply_layerwise_casting(t5, storage_dtype=FP8, compute_dtype=compute_dtype,
                            skip_modules_pattern=tuple(sorted(names)) or None, skip_modules_classes=(nn.Embedding,))
    setattr(t5, _MARK, label)
    return len(fp8_linear_weights(t5))


def describe(t5: nn.Module, compute_dtype: torch.dtype) -> str:
    n = len(fp8_linear_weights(t5))
    gb = sum(p.numel() * p.element_size() for p in t5.parameters()) / 1e9
    return (f"{getattr(t5, _MARK)} is stored in fp8 while caching ({n} Linear weights as float8_e4m3fn, "
            f"computed in {str(compute_dtype).replace('torch.', '')}; {gb:.2f} GB in all)")
