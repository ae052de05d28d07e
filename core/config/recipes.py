"""The table the generated presets (family x subject x VRAM tier) and `python -m core suggest` are built from.

Three layers, each value with the reason / source it is shown with (the GUI's guided start and `suggest` print
them): per-family base values, per-subject changes (rank, mirroring, how long to train) and per-VRAM-tier memory
settings. Sources are peers' published presets and guides (kohya_ss, sd-scripts, OneTrainer, ai-toolkit, FluxGym,
EasyPhoto), each named in the reason of the value it gave; where no peer publishes a figure the reason says "our
choice". Nothing here
imports torch: core/config/suggest.py combines the layers and checks each cell with the VRAM estimate.

Learning rates transfer between presets only at the same LoRA scale alpha/rank: each family has one reference (LR at a scale, from a named peer preset) and every cell's LR is that LR times
reference_scale / its own scale. Prodigy sets its own step size, so its LR is 1 (Prodigy README).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import families

Why = tuple[Any, str]  # (value, reason in plain words with its source)

TIERS = (8, 12, 16, 24)  # GB of VRAM
IMAGE_USES_MIN, IMAGE_USES_MAX = 400, 4000  # total image uses (steps x batch) of any run: see STEPS_SOURCE
STEPS_SOURCE = ("no peer publishes one total; implied totals run from 400 (HF DreamBooth blog, objects) to 4000 "
                "(kohya_ss's Flux preset cap, dogu_cat's SDXL face preset), ai-toolkit calls 500-4000 'a good range'")


@dataclass(frozen=True)
class Reference:
    """A peer's tested learning rate at its LoRA scale alpha/rank."""
    lr: float
    scale: float
    source: str
    text_encoder_lr: float | None = None


@dataclass(frozen=True)
class Family:
    name: str  # model_family / estimate family (its facts: core/families)
    rank: int
    alpha: float
    reference: Reference
    values: dict[str, Why] = field(default_factory=dict)
    variant: str = ""  # the variant the recipe is for ("dev"), shown after the family's title

    @property
    def label(self) -> str:
        return " ".join(filter(None, (families.title(self.name), self.variant)))


@dataclass(frozen=True)
class Subject:
    name: str
    label: str
    aliases: tuple[str, ...]
    uses_per_image: tuple[int, int, int]  # (low, chosen, high): how often each image is seen (repeats x epochs)
    uses_source: str
    min_images: int
    images_source: str
    typical_images: int  # what a generated preset assumes; suggest / the guided start use the real count
    rank_factor: int
    rank_reason: str
    values: dict[str, Why] = field(default_factory=dict)


@dataclass(frozen=True)
class Tier:
    """Memory settings of one family at one VRAM size; `rank` / `values` override the family's."""
    vram: int
    values: dict[str, Why]
    rank: tuple[int, float] | None = None
    rank_reason: str = ""
    fits: bool = True  # False: nothing fits this tier (no preset; `suggest` says why)
    no_fit: str = ""


FAMILIES: dict[str, Family] = {
    "sd15": Family(
        "sd15", rank=32, alpha=16.0,
        # EasyPhoto (SD1.5 faces): 128/64, 1e-4 -> scale 1/2; EDG_LoraOptiSettings: unet 1e-4, text encoder 5e-5
        reference=Reference(1e-4, 0.5, "EasyPhoto's SD1.5 face LoRA: 1e-4 at alpha/rank 1/2; text encoder at half "
                            "the UNet's LR as kohya_ss's EDG_LoraOptiSettings (1e-4 / 5e-5)", text_encoder_lr=5e-5),
        values={
            "resolution": ("512", "SD1.5 was trained at 512 px (EasyPhoto, OneTrainer, EDG presets: 512)"),
            "mixed_precision": ("fp16", "fp16 runs on every NVIDIA card (bf16 needs an RTX 30xx or newer)"),
            "network_train_unet_only": (False, "SD1.5's small text encoder is trained too (EDG preset: TE at 5e-5)"),
            "min_snr_gamma": (5.0, "min-SNR 5 steadies SD training (the shipped SD1.5 presets)"),
            "lr_scheduler": ("cosine", "cosine decay, as the shipped SD1.5 presets"),
            "cache_latents": (True, "latents encoded once, the VAE leaves the GPU"),
        }),
    "sdxl": Family(
        "sdxl", rank=32, alpha=16.0,
        # sd-scripts docs/sdxl_train_network.md: 32/16, 1e-4, TE 1e-5, AdamW8bit, 10 epochs
        reference=Reference(1e-4, 0.5, "sd-scripts' SDXL guide (docs/sdxl_train_network.md): 1e-4 at 32/16"),
        values={
            "resolution": ("1024", "SDXL was trained at 1024 px (every kohya_ss SDXL preset: 1024)"),
            "min_bucket_reso": (512, "aspect-ratio buckets from 512 px (the shipped SDXL presets)"),
            "max_bucket_reso": (2048, "to 2048 px (kohya_ss SDXL presets: buckets 256-2048)"),
            "mixed_precision": ("fp16", "fp16 runs on every NVIDIA card (kohya_ss AI_characters preset: fp16)"),
            "network_train_unet_only": (True, "UNet only and cached text-encoder outputs (sd-scripts README for "
                                              "8-16 GB cards)"),
            "cache_text_encoder_outputs": (True, "captions encoded once, both text encoders freed"),
            "gradient_checkpointing": (True, "gradient checkpointing, as every kohya_ss SDXL preset"),
            "min_snr_gamma": (5.0, "min-SNR 5, as the shipped SDXL presets"),
            "lr_scheduler": ("cosine", "cosine decay (kohya_ss dogu_cat face preset, the shipped SDXL presets)"),
            "cache_latents": (True, "latents cached (every kohya_ss SDXL preset)"),
        }),
    "flux": Family(
        "flux", rank=16, alpha=16.0, variant="dev",
        # ai-toolkit config/examples/train_lora_flux_24gb.yaml: 16/16, AdamW8bit, 1e-4, batch 1
        reference=Reference(1e-4, 1.0, "ai-toolkit's Flux example (train_lora_flux_24gb.yaml): AdamW8bit 1e-4 at "
                            "16/16"),
        values={
            "resolution": ("1024", "Flux.1 trains well at 512-1024 px; 1024 where it fits (ai-toolkit: 512/768/1024)"),
            "min_bucket_reso": (512, "buckets from 512 px"),
            "max_bucket_reso": (1536, "to 1536 px (the shipped Flux presets)"),
            "mixed_precision": ("bf16", "Flux.1 is a bf16 model (sd-scripts, FluxGym)"),
            "network_train_unet_only": (True, "transformer only; T5 is never trained (sd-scripts, ai-toolkit)"),
            "gradient_checkpointing": (True, "gradient checkpointing (sd-scripts' Flux guide)"),
            "optimizer_type": ("AdamW8bit", "AdamW8bit (ai-toolkit's Flux example, FluxGym 20G)"),
            "lr_scheduler": ("constant", "constant LR (ai-toolkit, FluxGym)"),
            "cache_latents": (True, "latents cached (FluxGym)"),
            "cache_latents_to_disk": (True, "and kept on disk for the next run (FluxGym)"),
            "timestep_sampling": ("shift", "shift sampling with 3.1582, raw prediction, guidance 1.0 (sd-scripts' "
                                           "docs/flux_train_network.md and FluxGym)"),
            "discrete_flow_shift": (3.1582, "sd-scripts' recommended shift"),
            "model_prediction_type": ("raw", "sd-scripts' recommendation"),
            "guidance_scale": (1.0, "guidance 1.0 while training (sd-scripts, FluxGym)"),
            "flux_lora_layers": ("all", "every Linear of the blocks, as sd-scripts"),
        }),
    "flux2_klein": Family(
        "flux2_klein", rank=32, alpha=32.0, variant="base 4B",
        # musubi-tuner docs/flux_2.md and ai-toolkit's klein defaults: 32/32, 1e-4, AdamW8bit; train on base
        reference=Reference(1e-4, 1.0, "musubi-tuner's and ai-toolkit's klein settings: 1e-4 at 32/32 (SimpleTuner, "
                            "diffusers' klein example: 1e-4)"),
        values={
            "resolution": ("1024", "klein was made at 1024 px (ai-toolkit buckets 512/768/1024)"),
            "min_bucket_reso": (512, "buckets from 512 px"),
            "max_bucket_reso": (1536, "to 1536 px"),
            "mixed_precision": ("bf16", "FLUX.2 klein is a bf16 model"),
            "network_train_unet_only": (True, "transformer only; Qwen3 is never trained (every klein trainer)"),
            "gradient_checkpointing": (True, "gradient checkpointing (musubi-tuner, ai-toolkit)"),
            "optimizer_type": ("AdamW8bit", "AdamW8bit (ai-toolkit's default)"),
            "lr_scheduler": ("constant", "constant LR (ai-toolkit, musubi-tuner)"),
            "cache_latents": (True, "latents cached"),
            "cache_latents_to_disk": (True, "and kept on disk for the next run"),
            "timestep_sampling": ("flux2_shift", "noise levels shifted by image size as FLUX.2 samples (musubi-tuner's "
                                                 "flux2_shift)"),
            "model_prediction_type": ("raw", "the velocity target, as every klein trainer"),
            "flux_lora_layers": ("all", "attention and feed-forward of every block (musubi-tuner, ai-toolkit)"),
        }),
}

SUBJECTS: dict[str, Subject] = {
    "character": Subject(
        "character", "character / person", ("person", "face", "pet"),
        # FluxGym defaults 10 repeats x 16 epochs = 160; AI_characters 3 x 50 = 150; dogu_cat 4000 / 20 images = 200
        uses_per_image=(100, 150, 200),
        uses_source="FluxGym's defaults see each image 160 times, kohya_ss AI_characters 150, dogu_cat's face preset "
                    "200 (4000 steps, 20 images)",
        min_images=5, images_source="EasyPhoto trains faces from 5-20 photos", typical_images=20,
        rank_factor=1, rank_reason="one subject needs little capacity",
        values={"flip_aug": (False, "no mirroring (faces and hair partings are not symmetric)")}),
    "style": Subject(
        "style", "art style", (),
        uses_per_image=(30, 60, 120),
        uses_source="our choice (a style has many varied images, each seen fewer times than a character's, the total "
                    "kept within ai-toolkit's 500-4000)",
        min_images=20, images_source="our choice; the shipped style presets ask for 30-200 images", typical_images=50,
        rank_factor=2, rank_reason="twice the rank for a style's wider range (kohya_ss EDG preset 64 for SD1.5, the "
                                   "shipped Flux style preset 32)",
        values={"flip_aug": (True, "mirrored images (a style does not depend on left and right)")}),
    "concept": Subject(
        "concept", "concept / object / product", ("object", "product", "thing"),
        # HF blog "dreambooth": objects 400 steps, faces 800-1200 (the same 3-5 images)
        uses_per_image=(50, 80, 150),
        uses_source="the HF DreamBooth blog trains objects in about half a face's steps (400 against 800-1200)",
        min_images=3, images_source="DreamBooth (Ruiz et al. 2023) learns a subject from 3-5 images",
        typical_images=10, rank_factor=1, rank_reason="one object needs little capacity",
        values={"flip_aug": (False, "no mirroring (products carry lettering and logos)")}),
    "clothing": Subject(
        "clothing", "clothing / outfit", ("outfit", "costume"),
        uses_per_image=(60, 100, 150),
        uses_source="our choice between objects and characters (kohya_ss aitrepreneur clothing preset: 15 epochs)",
        min_images=10, images_source="our choice, to show the outfit from several sides and poses", typical_images=20,
        rank_factor=1, rank_reason="one outfit needs little capacity",
        values={"flip_aug": (False, "no mirroring (prints, buttons and lettering have a side)")}),
}

# Memory settings per family and tier, checked with core.estimate by tests/test_suggest.py: each cell fits its tier
# (figures from `python -m core estimate`), except those marked fits=False, whose estimate must exceed the tier.
MEMORY: dict[str, dict[int, Tier]] = {
    "sd15": {  # estimate at 512 px, rank 32: batch 1 5.8 GB, 2 8.6, 3 11.4, 4 14.2 without gradient checkpointing
        8: Tier(8, {"train_batch_size": (1, "batch 1 on 8 GB (README: SD1.5 needs about 8 GB at batch 1)"),
                    "gradient_checkpointing": (False, "no gradient checkpointing needed at batch 1 (faster steps)"),
                    "optimizer_type": ("AdamW", "full AdamW (the shipped SD1.5 presets)")}),
        12: Tier(12, {"train_batch_size": (2, "batch 2 (8.6 GB by the estimate at 512 px, rank 32)"),
                      "gradient_checkpointing": (False, "no gradient checkpointing needed (faster steps)"),
                      "optimizer_type": ("AdamW", "full AdamW")}),
        16: Tier(16, {"train_batch_size": (3, "batch 3 (kohya_ss EDG_LoraOptiSettings)"),
                      "gradient_checkpointing": (False, "no gradient checkpointing needed (faster steps)"),
                      "optimizer_type": ("AdamW", "full AdamW")}),
        24: Tier(24, {"train_batch_size": (4, "batch 4 (OneTrainer's SD1.5 LoRA preset)"),
                      "gradient_checkpointing": (False, "no gradient checkpointing needed (faster steps)"),
                      "optimizer_type": ("AdamW", "full AdamW")}),
    },
    "sdxl": {  # estimate: 10.2 GB while caching (UNet + both text encoders on the GPU), 5.2 GB with an fp8 UNet
        8: Tier(8, {"train_batch_size": (1, "batch 1 (sd-scripts README for 8-10 GB)"),
                    "optimizer_type": ("AdamW8bit", "8-bit AdamW (sd-scripts README for 8-10 GB)"),
                    "base_precision": ("fp8", "the UNet stored in fp8 (kohya's fp8_base); in 16-bit it and the text "
                                              "encoders need about 10 GB while the captions are cached")}),
        12: Tier(12, {"train_batch_size": (1, "batch 1 (sd-scripts' SDXL guide for 12-16 GB)"),
                      "optimizer_type": ("AdamW8bit", "8-bit AdamW (sd-scripts' SDXL guide)")}),
        16: Tier(16, {"train_batch_size": (2, "batch 2 with gradient checkpointing"),
                      "optimizer_type": ("AdamW8bit", "8-bit AdamW (sd-scripts' SDXL guide)")}),
        24: Tier(24, {"train_batch_size": (3, "batch 3 (kohya_ss AI_characters preset on 24 GB)"),
                      "gradient_checkpointing": (False, "no gradient checkpointing needed (faster steps)"),
                      "optimizer_type": ("Prodigy", "Prodigy finds its own step size (kohya_ss AI_Now prodigy preset "
                                                    "at 32/16)"),
                      "optimizer_args": (["weight_decay=0.01", "d0=1e-4", "use_bias_correction=True",
                                          "safeguard_warmup=True"],
                                         "Prodigy's arguments of the AI_Now preset (weight decay 0.01, d0 1e-4, "
                                         "bias correction)")}),
    },
    "flux": {  # estimate while the captions are cached: 10.8-11.8 GB with T5-XXL in bf16 (9.5 GB alone), 6.3-7.2 in fp8
        8: Tier(8, {"base_precision": ("fp8", "fp8 base weights (sd-scripts' Flux guide, FluxGym)"),
                    "t5xxl_precision": ("fp8", "T5-XXL in fp8 while the captions are cached (sd-scripts' Flux guide: "
                                               "fp8 T5 under 10 GB); in bf16 it alone takes 9.5 GB"),
                    "blocks_to_swap": (44, "44 of 57 blocks swapped to RAM (sd-scripts' Flux guide swaps 28 at 8 GB, "
                                           "which the estimate puts at 10 GB at 512 px; 44 fits a rank-32 style)"),
                    "resolution": ("512", "512 px (FluxGym's default)")}),
        12: Tier(12, {"base_precision": ("fp8", "fp8 base weights (sd-scripts' Flux guide)"),
                      "blocks_to_swap": (22, "22 of 57 blocks swapped to RAM (sd-scripts: 22 at 10 GB, 16 at 12 GB; "
                                             "22 leaves room for a rank-32 style)"),
                      "resolution": ("512", "512 px (SimpleTuner: at least 12 GB at 1024 px; FluxGym's default)")}),
        16: Tier(16, {"base_precision": ("fp8", "fp8 base weights (sd-scripts' Flux guide)"),
                      "blocks_to_swap": (8, "8 blocks swapped to RAM (sd-scripts: 16 GB with block swapping)")}),
        24: Tier(24, {"base_precision": ("fp8", "fp8 base weights, no swapping (sd-scripts' Flux guide: 24 GB "
                                                "basic)"),
                      "train_batch_size": (2, "batch 2 (sd-scripts' Flux guide on 24 GB)")}),
    },
    "flux2_klein": {  # estimate (4B base, 1024 px, gradient checkpointing): 10.6 GB in bf16, 6.8 with fp8 weights;
        # 10.1 GB while the captions are cached with Qwen3-4B in bf16 (8 GB alone), 6.1 with it in fp8
        8: Tier(8, {"base_precision": ("fp8", "fp8 base weights (SimpleTuner: klein 4B in 8 GB with int8 weights)"),
                    "qwen3_precision": ("fp8", "Qwen3 in fp8 while the captions are cached (in bf16 it alone takes "
                                               "8 GB)"),
                    "resolution": ("768", "768 px (6.1 GB by the estimate; ai-toolkit trains 512-1024)")}),
        12: Tier(12, {"base_precision": ("fp8", "fp8 base weights (SimpleTuner: klein 4B in bf16 needs about 12 GB)")}),
        16: Tier(16, {"train_batch_size": (1, "batch 1 in bf16 (10.6 GB by the estimate at 1024 px)")}),
        24: Tier(24, {"train_batch_size": (2, "batch 2 in bf16 with gradient checkpointing")}),
    },
}


def family_of(name: str) -> Family:
    key = {"flux-dev": "flux", "flux_dev": "flux", "sd1.5": "sd15", "sd": "sd15", "klein": "flux2_klein",
           "flux2": "flux2_klein"}.get(name.lower(), name.lower())
    if key not in FAMILIES:
        raise ValueError(f"family {name!r}: use one of {', '.join(FAMILIES)}")
    return FAMILIES[key]


def subject_of(name: str) -> Subject:
    key = name.strip().lower()
    for s in SUBJECTS.values():
        if key == s.name or key in s.aliases:
            return s
    names = ", ".join(f"{s.name} ({'/'.join(s.aliases)})" if s.aliases else s.name for s in SUBJECTS.values())
    raise ValueError(f"subject {name!r}: use one of {names}")


def a(label: str) -> str:
    """'a character / person', 'an art style'."""
    return ("an " if label[:1].lower() in "aeiou" else "a ") + label


def num(x: float) -> str:
    """1e-4 rather than 0.0001, 0.5 rather than 5e-01."""
    if x and abs(x) < 1e-2:
        mantissa, exp = f"{x:.2e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exp)}"
    return f"{x:g}"


def tier_for(vram_gb: float) -> int | None:
    """The largest tier that is at most `vram_gb` (None below the smallest)."""
    fitting = [t for t in TIERS if t <= vram_gb + 1e-9]
    return fitting[-1] if fitting else None
