"""Stable Diffusion 1.x and 2.x: one CLIP text encoder, no extra conditioning."""
from __future__ import annotations


from .base import Components, ModelFamily, TextCond
from .ddpm import UNetFamily


class SD15(UNetFamily, ModelFamily):
    name = "sd15"
    pipeline_class_name = "StableDiffusionPipeline"
    te_lora_prefixes = ("lora_te",)
    folder_kwargs = {"safety_checker": None}

    def encode_text(self, comps: Components, captions: list[str], clip_skip: int) -> TextCond:
        (ids,) = self.tokenize(comps, captions)
        te = comps.text_encoders[0]
        ids = ids.to(te.device)
        if clip_skip <= 1:
            hidden = te(ids)[0]
        else:
            out = te(ids, output_hidden_states=True)
            norm = te.text_model.final_layer_norm if hasattr(te, "text_model") else te.final_layer_norm
            hidden = norm(out.hidden_states[-clip_skip])
        return TextCond(hidden)

    def pipeline_kwargs(self, clip_skip: int) -> dict:
        # diffusers counts skipped layers from 0 where kohya counts from 1
        return {"clip_skip": clip_skip - 1} if clip_skip > 1 else {}


class SD2(SD15):
    name = "sd2"
    ss_v2 = True
