"""Stable Diffusion 1.x and 2.x: a UNet with one CLIP text encoder, the DDPM objective, kohya LoRA keys."""
from __future__ import annotations

from . import Estimate, FamilySpec

# The settings of the DDPM (noise-prediction) objective and the UNet's LoRA layers, shared by SD 1.5, 2.x and SDXL.
UNET_FIELDS = (
    "v_parameterization", "clip_skip", "network_type", "lora_ff", "lora_proj", "conv_dim", "conv_alpha", "factor",
    "decompose_both", "use_tucker", "min_snr_gamma", "noise_offset", "noise_offset_random_strength",
    "adaptive_noise_scale", "multires_noise_iterations", "multires_noise_discount", "debiased_estimation_loss",
    "min_timestep", "max_timestep",
)

# No pipelines listed: SD 1.x and 2.x share StableDiffusion*Pipeline; core/models/detect.py tells them apart by the
# UNet's cross-attention width (768 / 1024).
FAMILIES = (
    FamilySpec(
        "sd15", "SD1.5", "core.models.sd15:SD15", config_folder="sd15", cross_attention_width=768,
        native_resolution=512, min_resolution=512, versions=("sd_v1", "sd1", "sd_1.5"),
        architectures=("stable-diffusion-v1",), siblings=("sd2",), fields=UNET_FIELDS, checkpoint_layout="ldm",
        # bytes of activations per latent pixel (SD1.5 UNet, batch 1), without / with gradient checkpointing
        estimate=Estimate((700e3, 110e3), 8), extra={"order": 10, "encoder_words": "CLIP ViT-L"}),
    FamilySpec(
        "sd2", "SD2", "core.models.sd15:SD2", config_folder="sd2v", cross_attention_width=1024, v_pred_guess=True,
        native_resolution=768, min_resolution=512, versions=("sd_v2",),
        architectures=("stable-diffusion-v2-768-v", "stable-diffusion-v2"), siblings=("sd15",), fields=UNET_FIELDS,
        estimate=Estimate((700e3, 110e3), 8),
        extra={"order": 20, "encoder_words": "OpenCLIP ViT-H",
               "detect_note": "SD 2.x 768 px models use v-prediction, 512 px base models do not - the weights cannot "
                              "tell"}),
)
