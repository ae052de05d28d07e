"""Caching before the first step (part of the Trainer): every latent once, and the text conditioning as the
family allows; what is no longer needed afterwards (VAE encoder, text encoders) is freed by the family."""
from __future__ import annotations

import time

from ..data.dataset import TrainingSet
from ..data.latents import LatentCache
from ..data.masks import MaskStore
from ..data.text_cache import cache_root
from ..generation.samplers import parse_prompt_line
from ..models.base import TextCond


class CacheMixin:
    def _cache(self, comps, ts: TrainingSet):
        cfg = self.cfg
        self.latent_cache = None
        disk = cache_root(cfg) / "latents" if cfg.cache_latents and cfg.cache_latents_to_disk else None
        self.masks = MaskStore(ts.items, disk) if cfg.mask_source else None  # latent-size loss masks
        self.text_cache: dict[str, TextCond] | None = None
        if cfg.cache_latents:
            trained = sorted({(i, f) for i in set(ts.uses) for f in ((False, True) if cfg.flip_aug else (False,))})
            needed = trained + [(i, False) for i in ts.val_indices]  # validation images: unflipped, never trained
            cache = LatentCache(comps.vae, disk, comps.family.scale_latents)
            t0 = time.time()
            last = [0.0]

            def progress(done, total):
                if time.time() - last[0] > 1 or done == total:
                    last[0] = time.time()
                    self.say(f"Caching latents {done}/{total}", event="progress", stage="cache_latents", done=done, total=total)

            cache.build(ts.items, needed, progress)
            self.say(f"Cached {len(needed)} latents in {time.time() - t0:.1f}s ({cache.hits} reused from disk)")
            if self.masks is not None:  # their masks alongside, at the latents' size
                self.masks.build(trained, lambda i, f: cache.get(i, f).shape[-2:])
                self.say(f"Cached the masks: {self.masks.computed} made, {self.masks.hits} reused from disk")
                if self.masks.empty_note():
                    self.warn(self.masks.empty_note())
            self.latent_cache = cache
            comps.family.release_vae_encoder(comps, samples=bool(cfg.sample_prompts))
            if comps.vae is not None:
                comps.vae.to("cpu")  # back on the GPU only while samples are made
        text_fixed = not (cfg.shuffle_caption or cfg.caption_dropout_rate > 0)
        captions = sorted({it.caption for it in ts.items}) if text_fixed else None
        prompts = [parse_prompt_line(p).prompt for p in cfg.sample_prompts]

        def say(kind: str, text: str) -> None:
            if kind == "warning":
                self.warn(text)
            elif kind == "note":
                self.say(text)
            else:
                self.say(text, event="progress", stage="cache_text", done=1, total=1)

        self.text_cache = comps.family.cache_text(comps, captions, prompts, self.trained_te, cfg, say)
