"""Stable Diffusion XL: a UNet with two CLIP text encoders and size/crop conditioning."""
from __future__ import annotations

from . import Estimate, FamilySpec
from .sd15 import UNET_FIELDS

FAMILIES = (
    FamilySpec(
        "sdxl", "SDXL", "core.models.sdxl:SDXL",
        pipelines=("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline", "StableDiffusionXLInpaintPipeline"),
        cross_attention_width=2048, adm_inputs=2816, detect_words="UNet has the SDXL text/time embedding",
        config_folder="sdxl", native_resolution=1024, min_resolution=1024, versions=("sdxl_base_v1-0", "sdxl"),
        architectures=("stable-diffusion-xl-v1-base", "stable-diffusion-xl"), fields=UNET_FIELDS,
        vae_fp32=True, checkpoint_layout="ldm", estimate=Estimate((280e3, 70e3), 8), extra={"order": 30}),
)
