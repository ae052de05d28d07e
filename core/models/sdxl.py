"""Stable Diffusion XL: two text encoders and size/crop conditioning."""
from __future__ import annotations

from typing import Any

import torch

from .base import Components, ModelFamily, TextCond
from .ddpm import UNetFamily


class SDXL(UNetFamily, ModelFamily):
    name = "sdxl"
    pipeline_class_name = "StableDiffusionXLPipeline"
    te_lora_prefixes = ("lora_te1", "lora_te2")
    kohya_unet_ldm = True

    def encode_text(self, comps: Components, captions: list[str], clip_skip: int) -> TextCond:
        hidden, pooled = [], None
        for te, ids in zip(comps.text_encoders, self.tokenize(comps, captions)):
            out = te(ids.to(te.device), output_hidden_states=True)
            hidden.append(out.hidden_states[-2])  # SDXL always uses the penultimate layer
            if out[0].ndim == 2:  # the projection model returns the pooled text embedding first
                pooled = out[0]
        return TextCond(torch.cat(hidden, dim=-1), pooled)

    def prepare(self, comps: Components, cfg) -> list[str]:
        return ["clip_skip is ignored for SDXL (it always uses the penultimate layer)."] if cfg.clip_skip > 1 else []

    def unet_lora_module_name(self, name: str) -> str:
        """sgm paths (input_blocks.4.1...), as sd-scripts writes them: the form every SDXL loader maps,
        including AUTOMATIC1111, whose diffusers-name conversion misplaces the first up block's upsampler."""
        from .ldm_convert import unet_module_to_ldm

        return unet_module_to_ldm(name, "sdxl")

    def added_cond(self, comps: Components, cond: TextCond, meta: list[dict[str, Any]], dtype: torch.dtype) -> dict:
        """time_ids from each image's original size, crop offset and bucket size."""
        rows = [list(m["original_size"]) + list(m["crop_top_left"]) + list(m["target_size"]) for m in meta]
        time_ids = torch.tensor(rows, dtype=dtype, device=cond.hidden_states.device)
        return {"text_embeds": cond.pooled.to(dtype), "time_ids": time_ids}
