"""Tiny random-weight FLUX.2 klein models for tests.

`make_tiny_klein` writes a diffusers Flux2KleinPipeline folder with klein's structure (one double and one single
block, narrow widths, a Qwen3 of 27 layers so that the pipeline's hidden-state layers 9, 18, 27 exist, an
autoencoder with non-trivial BatchNorm statistics) and a Qwen2 byte-level BPE tokenizer built offline with Qwen3's
special tokens and chat template. `make_klein_single_files` writes what a ComfyUI models folder holds: the
transformer in BFL's layout (bf16), qwen_3_4b.safetensors (Hugging Face's Qwen3 layout without the output head),
flux2-vae.safetensors (BFL's autoencoder layout) and a config folder to give as base_config_dir, plus reference/
(the same weights as a diffusers folder). Builds are cached like tests/tiny_models.py.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from tiny_models import SEED, _cached, _materialize

DATA = Path(__file__).resolve().parent / "data"
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]


def qwen_tokenizer():
    """A Qwen2 byte-level BPE tokenizer (one token per byte, a few merges) with Qwen3's chat tokens and template."""
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    alphabet = list(bytes_to_unicode().values())
    merges = [("Ġ", "a"), ("z", "q"), ("zq", "x")]
    vocab = {c: i for i, c in enumerate(alphabet + ["".join(m) for m in merges])}
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges)
    tok.add_special_tokens({"additional_special_tokens": SPECIALS[1:]})
    tok.add_tokens(SPECIALS, special_tokens=True)
    tok.chat_template = (DATA / "qwen3_chat_template.jinja").read_text(encoding="utf-8")
    return tok


def _parts(seed: int = SEED):
    from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2Transformer2DModel
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tok = qwen_tokenizer()
    torch.manual_seed(seed)
    te = Qwen3ForCausalLM(Qwen3Config(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=27,
                                      num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                                      max_position_embeddings=1024, tie_word_embeddings=True,
                                      pad_token_id=tok.pad_token_id))
    torch.manual_seed(seed + 1)
    tr = Flux2Transformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                 attention_head_dim=16, num_attention_heads=2, joint_attention_dim=48,
                                 timestep_guidance_channels=32, mlp_ratio=3.0, axes_dims_rope=(4, 4, 4, 4),
                                 guidance_embeds=False)
    torch.manual_seed(seed + 2)
    vae = AutoencoderKLFlux2(block_out_channels=(8,) * 4, layers_per_block=1, latent_channels=4, norm_num_groups=4,
                             sample_size=64)
    with torch.no_grad():
        vae.bn.running_mean.uniform_(-0.2, 0.2)
        vae.bn.running_var.uniform_(0.5, 2.0)
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, time_shift_type="exponential")
    return dict(scheduler=sched, vae=vae, text_encoder=te, tokenizer=tok, transformer=tr)


def _build_folder(out: Path, distilled: bool) -> None:
    from diffusers import Flux2KleinPipeline

    Flux2KleinPipeline(**_parts(), is_distilled=distilled).save_pretrained(str(out), safe_serialization=True)


def make_tiny_klein(variant: str = "base", path: str | os.PathLike | None = None) -> Path:
    """A tiny klein diffusers folder (`variant` base, or distilled: is_distilled in model_index.json)."""
    return _materialize(f"klein-{variant}", lambda out: _build_folder(out, variant == "distilled"), path)


# ----------------------------------------------------------------------------- single files

DOUBLE = {"attn.to_out.0": "img_attn.proj", "attn.to_add_out": "txt_attn.proj", "ff.linear_in": "img_mlp.0",
          "ff.linear_out": "img_mlp.2", "ff_context.linear_in": "txt_mlp.0", "ff_context.linear_out": "txt_mlp.2",
          "attn.norm_q": "img_attn.norm.query_norm", "attn.norm_k": "img_attn.norm.key_norm",
          "attn.norm_added_q": "txt_attn.norm.query_norm", "attn.norm_added_k": "txt_attn.norm.key_norm"}
SINGLE = {"attn.to_qkv_mlp_proj": "linear1", "attn.to_out": "linear2", "attn.norm_q": "norm.query_norm",
          "attn.norm_k": "norm.key_norm"}
GLOBAL = {"x_embedder": "img_in", "context_embedder": "txt_in", "proj_out": "final_layer.linear",
          "time_guidance_embed.timestep_embedder.linear_1": "time_in.in_layer",
          "time_guidance_embed.timestep_embedder.linear_2": "time_in.out_layer",
          "double_stream_modulation_img.linear": "double_stream_modulation_img.lin",
          "double_stream_modulation_txt.linear": "double_stream_modulation_txt.lin",
          "single_stream_modulation.linear": "single_stream_modulation.lin"}


def klein_to_bfl(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers klein transformer state dict in BFL's layout (the reverse of diffusers' single-file converter):
    q/k/v fused, norms as .scale, norm_out's halves swapped back."""
    out: dict[str, torch.Tensor] = {}
    for key, t in sd.items():
        t = t.detach().clone()  # never the model's own storage
        module, param = key.rsplit(".", 1)
        parts = module.split(".")
        if parts[0] == "transformer_blocks":
            rest = ".".join(parts[2:])
            base = f"double_blocks.{parts[1]}"
            if rest in ("attn.to_q", "attn.add_q_proj"):
                names = ("to_q", "to_k", "to_v") if rest == "attn.to_q" else ("add_q_proj", "add_k_proj", "add_v_proj")
                fused = torch.cat([sd[f"transformer_blocks.{parts[1]}.attn.{n}.{param}"] for n in names])
                out[f"{base}.{'img' if rest == 'attn.to_q' else 'txt'}_attn.qkv.{param}"] = fused
            elif rest in DOUBLE:
                out[f"{base}.{DOUBLE[rest]}.{'scale' if 'norm' in rest else param}"] = t
        elif parts[0] == "single_transformer_blocks":
            rest = ".".join(parts[2:])
            out[f"single_blocks.{parts[1]}.{SINGLE[rest]}.{'scale' if 'norm' in rest else param}"] = t
        elif module == "norm_out.linear":
            scale, shift = t.chunk(2, dim=0)
            out[f"final_layer.adaLN_modulation.1.{param}"] = torch.cat([shift, scale])
        else:
            out[f"{GLOBAL[module]}.{param}"] = t
    return out


def flux2_vae_to_bfl(vae) -> dict[str, torch.Tensor]:
    """The autoencoder in BFL's layout: the LDM names, with quant_conv inside the encoder and post_quant_conv
    inside the decoder, and the BatchNorm statistics."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from core.models.ldm_convert import vae_to_ldm_state_dict

    sd = vae.state_dict()
    ldm = {k.removeprefix("first_stage_model."): v
           for k, v in vae_to_ldm_state_dict({k: v for k, v in sd.items() if not k.startswith("bn.")},
                                             vae.config).items()}
    out = {}
    for k, v in ldm.items():
        k = "encoder." + k if k.startswith("quant_conv.") else ("decoder." + k if k.startswith("post_quant_conv.") else k)
        out[k] = v.contiguous()
    out["bn.running_mean"], out["bn.running_var"] = sd["bn.running_mean"], sd["bn.running_var"]
    return out


def _build_single_files(out: Path) -> None:
    from diffusers import Flux2KleinPipeline
    from safetensors.torch import save_file

    parts = _parts()
    tr, vae, te = parts["transformer"], parts["vae"], parts["text_encoder"]
    bfl = {k: v.to(torch.bfloat16).contiguous() for k, v in klein_to_bfl(tr.state_dict()).items()}
    save_file(bfl, str(out / "flux-2-klein-base-4b.safetensors"))
    save_file({k: v.contiguous() for k, v in te.state_dict().items() if k != "lm_head.weight"},
              str(out / "qwen_3_4b.safetensors"))
    save_file(flux2_vae_to_bfl(vae), str(out / "flux2-vae.safetensors"))
    cfg = out / "config"
    pipe = Flux2KleinPipeline(**parts)
    pipe.save_config(str(cfg))
    for sub, model in (("transformer", tr), ("vae", vae), ("scheduler", parts["scheduler"])):
        model.save_config(str(cfg / sub))
    te.config.save_pretrained(str(cfg / "text_encoder"))
    parts["tokenizer"].save_pretrained(str(cfg / "tokenizer"))
    # the reference: the same weights as a diffusers folder (bf16-rounded transformer, as in the file)
    tr.to(torch.bfloat16).to(torch.float32)
    Flux2KleinPipeline(**parts).save_pretrained(str(out / "reference"), safe_serialization=True)
    shutil.copy(cfg / "model_index.json", out / "model_index.json")


def make_klein_single_files() -> Path:
    """A folder with flux-2-klein-base-4b.safetensors (BFL layout, bf16), qwen_3_4b.safetensors,
    flux2-vae.safetensors, config/ (base_config_dir) and reference/. Shared read-only cache."""
    return _cached("klein-files", _build_single_files)
