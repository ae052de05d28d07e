"""CLIP Interrogator (pharmapsychotic's clip-interrogator package): a BLIP caption plus the artists, styles,
mediums and "flavors" whose CLIP text embedding is nearest the image's.

The CLIP model is loaded here (open_clip: ARCH/PRETRAINED, hf-hub:owner/name or a local open_clip
folder) and the BLIP model by the BLIP backend, then both are handed to the package's Interrogator.
The embeddings of its term lists are downloaded when the hub is reachable, else computed once and
kept in the cache folder.
"""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

from ..hub import HUB_ID, is_offline
from .base import CaptionError, Captioner, Option, register
from .blip import Blip

LABEL_FILES = ("artists.txt", "flavors.txt", "mediums.txt", "movements.txt", "negative.txt")
WEIGHTS = ("*.safetensors", "*.bin", "*.pth")


def default_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "clip-interrogator"


@register
class ClipInterrogator(Captioner):
    name = "clip-interrogator"
    title = "CLIP Interrogator"
    description = ("Long prompt-style captions: a BLIP sentence plus artists, styles and mediums picked by CLIP. "
                   "Slow; about 3 GB.")
    default_model = "ViT-L-14/openai"
    other_models = ("ViT-H-14/laion2b_s32b_b79k", "ViT-bigG-14/laion2b_s39b_b160k")
    model_help = ("CLIP model: open_clip ARCH/PRETRAINED (ViT-L-14/openai suits SD 1.5, ViT-bigG-14/laion2b_s39b_b160k "
                  "SDXL), hf-hub:owner/name, or a local open_clip folder (open_clip_config.json + weights)")
    needed_files = ("open_clip_config.json",)
    download_patterns = ["open_clip_config.json", "open_clip_model.safetensors", "open_clip_pytorch_model.safetensors"]
    fallback_patterns = ["open_clip_config.json", "open_clip_pytorch_model.bin"]
    options = (
        Option("mode", "fast", "fast: the caption plus the best-matching terms; classic: caption, medium, artist, "
               "movement and a few flavors.", "Mode", choices=("fast", "classic")),
        Option("caption_model", Blip.default_model, "The BLIP model that writes the sentence: repo id or local folder.",
               "Caption model (BLIP)"),
        Option("labels", "", "Folder with your own term lists (" + ", ".join(LABEL_FILES) + "); empty: the "
               "package's lists.", "Term lists folder"),
        Option("cache_dir", "", "Where the term embeddings are kept (default: clip-interrogator in the Hugging Face "
               "cache folder).", "Embeddings cache", gui=False),
    )
    held = ("_ci", "_blip")

    @classmethod
    def looks_like(cls, folder: Path) -> bool:
        return super().looks_like(folder) and any(any(folder.glob(g)) for g in WEIGHTS)

    def load(self, progress=None) -> None:
        from clip_interrogator import Config, Interrogator

        device, dtype = self.torch_device()
        labels = Path(self.settings["labels"]).expanduser() if self.settings["labels"] else None
        if labels is not None:
            missing = [f for f in LABEL_FILES if not (labels / f).is_file()]
            if missing:
                raise CaptionError(f"The term lists folder {labels} lacks {', '.join(missing)}.")
        cache = Path(self.settings["cache_dir"]).expanduser() if self.settings["cache_dir"] else default_cache_dir()
        self._blip = Blip(self.settings["caption_model"], device=self.device_request, max_length=32)
        self._blip.load(progress)
        name, standard, clip_model, preprocess = self._load_clip(device, cache, progress)
        config = Config()
        config.caption_model, config.caption_processor = self._blip._model, self._blip._processor
        config.caption_model_name = "blip-large"  # only tells the package it is a BLIP model
        config.clip_model, config.clip_preprocess, config.clip_model_name = clip_model, preprocess, name
        config.cache_path = str(cache)
        config.download_cache = standard and not is_offline()  # precomputed embeddings exist for standard models
        config.device = str(device)
        config.quiet = True
        if labels is not None:
            config.data_path = str(labels)
        if progress:
            progress("Preparing the CLIP Interrogator term lists (the first time, this computes their embeddings)")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._ci = Interrogator(config)
        except Exception as e:
            raise CaptionError(f"CLIP Interrogator could not start: {type(e).__name__}: {str(e)[:300]}") from e
        self._ci.dtype = dtype
        self.loaded = True

    def _load_clip(self, device, cache: Path, progress):
        """(name for the package, is a standard open_clip model, model, preprocess)."""
        import open_clip

        spec = self.model
        precision = "fp16" if device.type == "cuda" else "fp32"
        folder = Path(spec).expanduser()
        if spec.startswith("hf-hub:") or HUB_ID.match(spec) and spec.split("/")[0] not in open_clip.list_models():
            folder = self.model_folder(spec.removeprefix("hf-hub:"), progress)
        if folder.is_dir():
            folder = self.model_folder(str(folder))  # checks it
            arch = "lw-" + re.sub(r"[^\w.-]+", "-", folder.name)
            # the package makes its tokenizer from the architecture name: register the folder's config under one
            model_cfg = json.loads((folder / "open_clip_config.json").read_text(encoding="utf-8"))["model_cfg"]
            registered = cache / "open_clip_configs" / f"{arch}.json"
            registered.parent.mkdir(parents=True, exist_ok=True)
            registered.write_text(json.dumps(model_cfg), encoding="utf-8")
            open_clip.add_model_config(registered)
            try:
                model, _, preprocess = open_clip.create_model_and_transforms(
                    f"local-dir:{folder}", precision=precision, device=device)
            except Exception as e:
                raise CaptionError(f"Could not load the CLIP model in {folder}: {type(e).__name__}: {str(e)[:300]}") from e
            return f"{arch}/local", False, model.eval(), preprocess
        arch, _, tag = spec.partition("/")
        if arch not in open_clip.list_models() or not tag:
            raise CaptionError(
                f"CLIP model '{spec}' not found: give an open_clip ARCH/PRETRAINED name like ViT-L-14/openai, "
                "hf-hub:owner/name, or the path of a local open_clip folder.")
        if tag not in open_clip.list_pretrained_tags_by_model(arch):
            raise CaptionError(f"open_clip has no '{tag}' weights for {arch}; known: "
                               f"{', '.join(open_clip.list_pretrained_tags_by_model(arch)) or 'none'}.")
        if progress:
            progress(f"Loading CLIP model {spec} (downloaded from the Hugging Face hub on first use)")
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=tag, precision=precision,
                                                                         device=device)
        except Exception as e:
            hub = open_clip.get_pretrained_cfg(arch, tag).get("hf_hub", "").strip("/")
            raise CaptionError(
                f"Could not get the CLIP model {spec}: {type(e).__name__}: {str(e)[:200]}. Without internet, download "
                f"it on a computer that has it (`hf download {hub}`) or choose a local open_clip folder.") from e
        return spec, True, model.eval(), preprocess

    def caption(self, images):
        mode = self.settings["mode"]
        if mode not in ("fast", "classic"):
            raise CaptionError("CLIP Interrogator mode must be fast or classic.")
        with warnings.catch_warnings():  # the package uses torch.cuda.amp.autocast, which warns on the CPU
            warnings.simplefilter("ignore")
            if mode == "classic":
                return [self._ci.interrogate_classic(im) for im in images]
            return [self._ci.interrogate_fast(im) for im in images]

    def unload(self) -> None:
        if self._blip is not None:
            self._blip.unload()
        super().unload()
