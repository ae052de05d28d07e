"""Flux.1 and FLUX.2 LoRA modules between diffusers names and the BFL layout (what sd-scripts and ComfyUI name).

diffusers splits layers the BFL checkpoint fuses: a double block's image and text attention q/k/v are the
thirds of `img_attn.qkv` / `txt_attn.qkv`, a single block's q/k/v and MLP input are the rows of `linear1`
(hidden, hidden, hidden, the rest), and the final modulation `norm_out.linear` is BFL's
`final_layer.adaLN_modulation.1` with its two halves swapped (BFL orders shift, scale). sd-scripts trains and
writes the fused layers (`lora_unet_double_blocks_0_img_attn_qkv`, `lora_unet_single_blocks_0_linear1`), as
does ComfyUI's `diffusion_model.` form.

A fused module is read as one module per diffusers layer with exactly the same change: the rows of its up
matrix (and of a DoRA magnitude, or of LoHa's row factors) go to their layer, the down matrix is shared. Where
a block of rows uses only some of the rank's columns (a block-diagonal up, as a fused module written from
separate q/k/v is), only those columns are kept, so the ranks come back. Writing the fused form does the
reverse: downs stacked, ups placed block-diagonally, each part's scale folded in, alpha = total rank.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from .lorafile import KOHYA_SUFFIXES, Module, ToolError

DOUBLE = {"attn.to_out.0": "img_attn.proj", "attn.to_add_out": "txt_attn.proj", "ff.net.0.proj": "img_mlp.0",
          "ff.net.2": "img_mlp.2", "ff_context.net.0.proj": "txt_mlp.0", "ff_context.net.2": "txt_mlp.2",
          "norm1.linear": "img_mod.lin", "norm1_context.linear": "txt_mod.lin",
          # FLUX.2 (klein): SwiGLU feed-forward, modulation shared outside the blocks
          "ff.linear_in": "img_mlp.0", "ff.linear_out": "img_mlp.2", "ff_context.linear_in": "txt_mlp.0",
          "ff_context.linear_out": "txt_mlp.2"}
DOUBLE_QKV = {"attn.to_q": ("img_attn.qkv", 0), "attn.to_k": ("img_attn.qkv", 1), "attn.to_v": ("img_attn.qkv", 2),
              "attn.add_q_proj": ("txt_attn.qkv", 0), "attn.add_k_proj": ("txt_attn.qkv", 1),
              "attn.add_v_proj": ("txt_attn.qkv", 2)}
SINGLE = {"proj_out": "linear2", "norm.linear": "modulation.lin",
          "attn.to_qkv_mlp_proj": "linear1", "attn.to_out": "linear2"}  # FLUX.2: linear1 / linear2 as one layer
SINGLE_ROWS = {"attn.to_q": 0, "attn.to_k": 1, "attn.to_v": 2, "proj_mlp": 3}
GLOBAL = {"x_embedder": "img_in", "context_embedder": "txt_in",
          "time_text_embed.timestep_embedder.linear_1": "time_in.in_layer",
          "time_text_embed.timestep_embedder.linear_2": "time_in.out_layer",
          "time_text_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
          "time_text_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
          "time_text_embed.text_embedder.linear_1": "vector_in.in_layer",
          "time_text_embed.text_embedder.linear_2": "vector_in.out_layer",
          "proj_out": "final_layer.linear", "norm_out.linear": "final_layer.adaLN_modulation.1",
          # FLUX.2 (klein)
          "time_guidance_embed.timestep_embedder.linear_1": "time_in.in_layer",
          "time_guidance_embed.timestep_embedder.linear_2": "time_in.out_layer",
          "double_stream_modulation_img.linear": "double_stream_modulation_img.lin",
          "double_stream_modulation_txt.linear": "double_stream_modulation_txt.lin",
          "single_stream_modulation.linear": "single_stream_modulation.lin"}
SWAPPED = {"final_layer.adaLN_modulation.1"}
_BLOCK = re.compile(r"(transformer_blocks|single_transformer_blocks)\.(\d+)\.(.+)")
ROW_ROLES = ("up", "dora_scale", "w1a", "w2a")  # tensors whose rows are the layer's output rows


@dataclass(frozen=True)
class Place:
    """Where a diffusers layer sits in the BFL layout: `bfl` module path; `layout` whole / qkv (3 equal
    thirds) / linear1 (hidden x3 then the MLP rows, hidden = the layer's input width) / swap (halves swapped);
    `slot` its part."""

    bfl: str
    layout: str = "whole"
    slot: int = 0


def place(path: str) -> Place | None:
    """diffusers transformer module path -> its place in the BFL layout (None: no BFL weight)."""
    if path in GLOBAL:
        bfl = GLOBAL[path]
        return Place(bfl, "swap" if bfl in SWAPPED else "whole")
    m = _BLOCK.fullmatch(path)
    if not m:
        return None
    kind, index, rest = m[1], m[2], m[3]
    if kind == "transformer_blocks":
        if rest in DOUBLE:
            return Place(f"double_blocks.{index}.{DOUBLE[rest]}")
        if rest in DOUBLE_QKV:
            key, slot = DOUBLE_QKV[rest]
            return Place(f"double_blocks.{index}.{key}", "qkv", slot)
    else:
        if rest in SINGLE:
            return Place(f"single_blocks.{index}.{SINGLE[rest]}")
        if rest in SINGLE_ROWS:
            return Place(f"single_blocks.{index}.linear1", "linear1", SINGLE_ROWS[rest])
    return None


def row_range(p: Place, total: int, in_features: int) -> tuple[int, int]:
    """The rows [start, stop) of the fused weight (`total` rows, `in_features` columns) that `p` is."""
    if p.layout == "qkv":
        h = total // 3
        return p.slot * h, (p.slot + 1) * h
    if p.layout == "linear1":
        h = in_features
        return (p.slot * h, (p.slot + 1) * h) if p.slot < 3 else (3 * h, total)
    return 0, total


def swap_halves(t: torch.Tensor) -> torch.Tensor:
    a, b = t.chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


def in_features(mod: Module) -> int:
    t = mod.tensors
    src = t.get("down", t.get("w1b"))
    if src is None or mod.kind == "lokr":  # LoKr's Kronecker factors do not split by output rows
        raise ToolError(f"{mod.name}: a {mod.kind.upper()} module on a fused Flux layer cannot be split into its "
                        "q/k/v layers; the LoRA tools read LoRA, DoRA and LoHa modules there")
    return int(src.shape[1])


def split_module(mod: Module, parts: list[tuple[str, Place]]) -> list[tuple[str, Module]]:
    """A module on a fused BFL layer -> [(layer key, module)] with the same change on each diffusers layer.
    Parts whose rows the module leaves at zero get no module (their change is exactly zero)."""
    width = in_features(mod)
    rows_total = int(next(mod.tensors[r] for r in ROW_ROLES if r in mod.tensors).shape[0])
    out, zero = [], []
    for key, p in parts:
        if p.layout == "swap":
            t = {r: (swap_halves(v) if r in ROW_ROLES else v) for r, v in mod.tensors.items()}
        else:
            a, b = row_range(p, rows_total, width)
            t = {r: (v[a:b] if r in ROW_ROLES else v) for r, v in mod.tensors.items()}
        alpha = mod.alpha
        if mod.kind in ("lora", "dora") and "mid" not in t:
            cols = t["up"].flatten(1).abs().sum(0).nonzero().flatten()
            if len(cols) == 0:
                zero.append(key)
            elif len(cols) < t["up"].shape[1]:
                scale = mod.scale
                t["up"], t["down"] = t["up"][:, cols], t["down"][cols]
                alpha = scale * len(cols)
        t = {r: v.contiguous() for r, v in t.items()}
        raw = {s: t[KOHYA_SUFFIXES[s]] for s in mod.raw_suffixes if KOHYA_SUFFIXES[s] in t}
        out.append((key, Module(f"{mod.name}[{key}]", t, alpha, set(mod.raw_suffixes), raw)))
    kept = [o for o in out if o[0] not in zero]
    return kept or out[:1]  # an untrained module keeps one part, so it is still counted (and warned about)


def fuse_modules(bfl: str, parts: list[tuple[Place, Module]], mlp_rows: int | None = None) -> Module:
    """Plain LoRA modules of the diffusers layers of one fused BFL layer -> one module on it (scale 1: each part's
    scale folded into its up; alpha = total rank). `mlp_rows`: rows of a single block's MLP input, needed when
    `proj_mlp` itself has no module."""
    lows = []
    for p, mod in parts:
        low = mod.low_rank()
        if low is None:
            raise ToolError(f"{mod.name}: a {mod.kind.upper() if mod.kind != 'lora' else 'Tucker LoCon'} module on "
                            f"a layer that the kohya form fuses ({bfl}) cannot be written in that form; keep the "
                            "diffusers form")
        lows.append((p, low))
    p0 = lows[0][0]
    if p0.layout in ("whole", "swap"):
        up, down = lows[0][1]
        return Module(bfl, {"up": swap_halves(up) if p0.layout == "swap" else up, "down": down}, float(down.shape[0]))
    width = int(lows[0][1][1].shape[1])
    sizes = {p.slot: int(up.shape[0]) for p, (up, _) in lows}
    if p0.layout == "qkv":
        h = next(iter(sizes.values()))
        heights = [h, h, h]
    else:
        h = width
        mlp = sizes.get(3, mlp_rows)
        if mlp is None:
            raise ToolError(f"{bfl}: the rows of its MLP part are unknown; convert with --base MODEL")
        heights = [h, h, h, mlp]
    starts = [sum(heights[:i]) for i in range(len(heights))]
    d0 = lows[0][1][1]
    shared = all(d.shape == d0.shape and torch.equal(d, d0) for _, (_, d) in lows[1:])  # split from one module
    rank = int(d0.shape[0]) if shared else sum(int(down.shape[0]) for _, (_, down) in lows)
    up = torch.zeros(sum(heights), rank)
    col = 0
    for p, (u, d) in lows:
        if int(u.shape[0]) != heights[p.slot]:
            raise ToolError(f"{bfl}: its parts have {int(u.shape[0])} and {heights[p.slot]} rows; they are not of "
                            "one model")
        width_here = 0 if shared else int(d.shape[0])
        up[starts[p.slot]:starts[p.slot] + heights[p.slot], col:col + int(d.shape[0])] = u
        col += width_here
    down = d0 if shared else torch.cat([d for _, (_, d) in lows], dim=0)
    return Module(bfl, {"up": up, "down": down.contiguous()}, float(rank))


def permuted_rows(mod: Module, name: str) -> Module:
    """`mod` with the halves of its output rows swapped (diffusers' norm_out.linear <-> BFL's final modulation)."""
    t = {r: (swap_halves(v).contiguous() if r in ROW_ROLES else v) for r, v in mod.tensors.items()}
    raw = {s: t[KOHYA_SUFFIXES[s]] for s in mod.raw_suffixes if KOHYA_SUFFIXES[s] in t}
    return Module(name, t, mod.alpha, set(mod.raw_suffixes), raw)


def to_bfl(matched: dict, table) -> dict:
    """Matched modules on diffusers transformer layers -> Matched modules on the BFL layers (the kohya form's
    names): fused layers get one module (exact), the rest keep theirs. Text-encoder modules pass through."""
    from .common import Matched, change_shape
    from .names import Layer

    out, groups = {}, {}
    for key, m in matched.items():
        if m.layer.part == "transformer" and m.layer.path in table.bfl_parts:
            out[key] = m  # already on its BFL layer
            continue
        p = place(m.layer.path) if m.layer.part == "transformer" else None
        if m.layer.part == "transformer" and p is None:
            raise ToolError(f"{m.source}: {key} has no BFL layer, so it has no kohya name; keep the diffusers form")
        if p is None:
            out[key] = m
        else:
            groups.setdefault(p.bfl, []).append((p, m))
    for bfl, items in groups.items():
        items.sort(key=lambda pm: pm[0].slot)
        p0, m0 = items[0]
        if p0.layout == "whole":
            mod = Module(bfl, m0.module.tensors, m0.module.alpha, m0.module.raw_suffixes, m0.module.raw)
        elif p0.layout == "swap":
            mod = permuted_rows(m0.module, bfl)
        else:
            mlp_rows = None
            if p0.layout == "linear1":
                keys = dict((pl.slot, k) for k, pl in table.bfl_parts[bfl])
                q, mlp = table.layers[keys[0]].shape, table.layers[keys[3]].shape
                first = items[0][1].module.tensors  # the table's MLP ratio at this module's width
                mlp_rows = mlp[0] * int(first["down"].shape[1]) // q[1] if "down" in first else None  # else fuse refuses
            mod = fuse_modules(bfl, [(p, m.module) for p, m in items], mlp_rows)
        shape = change_shape(mod)
        out[f"transformer.{bfl}"] = Matched(Layer("transformer", bfl, shape), mod, ", ".join(
            dict.fromkeys(m.source for _, m in items)))
    return out
