"""diffusers -> original (LDM / sgm) key conversion for SD1.5 and SDXL.

This is the inverse of what diffusers' single-file loader
(``diffusers.loaders.single_file_utils``) does, used to export a diffusers pipeline as
one ``.safetensors`` file in the layout A1111 / ComfyUI / kohya expect, and to name UNet
modules the way sgm (SDXL) LoRA files do.

Layouts produced:

* UNet: ``model.diffusion_model.*``
* VAE: ``first_stage_model.*``
* SD1.5 text encoder: ``cond_stage_model.transformer.text_model.*``
* SDXL text encoders: ``conditioner.embedders.0.transformer.text_model.*`` (CLIP-L) and
  ``conditioner.embedders.1.model.*`` (OpenCLIP bigG layout: fused ``in_proj``,
  ``text_projection`` stored transposed).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD15_TE_PREFIX = "cond_stage_model.transformer.text_model."
SDXL_TE1_PREFIX = "conditioner.embedders.0.transformer.text_model."
SDXL_TE2_PREFIX = "conditioner.embedders.1.model."

SUPPORTED_FAMILIES = ("sd15", "sdxl")

# Up blocks that contain attentions, for the default UNet layouts. It decides where the
# upsampler sits inside an LDM output block: after the attention (index 2) or not (1).
_UP_ATTENTION_BLOCKS = {"sd15": {1, 2, 3}, "sd2": {1, 2, 3}, "sdxl": {0, 1}}

# ----------------------------------------------------------------------------- UNet names

_UNET_TOP_LEVEL = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_UNET_RESNET_PARTS = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
_DOWN_RE = re.compile(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)((?:\..*)?)")
_DOWNSAMPLE_RE = re.compile(r"down_blocks\.(\d+)\.downsamplers\.0\.conv((?:\..*)?)")
_MID_RE = re.compile(r"mid_block\.(resnets|attentions)\.(\d+)((?:\..*)?)")
_UP_RE = re.compile(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)((?:\..*)?)")
_UPSAMPLE_RE = re.compile(r"up_blocks\.(\d+)\.upsamplers\.0\.conv((?:\..*)?)")


def _resnet_rest(rest: str) -> str:
    """Rename the first component of a path inside a ResNet block (``.norm1.weight`` -> ``.in_layers.0.weight``)."""
    if not rest:
        return rest
    head, _, tail = rest[1:].partition(".")
    head = _UNET_RESNET_PARTS.get(head, head)
    return "." + head + ("." + tail if tail else "")


def unet_module_to_ldm(
    name: str,
    family: str | None = None,
    *,
    layers_per_block: int = 2,
    up_attention_blocks: Iterable[int] | None = None,
) -> str:
    """Map a diffusers UNet module (or parameter) path to the LDM / sgm path.

    ``down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q`` ->
    ``input_blocks.4.1.transformer_blocks.0.attn1.to_q``. Valid for SD1.5, SD2 and SDXL
    layouts. Only up-block upsamplers depend on the family (whether that up block holds
    attentions); for those pass ``family`` or ``up_attention_blocks``.
    Raises ValueError for a path that is not inside a UNet layer.
    """
    per = layers_per_block + 1  # LDM blocks per diffusers down/up block (resnets + sampler)
    for prefix, target in _UNET_TOP_LEVEL.items():
        if name == prefix or name.startswith(prefix + "."):
            return target + name[len(prefix) :]

    if m := _DOWN_RE.fullmatch(name):
        block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = block * per + layer + 1
        if kind == "resnets":
            return f"input_blocks.{index}.0{_resnet_rest(rest)}"
        return f"input_blocks.{index}.1{rest}"
    if m := _DOWNSAMPLE_RE.fullmatch(name):
        return f"input_blocks.{(int(m[1]) + 1) * per}.0.op{m[2]}"
    if m := _MID_RE.fullmatch(name):
        kind, layer, rest = m[1], int(m[2]), m[3]
        if kind == "resnets":
            return f"middle_block.{0 if layer == 0 else 2}{_resnet_rest(rest)}"
        return f"middle_block.1{rest}"
    if m := _UP_RE.fullmatch(name):
        block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = block * per + layer
        if kind == "resnets":
            return f"output_blocks.{index}.0{_resnet_rest(rest)}"
        return f"output_blocks.{index}.1{rest}"
    if m := _UPSAMPLE_RE.fullmatch(name):
        block = int(m[1])
        if up_attention_blocks is None:
            if family not in _UP_ATTENTION_BLOCKS:
                raise ValueError(
                    f"{name!r}: the LDM position of an upsampler depends on the model family; "
                    f"pass family= one of {sorted(_UP_ATTENTION_BLOCKS)}"
                )
            up_attention_blocks = _UP_ATTENTION_BLOCKS[family]
        slot = 2 if block in set(up_attention_blocks) else 1
        return f"output_blocks.{block * per + layers_per_block}.{slot}.conv{m[2]}"
    raise ValueError(f"not a diffusers UNet module path: {name!r}")


def unet_to_ldm_state_dict(unet_state_dict: Mapping[str, torch.Tensor], config: Mapping) -> dict[str, torch.Tensor]:
    """diffusers UNet2DConditionModel state dict -> ``model.diffusion_model.*`` keys."""
    up_attention = {i for i, t in enumerate(config["up_block_types"]) if "CrossAttn" in t}
    layers = config["layers_per_block"]
    if not isinstance(layers, int):
        raise ValueError("per-block layers_per_block is not supported by the LDM layout")
    out = {}
    for key, value in unet_state_dict.items():
        module, _, leaf = key.rpartition(".")
        ldm = unet_module_to_ldm(module, layers_per_block=layers, up_attention_blocks=up_attention)
        out[f"{UNET_PREFIX}{ldm}.{leaf}"] = value
    return out


# ----------------------------------------------------------------------------- VAE

_VAE_TOP_LEVEL = {
    "encoder.conv_norm_out": "encoder.norm_out",
    "decoder.conv_norm_out": "decoder.norm_out",
}
_VAE_ATTENTION_PARTS = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_VAE_BLOCK_RE = re.compile(r"(encoder|decoder)\.(down|up)_blocks\.(\d+)\.(?:resnets\.(\d+)|downsamplers\.0|upsamplers\.0)\.(.*)")
_VAE_MID_RE = re.compile(r"(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d+)\.(.*)")


def _vae_key_to_ldm(key: str, num_up_blocks: int) -> str:
    for old, new in _VAE_TOP_LEVEL.items():
        if key.startswith(old + "."):
            return new + key[len(old) :]
    if m := _VAE_BLOCK_RE.fullmatch(key):
        part, direction, block, resnet, rest = m[1], m[2], int(m[3]), m[4], m[5]
        if direction == "up":
            block = num_up_blocks - 1 - block  # LDM numbers decoder blocks from the bottom
        if resnet is not None:
            return f"{part}.{direction}.{block}.block.{resnet}.{rest.replace('conv_shortcut', 'nin_shortcut')}"
        sampler = "downsample" if direction == "down" else "upsample"
        return f"{part}.{direction}.{block}.{sampler}.{rest}"
    if m := _VAE_MID_RE.fullmatch(key):
        part, kind, index, rest = m[1], m[2], int(m[3]), m[4]
        if kind == "resnets":
            return f"{part}.mid.block_{index + 1}.{rest.replace('conv_shortcut', 'nin_shortcut')}"
        module, _, leaf = rest.rpartition(".")
        return f"{part}.mid.attn_{index + 1}.{_VAE_ATTENTION_PARTS[module]}.{leaf}"
    if key.startswith(("encoder.conv_", "decoder.conv_", "quant_conv.", "post_quant_conv.")):
        return key
    raise ValueError(f"unexpected VAE key: {key!r}")


def vae_to_ldm_state_dict(vae_state_dict: Mapping[str, torch.Tensor], config: Mapping) -> dict[str, torch.Tensor]:
    """diffusers AutoencoderKL state dict -> ``first_stage_model.*`` keys (attention as 1x1 convs)."""
    num_up = len(config["up_block_types"])
    out = {}
    for key, value in vae_state_dict.items():
        ldm = _vae_key_to_ldm(key, num_up)
        if ".mid.attn_" in ldm and ldm.endswith(".weight") and value.ndim == 2:
            value = value[:, :, None, None]  # LDM uses Conv2d(1x1) for q/k/v/proj_out
        out[VAE_PREFIX + ldm] = value
    return out


# ----------------------------------------------------------------------------- text encoders


def _clip_text_state_dict(text_encoder) -> dict[str, torch.Tensor]:
    """State dict with ``text_model.`` keys whether or not transformers flattened the model
    (CLIPTextModel has no ``text_model`` wrapper since transformers 5.6)."""
    out = {}
    for key, value in text_encoder.state_dict().items():
        if key.endswith("position_ids"):
            continue
        if not key.startswith(("text_model.", "text_projection.")):
            key = "text_model." + key
        out[key] = value
    return out


def clip_to_ldm_state_dict(text_encoder, prefix: str) -> dict[str, torch.Tensor]:
    """transformers CLIPTextModel -> HF-CLIP layout under ``prefix`` (which ends in ``text_model.``)."""
    sd = _clip_text_state_dict(text_encoder)
    return {prefix + k.removeprefix("text_model."): v for k, v in sd.items() if k.startswith("text_model.")}


_OPEN_CLIP_LAYER_PARTS = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}
_LAYER_RE = re.compile(r"text_model\.encoder\.layers\.(\d+)\.(.*)\.(weight|bias)")


def open_clip_to_ldm_state_dict(text_encoder, prefix: str = SDXL_TE2_PREFIX) -> dict[str, torch.Tensor]:
    """transformers CLIPTextModelWithProjection -> OpenCLIP layout under ``prefix``."""
    sd = _clip_text_state_dict(text_encoder)
    out = {
        prefix + "token_embedding.weight": sd.pop("text_model.embeddings.token_embedding.weight"),
        prefix + "positional_embedding": sd.pop("text_model.embeddings.position_embedding.weight"),
        prefix + "ln_final.weight": sd.pop("text_model.final_layer_norm.weight"),
        prefix + "ln_final.bias": sd.pop("text_model.final_layer_norm.bias"),
        prefix + "text_projection": sd.pop("text_projection.weight").T.contiguous(),
    }
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        m = _LAYER_RE.fullmatch(key)
        if not m:
            raise ValueError(f"unexpected text encoder key: {key!r}")
        layer, module, leaf = int(m[1]), m[2], m[3]
        if module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
            qkv.setdefault((layer, leaf), {})[module[-6]] = value
        else:
            out[f"{prefix}transformer.resblocks.{layer}.{_OPEN_CLIP_LAYER_PARTS[module]}.{leaf}"] = value
    for (layer, leaf), parts in sorted(qkv.items()):
        fused = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
        out[f"{prefix}transformer.resblocks.{layer}.attn.in_proj_{leaf}"] = fused
    return out


# ----------------------------------------------------------------------------- pipeline


def pipeline_to_ldm_state_dict(family: str, unet, vae, text_encoder, text_encoder_2=None) -> dict[str, torch.Tensor]:
    """Convert diffusers components into one original-layout state dict.

    ``family`` is ``"sd15"`` or ``"sdxl"`` (SDXL needs ``text_encoder_2``, a
    CLIPTextModelWithProjection). Tensors are shared with the models, not copied.
    """
    if family not in SUPPORTED_FAMILIES:
        raise ValueError(f"unsupported family {family!r}; expected one of {SUPPORTED_FAMILIES}")
    out = unet_to_ldm_state_dict(unet.state_dict(), unet.config)
    out.update(vae_to_ldm_state_dict(vae.state_dict(), vae.config))
    if family == "sd15":
        out.update(clip_to_ldm_state_dict(text_encoder, SD15_TE_PREFIX))
    else:
        if text_encoder_2 is None:
            raise ValueError("SDXL needs text_encoder_2")
        out.update(clip_to_ldm_state_dict(text_encoder, SDXL_TE1_PREFIX))
        out.update(open_clip_to_ldm_state_dict(text_encoder_2, SDXL_TE2_PREFIX))
    return out


def save_single_file(path: str | Path, state_dict: Mapping[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """Write ``state_dict`` as a ``.safetensors`` file (atomically: temp file + rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    seen: set[int] = set()
    tensors = {}
    for key, value in state_dict.items():
        value = value.detach().contiguous()
        # safetensors refuses tensors that share memory (e.g. tied weights): copy repeats.
        ptr = value.untyped_storage().data_ptr()
        if ptr in seen:
            value = value.clone()
        seen.add(ptr)
        tensors[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt", **(metadata or {})})
    tmp.replace(path)
    return path
