"""The noise and loss-weighting options of sd-scripts, with its semantics, drawing from the loop's generator.

Re-statements of sd-scripts' library/custom_train_functions.py (pyramid_noise_like, apply_noise_offset,
apply_debiased_estimation) and library/train_util.py (get_noise_noisy_latents_and_timesteps, get_timesteps).
Every random draw comes from the `torch.Generator` the training loop passes (seeded by seed, epoch and batch), on
the CPU, so that a resumed run draws exactly what an uninterrupted one would; the results are moved to the latents'
device. Where sd-scripts draws from Python's `random` (the multires resolution factors) this draws from the same
generator instead.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _randn(shape, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.randn(shape, generator=gen).to(like.device, like.dtype)


def _rand1(gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.rand(1, generator=gen).to(like.device, like.dtype)


def pyramid_noise_like(noise: torch.Tensor, gen: torch.Generator, iterations: int, discount: float) -> torch.Tensor:
    """Multires noise: `noise` plus `iterations` layers of upsampled lower-resolution noise, layer i weighted
    discount**i at a resolution 1/r**i (r uniform in [2, 4) per layer), back to unit standard deviation."""
    b, c, w, h = noise.shape
    for i in range(iterations):
        r = torch.rand(1, generator=gen).item() * 2 + 2
        wn, hn = max(1, int(w / (r**i))), max(1, int(h / (r**i)))
        low = _randn((b, c, wn, hn), gen, noise)
        noise = noise + F.interpolate(low, size=(w, h), mode="bilinear") * discount**i
        if wn == 1 or hn == 1:
            break  # the lowest resolution is 1x1
    return noise / noise.std()


def apply_noise_offset(latents: torch.Tensor, noise: torch.Tensor, offset, adaptive_noise_scale: float,
                       gen: torch.Generator) -> torch.Tensor:
    """noise + offset x N(0, 1) per image and channel; with adaptive_noise_scale the offset grows by
    adaptive_noise_scale x |channel mean of the latents| (clamped at 0)."""
    if adaptive_noise_scale:
        latent_mean = torch.abs(latents.mean(dim=(2, 3), keepdim=True))
        offset = torch.clamp(offset + adaptive_noise_scale * latent_mean, 0.0, None)
    return noise + offset * _randn((latents.shape[0], latents.shape[1], 1, 1), gen, noise)


def sd_noise(latents: torch.Tensor, gen: torch.Generator, cfg) -> torch.Tensor:
    """The noise an SD step adds, as sd-scripts: plain, then noise offset, then multires noise."""
    noise = _randn(latents.shape, gen, latents)
    if cfg.noise_offset:
        offset = cfg.noise_offset
        if cfg.noise_offset_random_strength:
            offset = _rand1(gen, latents) * cfg.noise_offset
        noise = apply_noise_offset(latents, noise, offset, cfg.adaptive_noise_scale, gen)
    if cfg.multires_noise_iterations:
        noise = pyramid_noise_like(noise, gen, cfg.multires_noise_iterations, cfg.multires_noise_discount)
    return noise


def sample_timesteps(batch: int, gen: torch.Generator, min_timestep: int, max_timestep: int,
                     num_train_timesteps: int) -> torch.Tensor:
    """Integer timesteps uniform in [min_timestep, max_timestep) (max capped at the scheduler's count)."""
    hi = min(max_timestep, num_train_timesteps)
    if min_timestep < hi:
        return torch.randint(min_timestep, hi, (batch,), generator=gen)
    return torch.full((batch,), hi - 1, dtype=torch.long)


def sd_perturbed_noise(noise: torch.Tensor, gen: torch.Generator, gamma: float, random_strength: bool) -> torch.Tensor:
    """The noise put into the model input under ip_noise_gamma: noise + strength x N(0, 1); the target keeps
    `noise`. sd-scripts draws the strength first for SD and the perturbation first for Flux (flux_perturbed_noise)."""
    strength = _rand1(gen, noise) * gamma if random_strength else gamma
    return noise + strength * _randn(noise.shape, gen, noise)


def flux_perturbed_noise(noise: torch.Tensor, gen: torch.Generator, gamma: float, random_strength: bool) -> torch.Tensor:
    xi = _randn(noise.shape, gen, noise)
    strength = _rand1(gen, noise) * gamma if random_strength else gamma
    return noise + strength * xi


def debiased_weights(snr: torch.Tensor, v_prediction: bool) -> torch.Tensor:
    """sd-scripts' apply_debiased_estimation: 1/sqrt(SNR) (v-prediction: 1/(SNR+1)), SNR capped at 1000."""
    snr = torch.minimum(snr, torch.ones_like(snr) * 1000)
    return 1 / (snr + 1) if v_prediction else 1 / torch.sqrt(snr)


def min_snr_weights(snr: torch.Tensor, gamma: float, v_prediction: bool) -> torch.Tensor:
    """sd-scripts' apply_snr_weight: min(SNR, gamma)/SNR (v-prediction: min(SNR, gamma)/(SNR+1))."""
    clipped = torch.clamp(snr, max=gamma)
    return clipped / (snr + 1) if v_prediction else clipped / snr
