"""What the user chose as base model, from file headers and configs only (no torch: the GUI asks as one types).

`describe_base` says which family a base model is and which separate files it still needs (a transformer-only
Flux file needs clip_l, t5xxl and ae); `find_parts` finds those files in a models folder by their content.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .. import families


def all_parts() -> list[families.Part]:
    """Every setting that names a separate model file some family needs (clip_l, t5xxl, ae ...), once each."""
    seen: dict[str, families.Part] = {}
    for spec in families.all_families():
        for part in spec.parts:
            seen.setdefault(part.setting, part)
    return list(seen.values())


def is_dev(keys) -> bool:
    """Flux.1 dev (a guidance input) rather than schnell, from tensor names (BFL or diffusers)."""
    return any(k.endswith("guidance_in.in_layer.bias") or k.endswith("guidance_embedder.linear_1.bias") for k in keys)


def describe_base(model: str, base_config_dir: str = "") -> tuple[str | None, list[str]]:
    """(family, settings it still needs) for what the user chose as base model, reading only file headers:
    ("flux", ["ae", "clip_l", "t5xxl"]) for a transformer-only Flux file (the family's parts, core/families).
    (None, []) when it cannot tell yet (a hub id, a path being typed, an unreadable file: training says why)."""
    from . import detect

    p = Path(model or "").expanduser()
    try:
        if model and p.is_dir():
            fam = detect.detect_diffusers_folder(p)
            return (fam if families.find(fam) else None), []
        if model and p.is_file():
            config_family = detect.detect_diffusers_folder(base_config_dir) if base_config_dir else None
            res = detect.inspect_model_file(p, config_family)
            spec = families.find(res.family)
            if spec is None:
                return None, []
            return spec.name, [p.setting for p in spec.parts if p.role not in res.components]
    except (ValueError, OSError):
        pass
    return None, []


def is_schnell(model: str) -> bool:
    """A Flux.1 schnell base (no guidance input), from its transformer config or file header."""
    from .detect import read_safetensors_header

    p = Path(model or "").expanduser()
    try:
        if p.is_dir():
            return not json.loads((p / "transformer" / "config.json").read_text()).get("guidance_embeds", False)
        if p.is_file():
            return not is_dev(read_safetensors_header(p)[0])
    except (OSError, ValueError):
        pass
    return False


def find_parts(models_dir: str | os.PathLike | list, model: str, base_config_dir: str = "") -> dict[str, str]:
    """The separate files a transformer-only `model` needs (Flux.1: clip_l / t5xxl / ae; FLUX.2 klein: qwen3 / ae),
    found in a models folder by their content (core/models/library.py); {} when it needs none or none is there."""
    from . import detect
    from .library import classify, scan

    try:
        config_family = detect.detect_diffusers_folder(base_config_dir) if base_config_dir else None
        wanted = classify(model, config_family)  # one header: most bases need no parts, and no folder is scanned
        if not wanted.needs:
            return {}
        folders = models_dir if isinstance(models_dir, list) else [models_dir]
        return scan(folders).best_parts(wanted)
    except (ValueError, OSError):
        return {}
