"""Tiny random-weight Flux.1 models for tests (dev and schnell).

`make_tiny_flux` writes a diffusers FluxPipeline folder with real Flux block structure (one double and
one single block, narrow widths), the real CLIP BPE tokenizer shipped in core/models/configs and a
tiny T5 unigram tokenizer built offline. `make_flux_single_files` writes the files users have: a
transformer-only file in Black Forest Labs' layout (diffusers' single-file converter only accepts the
full 3072 width, so that transformer is full width with one double and one single block, about 480M
parameters in bf16), clip_l / t5xxl / ae files in the layouts ComfyUI's model folders use, an
all-in-one checkpoint, and a config folder (full-width transformer config, tiny encoder configs and
the tokenizers) to give as base_config_dir. Builds are cached like tests/tiny_models.py.
"""
from __future__ import annotations

import json
import os
import shutil
import string
from pathlib import Path

from tiny_models import CONFIGS_DIR, SEED, _cached, _materialize, _tokenizer

TINY_WIDTH = dict(attention_head_dim=16, num_attention_heads=2, axes_dims_rope=[4, 4, 8])
FULL_WIDTH = dict(attention_head_dim=128, num_attention_heads=24, axes_dims_rope=[16, 56, 56])


def t5_tokenizer():
    from transformers import T5Tokenizer

    ch = string.ascii_letters + string.digits + ".,!?'-"
    vocab = ([("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)] + [(c, -5.0) for c in ch]
             + [("\u2581" + c, -4.0) for c in ch])
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def _parts(guidance: bool, width: dict, seed: int = SEED):
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    clip_tok = _tokenizer("clip_tokenizer")
    t5_tok = t5_tokenizer()
    torch.manual_seed(seed)
    te = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                      num_attention_heads=4, projection_dim=32, max_position_embeddings=77,
                                      hidden_act="quick_gelu", bos_token_id=0, eos_token_id=2, pad_token_id=1))
    torch.manual_seed(seed + 1)
    te2 = T5EncoderModel(T5Config(vocab_size=len(t5_tok), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                                  feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1))
    torch.manual_seed(seed + 2)
    tr = FluxTransformer2DModel(in_channels=64, num_layers=1, num_single_layers=1, joint_attention_dim=32,
                                pooled_projection_dim=32, guidance_embeds=guidance, **width)
    torch.manual_seed(seed + 3)
    vae = AutoencoderKL(latent_channels=16, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8,) * 4, layers_per_block=1,
                        norm_num_groups=4, use_quant_conv=False, use_post_quant_conv=False, scaling_factor=0.3611,
                        shift_factor=0.1159)
    if guidance:
        sched = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15)
    else:
        sched = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)
    return dict(scheduler=sched, vae=vae, text_encoder=te, tokenizer=clip_tok, text_encoder_2=te2, tokenizer_2=t5_tok,
                transformer=tr)


def _build_folder(out: Path, guidance: bool) -> None:
    from diffusers import FluxPipeline

    pipe = FluxPipeline(**_parts(guidance, TINY_WIDTH))
    pipe.save_pretrained(str(out), safe_serialization=True)
    shutil.rmtree(out / "tokenizer")
    shutil.copytree(CONFIGS_DIR / "clip_tokenizer", out / "tokenizer")


def make_tiny_flux(variant: str = "dev", path: str | os.PathLike | None = None) -> Path:
    """A tiny Flux.1 diffusers folder (`variant` dev: guidance input; schnell: none)."""
    return _materialize(f"flux-{variant}", lambda out: _build_folder(out, variant == "dev"), path)


# ----------------------------------------------------------------------------- single files

def _bfl_transformer(transformer) -> dict:
    """The diffusers transformer's weights in Black Forest Labs' layout (fused qkv and linear1), as ComfyUI
    converts them."""
    from comfy_flux import bfl_to_diffusers_keys_for_model, diffusers_to_bfl

    return diffusers_to_bfl(transformer.state_dict(), **bfl_to_diffusers_keys_for_model(transformer))


def _vae_ldm(vae) -> dict:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from core.models.ldm_convert import vae_to_ldm_state_dict

    return {k.removeprefix("first_stage_model."): v for k, v in vae_to_ldm_state_dict(vae.state_dict(), vae.config).items()}


def _build_single_files(out: Path, guidance: bool) -> None:
    import torch
    from safetensors.torch import save_file

    parts = _parts(guidance, FULL_WIDTH)
    tr, vae, te, te2 = parts["transformer"], parts["vae"], parts["text_encoder"], parts["text_encoder_2"]
    name = "flux1-dev" if guidance else "flux1-schnell"
    bfl = {k: v.to(torch.bfloat16).contiguous() for k, v in _bfl_transformer(tr).items()}
    save_file(bfl, str(out / f"{name}.safetensors"))
    clip = {f"text_model.{k}": v.contiguous() for k, v in te.state_dict().items() if "position_ids" not in k}
    save_file(clip, str(out / "clip_l.safetensors"))
    t5 = {k: v.contiguous() for k, v in te2.state_dict().items() if k != "encoder.embed_tokens.weight"}
    save_file(t5, str(out / "t5xxl_fp16.safetensors"))
    ae = {k: v.contiguous() for k, v in _vae_ldm(vae).items()}
    save_file(ae, str(out / "ae.safetensors"))
    aio = {f"model.diffusion_model.{k}": v.to(torch.float8_e4m3fn) for k, v in bfl.items()}
    aio.update({f"vae.{k}": v for k, v in ae.items()})
    aio.update({f"text_encoders.clip_l.transformer.{k}": v for k, v in clip.items()})
    aio.update({f"text_encoders.t5xxl.transformer.{k}": v for k, v in t5.items()})
    save_file(aio, str(out / f"{name}-aio-fp8.safetensors"))
    # config folder: what a user's own Flux diffusers folder would give as base_config_dir
    from diffusers import FluxPipeline

    cfg = out / "config"
    FluxPipeline(**parts).save_config(str(cfg))
    for sub, model in (("transformer", tr), ("vae", vae)):
        model.save_config(str(cfg / sub))
    te.config.save_pretrained(str(cfg / "text_encoder"))
    te2.config.save_pretrained(str(cfg / "text_encoder_2"))
    parts["scheduler"].save_config(str(cfg / "scheduler"))
    shutil.copytree(CONFIGS_DIR / "clip_tokenizer", cfg / "tokenizer")
    parts["tokenizer_2"].save_pretrained(str(cfg / "tokenizer_2"))
    # the reference: the same weights as a diffusers folder (for comparing what loading gives)
    FluxPipeline(**parts).save_pretrained(str(out / "reference"), safe_serialization=True)
    (out / "model_index.json").write_text(json.dumps({"_note": "single-file bundle"}))


def make_flux_single_files(variant: str = "dev") -> Path:
    """A folder with flux1-<variant>.safetensors (BFL layout, bf16), clip_l.safetensors, t5xxl_fp16.safetensors,
    ae.safetensors, flux1-<variant>-aio-fp8.safetensors (all-in-one, fp8 transformer), config/ (base_config_dir)
    and reference/ (the same weights as a diffusers folder). Shared read-only cache."""
    return _cached(f"flux-{variant}-files", lambda out: _build_single_files(out, variant == "dev"))
