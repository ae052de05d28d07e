"""Flux.1 (dev and schnell): CLIP-L pooled + T5-XXL text conditioning, a flow-matching transformer.

Objective as in sd-scripts' flux_train_network.py and diffusers' train_dreambooth_lora_flux.py:
latents `(z - shift) * scale` (16 channels), `x_t = (1 - s) x0 + s noise`, target `noise - x0`, the
transformer gets the packed 2x2 latent patches, image/text position ids, the noise level s and, for
dev, a constant distilled-guidance value.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch
from torch import nn

from .base import Components, ModelFamily, NoisyBatch, Objective, TextCond
from .noise import flux_perturbed_noise

FLUX_ATTENTION = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
                  "attn.add_v_proj", "attn.to_add_out")
BLOCKS = ("transformer_blocks.", "single_transformer_blocks.")
T5_DEFAULT_LENGTH = {"dev": 512, "schnell": 256}


def variant_of(transformer) -> str:
    return "dev" if transformer.config.get("guidance_embeds") else "schnell"


def flow_sigmas(mode: str, batch: int, gen: torch.Generator, *, sigmoid_scale: float, shift: float,
                image_tokens: int) -> torch.Tensor:
    """Noise levels in (0, 1) for a batch, as sd-scripts' --timestep_sampling (flux_train_utils.py)."""
    if mode == "uniform":
        return torch.rand((batch,), generator=gen)
    if mode == "sigma":  # uniform over the scheduler's 1000 shifted sigmas
        idx = (torch.rand((batch,), generator=gen) * 1000).long().clamp(max=999)
        s = torch.linspace(1.0, 1.0 / 1000, 1000)
        return (shift * s / (1 + (shift - 1) * s))[idx]
    s = torch.sigmoid(sigmoid_scale * torch.randn((batch,), generator=gen))
    if mode == "sigmoid":
        return s
    if mode == "shift":
        return shift * s / (1 + (shift - 1) * s)
    if mode == "flux_shift":  # resolution-dependent shift, mu linear in the image tokens 256 -> 4096
        mu = 0.5 + (1.15 - 0.5) * (image_tokens - 256) / (4096 - 256)
        return math.exp(mu) / (math.exp(mu) + (1 / s - 1))
    if mode == "flux2_shift":  # FLUX.2's resolution-dependent shift, as its pipeline samples in 50 steps
        from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu

        mu = compute_empirical_mu(image_tokens, 50)
        return math.exp(mu) / (math.exp(mu) + (1 / s - 1))
    raise ValueError(f"timestep_sampling '{mode}' is not one of sigma, uniform, sigmoid, shift, flux_shift, "
                     "flux2_shift")


class FlowMatchObjective(Objective):
    """`patch`: latent pixels per token side (Flux.1 packs 2x2 latents into a token; FLUX.2's latents are patches)."""

    def __init__(self, cfg, device: torch.device, patch: int = 2):
        self.cfg = cfg
        self.device = device
        self.patch = patch

    def noisy_batch(self, latents: torch.Tensor, gen: torch.Generator) -> NoisyBatch:
        cfg, dev = self.cfg, self.device
        b, _, h, w = latents.shape
        noise = torch.randn(latents.shape, generator=gen).to(dev)
        s = flow_sigmas(cfg.timestep_sampling, b, gen, sigmoid_scale=cfg.sigmoid_scale, shift=cfg.discrete_flow_shift,
                        image_tokens=(h // self.patch) * (w // self.patch)).to(dev)
        sv = s.view(-1, 1, 1, 1)
        model_noise = noise
        if cfg.ip_noise_gamma:  # input perturbation, as sd-scripts' flux_train_utils
            model_noise = flux_perturbed_noise(noise, gen, cfg.ip_noise_gamma, cfg.ip_noise_gamma_random_strength)
        noisy = (1 - sv) * latents + sv * model_noise
        target = latents if cfg.model_prediction_type == "sigma_scaled" else noise - latents
        return NoisyBatch(noisy, s, target, None, {"sigmas": sv})

    def fixed_batch(self, latents: torch.Tensor, levels: torch.Tensor, noise: torch.Tensor) -> NoisyBatch:
        s = levels.to(self.device, torch.float32)
        sv = s.view(-1, 1, 1, 1)
        noisy = (1 - sv) * latents + sv * noise
        target = latents if self.cfg.model_prediction_type == "sigma_scaled" else noise - latents
        return NoisyBatch(noisy, s, target, None, {"sigmas": sv})

    def prediction(self, raw: torch.Tensor, batch: NoisyBatch) -> torch.Tensor:
        kind = self.cfg.model_prediction_type
        if kind == "additive":
            return raw + batch.model_input
        if kind == "sigma_scaled":  # x_t - s v: the model's estimate of the clean latents
            return raw * (-batch.extra["sigmas"]) + batch.model_input
        return raw


class Flux(ModelFamily):
    name = "flux"
    pipeline_class_name = "FluxPipeline"
    te_lora_prefixes = ("lora_te1",)
    load_in_compute_dtype = True

    # ------------------------------------------------------------ loading
    def load_folder(self, model: str, dtype: torch.dtype, settings: Mapping[str, Any]) -> Any:
        pipe = super().load_folder(model, dtype, settings)
        if settings.get("t5xxl_precision") == "fp8":
            from .t5_fp8 import store_t5_fp8

            store_t5_fp8(pipe.text_encoder_2, dtype)
        return pipe

    def load_file(self, model: str, dtype: torch.dtype, *, base_config_dir: str, vae: str,
                  settings: Mapping[str, Any], progress: Callable[[str], None] | None) -> Any:
        """A Flux file: all in one, or the transformer alone with the clip_l / t5xxl / ae files named in
        `settings` (core/models/flux_loading.py)."""
        from .flux_loading import load_flux_single_file

        parts = {p.setting: settings.get(p.setting) or "" for p in self.spec.parts}
        return load_flux_single_file(model, vae=vae, base_config_dir=base_config_dir, dtype=dtype, progress=progress,
                                     t5_fp8=settings.get("t5xxl_precision") == "fp8", **parts)

    def components(self, pipe: Any, source: str, v_parameterization: bool) -> Components:
        comps = Components(self, pipe, pipe.transformer, pipe.vae, [pipe.text_encoder, pipe.text_encoder_2],
                           [pipe.tokenizer, pipe.tokenizer_2], "flow", source)
        comps.extra["variant"] = variant_of(pipe.transformer)
        return comps

    def prepare(self, comps: Components, cfg) -> list[str]:
        notes = self.plain_lora_checks(cfg, "Flux", "ComfyUI and diffusers read a Flux DoRA file differently, so no "
                                                    "single file applies the trained change in both")
        variant = comps.extra["variant"]
        comps.extra["t5_length"] = cfg.t5xxl_max_token_length or T5_DEFAULT_LENGTH[variant]
        comps.extra["guidance"] = cfg.guidance_scale if variant == "dev" else None
        if variant == "schnell" and cfg.guidance_scale != 1.0:
            notes.append("guidance_scale is ignored: Flux schnell has no guidance input.")
        return notes

    # --------------------------------------------------------------- text
    def encode_text(self, comps: Components, captions: list[str], clip_skip: int) -> TextCond:
        clip, t5 = comps.text_encoders
        clip_tok, t5_tok = comps.tokenizers
        if clip is not None:
            ids = clip_tok(captions, padding="max_length", max_length=clip_tok.model_max_length, truncation=True,
                           return_tensors="pt").input_ids
            pooled = clip(ids.to(clip.device), output_hidden_states=False).pooler_output
        else:
            pooled = torch.stack([comps.extra["text_cache"][c].pooled for c in captions])
        cache = comps.extra.get("t5_cache", {})
        if all(c in cache for c in captions):
            hidden = torch.stack([cache[c] for c in captions]).to(pooled.device)
        else:
            ids = t5_tok(captions, padding="max_length", max_length=comps.extra.get("t5_length", 512), truncation=True,
                         return_tensors="pt").input_ids
            hidden = t5(ids.to(t5.device), output_hidden_states=False)[0]
        return TextCond(hidden, pooled)

    def caption_limit(self, comps: Components) -> tuple[Any, int, int]:
        """T5 carries the caption (CLIP-L only gives the pooled summary of its first 77 tokens)."""
        n = comps.extra.get("t5_length", 512)
        return comps.tokenizers[1], n, n - 1

    def text_settings(self, comps: Components, cfg) -> str:
        fp8 = "|t5xxl=fp8" if cfg.t5xxl_precision == "fp8" else ""  # fp8 T5 outputs differ: their own cache entries
        return f"{self.name}|t5={comps.extra.get('t5_length')}{fp8}"

    def trainable_text_encoders(self, comps: Components) -> list[int]:
        return [0]  # CLIP-L; T5 is never trained

    def cache_text(self, comps: Components, captions: list[str] | None, prompts: list[str], trained: list[int],
                   cfg, say) -> dict[str, TextCond] | None:
        """T5 outputs of every caption and sample prompt are cached and T5 is freed; CLIP-L too unless trained."""
        from .t5_fp8 import is_t5_fp8

        fp8 = " (stored in fp8)" if is_t5_fp8(comps.text_encoders[1]) else ""
        if captions is None:
            say("warning", f"Captions change every step (shuffle_caption or caption_dropout_rate), so T5-XXL{fp8} "
                           "stays in memory to encode them.")
            return None
        texts = sorted(set(captions) | set(prompts))
        full, hits = self.encode_all(comps, texts, cfg, 8)
        comps.extra["t5_cache"] = {c: v.hidden_states for c, v in full.items()}
        comps.extra["text_cache"] = full
        self.release_text_encoders(comps, keep=trained)  # samples use the cached prompt embeddings
        freed = "T5-XXL" + (" and CLIP-L" if 0 not in trained else "")
        say("info", f"Cached text encoder outputs for {len(texts)} captions and prompts"
                    + (f" ({hits} read from the disk cache)" if hits else "")
                    + (", T5-XXL stored in fp8 while caching" if fp8 else "") + f"; {freed} freed from memory")
        return None if trained else {c: full[c] for c in captions}

    # -------------------------------------------------------------- model
    def make_objective(self, comps: Components, cfg, device: torch.device) -> Objective:
        return FlowMatchObjective(cfg, device)

    def predict(self, model, comps: Components, batch: NoisyBatch, cond: TextCond, meta: list[dict[str, Any]],
                dtype: torch.dtype) -> torch.Tensor:
        from diffusers import FluxPipeline

        x = batch.model_input
        b, c, h, w = x.shape
        packed = FluxPipeline._pack_latents(x.to(dtype), b, c, h, w)
        img_ids = FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, x.device, dtype)
        txt_ids = torch.zeros(cond.hidden_states.shape[1], 3, device=x.device, dtype=dtype)
        g = comps.extra.get("guidance")
        guidance = torch.full((b,), float(g), device=x.device, dtype=torch.float32) if g is not None else None
        out = model(hidden_states=packed, encoder_hidden_states=cond.hidden_states.to(dtype),
                    pooled_projections=cond.pooled.to(dtype), timestep=batch.timesteps.to(dtype), img_ids=img_ids,
                    txt_ids=txt_ids, guidance=guidance, return_dict=False)[0]
        return out.reshape(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)

    def set_plain_attention(self, model: nn.Module) -> None:
        pass  # Flux's attention processor is SDPA only

    def plain_lora_checks(self, cfg, words: str, why_no_dora: str) -> list[str]:
        """What Flux.1 and FLUX.2 klein refuse (DoRA, LyCORIS: their files are in the diffusers form, which loads only
        as plain LoRA; sides not multiple of 16 pixels: 8 px latents in 2x2 patches) and the fp16 warning."""
        if cfg.use_dora:
            raise ValueError(f"use_dora: DoRA is not available for {words} ({why_no_dora}). Turn use_dora off.")
        if cfg.network_type in ("loha", "lokr"):
            from ..config.family_settings import no_lycoris

            raise ValueError(no_lycoris(self.name))
        if cfg.bucket_reso_steps % 16 or any(s % 16 for s in cfg.resolution_wh):
            raise ValueError(f"resolution {cfg.resolution} / bucket_reso_steps {cfg.bucket_reso_steps}: {words} needs "
                             "sides that are multiples of 16 pixels (e.g. 512, 768, 1024 and bucket_reso_steps 64).")
        if cfg.mixed_precision == "fp16":
            return [f"mixed_precision fp16: {words} was made in bf16 and overflows in fp16 on many GPUs (NaN loss, "
                    "black samples). Use bf16 (RTX 30xx and newer)."]
        return []

    # --------------------------------------------------------------- LoRA
    def denoiser_targets(self, model: nn.Module, spec) -> tuple[list[str], list[str]]:
        """Every Linear of the double and single blocks (not the final layer), or only their attention."""
        names = []
        for name, mod in model.named_modules():
            if not isinstance(mod, nn.Linear) or not name.startswith(BLOCKS):
                continue
            if spec.layers == "attention" and not self.is_attention(name):
                continue
            names.append(name)
        return names, []

    def is_attention(self, name: str) -> bool:
        return any(name.endswith("." + s) for s in FLUX_ATTENTION)

    def lora_tensors(self, models: dict[str, nn.Module], spec, conv_modules: dict[str, list[str]],
                     dtype: torch.dtype, fmt: str = "kohya") -> dict[str, torch.Tensor]:
        from ..lora.flux_format import to_flux_file

        return to_flux_file(models, spec, dtype)

    def metadata(self, comps: Components, cfg) -> dict[str, str]:
        variant = comps.extra.get("variant", "dev")
        meta = {"ss_network_module": "networks.lora_flux", "ss_base_model_version": "flux1",
                "modelspec.architecture": f"flux-1-{variant}/lora",
                "modelspec.implementation": "https://github.com/black-forest-labs/flux",
                "modelspec.prediction_type": "flow", "ss_flux_variant": variant,
                "ss_timestep_sampling": cfg.timestep_sampling, "ss_discrete_flow_shift": str(cfg.discrete_flow_shift),
                "ss_sigmoid_scale": str(cfg.sigmoid_scale), "ss_model_prediction_type": cfg.model_prediction_type,
                "ss_t5xxl_max_token_length": str(comps.extra.get("t5_length", ""))}
        if variant == "dev":
            meta["ss_guidance_scale"] = str(cfg.guidance_scale)
        return meta

    # ------------------------------------------------------------ samples
    def sample_call(self, spec, cfg, comps: Components | None = None) -> dict[str, Any]:
        variant = (comps.extra.get("variant") if comps is not None else None) or "dev"
        steps = spec.steps if "s" in spec.given else (4 if variant == "schnell" else 20)
        guidance = float(spec.extra.get("g", spec.cfg if "l" in spec.given else 3.5))
        kwargs: dict[str, Any] = dict(num_inference_steps=steps, guidance_scale=guidance if variant == "dev" else 1.0)
        cache = comps.extra.get("text_cache", {}) if comps is not None else {}
        if comps is not None and spec.prompt in cache:
            cond = cache[spec.prompt]
            if comps.text_encoders[0] is not None:  # CLIP-L is trained: its pooled output is made live
                with torch.no_grad():
                    cond = TextCond(cond.hidden_states, self.encode_text(comps, [spec.prompt], 1).pooled[0].cpu())
            dev = comps.denoiser.device
            kwargs.update(prompt_embeds=cond.hidden_states[None].to(dev), pooled_prompt_embeds=cond.pooled[None].to(dev))
        else:
            kwargs.update(prompt=spec.prompt, max_sequence_length=(comps.extra.get("t5_length", 512) if comps else 512))
        return kwargs

    # ------------------------------------------------------------ LoRA tools
    def tool_layer_names(self, table, layer, up_attention) -> list[str]:
        """The LoRA tools' other names for one transformer layer: its path, lora_transformer_ / LyCORIS keys, and
        the BFL names (sd-scripts, ComfyUI); layers fused in BFL (q/k/v, the single blocks' MLP input) are noted in
        table.fused / table.bfl_parts. Flux LoRAs are written in the diffusers form (the kohya form: flux_bfl)."""
        from ..lora.kohya_format import kohya_name
        from ..lora.tools.flux_bfl import place

        table.kohya_out[layer.key] = layer.key
        names = [layer.path, kohya_name("lora_transformer", layer.path), kohya_name("lycoris", layer.path)]
        p = place(layer.path)
        if p is not None:
            table.bfl_parts.setdefault(p.bfl, []).append((layer.key, p))
            bfl_names = [kohya_name("lora_unet", p.bfl), f"diffusion_model.{p.bfl}"]
            if p.layout == "whole":
                names += bfl_names
            else:
                for n in bfl_names:
                    table.fused[n] = p.bfl
        return names

    def tool_kohya_modules(self, modules: dict, table) -> dict:
        """The modules as sd-scripts writes a Flux LoRA in the kohya form: BFL layers, q/k/v fused."""
        from ..lora.tools.flux_bfl import to_bfl

        return to_bfl(modules, table)

    def generate_kwargs(self, pipe: Any, negative: str, guidance: float, clip_skip: int) -> dict[str, Any]:
        """dev: distilled guidance, T5 at 512 tokens; schnell: no guidance input, 256 tokens. No negative prompt."""
        dev = pipe.transformer.config.get("guidance_embeds")
        return dict(max_sequence_length=512 if dev else 256, guidance_scale=guidance if dev else 0.0)

    def sample_scheduler(self, sampler: str, config):
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler.from_config(config)  # Flux samples with its flow-match Euler sampler
