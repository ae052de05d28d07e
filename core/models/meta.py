"""A model's architecture without its weights: built on the meta device from a config folder (no tensor is read
or allocated). The VRAM estimate counts its parameters; the LoRA tools list its layers."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..ml_lock import ML_IMPORT_LOCK


def meta_diffusers(folder: Path):
    """The diffusers model (its config's _class_name) of `folder`."""
    cfg = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    with ML_IMPORT_LOCK:
        import diffusers

        cls = getattr(diffusers, cfg["_class_name"])
    with torch.device("meta"):  # thread-local (accelerate's init_empty_weights patches nn.Module for every thread)
        return cls.from_config(cls.load_config(str(folder)))


def meta_transformers(folder: Path, default: str = "CLIPTextModel"):
    """The transformers model (its config's architectures, else `default`) of `folder`."""
    cfg = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    arch = (cfg.get("architectures") or [default])[0]
    with ML_IMPORT_LOCK:
        import transformers

        cls = getattr(transformers, arch)
    config = cls.config_class.from_pretrained(str(folder))
    with torch.device("meta"):  # thread-local (accelerate's init_empty_weights patches nn.Module for every thread)
        return cls(config)
