"""Helpers shared by the training tests: small configs, in-process runs, diffusers loading checks."""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import torch

from core.config.toml_io import validate
from core.train.trainer import Trainer

REPO = Path(__file__).resolve().parent.parent


def tiny_config(model: Path, data: Path, out: Path, **overrides):
    base = dict(
        pretrained_model_name_or_path=str(model), train_data_dir=str(data), output_dir=str(out),
        output_name="lora", resolution="64", min_bucket_reso=32, max_bucket_reso=128, bucket_reso_steps=32,
        network_dim=4, network_alpha=2, learning_rate=1e-2, max_train_steps=12, sample_every_n_epochs=0,
        save_precision="float", mixed_precision="no", seed=7,
    )
    base.update(overrides)
    return validate(base)


def train_in_process(cfg, **kw) -> Trainer:
    t = Trainer(cfg, echo=lambda m: None, **kw)
    code = t.train()
    assert code == 0, (Path(cfg.output_dir) / cfg.output_name / "train.log").read_text()
    return t


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


class CaptureLogs(logging.Handler):
    """Collects warnings from diffusers/peft/transformers loggers (unexpected or missing LoRA keys)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record):
        self.records.append(record.getMessage())

    def __enter__(self):
        from diffusers.utils import logging as dlog

        dlog.enable_propagation()
        for name in ("diffusers", "peft", "transformers"):
            logging.getLogger(name).addHandler(self)
        return self

    def __exit__(self, *exc):
        for name in ("diffusers", "peft", "transformers"):
            logging.getLogger(name).removeHandler(self)

    def key_problems(self, text_encoder_trained: bool = True) -> list[str]:
        words = ("unexpected", "missing", "not loaded", "were not used", "no lora", "not found")
        found = [r for r in self.records if any(w in r.lower() for w in words)]
        if not text_encoder_trained:  # diffusers notes that a UNet-only file has no text-encoder keys
            found = [r for r in found if not r.startswith("No LoRA keys associated to CLIPTextModel")]
        return found


def unet_inputs(unet, family: str, batch: int = 2, size: int = 8):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, unet.config.in_channels, size, size, generator=g)
    t = torch.tensor([10, 500][:batch])
    ctx = torch.randn(batch, 77, unet.config.cross_attention_dim, generator=g)
    added = None
    if family == "sdxl":
        pooled_dim = unet.add_embedding.linear_1.in_features - 6 * unet.config.addition_time_embed_dim
        added = {"text_embeds": torch.randn(batch, pooled_dim, generator=g),
                 "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]] * batch)}
    return x, t, ctx, added


@torch.no_grad()
def unet_out(unet, inputs) -> torch.Tensor:
    x, t, ctx, added = inputs
    return unet(x, t, encoder_hidden_states=ctx, added_cond_kwargs=added).sample


@torch.no_grad()
def te_out(te, tokenizer, text: str = "zqx, a red circle") -> torch.Tensor:
    ids = tokenizer([text], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    return te(ids, output_hidden_states=True).hidden_states[-2]


# ------------------------------------------------------------------ DoRA as each loader applies it
# Re-statements of the loaders' own code (float32, strength 1), applied to one kohya module's tensors:
#   ComfyUI comfy/weight_adapter/base.py weight_decompose (Forge backend/patcher/lora.py is the same code):
#     a dora_scale whose first dimension is the output size is "per output row", and the merged weight is
#     divided by the row norm of the ORIGINAL weight W, not of W + dW.
#   AUTOMATIC1111 extensions-builtin/Lora/network.py apply_weight_decompose: always divides by the column
#     (per input) norm of W + dW, so an (out, 1) scale broadcasts against a (1, in) norm.
#   DoRA as trained (peft, the paper, LyCORIS wd_on_out): W' = m * (W + dW) / ||W + dW||_row.

def kohya_delta(sd: dict[str, torch.Tensor], key: str, shape: torch.Size) -> torch.Tensor:
    """alpha/rank * up @ down for one kohya module, in the weight's shape (conv kernels included)."""
    up, down = sd[key + ".lora_up.weight"].float(), sd[key + ".lora_down.weight"].float()
    scale = sd[key + ".alpha"].item() / down.shape[0]
    return scale * torch.mm(up.flatten(1), down.flatten(1)).reshape(shape)


def _row_norm(w: torch.Tensor) -> torch.Tensor:
    return w.reshape(w.shape[0], -1).norm(dim=1).reshape(w.shape[0], *[1] * (w.dim() - 1))


def _col_norm(w: torch.Tensor) -> torch.Tensor:
    return w.transpose(0, 1).reshape(w.shape[1], -1).norm(dim=1).reshape(w.shape[1], *[1] * (w.dim() - 1)) \
        .transpose(0, 1)


def dora_merge_trained(weight: torch.Tensor, delta: torch.Tensor, dora_scale: torch.Tensor) -> torch.Tensor:
    calc = weight + delta
    return calc * (dora_scale / _row_norm(calc))


def dora_merge_comfyui(weight: torch.Tensor, delta: torch.Tensor, dora_scale: torch.Tensor) -> torch.Tensor:
    calc = weight + delta
    eps = torch.finfo(weight.dtype).eps
    norm = _row_norm(weight) if dora_scale.shape[0] == calc.shape[0] else _col_norm(calc)
    return calc * (dora_scale / (norm + eps))


def dora_merge_a1111(weight: torch.Tensor, delta: torch.Tensor, dora_scale: torch.Tensor) -> torch.Tensor:
    calc = weight + delta
    return calc * (dora_scale / _col_norm(calc))


def dora_modules(unet) -> dict[str, torch.nn.Module]:
    """The UNet's peft DoRA layers by module path."""
    return {name: m for name, m in unet.named_modules() if hasattr(m, "lora_magnitude_vector")
            and "default" in getattr(m, "lora_magnitude_vector", {})}


@torch.no_grad()
def trained_weight(layer) -> tuple[torch.Tensor, torch.Tensor]:
    """(base weight, the weight peft's DoRA layer trained), by peft's own merge; the layer is unmerged again."""
    base = layer.base_layer.weight.detach().clone()
    layer.merge(safe_merge=True)
    merged = layer.base_layer.weight.detach().clone()
    layer.unmerge()
    return base, merged
