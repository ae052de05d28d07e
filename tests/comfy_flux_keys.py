"""Test-only re-implementation of ComfyUI's Flux.1 key naming (pure torch): diffusers transformer keys <-> BFL keys.

Part of :mod:`comfy_flux` (which imports everything here, so ``comfy_flux.flux_to_diffusers`` etc. still work):
* ``comfy/utils.py`` ``flux_to_diffusers`` -> :func:`flux_to_diffusers`: q/k/v (and a single block's ``proj_mlp``)
  are row slices ``(BFL key, (dim, offset, length))`` of the fused ``img_attn.qkv`` / ``txt_attn.qkv`` /
  ``linear1`` weights; ``norm_out.linear`` is ``(BFL key, None, swap_scale_shift)``.
* ``comfy/utils.py`` ``convert_diffusers_mmdit`` (Flux) -> :func:`diffusers_to_bfl`.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Union

import torch

# A key map value: a model key, a row slice (model key, (dim, offset, length)), or
# (model key, None, function) where function is applied to the weight change (swap_scale_shift).
Target = Union[str, tuple]


def swap_scale_shift(weight: torch.Tensor) -> torch.Tensor:
    """comfy/utils.py swap_scale_shift: (shift, scale) <-> (scale, shift) along dim 0."""
    shift, scale = weight.chunk(2, dim=0)
    return torch.cat([scale, shift], dim=0)


def flux_to_diffusers(
    num_layers: int,
    num_single_layers: int,
    hidden_size: int,
    mlp_ratio: float = 4.0,
    *,
    output_prefix: str = "",
    qk_norm_suffix: str = "scale",
) -> dict[str, Target]:
    """comfy/utils.py flux_to_diffusers: diffusers transformer weight/bias key -> BFL key.

    Values: ``"double_blocks.0.img_mod.lin.weight"``; ``(fused BFL key, (0, offset, length))`` for
    q/k/v (length hidden_size) and proj_mlp (offset 3*hidden, length hidden*mlp_ratio; ComfyUI
    hardcodes mlp_ratio 4); ``(BFL key, None, swap_scale_shift)`` for ``norm_out.linear``.
    ``output_prefix`` is prepended to every BFL key (ComfyUI's LoRA code passes
    ``"diffusion_model."``). ``qk_norm_suffix``: ``"scale"`` (BFL checkpoint names) or ``"weight"``
    (current ComfyUI's internal names). Includes ComfyUI's extra entries that a Flux.1 model lacks
    (``controlnet_x_embedder``, Flux 2 ``attn.to_qkv_mlp_proj``/``attn.to_out`` of single blocks,
    LyCORIS LoKr ``ff.linear_in``/``ff.linear_out``).
    """
    if qk_norm_suffix not in ("scale", "weight"):
        raise ValueError(f"qk_norm_suffix must be 'scale' or 'weight', not {qk_norm_suffix!r}")
    h = hidden_size
    mlp = int(hidden_size * mlp_ratio)
    ns = qk_norm_suffix
    key_map: dict[str, Target] = {}
    for index in range(num_layers):
        prefix_from = f"transformer_blocks.{index}"
        prefix_to = f"{output_prefix}double_blocks.{index}"
        for end in ("weight", "bias"):
            k = f"{prefix_from}.attn."
            qkv = f"{prefix_to}.img_attn.qkv.{end}"
            key_map[f"{k}to_q.{end}"] = (qkv, (0, 0, h))
            key_map[f"{k}to_k.{end}"] = (qkv, (0, h, h))
            key_map[f"{k}to_v.{end}"] = (qkv, (0, h * 2, h))
            qkv = f"{prefix_to}.txt_attn.qkv.{end}"
            key_map[f"{k}add_q_proj.{end}"] = (qkv, (0, 0, h))
            key_map[f"{k}add_k_proj.{end}"] = (qkv, (0, h, h))
            key_map[f"{k}add_v_proj.{end}"] = (qkv, (0, h * 2, h))
        block_map = {
            "attn.to_out.0.weight": "img_attn.proj.weight",
            "attn.to_out.0.bias": "img_attn.proj.bias",
            "norm1.linear.weight": "img_mod.lin.weight",
            "norm1.linear.bias": "img_mod.lin.bias",
            "norm1_context.linear.weight": "txt_mod.lin.weight",
            "norm1_context.linear.bias": "txt_mod.lin.bias",
            "attn.to_add_out.weight": "txt_attn.proj.weight",
            "attn.to_add_out.bias": "txt_attn.proj.bias",
            "ff.net.0.proj.weight": "img_mlp.0.weight",
            "ff.net.0.proj.bias": "img_mlp.0.bias",
            "ff.net.2.weight": "img_mlp.2.weight",
            "ff.net.2.bias": "img_mlp.2.bias",
            "ff_context.net.0.proj.weight": "txt_mlp.0.weight",
            "ff_context.net.0.proj.bias": "txt_mlp.0.bias",
            "ff_context.net.2.weight": "txt_mlp.2.weight",
            "ff_context.net.2.bias": "txt_mlp.2.bias",
            "ff.linear_in.weight": "img_mlp.0.weight",  # LyCORIS LoKr (ComfyUI PR #11997)
            "ff.linear_in.bias": "img_mlp.0.bias",
            "ff.linear_out.weight": "img_mlp.2.weight",
            "ff.linear_out.bias": "img_mlp.2.bias",
            "ff_context.linear_in.weight": "txt_mlp.0.weight",
            "ff_context.linear_in.bias": "txt_mlp.0.bias",
            "ff_context.linear_out.weight": "txt_mlp.2.weight",
            "ff_context.linear_out.bias": "txt_mlp.2.bias",
            "attn.norm_q.weight": f"img_attn.norm.query_norm.{ns}",
            "attn.norm_k.weight": f"img_attn.norm.key_norm.{ns}",
            "attn.norm_added_q.weight": f"txt_attn.norm.query_norm.{ns}",
            "attn.norm_added_k.weight": f"txt_attn.norm.key_norm.{ns}",
        }
        for k, v in block_map.items():
            key_map[f"{prefix_from}.{k}"] = f"{prefix_to}.{v}"

    for index in range(num_single_layers):
        prefix_from = f"single_transformer_blocks.{index}"
        prefix_to = f"{output_prefix}single_blocks.{index}"
        for end in ("weight", "bias"):
            k = f"{prefix_from}.attn."
            qkv = f"{prefix_to}.linear1.{end}"
            key_map[f"{k}to_q.{end}"] = (qkv, (0, 0, h))
            key_map[f"{k}to_k.{end}"] = (qkv, (0, h, h))
            key_map[f"{k}to_v.{end}"] = (qkv, (0, h * 2, h))
            key_map[f"{prefix_from}.proj_mlp.{end}"] = (qkv, (0, h * 3, mlp))
        block_map = {
            "norm.linear.weight": "modulation.lin.weight",
            "norm.linear.bias": "modulation.lin.bias",
            "proj_out.weight": "linear2.weight",
            "proj_out.bias": "linear2.bias",
            "attn.norm_q.weight": f"norm.query_norm.{ns}",
            "attn.norm_k.weight": f"norm.key_norm.{ns}",
            "attn.to_qkv_mlp_proj.weight": "linear1.weight",  # Flux 2
            "attn.to_out.weight": "linear2.weight",  # Flux 2
        }
        for k, v in block_map.items():
            key_map[f"{prefix_from}.{k}"] = f"{prefix_to}.{v}"

    map_basic = [
        ("final_layer.linear.bias", "proj_out.bias"),
        ("final_layer.linear.weight", "proj_out.weight"),
        ("img_in.bias", "x_embedder.bias"),
        ("img_in.weight", "x_embedder.weight"),
        ("time_in.in_layer.bias", "time_text_embed.timestep_embedder.linear_1.bias"),
        ("time_in.in_layer.weight", "time_text_embed.timestep_embedder.linear_1.weight"),
        ("time_in.out_layer.bias", "time_text_embed.timestep_embedder.linear_2.bias"),
        ("time_in.out_layer.weight", "time_text_embed.timestep_embedder.linear_2.weight"),
        ("txt_in.bias", "context_embedder.bias"),
        ("txt_in.weight", "context_embedder.weight"),
        ("vector_in.in_layer.bias", "time_text_embed.text_embedder.linear_1.bias"),
        ("vector_in.in_layer.weight", "time_text_embed.text_embedder.linear_1.weight"),
        ("vector_in.out_layer.bias", "time_text_embed.text_embedder.linear_2.bias"),
        ("vector_in.out_layer.weight", "time_text_embed.text_embedder.linear_2.weight"),
        ("guidance_in.in_layer.bias", "time_text_embed.guidance_embedder.linear_1.bias"),
        ("guidance_in.in_layer.weight", "time_text_embed.guidance_embedder.linear_1.weight"),
        ("guidance_in.out_layer.bias", "time_text_embed.guidance_embedder.linear_2.bias"),
        ("guidance_in.out_layer.weight", "time_text_embed.guidance_embedder.linear_2.weight"),
        ("final_layer.adaLN_modulation.1.bias", "norm_out.linear.bias", swap_scale_shift),
        ("final_layer.adaLN_modulation.1.weight", "norm_out.linear.weight", swap_scale_shift),
        ("pos_embed_input.bias", "controlnet_x_embedder.bias"),
        ("pos_embed_input.weight", "controlnet_x_embedder.weight"),
    ]
    for k in map_basic:
        if len(k) > 2:
            key_map[k[1]] = (f"{output_prefix}{k[0]}", None, k[2])
        else:
            key_map[k[1]] = f"{output_prefix}{k[0]}"
    return key_map


def bfl_to_diffusers_keys_for_model(transformer) -> dict[str, int]:
    """Config of a diffusers ``FluxTransformer2DModel`` as keyword arguments for this module.

    Returns ``{"num_layers": config.num_layers, "num_single_layers": config.num_single_layers,
    "hidden_size": config.num_attention_heads * config.attention_head_dim}``, usable as
    ``flux_to_diffusers(**cfg)``, ``lora_key_map(bfl_keys, **cfg)`` and ``diffusers_to_bfl(sd, **cfg)``
    (diffusers' Flux blocks always use mlp_ratio 4, ComfyUI's default).
    """
    config = transformer.config
    return {
        "num_layers": int(config.num_layers),
        "num_single_layers": int(config.num_single_layers),
        "hidden_size": int(config.num_attention_heads) * int(config.attention_head_dim),
    }


def diffusers_to_bfl(
    diffusers_sd: Mapping[str, torch.Tensor],
    num_layers: int,
    num_single_layers: int,
    hidden_size: int,
    mlp_ratio: float = 4.0,
    *,
    qk_norm_suffix: str = "scale",
) -> dict[str, torch.Tensor]:
    """comfy/utils.py convert_diffusers_mmdit (Flux): a diffusers transformer state dict in BFL layout.

    Sliced q/k/v/proj_mlp rows are written into the fused tensor, norm_out gets swap_scale_shift.
    Returns new tensors keyed by bare BFL names; diffusers keys the map does not know are left out
    (as in ComfyUI). The input is not modified.
    """
    sd_map = flux_to_diffusers(
        num_layers, num_single_layers, hidden_size, mlp_ratio, qk_norm_suffix=qk_norm_suffix
    )
    out: dict[str, torch.Tensor] = {}
    for k, t in sd_map.items():
        weight = diffusers_sd.get(k)
        if weight is None:
            continue
        if isinstance(t, str):
            out[t] = weight.clone()
            continue
        fun = t[2] if len(t) > 2 else (lambda a: a)
        offset = t[1]
        if offset is not None:
            old = out.get(t[0])
            if old is None:
                old = torch.empty_like(weight)
            if old.shape[offset[0]] < offset[1] + offset[2]:
                exp = list(weight.shape)
                exp[offset[0]] = offset[1] + offset[2]
                new = torch.empty(exp, device=weight.device, dtype=weight.dtype)
                new[: old.shape[0]] = old
                old = new
            w = old.narrow(offset[0], offset[1], offset[2])
        else:
            old = torch.empty_like(weight)
            w = old
        w[:] = fun(weight)
        out[t[0]] = old
    return out
