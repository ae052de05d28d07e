"""Latent caching: encode each image once (in memory or on disk), keyed so any change re-encodes it."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import torch

from .cache_file import save_tensors
from .dataset import ImageItem, load_image

CACHE_VERSION = "1"


def vae_fingerprint(vae: torch.nn.Module) -> str:
    """The VAE's architecture and a sample of its weights; not where it was loaded from (diffusers' private config
    keys such as _name_or_path), so a model copied to another folder gives the same cache keys and the same
    latent draws."""
    h = hashlib.sha1(CACHE_VERSION.encode())
    h.update(repr(sorted((k, v) for k, v in dict(vae.config).items() if not k.startswith("_"))).encode())
    for name, p in list(vae.state_dict().items())[:4] + list(vae.state_dict().items())[-4:]:
        h.update(name.encode())
        h.update(p.detach().float().cpu().numpy().tobytes()[:4096])
    return h.hexdigest()[:16]


def file_digest(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_key(item: ImageItem, flip: bool, vae_fp: str) -> str:
    pl = item.placement
    text = f"{file_digest(item.path)}|{pl.bucket}|{pl.resized}|{pl.crop_left_top}|{flip}|{vae_fp}"
    return hashlib.sha1(text.encode()).hexdigest()


def scaled(vae, z: torch.Tensor) -> torch.Tensor:
    """SD / Flux.1: the autoencoder's latents shifted and scaled to about unit variance."""
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return (z - shift) * vae.config.scaling_factor


@torch.no_grad()
def encode(vae, pixels: torch.Tensor, generator: torch.Generator | None = None,
           scale: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor] = scaled) -> torch.Tensor:
    """Pixels in [-1, 1] (B, 3, H, W) -> the denoiser's latents, in fp32 (`scale`: the family's
    ModelFamily.scale_latents)."""
    pixels = pixels.to(vae.device, vae.dtype)
    if pixels.device.type == "cpu":  # oneDNN's convolutions take channels-last input about 20% faster (measured)
        pixels = pixels.contiguous(memory_format=torch.channels_last)
    dist = vae.encode(pixels).latent_dist
    z = dist.sample(generator=generator) if generator is not None else dist.mean
    return scale(vae, z.float()).cpu()


class LatentCache:
    """Latents of every (image, flip) the run uses, computed once."""

    def __init__(self, vae, disk_dir: Path | None, scale=scaled):
        self.vae = vae
        self.scale = scale  # only until build() is done: the VAE is freed after caching, and this must not keep it
        self.disk_dir = disk_dir
        self.fp = vae_fingerprint(vae)
        self.mem: dict[tuple[int, bool], torch.Tensor] = {}
        self.hits = 0

    def _seed(self, key: str) -> torch.Generator:
        return torch.Generator().manual_seed(int(key[:12], 16))

    def build(self, items: list[ImageItem], needed: list[tuple[int, bool]],
              progress: Callable[[int, int], None] | None = None) -> None:
        from safetensors.torch import load_file

        for n, (idx, flip) in enumerate(needed):
            item = items[idx]
            key = cache_key(item, flip, self.fp)
            path = self.disk_dir / f"{key}.safetensors" if self.disk_dir else None
            if path is not None and path.is_file():
                self.mem[(idx, flip)] = load_file(path)["latent"]
                self.hits += 1
            else:
                z = encode(self.vae, load_image(item, flip)[None], self._seed(key), self.scale)[0]
                self.mem[(idx, flip)] = z
                if path is not None:
                    save_tensors({"latent": z.contiguous()}, path)
            if progress:
                progress(n + 1, len(needed))
        self.vae = None

    def get(self, idx: int, flip: bool) -> torch.Tensor:
        return self.mem[(idx, flip)]
