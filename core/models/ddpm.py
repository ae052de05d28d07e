"""The Stable Diffusion objective: DDPM noise at a random integer timestep, epsilon or v target, loss weights."""
from __future__ import annotations

from typing import Any

import torch

from . import noise as noise_mod
from .base import Components, NoisyBatch, Objective, TextCond


class DDPMObjective(Objective):
    """sd-scripts' get_noise_noisy_latents_and_timesteps and its loss weights (core/models/noise.py)."""

    def __init__(self, comps: Components, cfg, device: torch.device):
        from diffusers import DDPMScheduler

        sched = DDPMScheduler.from_config(comps.pipeline.scheduler.config)
        sched.register_to_config(prediction_type=comps.prediction_type)
        self.sched = sched
        self.cfg = cfg
        self.device = device
        self.alphas_cumprod = sched.alphas_cumprod.to(device)

    @property
    def v_prediction(self) -> bool:
        return self.sched.config.prediction_type == "v_prediction"

    def noisy_batch(self, latents: torch.Tensor, gen: torch.Generator) -> NoisyBatch:
        cfg, dev = self.cfg, self.device
        noise = noise_mod.sd_noise(latents, gen, cfg)
        t = noise_mod.sample_timesteps(latents.shape[0], gen, cfg.min_timestep, cfg.max_timestep,
                                       self.sched.config.num_train_timesteps).to(dev)
        model_noise = noise
        if cfg.ip_noise_gamma:
            model_noise = noise_mod.sd_perturbed_noise(noise, gen, cfg.ip_noise_gamma, cfg.ip_noise_gamma_random_strength)
        noisy = self.sched.add_noise(latents, model_noise, t)
        target = self.sched.get_velocity(latents, noise, t) if self.v_prediction else noise
        return NoisyBatch(noisy, t, target, self.loss_weights(t))

    def fixed_batch(self, latents: torch.Tensor, levels: torch.Tensor, noise: torch.Tensor) -> NoisyBatch:
        n = self.sched.config.num_train_timesteps
        t = (levels * n).long().clamp(0, n - 1).to(self.device)
        noisy = self.sched.add_noise(latents, noise, t)
        target = self.sched.get_velocity(latents, noise, t) if self.v_prediction else noise
        return NoisyBatch(noisy, t, target)

    def loss_weights(self, t: torch.Tensor) -> torch.Tensor | None:
        """Per-sample weights of min_snr_gamma and debiased_estimation_loss (multiplied, as sd-scripts applies
        them one after the other), or None when neither is on."""
        if not self.cfg.min_snr_gamma and not self.cfg.debiased_estimation_loss:
            return None
        ac = self.alphas_cumprod[t]
        snr = ac / (1 - ac)
        weights = torch.ones_like(snr)
        if self.cfg.min_snr_gamma > 0:
            weights = weights * noise_mod.min_snr_weights(snr, self.cfg.min_snr_gamma, self.v_prediction)
        if self.cfg.debiased_estimation_loss:
            weights = weights * noise_mod.debiased_weights(snr, self.v_prediction)
        return weights


class UNetFamily:
    """The model call and objective shared by the UNet families (SD1.x/2.x, SDXL)."""

    kohya_unet_ldm = False  # kohya keys in sgm/LDM paths (input_blocks_4_1_...) rather than diffusers paths (SDXL)

    def tool_layer_names(self, table, layer, up_attention: set[int] | None) -> list[str]:
        """The LoRA tools' other names for one UNet layer: kohya keys in diffusers and LDM paths, ComfyUI's
        diffusion_model.<ldm path>; records the kohya name it is written with in table.kohya_out."""
        from ..lora.kohya_format import kohya_name
        from .ldm_convert import unet_module_to_ldm

        names = [kohya_name("lora_unet", layer.path)]
        try:
            ldm = unet_module_to_ldm(layer.path, self.name, up_attention_blocks=up_attention)
        except ValueError:
            ldm = None
        if ldm:
            names += [kohya_name("lora_unet", ldm), f"diffusion_model.{ldm}"]
        table.kohya_out[layer.key] = kohya_name("lora_unet", ldm if (self.kohya_unet_ldm and ldm) else layer.path)
        return names

    def make_objective(self, comps: Components, cfg, device: torch.device) -> Objective:
        return DDPMObjective(comps, cfg, device)

    def added_cond(self, comps: Components, cond: TextCond, meta: list[dict[str, Any]], dtype: torch.dtype) -> dict | None:
        return None

    def predict(self, model, comps: Components, batch: NoisyBatch, cond: TextCond, meta: list[dict[str, Any]],
                dtype: torch.dtype) -> torch.Tensor:
        added = self.added_cond(comps, cond, meta, dtype)
        return model(batch.model_input.to(dtype), batch.timesteps, encoder_hidden_states=cond.hidden_states.to(dtype),
                     added_cond_kwargs=added).sample
