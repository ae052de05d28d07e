"""Model family detection for single-file checkpoints and diffusers folders.

Single files are recognised from tensor names and shapes only. For ``.safetensors`` only
the JSON header is read (no tensor data); ``.ckpt/.pt/.pth/.bin`` go through
``torch.load(weights_only=True)``. Files that are not a base model (a LoRA, a VAE, a text
encoder, an embedding, a damaged download...) raise :class:`ModelFileError` with a
plain-English explanation of what the file is and what to do instead.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from .. import families

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
UNET = "model.diffusion_model."
_MAX_HEADER = 100 * 1024 * 1024


class ModelFileError(ValueError):
    """A model file that cannot be used as a base model; the message says why and what to do."""


@dataclass(frozen=True)
class DetectResult:
    family: str  # one of FAMILIES
    is_v_pred_guess: bool  # best guess from the weights; the user setting wins
    reason: str  # one line: which evidence decided
    # What the file holds, among "unet" (the denoiser: UNet or Flux/SD3 transformer), "vae",
    # "text_encoder", "text_encoder_2". A UNet-only file needs the other parts from elsewhere.
    components: tuple[str, ...] = field(default=())


Shapes = dict[str, tuple]


# ----------------------------------------------------------------------------- classification


def _shape(keys: Shapes, *names: str) -> tuple | None:
    for name in names:
        if name in keys:
            return tuple(keys[name])
    return None


def _starts(keys: Shapes, *prefixes: str) -> bool:
    return any(k.startswith(prefixes) for k in keys)


def _not_base_model(keys: Shapes, metadata: dict[str, str], name: str) -> None:
    """Raise ModelFileError when the tensors are a known kind of non-base file."""
    lower = [k.lower() for k in keys]
    adapter_marks = ("lora_down", "lora_up", "lora_a.", "lora_b.", "lora.down", "lora.up", "hada_w1", "hada_w2",
                     "lokr_w1", "lokr_w2", "oft_blocks", "oft_diag", ".dora_scale")
    adapter_keys = sum(any(mark in k for mark in adapter_marks) for k in lower)
    # Adapter files are mostly adapter tensors (plus alphas); a full checkpoint with a stray key is not.
    if adapter_keys * 3 >= len(keys) > 0 or "ss_network_module" in metadata:
        raise ModelFileError(
            f"{name} is a LoRA / LyCORIS file (it only holds the small adapter weights), not a base model. "
            "Choose a full base model (an SD 1.5, SDXL or Flux.1 checkpoint of several gigabytes, or a diffusers "
            "folder) as the base model; a LoRA is used on top of one, for example in the Generate tab."
        )
    embedding_keys = {"emb_params", "string_to_param", "string_to_token", "clip_l", "clip_g"}
    if keys and (set(keys) <= embedding_keys | {"name", "step", "sd_checkpoint", "sd_checkpoint_name"}
                 or any(k.startswith("string_to_param.") for k in keys)):
        raise ModelFileError(
            f"{name} is a textual-inversion embedding (a few learned token vectors), not a base model. "
            "Embeddings are used in prompts at generation time; for training choose a full Stable Diffusion "
            "checkpoint as the base model."
        )
    stripped = {k.removeprefix("first_stage_model.").removeprefix("vae."): v for k, v in keys.items()}
    vae_parts = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")
    if stripped and all(k.startswith(vae_parts) for k in stripped) and (
        "decoder.conv_in.weight" in stripped or "encoder.conv_in.weight" in stripped
    ):
        raise ModelFileError(
            f"{name} is a VAE on its own (only the image encoder/decoder), not a base model. Choose a full "
            "Stable Diffusion checkpoint as the base model; a separate VAE file can be set in the VAE option "
            "if you want to replace the checkpoint's own VAE."
        )
    te_parts = ("text_model.", "cond_stage_model.", "conditioner.", "text_encoders.", "transformer.resblocks.",
                "encoder.block.", "shared.", "token_embedding.", "positional_embedding", "ln_final.",
                "text_projection", "logit_scale", "te.", "te1.", "te2.")
    if keys and all(k.startswith(te_parts) for k in keys):
        raise ModelFileError(
            f"{name} holds only a text encoder (CLIP or T5), not a base model. Choose a full checkpoint that "
            "also contains the UNet/transformer and the VAE."
        )
    if _starts(keys, "control_model.", "controlnet_", "input_hint_block.", "zero_convs."):
        raise ModelFileError(
            f"{name} is a ControlNet, not a base model. Choose a full Stable Diffusion checkpoint as the base model."
        )


def _components(keys: Shapes) -> tuple[str, ...]:
    found = []
    if _starts(keys, UNET, "input_blocks.", "down_blocks.", "double_blocks.", "joint_blocks.", "transformer_blocks."):
        found.append("unet")
    if _starts(keys, "first_stage_model.", "vae.", "encoder.conv_in", "decoder.conv_in"):
        found.append("vae")
    if _starts(keys, "cond_stage_model.", "conditioner.embedders.0.", "text_encoders.clip_l.", "text_encoders.clip_g."):
        found.append("text_encoder")
    if _starts(keys, "conditioner.embedders.1.", "text_encoders.t5xxl."):
        found.append("text_encoder_2")
    return tuple(found)


def _cross_attention_dim(keys: Shapes) -> tuple[int, str] | None:
    """Width of the text conditioning, from the first cross-attention key projection."""
    candidates = [k for k in keys if k.endswith("attn2.to_k.weight")]
    if not candidates:
        return None
    key = sorted(candidates)[0]
    return int(keys[key][-1]), key


def _marker_width_fits(keys: Shapes, prefixes: tuple[str, ...], widths: tuple[int, ...]) -> bool:
    """The family's marker weights have one of its input widths (FLUX.2 klein and dev share tensor names)."""
    if not widths:
        return True
    return any(k.startswith(prefixes) and k.endswith(".weight") and len(s) == 2 and s[-1] in widths
               for k, s in keys.items())


def detect_single_file_family(keys_and_shapes: Shapes, metadata: dict[str, str] | None = None,
                              name: str = "This file", config_family: str | None = None) -> DetectResult:
    """Detect the model family from tensor names and shapes (``{name: shape}``).

    ``metadata`` is the safetensors ``__metadata__`` if any. ``config_family`` is the family of a
    config folder the user gave for a non-standard architecture: it is trusted when the widths are
    not those of a released model. Raises ModelFileError for files that are not a base model or
    that are not recognised.
    """
    keys = {k: tuple(v) for k, v in keys_and_shapes.items()}
    metadata = metadata or {}
    if not keys:
        raise ModelFileError(f"{name} contains no tensors. The file is empty or damaged; download it again.")
    _not_base_model(keys, metadata, name)
    components = _components(keys)
    v_pred_marker = "v_pred" in keys or "edm_vpred.sigma_max" in keys

    # Transformer families first: their names never collide with the UNet ones. Where families share block names
    # (FLUX.2 and Chroma reuse Flux.1's), the one with the higher marker_rank is checked first (core/families).
    for spec in sorted((f for f in families.known() if f.markers), key=lambda f: -f.marker_rank):
        prefixes = (*spec.markers, *(UNET + m for m in spec.markers))
        if _starts(keys, *prefixes) and (config_family == spec.name
                                         or _marker_width_fits(keys, prefixes, spec.marker_widths)):
            return DetectResult(spec.name, False, spec.detect_words, components)

    adm = _shape(keys, UNET + "label_emb.0.0.weight", "label_emb.0.0.weight", "add_embedding.linear_1.weight")
    cross = _cross_attention_dim(keys)
    has_unet = _starts(keys, UNET, "input_blocks.", "down_blocks.")
    if not has_unet:
        raise ModelFileError(
            f"{name} does not contain a Stable Diffusion UNet or a Flux/SD3 transformer, so it cannot be "
            "used as a base model. Check that you picked the right file; base checkpoints are usually "
            "2-7 GB .safetensors files."
        )

    inpaint = _shape(keys, UNET + "input_blocks.0.0.weight", "input_blocks.0.0.weight", "conv_in.weight")
    note = " (inpainting model: 9 input channels)" if inpaint and len(inpaint) == 4 and inpaint[1] == 9 else ""

    unets = [f for f in families.known() if f.cross_attention_width]
    if adm is not None and len(adm) == 2:
        for spec in unets:
            if spec.adm_inputs == adm[1]:
                why = f"{spec.detect_words} ({adm[1]} inputs)" + (" and a 'v_pred' marker key" if v_pred_marker else "")
                return DetectResult(spec.name, v_pred_marker and spec.name in families.names(), why + note, components)
    if cross is not None:
        width, key = cross
        for spec in unets:
            if spec.cross_attention_width == width:
                v_pred = spec.v_pred_guess if spec.v_pred_guess is not None else v_pred_marker
                words = spec.extra.get("encoder_words")
                why = f"cross-attention width {width}" + (f" ({words})" if words else "") + f" at {key}" + note
                if spec.extra.get("detect_note"):
                    why += "; " + spec.extra["detect_note"]
                return DetectResult(spec.name, v_pred if spec.name in families.names() else False, why, components)
    if config_family is not None:
        return DetectResult(config_family, v_pred_marker, "family taken from the given config folder", components)
    raise ModelFileError(
        f"{name} looks like a diffusion UNet but its layout is not one this trainer supports "
        "(SD 1.x, SD 2.x, SDXL). If it is one of those saved in an unusual layout, give the folder of a diffusers "
        "model of the same kind (with unet/config.json) as its configs: base_config_dir in training, --config-dir "
        "in the LoRA tools. If it is another architecture, choose a supported base model instead."
    )


# ----------------------------------------------------------------------------- files


def _sniff(head: bytes) -> str | None:
    """Name a well-known non-safetensors content from its first bytes."""
    text = head.lstrip()[:64].lower()
    if head.startswith(b"PK\x03\x04"):
        return "a PyTorch pickle archive (.ckpt/.pt) with a .safetensors name"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a legacy PyTorch pickle"
    if text.startswith((b"<!doctype", b"<html", b"<?xml")):
        return "a web page (the download probably failed or needed a login)"
    if text.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer (only a reference to the real file; fetch it with git lfs pull)"
    if text.startswith((b"{", b"[")):
        return "a JSON text file"
    return None


def read_safetensors_header(path: str | Path) -> tuple[Shapes, dict[str, str]]:
    """Return ``({tensor name: shape}, metadata)`` from a safetensors header, validating that the
    file is long enough for every tensor it declares. Raises ModelFileError otherwise."""
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ModelFileError(f"{path.name} is only {size} bytes long, so it is not a model file. "
                                 "Download it again.")
        (header_len,) = struct.unpack("<Q", head)
        if header_len == 0 or header_len > _MAX_HEADER or header_len > size - 8:
            what = _sniff(head + f.read(56))
            raise _not_safetensors(path, what, header_len > size - 8 and header_len <= _MAX_HEADER)
        raw = f.read(header_len)
    try:
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise ValueError("header is not an object")
        metadata = header.pop("__metadata__", None) or {}
        shapes, end = {}, 0
        for name, info in header.items():
            begin, stop = info["data_offsets"]
            shapes[name] = tuple(int(d) for d in info["shape"])
            end = max(end, int(stop))
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(
            f"{path.name} has a damaged safetensors header ({exc}). The file is corrupt or was cut off while "
            "downloading; download it again."
        ) from None
    available = size - 8 - header_len
    if end > available:
        raise ModelFileError(
            f"{path.name} is truncated: its header promises {end + 8 + header_len:,} bytes but the file has only "
            f"{size:,}. The download was probably interrupted; download it again (and check free disk space)."
        )
    return shapes, {str(k): str(v) for k, v in metadata.items()}


def _not_safetensors(path: Path, what: str | None, maybe_truncated: bool) -> ModelFileError:
    if what is not None:
        hint = (" Rename it to .ckpt if it really is a pickle, or better, get the .safetensors version."
                if "pickle" in what else " Download the real model file again.")
        return ModelFileError(f"{path.name} is not a safetensors file: it is {what}.{hint}")
    if maybe_truncated:
        return ModelFileError(f"{path.name} is not a readable safetensors file: its header is longer than the file. "
                              "The file is truncated or corrupt; download it again.")
    return ModelFileError(f"{path.name} is not a safetensors file (its first bytes are not a safetensors header). "
                          "Check that you picked a model file; download it again if it should be one.")


def _pickle_keys_and_shapes(path: Path) -> Shapes:
    import pickle

    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" not in str(exc).lower():
            raise _unreadable_pickle(path, exc) from None
        needed = re.search(r"GLOBAL ([\w.]+)", str(exc))
        detail = f" (it asks for {needed[1]})" if needed else ""
        raise ModelFileError(
            f"{path.name} is a pickle that needs unsafe loading: opening it would run code stored inside the "
            f"file{detail}, which this trainer never does. Get the .safetensors version of this model (most "
            "model pages offer one), or convert it yourself only if you trust where the file came from."
        ) from None
    except Exception as exc:  # torch raises RuntimeError, KeyError, EOFError... for damaged files
        raise _unreadable_pickle(path, exc) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ModelFileError(f"{path.name} does not hold a dictionary of weights, so it is not a model checkpoint.")
    shapes: Shapes = {}
    for key, value in obj.items():
        if isinstance(value, torch.Tensor):
            shapes[str(key)] = tuple(value.shape)
        elif isinstance(value, dict) and key == "string_to_param":  # textual-inversion .pt
            shapes.update({f"string_to_param.{k}": tuple(v.shape) for k, v in value.items()
                           if isinstance(v, torch.Tensor)})
    return shapes


def _unreadable_pickle(path: Path, exc: Exception) -> ModelFileError:
    message = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
    return ModelFileError(
        f"{path.name} could not be read as a PyTorch checkpoint ({type(exc).__name__}: {message}). It is corrupt, "
        "truncated or not a model file; download it again, preferably as .safetensors."
    )


def inspect_model_file(path: str | Path, config_family: str | None = None) -> DetectResult:
    """Detect the family of a single-file base model, or raise ModelFileError explaining why not."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path} does not exist. Check the path of the base model.")
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder, not a model file. For a diffusers model folder use "
                             "the folder itself as the model; it must contain model_index.json.")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return detect_single_file_family(_pickle_keys_and_shapes(path), {}, path.name, config_family)
    shapes, metadata = read_safetensors_header(path)
    return detect_single_file_family(shapes, metadata, path.name, config_family)


# ----------------------------------------------------------------------------- diffusers folders

def native_image_size(path: str | Path) -> int | None:
    """The image size a diffusers folder was trained at: the UNet's sample_size times the VAE's down-sampling
    (64 x 8 = 512 for SD1.5, 128 x 8 = 1024 for SDXL, 8 x 4 = 32 for the built-in toy model); None when the
    folder's configs do not say."""
    path = Path(path)
    try:
        unet = json.loads((path / "unet" / "config.json").read_text(encoding="utf-8"))
        vae = json.loads((path / "vae" / "config.json").read_text(encoding="utf-8"))
        sample, blocks = int(unet["sample_size"]), len(vae["block_out_channels"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return sample * 2 ** (blocks - 1) if sample > 0 and blocks > 0 else None


def detect_diffusers_folder(path: str | Path) -> str:
    """Family of a diffusers pipeline folder, from ``model_index.json`` (and the UNet config for SD1/SD2)."""
    path = Path(path)
    index = path / "model_index.json"
    if not index.is_file():
        raise ModelFileError(f"{path} is not a diffusers model folder (it has no model_index.json). Choose the "
                             "folder that contains model_index.json, or a single .safetensors checkpoint.")
    try:
        config = json.loads(index.read_text(encoding="utf-8"))
        class_name = config["_class_name"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(f"{index} is damaged ({exc}); download the model folder again.") from None
    family = families.of_pipeline(class_name)
    if family is not None:
        # The SDXL refiner ships as an img2img pipeline without the first text encoder.
        if family == "sdxl" and (config.get("text_encoder") or [None])[0] is None:
            return "sdxl_refiner"
        return family
    if class_name.startswith("StableDiffusion") and "XL" not in class_name and "3" not in class_name:
        try:
            unet = json.loads((path / "unet" / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return "sd15"
        return "sd2" if unet.get("cross_attention_dim") == 1024 else "sd15"
    raise ModelFileError(f"{path} is a diffusers {class_name}, which this trainer does not support. "
                         "Choose an SD 1.5, SD 2.x or SDXL model.")
