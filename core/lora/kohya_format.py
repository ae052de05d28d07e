"""Writing LoRA files in kohya's key format, which ComfyUI, AUTOMATIC1111/Forge and diffusers all load.

Key: `<prefix>_<module path with . replaced by _>` + `.lora_down.weight` / `.lora_up.weight` / `.alpha`
(float32, 0-dim) and `.dora_scale` for DoRA. Every loader scales by alpha / rank, which is exactly
peft's `lora_alpha / r`, so the file applies the change that was trained.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from ..config.toml_io import atomic_write_bytes

SAVE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "float": torch.float32}


def kohya_name(prefix: str, module: str) -> str:
    return f"{prefix}_{module.replace('.', '_')}"


def text_encoder_module(name: str) -> str:
    """CLIP module paths as the loaders know them: transformers 5 dropped the `text_model.` level."""
    return name if name.startswith("text_model.") else f"text_model.{name}"


def to_kohya(peft_sd: dict[str, torch.Tensor], prefix: str, default_alpha: float,
             alphas: dict[str, tuple[int, float]], dtype: torch.dtype,
             rename: Callable[[str], str] = lambda m: m) -> dict[str, torch.Tensor]:
    """Convert one model's peft LoRA state dict (lora_A/lora_B) to kohya keys; `rename` maps module paths."""
    out: dict[str, torch.Tensor] = {}
    for key, t in peft_sd.items():
        if key.endswith(".lora_A.weight"):
            module, part = key[: -len(".lora_A.weight")], "lora_down.weight"
        elif key.endswith(".lora_B.weight"):
            module, part = key[: -len(".lora_B.weight")], "lora_up.weight"
        elif key.endswith(".lora_magnitude_vector"):
            module, part = key[: -len(".lora_magnitude_vector")], "dora_scale"
        elif key.endswith(".lora_magnitude_vector.weight"):
            module, part = key[: -len(".lora_magnitude_vector.weight")], "dora_scale"
        else:
            raise ValueError(f"unexpected LoRA parameter {key}")
        name = kohya_name(prefix, rename(module))
        if part == "dora_scale":
            # One magnitude per output row, saved as (out, 1) or (out, 1, 1, 1): the shape ComfyUI's and
            # Forge's weight_decompose read as "per output" (dora_scale.shape[0] == weight.shape[0]).
            # peft keeps it as (out,) for Linear and (1, out, 1, 1) for Conv2d, so flatten before reshaping.
            ndim = peft_sd[f"{module}.lora_A.weight"].dim()
            t = t.reshape(-1, *([1] * (ndim - 1)))
        out[f"{name}.{part}"] = t.detach().to("cpu", dtype).contiguous()
        if part == "lora_down.weight":
            alpha = alphas.get(module, (None, default_alpha))[1]
            out[f"{name}.alpha"] = torch.tensor(float(alpha), dtype=torch.float32)
    return out


def to_diffusers(peft_sd: dict[str, torch.Tensor], prefix: str, dtype: torch.dtype, scales: dict[str, float],
                 is_text_encoder: bool = False) -> dict[str, torch.Tensor]:
    """diffusers/peft key form (`unet.<module>.lora_A.weight`), alpha/rank folded into lora_B."""
    out = {}
    for key, t in peft_sd.items():
        t = t.detach().to("cpu", torch.float32)
        if key.endswith(".lora_B.weight"):
            t = t * scales[key[: -len(".lora_B.weight")]]
        out[f"{prefix}.{text_encoder_module(key) if is_text_encoder else key}"] = t.to(dtype).contiguous()
    return out


def save_lora(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """Write a .safetensors LoRA atomically (a temporary file renamed into place)."""
    from safetensors.torch import save

    path = Path(path)
    atomic_write_bytes(path, save(tensors, metadata={k: str(v) for k, v in metadata.items()}))
    return path


def model_hash(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 of the tensor bytes after the safetensors header, as kohya's `sshs_model_hash`."""
    import hashlib

    from safetensors.torch import save

    data = save(tensors)
    header_len = int.from_bytes(data[:8], "little")
    return hashlib.sha256(data[8 + header_len:]).hexdigest()
