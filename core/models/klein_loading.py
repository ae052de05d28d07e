"""FLUX.2 klein from the files people have in a ComfyUI models folder: the transformer (BFL's
flux-2-klein-base-4b.safetensors, ComfyUI's diffusion_models/ files; fp8 ones are upcast), the Qwen3 text encoder
(text_encoders/qwen_3_4b.safetensors / qwen_3_8b.safetensors: Hugging Face's Qwen3 layout) and the FLUX.2
autoencoder (vae/flux2-vae.safetensors, BFL's layout).

The transformer goes through diffusers' single-file converter with the shipped config of its size (or the user's
base_config_dir); the autoencoder's BFL names are renamed as diffusers' convert_flux2_to_diffusers.py does; Qwen3
is a transformers state dict loaded into a model built from the shipped config. The tokenizer (Qwen3's, about 11
MB) is not shipped: it is taken from base_config_dir or the shipped folder when present, else fetched once.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from .flux_loading import assign_weights, empty_model, finish_model, read_tensors, tensor_names
from .loading import ModelLoadError, shipped_config_dir

TRANSFORMER_PREFIX = "model.diffusion_model."
TOKENIZER_REPO = "Qwen/Qwen3-4B"  # ungated, Apache-2.0; klein 4B and 9B use the Qwen3 tokenizer
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"]


class KleinFileError(ModelLoadError):
    """A klein part is missing or unreadable; the message names the file or setting and the fix."""


def _part(words: str, setting: str, given: str, folder: str) -> Path:
    if not given:
        raise KleinFileError(
            f"This FLUX.2 klein file holds only the transformer: set {setting} to {words} (in a ComfyUI models "
            f"folder it is under {folder}), or use a klein diffusers folder as the base model.")
    p = Path(given).expanduser()
    if not p.is_file():
        raise KleinFileError(f"{setting}: {p} not found. Check the path of {words}.")
    return p


def load_klein_single_file(path: str | Path, *, ae: str = "", qwen3: str = "", base_config_dir: str = "",
                           dtype: torch.dtype = torch.bfloat16, progress: Callable[[str], None] | None = None) -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline, Flux2Transformer2DModel

    from ..families.flux2_klein import variant_of

    path = Path(path)
    variant = variant_of(str(path)) or "base-4b"
    cdir = Path(base_config_dir) if base_config_dir else shipped_config_dir("flux2_klein", variant)
    say = progress or (lambda m: None)
    keys = tensor_names(path)
    prefix = TRANSFORMER_PREFIX if any(k.startswith(TRANSFORMER_PREFIX) for k in keys) else ""
    say(f"Loading the FLUX.2 klein {variant} transformer from {path.name}")
    sd = read_tensors(path, prefix, dtype, exclude=() if prefix else ("vae.", "text_encoders."))
    try:
        transformer = Flux2Transformer2DModel.from_single_file(sd, config=str(cdir), subfolder="transformer",
                                                               torch_dtype=dtype, local_files_only=True)
    except Exception as e:
        raise KleinFileError(f"Could not load {path.name} as a FLUX.2 klein transformer: {type(e).__name__}: "
                             f"{str(e).splitlines()[0][:300]}") from e
    del sd
    ae_file = _part("the FLUX.2 autoencoder (flux2-vae.safetensors)", "ae", ae, "vae/")
    say(f"Loading the autoencoder from {ae_file.name}")
    vae = load_flux2_vae(read_tensors(ae_file, "", dtype), cdir / "vae", dtype, ae_file.name)
    te_file = _part("the Qwen3 text encoder (qwen_3_4b.safetensors for 4B, qwen_3_8b.safetensors for 9B)", "qwen3",
                    qwen3, "text_encoders/")
    say(f"Loading Qwen3 from {te_file.name}")
    te = load_qwen3(read_tensors(te_file, "", dtype), cdir / "text_encoder", dtype, te_file.name)
    tok = load_tokenizer(cdir, progress)
    sched = FlowMatchEulerDiscreteScheduler.from_pretrained(str(cdir), subfolder="scheduler", local_files_only=True)
    return Flux2KleinPipeline(scheduler=sched, vae=vae, text_encoder=te, tokenizer=tok, transformer=transformer,
                              is_distilled=not variant.startswith("base"))


def load_flux2_vae(sd: dict[str, torch.Tensor], config_folder: Path, dtype: torch.dtype, name: str):
    """The FLUX.2 autoencoder from BFL's layout (encoder.down.N.block..., encoder.quant_conv, bn.running_*) or
    diffusers' own."""
    from diffusers import AutoencoderKLFlux2
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    config = AutoencoderKLFlux2.load_config(str(config_folder))
    if not any(k.startswith("encoder.down_blocks.") for k in sd):
        bn = {k: v for k, v in sd.items() if k.startswith("bn.")}
        renamed = {k.replace("encoder.quant_conv.", "quant_conv.").replace("decoder.post_quant_conv.",
                                                                           "post_quant_conv."): v
                   for k, v in sd.items() if not k.startswith("bn.")}
        sd = {**convert_ldm_vae_checkpoint(renamed, config), **bn}
    sd.pop("bn.num_batches_tracked", None)
    with torch.device("meta"):
        model = AutoencoderKLFlux2.from_config(config)
    model = assign_weights(model, sd, name, "FLUX.2 autoencoder", optional=("num_batches_tracked",),
                           family="FLUX.2 (flux2-vae.safetensors; Flux.1's ae.safetensors has 16 channels)",
                           error=KleinFileError)
    if model.bn.num_batches_tracked.is_meta:
        model.bn.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
    return model.to(dtype).eval()


def load_qwen3(sd: dict[str, torch.Tensor], config_folder: Path, dtype: torch.dtype, name: str):
    """Qwen3 from a Hugging Face-layout state dict (model.layers.N..., with or without the model. level and the
    output head, which klein does not use)."""
    from transformers import Qwen3ForCausalLM
    from transformers.models.qwen3.modeling_qwen3 import Qwen3RotaryEmbedding

    if not any(k.startswith("model.") for k in sd):
        sd = {(k if k.startswith("lm_head.") else f"model.{k}"): v for k, v in sd.items()}
    model = empty_model(Qwen3ForCausalLM, config_folder, dtype)
    model = assign_weights(model, sd, name, "Qwen3 text encoder", optional=("lm_head.weight",),
                           family="FLUX.2 klein (Qwen3-4B for klein 4B, Qwen3-8B for 9B)", error=KleinFileError)
    if model.lm_head.weight.is_meta:  # not stored: only the hidden states are used
        model.lm_head.weight = model.model.embed_tokens.weight
    model.model.rotary_emb = Qwen3RotaryEmbedding(config=model.config)
    return finish_model(model, dtype)


def load_tokenizer(cdir: Path, progress: Callable[[str], None] | None = None):
    """The Qwen3 tokenizer from the config folder's tokenizer/, else fetched once from the hub."""
    from transformers import AutoTokenizer

    folder = cdir / "tokenizer"
    if folder.is_dir():
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    from ..hub import snapshot

    got = snapshot(TOKENIZER_REPO, allow_patterns=TOKENIZER_FILES, progress=progress, error=KleinFileError,
                   advice="The Qwen3 tokenizer (about 15 MB) is downloaded once. Offline, copy the tokenizer folder "
                          f"of a FLUX.2 klein diffusers model into {folder}, or set base_config_dir to a klein "
                          "diffusers folder.")
    return AutoTokenizer.from_pretrained(got, local_files_only=True)
