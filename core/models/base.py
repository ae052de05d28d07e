"""The interface every model family implements (one module per family: sd15, sdxl, ...)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch


@dataclass
class Components:
    """A loaded base model, split into the parts training needs."""

    family: "ModelFamily"
    pipeline: Any  # the diffusers pipeline the parts came from (used for sampling)
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoders: list[torch.nn.Module]
    tokenizers: list[Any]
    prediction_type: str = "epsilon"
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TextCond:
    """Text conditioning for a batch: what the UNet needs besides latents and timesteps."""

    hidden_states: torch.Tensor
    pooled: torch.Tensor | None = None

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "TextCond":
        pooled = self.pooled.to(device, dtype) if self.pooled is not None else None
        return TextCond(self.hidden_states.to(device, dtype), pooled)

    def index(self, i: int) -> "TextCond":
        return TextCond(self.hidden_states[i], None if self.pooled is None else self.pooled[i])

    @staticmethod
    def stack(items: list["TextCond"]) -> "TextCond":
        pooled = None if items[0].pooled is None else torch.stack([c.pooled for c in items])
        return TextCond(torch.stack([c.hidden_states for c in items]), pooled)


class ModelFamily:
    """One Stable Diffusion family. Subclasses fill in the class attributes and the hooks."""

    name: ClassVar[str]
    title: ClassVar[str]
    pipeline_class_name: ClassVar[str]
    ss_base_model_version: ClassVar[str]
    modelspec_architecture: ClassVar[str]
    te_lora_prefixes: ClassVar[tuple[str, ...]]  # kohya key prefix per text encoder
    default_resolution: ClassVar[int]
    vae_needs_fp32: ClassVar[bool] = False

    def pipeline_class(self):
        import diffusers

        return getattr(diffusers, self.pipeline_class_name)

    def components(self, pipe: Any, source: str, v_parameterization: bool) -> Components:
        encoders = [e for e in (getattr(pipe, "text_encoder", None), getattr(pipe, "text_encoder_2", None)) if e is not None]
        tokenizers = [t for t in (getattr(pipe, "tokenizer", None), getattr(pipe, "tokenizer_2", None)) if t is not None]
        if v_parameterization and pipe.scheduler.config.get("prediction_type") != "v_prediction":
            # samples must use the same prediction type as training
            pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, prediction_type="v_prediction")
        pred = pipe.scheduler.config.get("prediction_type", "epsilon")
        return Components(self, pipe, pipe.unet, pipe.vae, encoders, tokenizers, pred, source)

    def tokenize(self, comps: Components, captions: list[str]) -> list[torch.Tensor]:
        return [
            tok(captions, padding="max_length", max_length=tok.model_max_length, truncation=True,
                return_tensors="pt").input_ids
            for tok in comps.tokenizers
        ]

    def encode_text(self, comps: Components, captions: list[str], clip_skip: int) -> TextCond:  # pragma: no cover
        raise NotImplementedError

    def added_cond(self, comps: Components, cond: TextCond, meta: list[dict[str, Any]], dtype: torch.dtype) -> dict | None:
        return None

    def pipeline_kwargs(self, clip_skip: int) -> dict[str, Any]:
        return {}

    def unet_lora_module_name(self, name: str) -> str:
        """The UNet module path written into kohya LoRA keys (diffusers paths unless a family says otherwise)."""
        return name
