"""Flux.1 from the files users have: a transformer-only file (BFL's flux1-dev.safetensors, a ComfyUI 'unet'
file) with separate CLIP-L, T5-XXL and autoencoder files, or an all-in-one checkpoint
(`model.diffusion_model.`, `vae.`, `text_encoders.clip_l.transformer.`, `text_encoders.t5xxl.transformer.`).

The transformer and the autoencoder go through diffusers' own single-file converters (given the
shipped configs, so nothing is fetched); the text encoders are plain transformers state dicts and are
loaded into models built from the shipped configs. fp8 weights are upcast on load, but T5-XXL's with
t5xxl_precision fp8: its tensors are read as stored and cast once, the Linear weights straight to fp8 (those of
t5xxl_fp8_e4m3fn.safetensors are kept as they are), the rest to the compute dtype.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from .choose import is_dev
from .loading import ModelLoadError, shipped_config_dir

TRANSFORMER_PREFIX = "model.diffusion_model."
VAE_PREFIX = "vae."
CLIP_PREFIX = "text_encoders.clip_l.transformer."
T5_PREFIX = "text_encoders.t5xxl.transformer."
FOREIGN = (VAE_PREFIX, "text_encoders.", "first_stage_model.", "cond_stage_model.", "conditioner.")
T5_TOKENIZER_REPO = "black-forest-labs/FLUX.1-schnell"  # ungated; its tokenizer_2 is the T5-XXL tokenizer


class FluxFileError(ModelLoadError):
    """A Flux part is missing or unreadable; the message names the file or setting and the fix."""


def tensor_names(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return list(f.keys())


def read_tensors(path: Path, prefix: str, dtype: torch.dtype | None, exclude: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The tensors under `prefix` (prefix removed), float8 and other floats cast to `dtype` (None: as stored)."""
    from safetensors import safe_open

    out = {}
    with safe_open(str(path), "pt") as f:
        for k in f.keys():
            if k.startswith(prefix) and not (exclude and k.startswith(exclude)):
                t = f.get_tensor(k)
                out[k[len(prefix):]] = t.to(dtype) if t.is_floating_point() and dtype is not None else t
    return out


def config_dir(variant: str, base_config_dir: str = "") -> Path:
    if base_config_dir:
        return Path(base_config_dir)
    return shipped_config_dir(f"flux-{variant}")


def _part(name: str, setting: str, given: str, inside: bool) -> Path | None:
    if inside:
        return None
    if not given:
        raise FluxFileError(
            f"This Flux file holds only the transformer: set {setting} to the {name} file (in a ComfyUI models "
            f"folder it is under {'text_encoders/ or clip/' if setting != 'ae' else 'vae/'}), or use a Flux "
            "diffusers folder or an all-in-one checkpoint as the base model.")
    p = Path(given).expanduser()
    if not p.is_file():
        raise FluxFileError(f"{setting}: {p} not found. Check the path of the {name} file.")
    return p


def load_flux_single_file(path: str | Path, *, clip_l: str = "", t5xxl: str = "", ae: str = "", vae: str = "",
                          base_config_dir: str = "", dtype: torch.dtype = torch.float32,
                          progress: Callable[[str], None] | None = None, t5_fp8: bool = False) -> Any:
    """A FluxPipeline from single files (see the module docstring); `t5_fp8`: T5-XXL's Linear weights stored in
    fp8 (core/models/t5_fp8.py)."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    path = Path(path)
    keys = tensor_names(path)
    variant = "dev" if is_dev(keys) else "schnell"
    cdir = config_dir(variant, base_config_dir)
    say = progress or (lambda m: None)
    prefix = TRANSFORMER_PREFIX if any(k.startswith(TRANSFORMER_PREFIX) for k in keys) else ""
    say(f"Loading the Flux.1 {variant} transformer from {path.name}")
    sd = read_tensors(path, prefix, dtype, exclude=() if prefix else FOREIGN)
    try:
        transformer = FluxTransformer2DModel.from_single_file(sd, config=str(cdir), subfolder="transformer",
                                                              torch_dtype=dtype, local_files_only=True)
    except Exception as e:
        raise FluxFileError(f"Could not load {path.name} as a Flux.1 transformer: {type(e).__name__}: "
                            f"{str(e).splitlines()[0][:300]}") from e
    del sd
    ae_file = _part("autoencoder (ae.safetensors)", "ae", ae or vae, any(k.startswith(VAE_PREFIX) for k in keys))
    say(f"Loading the autoencoder from {(ae_file or path).name}")
    vae_sd = read_tensors(ae_file, "", dtype) if ae_file else read_tensors(path, VAE_PREFIX, dtype)
    try:
        vae_model = AutoencoderKL.from_single_file(vae_sd, config=str(cdir), subfolder="vae", torch_dtype=dtype,
                                                   local_files_only=True)
    except Exception as e:
        raise FluxFileError(f"Could not load {(ae_file or path).name} as the Flux autoencoder: {type(e).__name__}: "
                            f"{str(e).splitlines()[0][:300]}") from e
    clip_file = _part("CLIP-L text encoder (clip_l.safetensors)", "clip_l", clip_l, any(k.startswith(CLIP_PREFIX) for k in keys))
    t5_file = _part("T5-XXL text encoder (t5xxl_fp16.safetensors)", "t5xxl", t5xxl, any(k.startswith(T5_PREFIX) for k in keys))
    say(f"Loading CLIP-L from {(clip_file or path).name}")
    clip = load_clip_l(read_tensors(clip_file, "", dtype) if clip_file else read_tensors(path, CLIP_PREFIX, dtype),
                       cdir / "text_encoder", dtype, (clip_file or path).name)
    say(f"Loading T5-XXL from {(t5_file or path).name}")
    read = None if t5_fp8 else dtype  # fp8: cast once by store_t5_fp8
    t5 = load_t5(read_tensors(t5_file, "", read) if t5_file else read_tensors(path, T5_PREFIX, read),
                 cdir / "text_encoder_2", dtype, (t5_file or path).name, fp8=t5_fp8)
    tok, tok2 = load_tokenizers(cdir, progress)
    sched = FlowMatchEulerDiscreteScheduler.from_pretrained(str(cdir), subfolder="scheduler", local_files_only=True)
    return FluxPipeline(scheduler=sched, vae=vae_model, text_encoder=clip, tokenizer=tok, text_encoder_2=t5,
                        tokenizer_2=tok2, transformer=transformer)


def empty_model(cls, config_folder: Path, dtype: torch.dtype):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(config_folder), local_files_only=True)
    with torch.device("meta"):
        model = cls(config)
    return model


def assign_weights(model, sd: dict[str, torch.Tensor], name: str, what: str, optional: tuple[str, ...] = (),
                   family: str = "Flux.1", error: type[ModelLoadError] | None = None) -> Any:
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not k.endswith(optional)]
    wrong = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or wrong:
        example = (missing or wrong)[0]
        raise (error or FluxFileError)(
            f"{name} is not a {what} file that fits this model ({len(missing)} weights missing, {len(wrong)} of "
            f"another shape, e.g. {example}). Choose the {what} file that belongs to {family}.")
    model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False, assign=True)
    return model


def load_clip_l(sd: dict[str, torch.Tensor], config_folder: Path, dtype: torch.dtype, name: str):
    """CLIP-L from a ComfyUI/HF-layout state dict (`text_model.` level removed for transformers 5)."""
    from transformers import CLIPTextModel

    sd = {k.removeprefix("text_model."): v for k, v in sd.items()}
    model = empty_model(CLIPTextModel, config_folder, dtype)
    if any(k.startswith("text_model.") for k in model.state_dict()):  # transformers 4 keeps the level
        sd = {k if k.startswith("text_projection") else f"text_model.{k}": v for k, v in sd.items()}
    model = assign_weights(model, sd, name, "CLIP-L text encoder", optional=("position_ids",))
    return finish_model(model, dtype)


def load_t5(sd: dict[str, torch.Tensor], config_folder: Path, dtype: torch.dtype, name: str, fp8: bool = False):
    """T5-XXL encoder from an HF-layout state dict (the embedding is stored once, as `shared.weight`); `fp8`: its
    Linear weights stored in fp8, computed in `dtype` (`sd` as stored: float8 ones are used as they are)."""
    from transformers import T5EncoderModel

    if "shared.weight" not in sd and "encoder.embed_tokens.weight" in sd:
        sd["shared.weight"] = sd["encoder.embed_tokens.weight"]
    sd.setdefault("encoder.embed_tokens.weight", sd.get("shared.weight"))
    model = empty_model(T5EncoderModel, config_folder, dtype)
    model = assign_weights(model, {k: v for k, v in sd.items() if v is not None}, name, "T5-XXL text encoder")
    model.encoder.embed_tokens = model.shared
    if fp8:
        from .t5_fp8 import store_t5_fp8

        store_t5_fp8(model, dtype)
        return finish_model(model, None)
    return finish_model(model, dtype)


def finish_model(model, dtype: torch.dtype | None):
    if dtype is not None:
        model.to(dtype)
    # buffers that are not stored in files (position ids) are still on the meta device
    for mod in model.modules():
        for bname, buf in list(mod.named_buffers(recurse=False)):
            if buf.is_meta:
                if bname == "position_ids":
                    mod.register_buffer(bname, torch.arange(buf.shape[-1]).expand(buf.shape), persistent=False)
                else:
                    raise FluxFileError(f"internal: buffer {bname} of {type(mod).__name__} not loaded")
    return model.eval()


def load_tokenizers(cdir: Path, progress: Callable[[str], None] | None = None):
    """CLIP tokenizer (shipped) and the T5 tokenizer (from the config folder, else fetched once from the hub)."""
    from transformers import AutoTokenizer, CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(cdir / "tokenizer"), local_files_only=True)
    t5_dir = cdir / "tokenizer_2"
    if t5_dir.is_dir():
        return tok, AutoTokenizer.from_pretrained(str(t5_dir), local_files_only=True)
    from ..hub import snapshot

    folder = snapshot(T5_TOKENIZER_REPO, allow_patterns=["tokenizer_2/*"], progress=progress, error=FluxFileError,
                      advice="The T5 tokenizer (about 2 MB) is downloaded once. Offline, copy the tokenizer_2 folder "
                             f"of a Flux diffusers model into {t5_dir}, or set base_config_dir to a Flux diffusers "
                             "folder.")
    return tok, AutoTokenizer.from_pretrained(str(Path(folder) / "tokenizer_2"), local_files_only=True)
