"""Writing Flux LoRA files.

Form: diffusers/peft keys, `transformer.<diffusers module>.lora_A.weight` / `.lora_B.weight` and
`text_encoder.text_model.<module>...` for CLIP-L, with alpha / rank folded into lora_B and no `.alpha`
tensors. diffusers' `load_lora_weights` applies exactly the trained change (no alpha and no adapter
metadata means scale 1), ComfyUI and Forge map every `transformer.` key onto the fused BFL weights
(q/k/v and proj_mlp as row slices of qkv/linear1) and every CLIP key, also at scale 1. The kohya form
(`lora_unet_double_blocks_...`) would need fused up-matrices, and diffusers' converter for it only
accepts full-size Flux.1 models.
"""
from __future__ import annotations

import torch
from torch import nn

from . import network as net
from .kohya_format import text_encoder_module

PREFIXES = {"unet": "transformer", "te0": "text_encoder"}


def to_flux_file(models: dict[str, nn.Module], spec, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, model in models.items():
        peft_sd = net.peft_state_dict(model)
        scales = net.lora_scales(peft_sd, spec, [])
        prefix = PREFIXES[key]
        for name, t in peft_sd.items():
            if not name.endswith((".lora_A.weight", ".lora_B.weight")):
                raise ValueError(f"unexpected LoRA parameter {name} (DoRA is not written for Flux)")
            t = t.detach().to("cpu", torch.float32)
            if name.endswith(".lora_B.weight"):
                t = t * scales[name[: -len(".lora_B.weight")]]
            module = text_encoder_module(name) if key != "unet" else name
            out[f"{prefix}.{module}"] = t.to(dtype).contiguous()
    return out
