"""FLUX.2 [klein] (4B / 9B, base and distilled): Qwen3 hidden states, a flow-matching transformer, no guidance input.

As diffusers' Flux2KleinPipeline (and its train_dreambooth_lora_flux2_klein.py): the prompt goes through Qwen3's
chat template, the hidden states of layers 9, 18 and 27 are stacked (3 x the encoder's width, up to 512 tokens);
the autoencoder's 32-channel latents are cut into 2x2 patches (128 channels at 1/16 of the image) and normalised by
its BatchNorm statistics; `x_t = (1 - s) x0 + s noise`, target `noise - x0`; the transformer gets the patches as
tokens with (t, h, w, l) position ids and the noise level s. Base models sample with CFG (about 4, 50 steps),
distilled ones in 4 steps without guidance.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from torch import nn

from .base import Components, ModelFamily, NoisyBatch, Objective, TextCond
from .flux import FlowMatchObjective, Flux

TEXT_LAYERS = (9, 18, 27)
TEXT_TOKENS = 512
SIZES = {3072: "4b", 4096: "9b"}


def variant_of(pipe) -> str:
    width = pipe.transformer.config.num_attention_heads * pipe.transformer.config.attention_head_dim
    size = SIZES.get(int(width), "4b")
    return size if pipe.config.get("is_distilled") else f"base-{size}"


def patchify_normalize(vae, z: torch.Tensor) -> torch.Tensor:
    """The autoencoder's latents (B, 32, H/8, W/8) as the transformer's inputs: 2x2 patches (B, 128, H/16, W/16)
    normalised by the autoencoder's BatchNorm running statistics (Flux2KleinPipeline._encode_vae_image)."""
    from diffusers import Flux2KleinPipeline

    z = Flux2KleinPipeline._patchify_latents(z)
    mean = vae.bn.running_mean.view(1, -1, 1, 1).to(z.device, z.dtype)
    std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).to(z.device, z.dtype)
    return (z - mean) / std


class Flux2Klein(ModelFamily):
    name = "flux2_klein"
    pipeline_class_name = "Flux2KleinPipeline"
    te_lora_prefixes = ()
    load_in_compute_dtype = True

    # ------------------------------------------------------------ loading
    def load_folder(self, model: str, dtype: torch.dtype, settings: Mapping[str, Any]) -> Any:
        return self.qwen3_fp8(super().load_folder(model, dtype, settings), dtype, settings)

    @staticmethod
    def qwen3_fp8(pipe: Any, dtype: torch.dtype, settings: Mapping[str, Any]) -> Any:
        """Qwen3 without its output head (only hidden states are used: Qwen3-8B's untied head is 1.2 GB in bf16,
        and its logits for 512 tokens another 0.3 GB); qwen3_precision fp8: its Linear weights stored in fp8 while
        the captions are cached."""
        pipe.text_encoder.lm_head = nn.Identity()
        if settings.get("qwen3_precision") == "fp8":
            from .t5_fp8 import store_t5_fp8

            store_t5_fp8(pipe.text_encoder, dtype, "qwen3_precision fp8: Qwen3")
        return pipe

    def load_file(self, model: str, dtype: torch.dtype, *, base_config_dir: str, vae: str,
                  settings: Mapping[str, Any], progress: Callable[[str], None] | None) -> Any:
        """A klein transformer file with the qwen3 and ae files named in `settings` (core/models/klein_loading.py)."""
        from .klein_loading import load_klein_single_file

        pipe = load_klein_single_file(model, ae=settings.get("ae") or vae, qwen3=settings.get("qwen3") or "",
                                      base_config_dir=base_config_dir, dtype=dtype, progress=progress)
        return self.qwen3_fp8(pipe, dtype, settings)

    def components(self, pipe: Any, source: str, v_parameterization: bool) -> Components:
        comps = Components(self, pipe, pipe.transformer, pipe.vae, [pipe.text_encoder], [pipe.tokenizer], "flow",
                           source)
        comps.extra["variant"] = variant_of(pipe)
        return comps

    plain_lora_checks = Flux.plain_lora_checks

    def prepare(self, comps: Components, cfg) -> list[str]:
        notes = self.plain_lora_checks(cfg, "FLUX.2 klein", "diffusers loads its LoRAs only as plain LoRA")
        if not comps.extra["variant"].startswith("base"):
            notes.append("This is the distilled FLUX.2 klein (4-step) model. LoRAs train better on klein base (the "
                         "undistilled model, what musubi-tuner and diffusion-pipe train on): distillation fixed the "
                         "model to 4 steps without guidance, and training pulls it away from that, so samples can "
                         "blur. A LoRA trained on base also works on the distilled model.")
        if not cfg.network_train_unet_only:
            notes.append("network_train_unet_only is off, but the Qwen3 text encoder is never trained: only the "
                         "transformer gets a LoRA.")
        return notes

    def scale_latents(self, vae, z: torch.Tensor) -> torch.Tensor:
        return patchify_normalize(vae, z)

    # --------------------------------------------------------------- text
    def encode_text(self, comps: Components, captions: list[str], clip_skip: int) -> TextCond:
        cache = comps.extra.get("text_cache", {})
        if all(c in cache for c in captions):
            return TextCond(torch.stack([cache[c].hidden_states for c in captions]))
        from diffusers import Flux2KleinPipeline

        te = comps.text_encoders[0]
        dtype = te.get_input_embeddings().weight.dtype  # the compute dtype, also when the Linears are stored in fp8
        hidden = Flux2KleinPipeline._get_qwen3_prompt_embeds(te, comps.tokenizers[0], captions, dtype=dtype,
                                                            device=te.device, max_sequence_length=TEXT_TOKENS,
                                                            hidden_states_layers=TEXT_LAYERS)
        return TextCond(hidden)

    def caption_limit(self, comps: Components) -> tuple[Any, int, int]:
        """Qwen3 reads the caption inside its chat template, whose own tokens count against the 512."""
        tok = comps.tokenizers[0]
        template = tok.apply_chat_template([{"role": "user", "content": ""}], tokenize=False,
                                           add_generation_prompt=True, enable_thinking=False)
        return tok, TEXT_TOKENS, TEXT_TOKENS - len(tok(template).input_ids)

    def text_settings(self, comps: Components, cfg) -> str:
        fp8 = "|qwen3=fp8" if cfg.qwen3_precision == "fp8" else ""  # fp8 outputs differ: their own cache entries
        return f"{self.name}|tokens={TEXT_TOKENS}|layers={','.join(map(str, TEXT_LAYERS))}{fp8}"

    def trainable_text_encoders(self, comps: Components) -> list[int]:
        return []  # Qwen3 is never trained (as every trainer of klein)

    def cache_text(self, comps: Components, captions: list[str] | None, prompts: list[str], trained: list[int],
                   cfg, say) -> dict[str, TextCond] | None:
        """Qwen3's outputs of every caption, sample prompt and negative prompt computed once; Qwen3 is freed."""
        if captions is None:
            say("warning", "Captions change every step (shuffle_caption or caption_dropout_rate), so the Qwen3 text "
                           "encoder stays in memory to encode them.")
            return None
        from ..generation.samplers import parse_prompt_line

        negatives = [parse_prompt_line(p).negative for p in cfg.sample_prompts] if prompts else []
        texts = sorted(set(captions) | set(prompts) | set(negatives) | ({""} if prompts else set()))
        from .t5_fp8 import is_t5_fp8

        fp8 = ", Qwen3 stored in fp8 while caching" if is_t5_fp8(comps.text_encoders[0]) else ""
        full, hits = self.encode_all(comps, texts, cfg, 8)
        comps.extra["text_cache"] = full
        self.release_text_encoders(comps, keep=[])  # samples use the cached prompt embeddings
        say("info", f"Cached text encoder outputs for {len(texts)} captions and prompts"
                    + (f" ({hits} read from the disk cache)" if hits else "") + fp8 + "; Qwen3 freed from memory")
        return {c: full[c] for c in captions}

    # -------------------------------------------------------------- model
    def make_objective(self, comps: Components, cfg, device: torch.device) -> Objective:
        return FlowMatchObjective(cfg, device, patch=1)

    def predict(self, model, comps: Components, batch: NoisyBatch, cond: TextCond, meta: list[dict[str, Any]],
                dtype: torch.dtype) -> torch.Tensor:
        from diffusers import Flux2KleinPipeline

        x = batch.model_input
        b, c, h, w = x.shape
        tokens = x.to(dtype).reshape(b, c, h * w).permute(0, 2, 1)
        img_ids = Flux2KleinPipeline._prepare_latent_ids(x).to(x.device)
        txt_ids = Flux2KleinPipeline._prepare_text_ids(cond.hidden_states).to(x.device)
        out = model(hidden_states=tokens, encoder_hidden_states=cond.hidden_states.to(dtype),
                    timestep=batch.timesteps.to(dtype), img_ids=img_ids, txt_ids=txt_ids, guidance=None,
                    return_dict=False)[0]
        return out.permute(0, 2, 1).reshape(b, c, h, w)

    set_plain_attention = Flux.set_plain_attention  # SDPA only

    # --------------------------------------------------------------- LoRA
    denoiser_targets = Flux.denoiser_targets  # every Linear of the double and single blocks, or their attention

    def is_attention(self, name: str) -> bool:
        """Attention and feed-forward of every block are trained, as musubi-tuner and ai-toolkit train klein (the
        modulation layers are shared outside the blocks and stay as they are); 'attention': the attention
        projections only, a single block's fused attention + MLP input and output included."""
        return ".attn." in name

    lora_tensors = Flux.lora_tensors  # transformer.<diffusers name>, alpha folded (core/lora/flux_format.py)

    def metadata(self, comps: Components, cfg) -> dict[str, str]:
        variant = comps.extra.get("variant", "base-4b")
        size = variant.removeprefix("base-")
        return {"ss_network_module": "networks.lora_flux2", "ss_base_model_version": f"flux2_klein_{size}",
                "modelspec.architecture": f"flux-2-klein-{size}/lora",
                "modelspec.implementation": "https://github.com/black-forest-labs/flux2",
                "modelspec.prediction_type": "flow", "ss_flux2_variant": f"klein-{variant}",
                "ss_timestep_sampling": cfg.timestep_sampling, "ss_discrete_flow_shift": str(cfg.discrete_flow_shift),
                "ss_sigmoid_scale": str(cfg.sigmoid_scale), "ss_model_prediction_type": cfg.model_prediction_type,
                "ss_text_encoder_max_tokens": str(TEXT_TOKENS)}

    # ------------------------------------------------------------ samples
    def sample_call(self, spec, cfg, comps: Components | None = None) -> dict[str, Any]:
        distilled = comps is not None and not comps.extra.get("variant", "base").startswith("base")
        way = self.spec.variant_sampling.get("4b") if distilled else self.spec.sampling
        steps = spec.steps if "s" in spec.given else (way.steps if distilled else 28)
        guidance = 1.0 if distilled else float(spec.cfg if "l" in spec.given else way.guidance)
        kwargs: dict[str, Any] = dict(num_inference_steps=steps, guidance_scale=guidance,
                                      max_sequence_length=TEXT_TOKENS)
        cache = comps.extra.get("text_cache", {}) if comps is not None else {}
        if spec.prompt in cache:
            dev = comps.denoiser.device
            kwargs["prompt_embeds"] = cache[spec.prompt].hidden_states[None].to(dev)
            if guidance > 1 and (spec.negative or "") in cache:
                kwargs["negative_prompt_embeds"] = cache[spec.negative or ""].hidden_states[None].to(dev)
        else:
            kwargs["prompt"] = spec.prompt
            if guidance > 1 and spec.negative and comps is not None:
                kwargs["negative_prompt_embeds"] = self.encode_text(comps, [spec.negative], 1).hidden_states
        return kwargs

    def generate_kwargs(self, pipe: Any, negative: str, guidance: float, clip_skip: int) -> dict[str, Any]:
        """Base: CFG against the negative prompt (the pipeline's own negative is empty); distilled: no guidance."""
        if pipe.config.get("is_distilled"):
            return dict(guidance_scale=1.0)
        kwargs: dict[str, Any] = dict(guidance_scale=guidance)
        if negative and guidance > 1:
            kwargs["negative_prompt_embeds"], _ = pipe.encode_prompt(negative, device=pipe._execution_device,
                                                                     max_sequence_length=TEXT_TOKENS)
        return kwargs

    sample_scheduler = Flux.sample_scheduler  # its own flow-match Euler sampler

    # ------------------------------------------------------------ LoRA tools
    # the names of Flux.1's BFL layout (core/lora/tools/flux_bfl.py knows FLUX.2's layers too)
    tool_layer_names = Flux.tool_layer_names
    tool_kohya_modules = Flux.tool_kohya_modules
