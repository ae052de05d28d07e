"""BLIP (Salesforce): one short sentence per image, through transformers."""
from __future__ import annotations

from .base import BEAMS_OPTION, TransformersCaptioner, max_length_option, register


@register
class Blip(TransformersCaptioner):
    name = "blip"
    title = "BLIP"
    description = "Short sentences (\"a dog sitting on a couch\"). Good for photos; about 1.9 GB."
    default_model = "Salesforce/blip-image-captioning-large"
    other_models = ("Salesforce/blip-image-captioning-base",)
    options = (max_length_option(40, 200), BEAMS_OPTION)
    batch_size = 4

    def load(self, progress=None) -> None:
        from transformers import BlipForConditionalGeneration, BlipProcessor

        self._model, self._processor = self.load_pretrained(BlipForConditionalGeneration, BlipProcessor, progress)
        self.loaded = True

    def caption(self, images):
        import torch

        inputs = self._processor(images=images, return_tensors="pt").to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with torch.inference_mode():
            out = self._model.generate(**inputs, max_new_tokens=int(self.settings["max_length"]),
                                       num_beams=int(self.settings["num_beams"]))
        return [t.strip() for t in self._processor.batch_decode(out, skip_special_tokens=True)]
