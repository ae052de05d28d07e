"""Florence-2 (Microsoft): detailed sentences, through transformers' own Florence2ForConditionalGeneration.

Use the checkpoints in transformers' format (florence-community/Florence-2-large or -base); the
original microsoft/Florence-2-* repos need remote code, which is not run here.
"""
from __future__ import annotations

import json

from .base import (BEAMS_OPTION, CaptionError, Option, TransformersCaptioner, max_length_option, register,
                   transformers_names)

TASKS = {"brief": "<CAPTION>", "detailed": "<DETAILED_CAPTION>", "more-detailed": "<MORE_DETAILED_CAPTION>"}


@register
class Florence2(TransformersCaptioner):
    name = "florence2"
    title = "Florence-2"
    description = "Detailed sentences, a few per image (\"The image shows a ... In the background ...\"). About 1.5 GB."
    default_model = "florence-community/Florence-2-large"
    other_models = ("florence-community/Florence-2-base",)
    options = (
        Option("task", "detailed", "How much to write: brief (one sentence), detailed, more-detailed (a paragraph).",
               "Detail", choices=tuple(TASKS)),
        max_length_option(256, 1024),
        BEAMS_OPTION,
    )
    batch_size = 2

    def load(self, progress=None) -> None:
        try:
            AutoProcessor, Florence2ForConditionalGeneration = transformers_names(
                "AutoProcessor", "Florence2ForConditionalGeneration")
        except ImportError as e:
            raise CaptionError("This transformers has no Florence-2 support: update it (transformers 5 or newer, "
                               f"run the installer again). The import said: {e}") from None
        folder = self.model_folder(progress=progress)
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if "auto_map" in config:
            raise CaptionError(f"{self.model} is Florence-2 in Microsoft's original format, which needs remote code. "
                               "Use florence-community/Florence-2-large (or -base): the same model in the format "
                               "transformers supports.")
        self._model, self._processor = self.load_pretrained(Florence2ForConditionalGeneration, AutoProcessor, progress,
                                                            folder)
        self.loaded = True

    def caption(self, images):
        import torch

        if self.settings["task"] not in TASKS:
            raise CaptionError(f"Florence-2 task must be one of {', '.join(TASKS)}.")
        prompt = TASKS[self.settings["task"]]
        inputs = self._processor(text=[prompt] * len(images), images=images, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = self._model.generate(input_ids=inputs["input_ids"],
                                       pixel_values=inputs["pixel_values"].to(self.dtype),
                                       max_new_tokens=int(self.settings["max_length"]),
                                       num_beams=int(self.settings["num_beams"]), do_sample=False)
        return [t.replace("<pad>", "").strip() for t in self._processor.batch_decode(out, skip_special_tokens=True)]
