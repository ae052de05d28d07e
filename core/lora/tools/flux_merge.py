"""Merging LoRAs into a Flux.1 or FLUX.2 klein single file, in its own (BFL) layout.

A Flux LoRA names diffusers modules; the BFL file fuses some of them: q/k/v of a double block's image and text
attention are thirds of `img_attn.qkv` / `txt_attn.qkv`, and a single block's q/k/v and MLP input are the rows
of `linear1` (h, h, h, 4h). Each module's change is added to its rows, as ComfyUI applies a diffusers-form Flux
LoRA to a BFL checkpoint. The file is rewritten with the same keys, dtypes (fp8 included) and metadata. CLIP-L
modules go into the CLIP-L part of an all-in-one checkpoint, or into a given clip_l file (written next to the
output as <name>_clip_l.safetensors).
"""
from __future__ import annotations

import json
from pathlib import Path


from .common import Progress, Summary, Ticker, check_output
from .flux_bfl import place, row_range, swap_halves
from .lorafile import ToolError

TRANSFORMER_PREFIX = "model.diffusion_model."
CLIP_PREFIX = "text_encoders.clip_l.transformer."


def merge_into_flux_file(base: str, plans: list, out: Path, *, clip_l: str = "", save_precision: str | None = None,
                         overwrite: bool = False, progress: Progress | None = None, title: str = "Flux.1") -> Summary:
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
        raise ToolError(f"{base_p.name} is not a {title} transformer file in the BFL layout (flux1-dev.safetensors "
                        "form); merge into that file")
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
            p = place(m.layer.path) if m.layer.part == "transformer" else None
            if m.layer.part == "transformer":
                if p is None:
                    raise ToolError(f"{lora.path.name}: {m.source} changes transformer.{m.layer.path}, which has no "
                                    "weight in the BFL layout")
                target, wkey = sd, f"{prefix}{p.bfl}.weight"
            else:
                path = m.layer.path if m.layer.path.startswith("text_model.") else f"text_model.{m.layer.path}"
                target, wkey = clip_sd, f"{clip_prefix}{path}.weight"
            if wkey not in target:
                raise ToolError(f"{lora.path.name}: {m.source} targets {wkey}, which {base_p.name} lacks")
            w = target[wkey]
            full = w.float()
            if p is not None and p.layout == "swap":  # diffusers' norm_out.linear is BFL's with its halves swapped
                full = swap_halves(m.module.applied_to(swap_halves(full), strength))
            else:
                a, b = row_range(p, full.shape[0], full.shape[1]) if p is not None else (0, full.shape[0])
                full[a:b] = m.module.applied_to(full[a:b], strength)
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
    summary.notes.insert(0, f"{summary.applied} modules applied to {base_p.name} ({title}, BFL layout, dtypes kept"
                            + (f", saved in {save_precision}" if dtype is not None else "") + ").")
    return summary
