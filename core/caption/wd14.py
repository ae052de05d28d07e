"""WD14 tagger (SmilingWolf's wd-*-tagger models): Danbooru tags through onnxruntime.

A model folder holds ``model.onnx`` (NHWC float input, BGR 0-255, square, white padding; one sigmoid
score per tag) and ``selected_tags.csv`` (``tag_id,name,category,count``; category 9 = rating,
4 = character, 0 = general).
"""
from __future__ import annotations

import csv
from pathlib import Path

from .base import CaptionError, Captioner, Option, register

RATING, CHARACTER = "9", "4"
# Emoticons whose underscores are part of the tag
KAOMOJI = {"0_0", "(o)_(o)", "+_+", "+_-", "._.", "<o>_<o>", "<|>_<|>", "=_=", ">_<", "3_3", "6_9", ">_o", "@_@",
           "^_^", "o_o", "u_u", "x_x", "|_|", "||_||"}


def tag_text(name: str) -> str:
    return name if name in KAOMOJI else name.replace("_", " ")


def read_tags(path: Path) -> list[tuple[str, str]]:
    """(tag as written in captions, category) per model output."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        return [(tag_text(r["name"]), r["category"].strip()) for r in rows]
    except (OSError, KeyError, UnicodeDecodeError, csv.Error) as e:
        raise CaptionError(f"{path} is not a WD14 tag list (columns tag_id,name,category,count): {e}") from None


@register
class WD14(Captioner):
    name = "wd14"
    title = "WD14 tagger"
    description = ("Booru tags (\"1girl, solo, long hair, smile\"), for anime and illustrations. Fast; "
                   "about 400 MB.")
    default_model = "SmilingWolf/wd-vit-tagger-v3"
    other_models = ("SmilingWolf/wd-swinv2-tagger-v3", "SmilingWolf/wd-eva02-large-tagger-v3")
    needed_files = ("model.onnx", "selected_tags.csv")
    download_patterns = ["model.onnx", "selected_tags.csv"]
    options = (
        Option("threshold", 0.35, "General tags need at least this confidence (0-1): lower gives more tags.",
               "Tag threshold", minimum=0.0, maximum=1.0),
        Option("character_threshold", 0.85, "Character names need at least this confidence (0-1).",
               "Character threshold", minimum=0.0, maximum=1.0),
        Option("exclude", "", "Tags never written, comma-separated (e.g. 'simple background, white background').",
               "Exclude tags"),
    )
    batch_size = 8
    held = ("_session",)
    empty_hint = "no tag reached the threshold: lower it"

    def load(self, progress=None) -> None:
        import onnxruntime as ort

        folder = self.model_folder(progress=progress)
        self._tags = read_tags(folder / "selected_tags.csv")
        available = ort.get_available_providers()
        want_gpu = self.device_request == "auto" or self.device_request.startswith("cuda")
        providers = ["CPUExecutionProvider"]
        if want_gpu and "CUDAExecutionProvider" in available:
            providers.insert(0, "CUDAExecutionProvider")
        elif self.device_request.startswith("cuda"):
            raise CaptionError("--device cuda was asked for, but this onnxruntime has no CUDA support "
                               "(install onnxruntime-gpu). Use --device auto.")
        if progress:
            progress(f"Loading {self.title} model {self.model} ({providers[0].removesuffix('ExecutionProvider')})")
        try:
            self._session = ort.InferenceSession(str(folder / "model.onnx"), providers=providers)
        except Exception as e:
            raise CaptionError(f"Could not load {folder / 'model.onnx'}: {type(e).__name__}: "
                               f"{str(e).splitlines()[0][:300] if str(e) else ''}. Download it again.") from e
        inp = self._session.get_inputs()[0]
        self._input = inp.name
        self._size = inp.shape[1] if isinstance(inp.shape[1], int) else 448
        n_out = self._session.get_outputs()[0].shape[-1]
        if isinstance(n_out, int) and n_out != len(self._tags):
            raise CaptionError(f"{folder}: model.onnx scores {n_out} tags but selected_tags.csv lists "
                               f"{len(self._tags)}: the two files belong to different models.")
        self.loaded = True

    def _pixels(self, image):
        import numpy as np
        from PIL import Image

        side = max(image.size)
        square = Image.new("RGB", (side, side), (255, 255, 255))
        square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
        square = square.resize((self._size, self._size), Image.Resampling.BICUBIC)
        return np.asarray(square, dtype=np.float32)[:, :, ::-1]  # RGB -> BGR, as the models were trained

    def caption(self, images):
        import numpy as np

        batch = np.ascontiguousarray(np.stack([self._pixels(im) for im in images]))
        scores = self._session.run(None, {self._input: batch})[0]
        exclude = {t.strip().lower().replace("_", " ") for t in str(self.settings["exclude"]).split(",") if t.strip()}
        general, character = float(self.settings["threshold"]), float(self.settings["character_threshold"])
        out = []
        for row in scores:
            chars, tags = [], []
            for (tag, cat), p in zip(self._tags, row):
                if cat == RATING or tag.lower() in exclude:
                    continue
                if cat == CHARACTER:
                    if p >= character:
                        chars.append((p, tag))
                elif p >= general:
                    tags.append((p, tag))
            ordered = sorted(chars, reverse=True) + sorted(tags, reverse=True)
            out.append(", ".join(tag for _, tag in ordered))
        return out
