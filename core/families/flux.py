"""Flux.1 dev and schnell: a 12B rectified-flow transformer with CLIP-L and T5-XXL, LoRAs in diffusers key form."""
from __future__ import annotations

from typing import Literal

from ..config.params import param
from . import Estimate, FamilySpec, Part, Sampling


def variant_of(model: str) -> str | None:
    """dev or schnell, from the transformer's config or the file's tensor names."""
    from ..models.choose import is_schnell

    return "schnell" if is_schnell(model) else "dev"


# the settings Flux.1 alone has (those it shares with FLUX.2 klein, such as ae and timestep_sampling, are the schema's)
SETTINGS = {
    "clip_l": (str, param(
        "", group="model", basic=True,
        help="Flux: the CLIP-L text encoder file (clip_l.safetensors), needed when the base model file holds only "
             "the transformer (flux1-dev.safetensors from Black Forest Labs, a ComfyUI 'unet' file).")),
    "t5xxl": (str, param(
        "", group="model", basic=True,
        help="Flux: the T5-XXL text encoder file (t5xxl_fp16.safetensors or t5xxl_fp8_e4m3fn.safetensors), needed "
             "when the base model file holds only the transformer.")),
    "guidance_scale": (float, param(
        1.0, group="flux", ge=0.0, le=100.0,
        help="Flux dev: the distilled-guidance value fed to the transformer while training (1.0 is what sd-scripts' "
             "guide and FluxGym train with). Samples use --g in the prompt line (default 3.5).")),
    "t5xxl_max_token_length": (int, param(
        0, group="flux", ge=0, le=512,
        help="Flux: T5 tokens per caption, 16-512 (0 = the model's own: 512 for dev, 256 for schnell). Lower = "
             "faster, but long captions are cut.")),
    "t5xxl_precision": (Literal["auto", "fp8"], param(
        "auto", group="memory",
        help="Flux: how T5-XXL is kept while the captions are encoded (then it is freed). auto: in the mixed_precision "
             "dtype, 9.5 GB. fp8: its Linear weights stored as float8 and computed in the mixed_precision dtype, about "
             "4.9 GB, as sd-scripts' fp8_base does; the cached captions differ slightly. An fp8 T5 file stays fp8.")),
}

# dev: distilled guidance fed to the transformer (no negative prompt); schnell: 4 steps, no guidance input
DEV = Sampling(negative_prompt=False, guidance_label="Distilled guidance (Flux dev; 3.5 is usual)", guidance=3.5,
               samplers=False, clip_skip=False)

FAMILIES = (
    FamilySpec(
        "flux", "Flux.1", "core.models.flux:Flux", pipelines=("FluxPipeline", "FluxImg2ImgPipeline"),
        markers=("double_blocks.", "single_transformer_blocks.", "transformer.single_transformer_blocks."),
        detect_words="has Flux double/single stream blocks", denoiser="transformer", denoiser_words="transformer",
        block_words="double + single transformer blocks",
        config_folder="flux-{variant}", variants=("dev", "schnell"), native_resolution=1024, min_resolution=512,
        size_multiple=16, versions=("flux1", "flux"), architectures=("flux-1-dev", "flux"),
        fields=("clip_l", "t5xxl", "ae", "timestep_sampling", "sigmoid_scale", "discrete_flow_shift",
                "model_prediction_type", "guidance_scale", "t5xxl_max_token_length", "flux_lora_layers",
                "t5xxl_precision"), settings=SETTINGS,
        parts=(Part("ae", "vae", "the autoencoder (ae.safetensors)", kind="vae-flux"),
               Part("clip_l", "text_encoder", "CLIP-L (clip_l.safetensors)", kind="clip-l"),
               Part("t5xxl", "text_encoder_2", "T5-XXL (t5xxl_fp16.safetensors)", kind="t5xxl", text_stack=1,
                    prefer="*fp16*")),
        # diffusers loads a Flux LoRA only as a plain LoRA, so a LyCORIS file would not load everywhere
        lora_format="diffusers", lycoris=False, lora_text_encoders=(0,),  # CLIP-L; T5-XXL is never trained
        checkpoint_layout="bfl", bfl_mlp_ratio=4.0,
        variant_of=variant_of, sampling=DEV,
        variant_sampling={"schnell": Sampling(negative_prompt=False, guidance=None, steps=4, samplers=False,
                                              clip_skip=False)},
        # activations measured on the tiny and real-width transformer (bench/train_step.py); 2x2 patches of 8 px
        estimate=Estimate((5.5e6, 460e3), 16, always_caches_text=True, fp8_encoder=1, fp8_encoder_words="T5-XXL",
                          fp8_setting="t5xxl_precision"),
        extra={"order": 40}),
)
