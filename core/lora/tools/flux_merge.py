"""Merging LoRAs into a Flux.1 single file, in its own (BFL) layout.

A Flux LoRA names diffusers modules; the BFL file fuses some of them: q/k/v of a double block's image and text
attention are thirds of `img_attn.qkv` / `txt_attn.qkv`, and a single block's q/k/v and MLP input are the rows
of `linear1` (h, h, h, 4h). Each module's change is added to its rows, as ComfyUI applies a diffusers-form Flux
LoRA to a BFL checkpoint. The file is rewritten with the same keys, dtypes (fp8 included) and metadata. CLIP-L
modules go into the CLIP-L part of an all-in-one checkpoint, or into a given clip_l file (written next to the
output as <name>_clip_l.safetensors).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from .common import Progress, Summary, Ticker, check_output
from .lorafile import ToolError

DOUBLE = {"attn.to_out.0": "img_attn.proj", "attn.to_add_out": "txt_attn.proj", "ff.net.0.proj": "img_mlp.0",
          "ff.net.2": "img_mlp.2", "ff_context.net.0.proj": "txt_mlp.0", "ff_context.net.2": "txt_mlp.2",
          "norm1.linear": "img_mod.lin", "norm1_context.linear": "txt_mod.lin"}
DOUBLE_QKV = {"attn.to_q": ("img_attn.qkv", 0), "attn.to_k": ("img_attn.qkv", 1), "attn.to_v": ("img_attn.qkv", 2),
              "attn.add_q_proj": ("txt_attn.qkv", 0), "attn.add_k_proj": ("txt_attn.qkv", 1),
              "attn.add_v_proj": ("txt_attn.qkv", 2)}
SINGLE = {"proj_out": "linear2", "norm.linear": "modulation.lin"}
SINGLE_ROWS = {"attn.to_q": 0, "attn.to_k": 1, "attn.to_v": 2, "proj_mlp": 3}
_BLOCK = re.compile(r"(transformer_blocks|single_transformer_blocks)\.(\d+)\.(.+)")
TRANSFORMER_PREFIX = "model.diffusion_model."
CLIP_PREFIX = "text_encoders.clip_l.transformer."


def bfl_target(path: str, hidden: int) -> tuple[str, int, int]:
    """diffusers transformer module -> (BFL weight key, first row, rows)."""
    m = _BLOCK.fullmatch(path)
    if not m:
        raise ToolError(f"transformer.{path}: not a layer of the double/single blocks")
    kind, index, rest = m[1], m[2], m[3]
    if kind == "transformer_blocks":
        if rest in DOUBLE:
            return f"double_blocks.{index}.{DOUBLE[rest]}.weight", 0, -1
        if rest in DOUBLE_QKV:
            key, third = DOUBLE_QKV[rest]
            return f"double_blocks.{index}.{key}.weight", third * hidden, hidden
    else:
        if rest in SINGLE:
            return f"single_blocks.{index}.{SINGLE[rest]}.weight", 0, -1
        if rest in SINGLE_ROWS:
            part = SINGLE_ROWS[rest]
            return f"single_blocks.{index}.linear1.weight", part * hidden, (4 * hidden if part == 3 else hidden)
    raise ToolError(f"transformer.{path}: no BFL weight for this layer")


def merge_into_flux_file(base: str, plans: list, out: Path, *, clip_l: str = "", save_precision: str | None = None,
                         overwrite: bool = False, progress: Progress | None = None) -> Summary:
    """`plans`: [(LoraFile, strength, matched {key: Matched}, unmatched)] already resolved against a Flux table."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from ...models.ldm_convert import save_single_file
    from ..kohya_format import SAVE_DTYPES

    base_p = Path(base).expanduser()
    sd = load_file(str(base_p))
    with safe_open(str(base_p), "pt") as f:
        meta = dict(f.metadata() or {})
    prefix = TRANSFORMER_PREFIX if any(k.startswith(TRANSFORMER_PREFIX) for k in sd) else ""
    if f"{prefix}double_blocks.0.img_attn.qkv.weight" not in sd:
        raise ToolError(f"{base_p.name} is not a Flux.1 transformer file in the BFL layout (flux1-dev.safetensors "
                        "form); merge into that file")
    hidden = int(sd[f"{prefix}img_in.weight"].shape[0])
    clip_in_base = any(k.startswith(CLIP_PREFIX) for k in sd)
    needs_clip = any(m.layer.part == "text_encoder" for _, _, matched, _ in plans for m in matched.values())
    clip_sd, clip_prefix, clip_out = sd, CLIP_PREFIX, None
    if needs_clip and not clip_in_base:
        if not clip_l:
            raise ToolError(f"the LoRA changes CLIP-L but {base_p.name} holds only the transformer: pass the clip_l "
                            "file (--clip-l) to merge those modules too")
        clip_sd, clip_prefix = load_file(str(Path(clip_l).expanduser())), ""
        clip_out = out.with_name(out.stem + "_clip_l.safetensors")
        check_output(clip_out, overwrite, [clip_l, base])
    dtype = SAVE_DTYPES.get(save_precision) if save_precision else None
    total = sum(len(m) for _, _, m, _ in plans)
    tick = Ticker(total, "Applying modules", progress)
    summary = Summary("Merge into model", str(out))
    done = 0
    for lora, strength, matched, unmatched in plans:
        for key, m in matched.items():
            if m.layer.part == "transformer":
                wkey, row, rows = bfl_target(m.layer.path, hidden)
                target, wkey = sd, prefix + wkey
            else:
                path = m.layer.path if m.layer.path.startswith("text_model.") else f"text_model.{m.layer.path}"
                target, wkey, row, rows = clip_sd, f"{clip_prefix}{path}.weight", 0, -1
            if wkey not in target:
                raise ToolError(f"{lora.path.name}: {m.module.name} targets {wkey}, which {base_p.name} lacks")
            w = target[wkey]
            rows = w.shape[0] if rows < 0 else rows
            full = w.float()
            full[row:row + rows] = m.module.applied_to(full[row:row + rows], strength)
            target[wkey] = full.to(dtype or w.dtype)
            done += 1
            tick(done, key)
        summary.add_applied(lora, strength, matched, unmatched)
    if dtype is not None:
        sd = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in sd.items()}
    meta["lw_merged_loras"] = json.dumps([[lora.path.name, s] for lora, s, _, _ in plans])
    if progress:
        progress(total, total, f"Writing {out.name}")
    save_single_file(out, sd, {k: v for k, v in meta.items() if k != "format"})
    if clip_out is not None:
        if dtype is not None:
            clip_sd = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in clip_sd.items()}
        save_single_file(clip_out, clip_sd)
        summary.notes.append(f"CLIP-L with its modules applied: {clip_out}")
    summary.notes.insert(0, f"{summary.applied} modules applied to {base_p.name} (Flux.1, BFL layout, dtypes kept"
                            + (f", saved in {save_precision}" if dtype is not None else "") + ").")
    return summary
