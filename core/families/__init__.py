"""The model families this program trains, each declared once (torch-free).

Every family is one :class:`FamilySpec` in its own module of this package (``sd15.py``, ``sdxl.py``, ``flux.py``,
...), found by :func:`all_families` without a list to edit: its names and one display title, how a diffusers
folder and a LoRA file say they are of this family, the settings it uses, what the VRAM estimate needs, and how its
LoRA files are written. Config, presets, guardrails, the estimate, the LoRA tools and the GUI read these facts;
the torch side of the family (loading, text encoding, objective, model call, LoRA targets, sampling) is the class
named by ``FamilySpec.module``, reached through :func:`family_module`.

Adding a family: a module here, its torch module under ``core/models/``, its configs under
``core/models/configs/``, its recipe row (``core/config/recipes.py``), README and docs. ``docs/architecture.md``
("Adding a family") walks through it.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable


@dataclass(frozen=True)
class Part:
    """A separate file a denoiser-only checkpoint of the family needs: the setting that names it, the component
    role it fills (detect.py's names: vae, text_encoder, text_encoder_2) and what to call it in messages."""

    setting: str
    role: str
    words: str
    # what file fills it, as core/models/library.py recognises files by content (clip-l, t5xxl, qwen3, vae-flux ...);
    # `text_stack`: a text encoder whose hidden states the transformer takes `text_stack` of side by side (its
    # width x text_stack = the transformer's text input: klein stacks 3 Qwen3 layers), so its size must fit;
    # `prefer`: a name pattern that orders equal candidates (the fp16 T5)
    kind: str = ""
    text_stack: int = 0
    prefer: str = ""


@dataclass(frozen=True)
class Estimate:
    """What the VRAM estimate needs to know of a family (core/estimate/vram.py explains the model)."""

    activations: tuple[float, float]  # bytes per latent token at 2-byte compute (no checkpointing, checkpointing)
    token_pixels: int  # image pixels per latent token side (8: SD's VAE, 16: Flux's 2x2 patches of 8)
    always_caches_text: bool = False  # the text-encoder outputs are cached whenever the captions do not change
    fp8_encoder: int | None = None  # the text encoder its fp8_setting stores in fp8 while caching (its index)
    fp8_encoder_words: str = ""  # what to call it ("T5-XXL")
    fp8_setting: str = ""  # the setting ("t5xxl_precision") whose value "fp8" does that


@dataclass(frozen=True)
class Sampling:
    """How the family's images are made: what the Generate tab shows and its defaults."""

    negative_prompt: bool = True  # classifier-free guidance with a negative prompt
    guidance_label: str = "Guidance (CFG)"
    guidance: float | None = 7.0  # the usual value; None: the model has no guidance input
    steps: int | None = None  # the usual number of steps where the model needs its own (distilled: 4)
    samplers: bool = True  # the sampler list applies (flow-matching models have their own)
    clip_skip: bool = True


@dataclass(frozen=True)
class FamilySpec:
    name: str  # the model_family value ("sd15")
    title: str  # the one name shown to people ("SD 1.5")
    module: str  # "core.models.sd15:SD15": the torch side (a core.models.base.ModelFamily)
    pipelines: tuple[str, ...] = ()  # diffusers pipeline classes whose folders are this family
    denoiser: str = "unet"  # the pipeline attribute of the denoiser: unet / transformer
    denoiser_words: str = "UNet"  # how messages call it
    block_words: str = "down + mid + up blocks"  # what blocks_to_swap counts
    config_folder: str = ""  # under core/models/configs; "{variant}" is filled in by the variant
    native_resolution: int = 512  # the image size it was trained at: defaults of the form and Generate
    min_resolution: int = 512  # below this the guardrails warn
    size_multiple: int = 8  # image sides are multiples of this
    vae_fp32: bool = False  # the VAE runs in fp32 whatever the mixed precision (SDXL's overflows in fp16: black images)
    versions: tuple[str, ...] = ()  # ss_base_model_version prefixes of its LoRA files (first = what we write)
    architectures: tuple[str, ...] = ()  # modelspec.architecture prefixes (first = what we write)
    siblings: tuple[str, ...] = ()  # families whose LoRAs load onto this one (SD 1.5 <-> SD 2.x layouts)
    fields: tuple[str, ...] = ()  # family-only settings it uses (shown and validated for it alone)
    # settings only this family has, declared here ({name: (type, core.config.params.param(...))}): the schema adds
    # them to TrainConfig, so a new family adds its own settings without editing the schema (list them in `fields`)
    settings: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    parts: tuple[Part, ...] = ()  # separate files a denoiser-only checkpoint needs
    lora_format: str = "kohya"  # kohya: lora_unet_/lora_te_ keys; diffusers: transformer./text_encoder. keys
    lycoris: bool = True  # LoHa / LoKr files load wherever this family's LoRAs do
    lora_text_encoders: tuple[int, ...] | None = None  # the text encoders a LoRA may train (None = all)
    # the single-file layout `lora merge --base` writes: "ldm" (SD: A1111 / ComfyUI checkpoints), "bfl" (Black Forest
    # Labs' transformer files), "" (not available)
    checkpoint_layout: str = ""
    # LoRA files without metadata: parts of module names only this family's LoRAs have, and for files in the BFL
    # layout the output / input width of a double block's img_mlp.0 (Flux.1 4; FLUX.2's SwiGLU 2 x 3)
    lora_marks: tuple[str, ...] = ()
    bfl_mlp_ratio: float = 0.0
    estimate: Estimate = field(default_factory=lambda: Estimate((700e3, 110e3), 8))
    # single-file detection (core/models/detect.py): tensor-name prefixes that mark a transformer of the family
    # (also found under model.diffusion_model.), checked highest marker_rank first where families share block
    # names; or, for a UNet, the cross-attention width and the SDXL-style label embedding's input width
    markers: tuple[str, ...] = ()
    marker_rank: int = 0
    marker_widths: tuple[int, ...] = ()  # when given, a marker's weight must have one of these input widths
    cross_attention_width: int | None = None
    adm_inputs: int | None = None
    detect_words: str = ""  # the evidence, in words ("has Flux double/single stream blocks")
    v_pred_guess: bool | None = None  # what the weights suggest when they cannot tell (SD 2.x 768: v-prediction)
    variants: tuple[str, ...] = ()  # e.g. ("dev", "schnell"): chosen from the weights
    variant_of: Callable[[str], str | None] | None = None  # the variant of a local model (headers/configs only)
    sampling: Sampling = field(default_factory=Sampling)
    variant_sampling: dict[str, Sampling] = field(default_factory=dict)  # where a variant samples differently
    extra: dict[str, Any] = field(default_factory=dict)

    def sampling_for(self, model: str = "") -> Sampling:
        """How a base model of this family samples (its variant's way, read from its files, when it has one)."""
        variant = self.variant_of(model) if self.variant_of and model else None
        return self.variant_sampling.get(variant or "", self.sampling)

    @property
    def version(self) -> str:
        """The ss_base_model_version its files are written with."""
        return self.versions[0]

    @property
    def architecture(self) -> str:
        return self.architectures[0]

    def config_folder_for(self, variant: str | None = None) -> str:
        return self.config_folder.format(variant=variant or (self.variants[0] if self.variants else ""))


# Families people have models and LoRAs of that this program does not train: named in messages, never loaded.
OTHER_MODELS: dict[str, FamilySpec] = {spec.name: spec for spec in (
    FamilySpec("sd3", "SD3", "", pipelines=("StableDiffusion3Pipeline",), versions=("sd3",),
               architectures=("stable-diffusion-3",), markers=("joint_blocks.", "transformer.joint_blocks."),
               detect_words="has SD3 MMDiT joint blocks", extra={"what": "a Stable Diffusion 3 model"}),
    # Chroma and FLUX.2 reuse Flux.1's block names: told apart first, by the marks diffusers' single-file loader uses
    FamilySpec("chroma", "Chroma", "", pipelines=("ChromaPipeline",), versions=("chroma",), architectures=("chroma",),
               markers=("distilled_guidance_layer.",), marker_rank=10,
               detect_words="has Chroma's distilled guidance layer",
               extra={"what": "a Chroma model (a Flux.1 schnell derivative with another guidance layer)"}),
    FamilySpec("flux2", "FLUX.2 dev", "", pipelines=("Flux2Pipeline",), versions=("flux2", "flux.2"),
               architectures=("flux-2", "flux.2"), marker_rank=10,
               markers=("single_stream_modulation.", "double_stream_modulation_img.", "early_stream_modulations."),
               detect_words="has FLUX.2 shared stream modulation", extra={"what": "a FLUX.2 dev model (FLUX.2 klein is trained; dev is not)"}),
    FamilySpec("sdxl_refiner", "SDXL refiner", "", cross_attention_width=1280, adm_inputs=2560,
               detect_words="UNet has the SDXL refiner's widths",
               extra={"what": "the SDXL refiner (it cannot be trained alone)"}),
)}


def known() -> list[FamilySpec]:
    """The families this program trains and the ones it only names (OTHER_MODELS), for detection."""
    return list(_registry().values()) + list(OTHER_MODELS.values())


class UnknownFamily(KeyError):
    def __str__(self) -> str:
        return f"unknown model family '{self.args[0]}' (known: {', '.join(names())})"


@lru_cache(maxsize=1)
def _registry() -> dict[str, FamilySpec]:
    found: dict[str, FamilySpec] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        mod = importlib.import_module(f"{__name__}.{info.name}")
        for spec in getattr(mod, "FAMILIES", ()):
            if spec.name in found:
                raise RuntimeError(f"model family '{spec.name}' is declared twice ({info.name})")
            found[spec.name] = spec
    return dict(sorted(found.items(), key=lambda kv: kv[1].extra.get("order", 100)))


def all_families() -> list[FamilySpec]:
    return list(_registry().values())


def names() -> tuple[str, ...]:
    return tuple(_registry())


def get(name: str) -> FamilySpec:
    try:
        return _registry()[name]
    except KeyError:
        raise UnknownFamily(name) from None


def find(name: str | None) -> FamilySpec | None:
    return _registry().get(name or "")


def title(name: str | None, default: str | None = None) -> str:
    spec = find(name) or OTHER_MODELS.get(name or "")
    return spec.title if spec else (default if default is not None else (name or ""))


def of_pipeline(class_name: str) -> str | None:
    """The family of a diffusers pipeline class name (model_index.json's _class_name), if it is one of ours."""
    for spec in known():
        if class_name in spec.pipelines:
            return spec.name
    return None


def _longest(value: str, prefixes_of) -> str | None:
    best, name = -1, None
    for spec in known():
        for prefix in prefixes_of(spec):
            if value.startswith(prefix) and len(prefix) > best:
                best, name = len(prefix), spec.name
    return name


def of_version(version: str) -> str | None:
    """The family of a kohya ``ss_base_model_version`` (sd_v1, sdxl_base_v1-0, flux1 ...); also the name of a
    known family this program does not train (sd3), so a warning can say what a file is."""
    return _longest((version or "").strip().lower(), lambda s: s.versions)


def of_architecture(arch: str) -> str | None:
    """The family of a ModelSpec ``modelspec.architecture`` (stable-diffusion-xl-v1-base/lora ...)."""
    return _longest((arch or "").strip().lower(), lambda s: s.architectures)


def using(setting: str) -> tuple[str, ...]:
    """The families a family-only setting belongs to; () for a setting every family uses."""
    return tuple(s.name for s in _registry().values() if setting in s.fields)


def family_module(name: str):
    """The torch side of a family: an instance of the class its spec names (imports torch)."""
    return _instance(get(name).module)


@lru_cache(maxsize=None)
def _instance(path: str):
    mod, _, cls = path.partition(":")
    return getattr(importlib.import_module(mod), cls)()
