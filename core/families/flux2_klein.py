"""FLUX.2 [klein] 4B and 9B, base and distilled: a rectified-flow transformer conditioned on Qwen3 hidden states,
with the FLUX.2 autoencoder (32 channels in 2x2 patches, normalised by its BatchNorm statistics)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from ..config.params import param
from . import Estimate, FamilySpec, Part, Sampling

SIZES = {3072: "4b", 4096: "9b"}  # the transformer's width -> its size


def variant_of(model: str) -> str | None:
    """base-4b, 4b, base-9b or 9b, from a diffusers folder's configs or a file's header and name: a distilled model
    and its base have the same tensors, so a single file is base when its name says so (BFL and Comfy-Org name
    them flux-2-klein-base-4b... / flux-2-klein-4b...)."""
    p = Path(model or "").expanduser()
    try:
        if p.is_dir():
            index = json.loads((p / "model_index.json").read_text(encoding="utf-8"))
            tr = json.loads((p / "transformer" / "config.json").read_text(encoding="utf-8"))
            size = SIZES.get(int(tr["num_attention_heads"]) * int(tr["attention_head_dim"]), "4b")
            return size if index.get("is_distilled") else f"base-{size}"
        if p.is_file():
            from ..models.detect import read_safetensors_header

            shapes, _ = read_safetensors_header(p)
            width = next((s[-1] for k, s in shapes.items() if k.endswith("single_stream_modulation.lin.weight")), 3072)
            size = SIZES.get(int(width), "4b")
            return f"base-{size}" if "base" in p.name.lower() else size
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


SETTINGS = {
    "qwen3": (str, param(
        "", group="model", basic=True,
        help="FLUX.2 klein: the Qwen3 text encoder file (qwen_3_4b.safetensors for klein 4B, qwen_3_8b.safetensors "
             "for 9B), needed when the base model file holds only the transformer (a ComfyUI 'diffusion_models' "
             "file).")),
    "qwen3_precision": (Literal["auto", "fp8"], param(
        "auto", group="memory",
        help="FLUX.2 klein: how the Qwen3 text encoder is kept while the captions are encoded (then it is freed). "
             "auto: in the mixed_precision dtype (Qwen3-4B 8 GB, Qwen3-8B 16 GB). fp8: its Linear weights stored as "
             "float8 and computed in the mixed_precision dtype, about half; the cached captions differ slightly.")),
}

BASE = Sampling(negative_prompt=True, guidance_label="Guidance (CFG; klein base: about 4)", guidance=4.0, steps=50,
                samplers=False, clip_skip=False)
DISTILLED = Sampling(negative_prompt=False, guidance=None, steps=4, samplers=False, clip_skip=False)

FAMILIES = (
    FamilySpec(
        "flux2_klein", "FLUX.2 klein", "core.models.flux2_klein:Flux2Klein", pipelines=("Flux2KleinPipeline",),
        # FLUX.2 dev has the same tensor names at width 6144: klein is told apart by the width (marker_widths)
        markers=("single_stream_modulation.", "double_stream_modulation_img."), marker_rank=11,
        marker_widths=tuple(SIZES), detect_words="has FLUX.2 shared stream modulation at klein's width",
        denoiser="transformer", denoiser_words="transformer", block_words="double + single transformer blocks",
        config_folder="flux2-klein-{variant}", variants=("base-4b", "4b", "base-9b", "9b"),
        native_resolution=1024, min_resolution=512, size_multiple=16,
        versions=("flux2_klein", "flux.2-klein", "flux2-klein"), architectures=("flux-2-klein", "flux.2-klein", "flux2_klein"),
        fields=("ae", "qwen3", "timestep_sampling", "sigmoid_scale", "discrete_flow_shift", "model_prediction_type",
                "flux_lora_layers", *SETTINGS), settings=SETTINGS,
        parts=(Part("ae", "vae", "the FLUX.2 autoencoder (flux2-vae.safetensors)", kind="vae-flux2"),
               Part("qwen3", "text_encoder", "the Qwen3 text encoder (qwen_3_4b.safetensors / qwen_3_8b.safetensors)",
                    kind="qwen3", text_stack=3)),
        # diffusers loads these LoRAs only as plain LoRA (transformer.* keys); Qwen3 is never trained
        lora_format="diffusers", lycoris=False, lora_text_encoders=(), checkpoint_layout="bfl",
        lora_marks=("to_qkv_mlp_proj", "linear_in", "linear_out", "stream_modulation", "time_guidance_embed"),
        bfl_mlp_ratio=6.0,
        variant_of=variant_of, sampling=BASE, variant_sampling={"4b": DISTILLED, "9b": DISTILLED},
        # activations per latent token: Flux.1's figures scaled by the width (3072 of 4B as Flux.1's; 9B is wider)
        estimate=Estimate((5.5e6, 460e3), 16, always_caches_text=True, fp8_encoder=0, fp8_encoder_words="Qwen3",
                          fp8_setting="qwen3_precision"),
        extra={"order": 50}),
)
