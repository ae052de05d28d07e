"""The Stable Diffusion objective: DDPM noise at a random integer timestep, epsilon or v target, min-SNR."""
from __future__ import annotations

from typing import Any

import torch

from .base import Components, NoisyBatch, Objective, TextCond


class DDPMObjective(Objective):
    def __init__(self, comps: Components, cfg, device: torch.device):
        from diffusers import DDPMScheduler

        sched = DDPMScheduler.from_config(comps.pipeline.scheduler.config)
        sched.register_to_config(prediction_type=comps.prediction_type)
        self.sched = sched
        self.device = device
        self.alphas_cumprod = sched.alphas_cumprod.to(device)
        self.noise_offset = cfg.noise_offset
        self.min_snr_gamma = cfg.min_snr_gamma

    @property
    def v_prediction(self) -> bool:
        return self.sched.config.prediction_type == "v_prediction"

    def noisy_batch(self, latents: torch.Tensor, gen: torch.Generator) -> NoisyBatch:
        dev = self.device
        noise = torch.randn(latents.shape, generator=gen).to(dev)
        if self.noise_offset:
            noise = noise + self.noise_offset * torch.randn((latents.shape[0], latents.shape[1], 1, 1), generator=gen).to(dev)
        t = torch.randint(0, self.sched.config.num_train_timesteps, (latents.shape[0],), generator=gen).to(dev)
        noisy = self.sched.add_noise(latents, noise, t)
        target = self.sched.get_velocity(latents, noise, t) if self.v_prediction else noise
        weights = None
        if self.min_snr_gamma > 0:
            ac = self.alphas_cumprod[t]
            snr = ac / (1 - ac)
            clipped = torch.clamp(snr, max=self.min_snr_gamma)
            weights = clipped / (snr + 1) if self.v_prediction else clipped / snr
        return NoisyBatch(noisy, t, target, weights)


class UNetFamily:
    """The model call and objective shared by the UNet families (SD1.x/2.x, SDXL)."""

    def make_objective(self, comps: Components, cfg, device: torch.device) -> Objective:
        return DDPMObjective(comps, cfg, device)

    def added_cond(self, comps: Components, cond: TextCond, meta: list[dict[str, Any]], dtype: torch.dtype) -> dict | None:
        return None

    def predict(self, model, comps: Components, batch: NoisyBatch, cond: TextCond, meta: list[dict[str, Any]],
                dtype: torch.dtype) -> torch.Tensor:
        added = self.added_cond(comps, cond, meta, dtype)
        return model(batch.model_input.to(dtype), batch.timesteps, encoder_hidden_states=cond.hidden_states.to(dtype),
                     added_cond_kwargs=added).sample
