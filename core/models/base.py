"""The interface every model family implements (one module per family: sd15, sdxl, flux).

Everything that differs between families lives behind :class:`ModelFamily`, so the training loop
stays family-free: text encoding (and what may be cached), how a batch of latents becomes a noisy
model input with its target (:class:`Objective`), the model call, which layers get a LoRA, how the
LoRA file is named and written, and how sample images are made.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping

import torch

from .. import families
from ..families import FamilySpec


@dataclass
class Components:
    """A loaded base model, split into the parts training needs."""

    family: "ModelFamily"
    pipeline: Any  # the diffusers pipeline the parts came from (used for sampling)
    denoiser: torch.nn.Module  # a UNet (SD) or a transformer (Flux)
    vae: torch.nn.Module
    text_encoders: list[torch.nn.Module]
    tokenizers: list[Any]
    prediction_type: str = "epsilon"
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TextCond:
    """Text conditioning for a batch: what the denoiser needs besides latents and timesteps."""

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


@dataclass
class NoisyBatch:
    """One batch made ready for the denoiser by the family's objective."""

    model_input: torch.Tensor  # noised latents, (B, C, H, W)
    timesteps: torch.Tensor  # what the denoiser is told about the noise level
    target: torch.Tensor  # what its output is compared with
    weights: torch.Tensor | None = None  # per-sample loss weights of the objective (min-SNR ...), or None
    extra: dict[str, Any] = field(default_factory=dict)


class Objective:
    """How a family turns clean latents into (noisy input, timesteps, target) and weighs the loss."""

    def noisy_batch(self, latents: torch.Tensor, gen: torch.Generator) -> NoisyBatch:  # pragma: no cover
        raise NotImplementedError

    def fixed_batch(self, latents: torch.Tensor, levels: torch.Tensor, noise: torch.Tensor) -> NoisyBatch:
        """The validation loss's batch: `latents` noised with the given `noise` at fixed noise `levels` in (0, 1)
        spread over the schedule (0 = clean, 1 = pure noise): no random draws, no noise options, no loss weights,
        so the same weights always give the same loss."""
        raise NotImplementedError  # pragma: no cover

    def prediction(self, raw: torch.Tensor, batch: NoisyBatch) -> torch.Tensor:
        """The denoiser output as compared with the target (the identity unless a family says otherwise)."""
        return raw


class ModelFamily:
    """One model family's torch side. Its facts (title, LoRA file names, resolutions ...) are its entry in
    core/families (``self.spec``); subclasses fill in the class attributes below and the hooks."""

    name: ClassVar[str]
    pipeline_class_name: ClassVar[str]
    te_lora_prefixes: ClassVar[tuple[str, ...]]  # kohya key prefix per text encoder
    load_in_compute_dtype: ClassVar[bool] = False  # too large to load in fp32 first (Flux: 12B parameters)
    ss_v2: ClassVar[bool] = False  # kohya's ss_v2 metadata flag (an SD 2.x base)

    @property
    def spec(self) -> FamilySpec:
        return families.get(self.name)

    @property
    def title(self) -> str:
        return self.spec.title

    @property
    def vae_needs_fp32(self) -> bool:
        return self.spec.vae_fp32

    @property
    def uses_cfg(self) -> bool:
        """Classifier-free guidance with a negative prompt (Flux dev: distilled guidance instead)."""
        return self.spec.sampling.negative_prompt

    @property
    def denoiser_name(self) -> str:
        return self.spec.denoiser_words

    @property
    def ss_base_model_version(self) -> str:
        return self.spec.version

    @property
    def modelspec_architecture(self) -> str:
        return self.spec.architecture + "/lora"

    def pipeline_class(self):
        from ..ml_lock import ML_IMPORT_LOCK

        with ML_IMPORT_LOCK:
            import diffusers

            return getattr(diffusers, self.pipeline_class_name)

    # ------------------------------------------------------------ loading
    folder_kwargs: ClassVar[dict[str, Any]] = {}  # extra from_pretrained arguments for its diffusers folders

    def load_folder(self, model: str, dtype: torch.dtype, settings: Mapping[str, Any]) -> Any:
        """The pipeline of a local diffusers folder."""
        return self.pipeline_class().from_pretrained(model, dtype=dtype, local_files_only=True, **self.folder_kwargs)

    def load_file(self, model: str, dtype: torch.dtype, *, base_config_dir: str, vae: str,
                  settings: Mapping[str, Any], progress: Callable[[str], None] | None) -> Any:
        """The pipeline of a single-file checkpoint, with the configs shipped for the family (or the user's), and
        `vae` instead of the file's own when given."""
        from .loading import load_vae, shipped_config_dir

        config = base_config_dir or str(shipped_config_dir(self.name))
        pipe = self.pipeline_class().from_single_file(model, config=config, dtype=dtype, local_files_only=True)
        if vae:
            pipe.vae = load_vae(vae, self.name, base_config_dir, dtype)
        return pipe

    def components(self, pipe: Any, source: str, v_parameterization: bool) -> Components:
        encoders = [e for e in (getattr(pipe, "text_encoder", None), getattr(pipe, "text_encoder_2", None)) if e is not None]
        tokenizers = [t for t in (getattr(pipe, "tokenizer", None), getattr(pipe, "tokenizer_2", None)) if t is not None]
        if v_parameterization and pipe.scheduler.config.get("prediction_type") != "v_prediction":
            # samples must use the same prediction type as training
            pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, prediction_type="v_prediction")
        pred = pipe.scheduler.config.get("prediction_type", "epsilon")
        return Components(self, pipe, pipe.unet, pipe.vae, encoders, tokenizers, pred, source)

    def prepare(self, comps: Components, cfg) -> list[str]:
        """Take the run's family-specific settings; return warnings about settings that do not apply."""
        return []

    # --------------------------------------------------------------- text
    def tokenize(self, comps: Components, captions: list[str]) -> list[torch.Tensor]:
        return [
            tok(captions, padding="max_length", max_length=tok.model_max_length, truncation=True,
                return_tensors="pt").input_ids
            for tok in comps.tokenizers
        ]

    def caption_limit(self, comps: Components) -> tuple[Any, int, int]:
        """(tokenizer, most tokens a caption may have with the special ones, the same without them)."""
        tok = comps.tokenizers[0]
        return tok, tok.model_max_length, tok.model_max_length - 2

    def encode_text(self, comps: Components, captions: list[str], clip_skip: int) -> TextCond:  # pragma: no cover
        raise NotImplementedError

    def trainable_text_encoders(self, comps: Components) -> list[int]:
        """Indices of the text encoders a LoRA may be trained on."""
        return list(range(len(comps.text_encoders)))

    def cache_text(self, comps: Components, captions: list[str] | None, prompts: list[str], trained: list[int],
                   cfg, say) -> dict[str, TextCond] | None:
        """Conditioning of every caption computed once, or None to encode each batch. `captions` is None when
        they change from step to step; `say(kind, text)` reports ("warning" or "info")."""
        if not cfg.cache_text_encoder_outputs:
            return None
        if trained:
            say("note", "Text-encoder outputs are not cached: the text encoder is trained.")
            return None
        if captions is None:
            say("note", "Text-encoder outputs are not cached: shuffle_caption or caption_dropout_rate changes captions.")
            return None
        cache, hits = self.encode_all(comps, captions, cfg, 16)
        freed = self.release_text_encoders(comps, keep=[], samples=bool(prompts))
        say("info", f"Cached text encoder outputs for {len(captions)} captions"
                    + (f" ({hits} read from the disk cache)" if hits else "") + (f"; {freed}" if freed else ""))
        return cache

    def text_settings(self, comps: Components, cfg) -> str:
        """The settings that change the encoders' output (part of the disk cache key)."""
        return f"{self.name}|clip_skip={cfg.clip_skip}"

    def encode_all(self, comps: Components, texts: list[str], cfg, chunk_size: int) -> tuple[dict[str, TextCond], int]:
        """The conditioning of each text, on the CPU, in chunks; from/to the disk cache when
        cache_text_encoder_outputs_to_disk is on. Returns (cache, how many came from the disk)."""
        disk = None
        if cfg.cache_text_encoder_outputs_to_disk:
            from ..data.text_cache import TextDiskCache, encoders_fingerprint, text_cache_dir

            disk = TextDiskCache(text_cache_dir(cfg), encoders_fingerprint(comps.text_encoders,
                                                                           self.text_settings(comps, cfg)))
        cache: dict[str, TextCond] = {}
        todo = []
        for c in texts:
            got = disk.get(c) if disk is not None else None
            if got is not None:
                cache[c] = got
            else:
                todo.append(c)
        with torch.no_grad():
            for i in range(0, len(todo), chunk_size):
                chunk = todo[i:i + chunk_size]
                cond = self.encode_text(comps, chunk, cfg.clip_skip)
                for j, c in enumerate(chunk):
                    cache[c] = cond.index(j).to("cpu")
                    if disk is not None:
                        disk.put(c, cache[c])
        return {c: cache[c] for c in texts}, (disk.hits if disk is not None else 0)

    def release_text_encoders(self, comps: Components, keep: list[int], samples: bool = False) -> str:
        """The text encoders training no longer needs (their outputs are cached): freed, or, when sample images
        still need them, moved off the GPU (sampling brings them back). Returns what was done, in words."""
        attrs = ("text_encoder", "text_encoder_2")
        drop = [i for i in range(len(comps.text_encoders)) if i not in keep and comps.text_encoders[i] is not None]
        if not drop:
            return ""
        if samples:
            if not torch.cuda.is_available():
                return ""
            for i in drop:
                comps.text_encoders[i].to("cpu")
            torch.cuda.empty_cache()
            return "the text encoder(s) wait in RAM until samples are made"
        for i in drop:
            comps.text_encoders[i] = None
            setattr(comps.pipeline, attrs[i], None)
        import gc

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return "the text encoder(s) freed from memory"

    def scale_latents(self, vae: torch.nn.Module, z: torch.Tensor) -> torch.Tensor:
        """The autoencoder's latents (fp32) as the denoiser takes them (SD / Flux.1: shifted and scaled)."""
        from ..data.latents import scaled

        return scaled(vae, z)

    def release_vae_encoder(self, comps: Components, samples: bool) -> None:
        """Every latent is cached: the VAE's encoder is no longer needed (nor its decoder, without samples)."""
        import gc

        if samples:
            comps.vae.encoder = None
            if getattr(comps.vae, "quant_conv", None) is not None:
                comps.vae.quant_conv = None
        else:
            comps.vae = None
            comps.pipeline.vae = None
        gc.collect()

    # -------------------------------------------------------------- model
    def make_objective(self, comps: Components, cfg, device: torch.device) -> Objective:  # pragma: no cover
        raise NotImplementedError

    def predict(self, model: torch.nn.Module, comps: Components, batch: NoisyBatch, cond: TextCond,
                meta: list[dict[str, Any]], dtype: torch.dtype) -> torch.Tensor:  # pragma: no cover
        """Call the denoiser on a noisy batch; return its output in the latents' layout."""
        raise NotImplementedError

    def set_plain_attention(self, model: torch.nn.Module) -> None:
        from diffusers.models.attention_processor import AttnProcessor

        model.set_attn_processor(AttnProcessor())

    # --------------------------------------------------------------- LoRA
    def denoiser_targets(self, model: torch.nn.Module, spec) -> tuple[list[str], list[str]]:
        """(module names trained at network_dim, conv module names trained at conv_dim)."""
        from ..lora import network as net

        return net.unet_targets(model, spec)

    def unet_lora_module_name(self, name: str) -> str:
        """The UNet module path written into kohya LoRA keys (diffusers paths unless a family says otherwise)."""
        return name

    def lora_tensors(self, models: dict[str, torch.nn.Module], spec, conv_modules: dict[str, list[str]],
                     dtype: torch.dtype, fmt: str = "kohya") -> dict[str, torch.Tensor]:
        """The saved LoRA's tensors: kohya keys (what every SD loader maps) or the diffusers/peft form."""
        from ..lora import network as net
        from ..lora.kohya_format import text_encoder_module, to_diffusers, to_kohya

        out: dict[str, torch.Tensor] = {}
        for key, model in models.items():
            if spec.lycoris:  # LoHa / LoKr: LyCORIS tensor names under the kohya module names
                from ..lora.lycoris import to_lycoris

                if fmt != "kohya":
                    raise ValueError(f"network_type {spec.kind} is saved in the kohya / LyCORIS form only")
                prefix = "lora_unet" if key == "unet" else self.te_lora_prefixes[int(key[2:])]
                rename = self.unet_lora_module_name if key == "unet" else text_encoder_module
                out.update(to_lycoris(model, prefix, dtype, rename))
                continue
            peft_sd = net.peft_state_dict(model)
            conv = conv_modules.get(key, [])
            if fmt == "kohya":
                prefix = "lora_unet" if key == "unet" else self.te_lora_prefixes[int(key[2:])]
                rename = self.unet_lora_module_name if key == "unet" else text_encoder_module
                out.update(to_kohya(peft_sd, prefix, spec.alpha, net.module_alphas(spec, conv), dtype, rename))
            else:
                prefix = "unet" if key == "unet" else ("text_encoder" if key == "te0" else "text_encoder_2")
                out.update(to_diffusers(peft_sd, prefix, dtype, net.lora_scales(peft_sd, spec, conv), key != "unet"))
        return out

    def tool_layer_names(self, table, layer, up_attention: set[int] | None) -> list[str]:  # pragma: no cover
        """The LoRA tools' other names for one denoiser layer (core/lora/tools/names.py); sets
        table.kohya_out[layer.key], the name it is written with."""
        raise NotImplementedError

    def tool_kohya_modules(self, modules: dict, table) -> dict:
        """The tools' modules as the family's kohya-form files hold them (Flux: fused BFL layers)."""
        return modules

    def metadata(self, comps: Components, cfg) -> dict[str, str]:
        """Family-specific header metadata (added to the common ss_* / modelspec keys)."""
        return {}

    # ------------------------------------------------------------ samples
    def pipeline_kwargs(self, clip_skip: int) -> dict[str, Any]:
        return {}

    def sample_call(self, spec, cfg, comps: Components | None = None) -> dict[str, Any]:
        """Keyword arguments for one sample image of a kohya-syntax prompt line (`spec`)."""
        return dict(prompt=spec.prompt, negative_prompt=spec.negative or None, num_inference_steps=spec.steps,
                    guidance_scale=spec.cfg, **self.pipeline_kwargs(cfg.clip_skip))

    def generate_kwargs(self, pipe: Any, negative: str, guidance: float, clip_skip: int) -> dict[str, Any]:
        """The pipeline's arguments for one Generate-tab image besides prompt, size, steps, seed and callback."""
        return dict(self.pipeline_kwargs(clip_skip), negative_prompt=negative or None, guidance_scale=guidance)

    def sample_scheduler(self, sampler: str, config):
        from ..generation.samplers import make_scheduler

        return make_scheduler(sampler, config)

    @property
    def size_multiple(self) -> int:
        return self.spec.size_multiple
