"""Text-encoder outputs on disk, so later runs with the same captions and encoders skip encoding them.

One safetensors file per caption, named by a hash of the caption and a fingerprint of the encoders and of
the settings that change the output (clip_skip, T5 length): any change gives new files, never stale ones.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from .cache_file import save_tensors

CACHE_VERSION = "1"


def encoders_fingerprint(encoders, settings: str) -> str:
    h = hashlib.sha1(f"{CACHE_VERSION}|{settings}".encode())
    for enc in encoders:
        if enc is None:
            continue
        cfg = enc.config.to_dict() if hasattr(enc.config, "to_dict") else dict(enc.config)
        h.update(repr(sorted((k, repr(v)) for k, v in cfg.items() if not k.startswith("_"))).encode())
        items = list(enc.state_dict().items())
        for name, p in items[:4] + items[-4:]:
            h.update(name.encode())
            h.update(p.detach().float().cpu().numpy().tobytes()[:4096])
    return h.hexdigest()[:16]


class TextDiskCache:
    def __init__(self, folder: Path, fingerprint: str):
        self.folder = Path(folder)
        self.fp = fingerprint
        self.hits = 0

    def _path(self, text: str) -> Path:
        return self.folder / (hashlib.sha1(f"{self.fp}|{text}".encode()).hexdigest() + ".safetensors")

    def get(self, text: str):
        from safetensors.torch import load_file

        from ..models.base import TextCond

        p = self._path(text)
        if not p.is_file():
            return None
        t = load_file(str(p))
        self.hits += 1
        return TextCond(t["hidden_states"], t.get("pooled"))

    def put(self, text: str, cond) -> None:
        tensors = {"hidden_states": cond.hidden_states.contiguous()}
        if cond.pooled is not None:
            tensors["pooled"] = cond.pooled.contiguous()
        save_tensors(tensors, self._path(text))


def cache_root(cfg) -> Path:
    """Where on-disk caches go: cache_dir, else <output_dir>/cache (latents/ and text/ below it)."""
    return Path(cfg.cache_dir or Path(cfg.output_dir) / "cache")


def text_cache_dir(cfg) -> Path:
    return cache_root(cfg) / "text"

