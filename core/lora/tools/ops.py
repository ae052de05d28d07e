"""LoRA -> LoRA tools: merge several LoRAs into one, resize (SVD), convert between key forms."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ... import families
from .common import (Matched, change_shape, Progress, Summary, Ticker, a_family, check_output, default_format, family_words,
                     load_and_match, module_count, parts_line, part_counts, refuse_unmatched, save_dtype, write_lora)
from .lorafile import Module, ToolError
from .lowrank import check_dynamic, choose_rank, retained, svd_dense, svd_of_product

FORMATS = ("kohya", "diffusers")


def lora_module(name: str, up: torch.Tensor, down: torch.Tensor, alpha: float, layer_shape) -> Module:
    """A plain LoRA module from 2-D factors, shaped for the layer (convolutions: up (out, r, 1, 1), down (r, in, k, k))."""
    if len(layer_shape) == 4:
        up = up.reshape(up.shape[0], up.shape[1], 1, 1)
        down = down.reshape(down.shape[0], *layer_shape[1:])
    return Module(name, {"up": up.contiguous(), "down": down.contiguous()}, float(alpha))


def _base_dir(base: str | None) -> str | None:
    if base and Path(base).expanduser().is_dir():
        return str(Path(base).expanduser())
    return None


def parse_strength(item) -> tuple[str, float]:
    if isinstance(item, (tuple, list)):
        return str(item[0]), float(item[1])
    text = str(item)
    path, sep, w = text.rpartition(":")
    if sep and path and not (len(path) == 1 and path.isalpha()):  # not a Windows drive letter ("C:")
        try:
            return path, float(w)
        except ValueError:
            pass
    return text, 1.0


def merge_loras(items: list, out: str | Path, *, rank: int | None = None, fmt: str | None = None,
                save_precision: str | None = None, base: str | None = None, overwrite: bool = False,
                progress: Progress | None = None) -> Summary:
    """One LoRA whose change is exactly sum(strength_i * change_i): ranks stacked (alpha = total rank, each part's
    scale folded into its up matrix), or with `rank`, the best rank-N approximation of that sum (SVD) per module."""
    pairs = [parse_strength(i) for i in items]
    if len(pairs) < 1:
        raise ToolError("merge needs at least one --lora FILE:STRENGTH")
    outp = check_output(out, overwrite, [p for p, _ in pairs])
    if rank is not None and rank < 1:
        raise ToolError(f"--rank {rank}: must be at least 1")
    loaded = []
    family = None
    for path, strength in pairs:
        lora, fam, table, matched, unmatched = load_and_match(path, None, _base_dir(base), shapes=False)
        if family and fam != family:
            raise ToolError(f"{Path(path).name} is {a_family(fam)} LoRA but {Path(pairs[0][0]).name} is "
                            f"{a_family(family)} LoRA: LoRAs of different model families cannot be merged")
        family = fam
        refuse_unmatched(lora, unmatched, fam)
        loaded.append((lora, strength, matched, table))
    table = loaded[0][3]
    if fmt is None and default_format(family) != "kohya" and all(lora.format != "diffusers" for lora, *_ in loaded):
        fmt = "kohya"  # sd-scripts / ComfyUI Flux LoRAs in: the same form out
    fmt = fmt or default_format(family)
    keys = list(dict.fromkeys(k for _, _, m, _ in loaded for k in m))
    result: dict[str, Matched] = {}
    fractions = {}
    tick = Ticker(len(keys), "Merging modules", progress)
    for i, key in enumerate(keys):
        parts = [(m[key].module, s) for _, s, m, _ in loaded if key in m]
        layer = next(m[key].layer for _, _, m, _ in loaded if key in m)
        shape = change_shape(parts[0][0])  # the module's own shape (the layer table may be of another size)
        if any(change_shape(mod) != shape for mod, _ in parts[1:]):
            raise ToolError(f"{key}: the LoRAs change it with different shapes ({shape} and others): they are not "
                            "for the same model")
        low = [(mod.low_rank(), s) for mod, s in parts]
        if rank is None:
            if any(lr is None for lr, _ in low):
                bad = next(mod for mod, _ in parts if mod.low_rank() is None)
                raise ToolError(f"{bad.name} is a {bad.kind.upper() if bad.kind != 'lora' else 'Tucker LoCon'} module: "
                                "only plain LoRA modules can be stacked exactly; add --rank N to re-factor the sum "
                                "by SVD")
            up = torch.cat([lr[0] * s for lr, s in low], dim=1)
            down = torch.cat([lr[1] for lr, _ in low], dim=0)
            result[key] = Matched(layer, lora_module(key, up, down, up.shape[1], shape))
        else:
            if all(lr is not None for lr, _ in low):
                u, s, vh = svd_of_product(torch.cat([lr[0] * st for lr, st in low], dim=1),
                                          torch.cat([lr[1] for lr, _ in low], dim=0))
            else:
                dense = sum(mod.delta(shape).flatten(1) * st for mod, st in parts)
                u, s, vh = svd_dense(dense)
            k = choose_rank(s, rank, None, None)
            fractions[key] = retained(s, k)
            result[key] = Matched(layer, lora_module(key, u[:, :k] * s[:k], vh[:k], k, shape))
        tick(i + 1, key)
    dtype = save_dtype(save_precision, loaded[0][0].dtype)
    meta = dict(loaded[0][0].metadata)
    meta.update({"ss_network_dim": str(rank) if rank else "Dynamic", "ss_network_alpha": str(rank) if rank else "Dynamic",
                 "lw_merged_from": json.dumps([[Path(p).name, s] for p, s in pairs]),
                 "modelspec.title": outp.stem, "ss_output_name": outp.stem})
    meta.pop("ss_network_args", None) if rank else None
    written = write_lora(outp, result, table, fmt, dtype, meta)
    how = ("ranks stacked, exact" if rank is None else
           f"re-factored to rank {rank} by SVD, mean retained {sum(fractions.values()) / max(len(fractions), 1):.4f}")
    strengths = " + ".join(f"{s:g} x {Path(p).name}" for p, s in pairs)
    summary = Summary("Merge", str(outp), written=written, notes=[
        f"{written} modules written ({parts_line(part_counts(result))}) = {strengths} ({how}).",
        *(f"{Path(l.path).name}: {len(m)} modules" for l, _, m, _ in loaded)])
    if fractions:
        summary.details["retained"] = fractions
        worst = min(fractions, key=fractions.get)
        summary.notes.append(f"Lowest retained fraction: {fractions[worst]:.4f} ({worst}).")
    return summary


def resize_lora(path: str | Path, out: str | Path, *, rank: int | None = None, dynamic: str | None = None,
                param: float | None = None, fmt: str | None = None, save_precision: str | None = None,
                base: str | None = None, overwrite: bool = False, progress: Progress | None = None) -> Summary:
    """Each module re-factored by its exact SVD to `rank` (or the rank the dynamic rule picks, capped at `rank`);
    alpha set so the applied scale is kept. Reports the retained Frobenius fraction per module."""
    if rank is None and dynamic is None:
        raise ToolError("resize needs --rank N or --dynamic sv_ratio|sv_fro|sv_cumulative --param X")
    if rank is not None and rank < 1:
        raise ToolError(f"--rank {rank}: must be at least 1")
    check_dynamic(dynamic, param)
    outp = check_output(out, overwrite, [path])
    lora, family, table, matched, unmatched = load_and_match(path, None, _base_dir(base), shapes=False)
    refuse_unmatched(lora, unmatched, family)
    if any(m.module.kind == "dora" for m in matched.values()):
        raise ToolError(f"{lora.path.name} is a DoRA LoRA: its change depends on the base weights, so it cannot be "
                        "resized on its own. Merge it into the base model (`lora merge --base`), then extract "
                        "(`lora extract`)")
    out_fmt = fmt or (lora.format if lora.format in FORMATS else "kohya")
    if out_fmt == "kohya":  # Flux: a fused BFL layer is resized as one module, as sd-scripts has it
        matched = families.family_module(family).tool_kohya_modules(matched, table)
    result: dict[str, Matched] = {}
    fractions, ranks = {}, {}
    tick = Ticker(len(matched), "Resizing modules", progress)
    for i, (key, m) in enumerate(matched.items()):
        mod = m.module
        shape = change_shape(mod)
        scale = mod.scale
        low = mod.low_rank()
        if low is not None and scale != 0:
            u, s, vh = svd_of_product(low[0] / scale, low[1])  # SVD of the unscaled up @ down
        else:
            scale = 1.0
            u, s, vh = svd_dense(mod.delta(shape).flatten(1))
        k = choose_rank(s, rank, dynamic, param)
        fractions[key], ranks[key] = retained(s, k), k
        result[key] = Matched(m.layer, lora_module(mod.name, u[:, :k] * s[:k], vh[:k], scale * k, shape))
        tick(i + 1, key)
    dtype = save_dtype(save_precision, lora.dtype)
    meta = dict(lora.metadata)
    fixed = rank if dynamic is None else None
    meta.update({"ss_network_dim": str(fixed) if fixed else "Dynamic",
                 "ss_network_alpha": str(fixed) if fixed and len({round(r.module.alpha, 6) for r in result.values()}) == 1
                 else "Dynamic",
                 "lw_resized": json.dumps({"from": lora.path.name, "rank": rank, "dynamic": dynamic, "param": param}),
                 "ss_output_name": outp.stem})
    written = write_lora(outp, result, table, out_fmt, dtype, meta)
    mean = sum(fractions.values()) / len(fractions)
    worst = min(fractions, key=fractions.get)
    rule = f"rank {rank}" if dynamic is None else f"{dynamic} {param}" + (f", at most rank {rank}" if rank else "")
    summary = Summary("Resize", str(outp), written=written, notes=[
        f"{written} modules resized ({rule}); ranks now {_rank_line(ranks)}.",
        f"Retained (Frobenius, exact SVD): mean {mean:.4f}, lowest {fractions[worst]:.4f} ({worst})."])
    summary.details.update(retained=fractions, ranks=ranks)
    return summary


def _rank_line(ranks: dict[str, int]) -> str:
    values = sorted(set(ranks.values()))
    return str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]} (mean {sum(ranks.values()) / len(ranks):.1f})"


def convert_lora(path: str | Path, to: str, out: str | Path, *, save_precision: str | None = None,
                 base: str | None = None, overwrite: bool = False, progress: Progress | None = None) -> Summary:
    """Between kohya keys (alpha kept) and diffusers/peft keys (alpha/rank folded into lora_B): the applied change
    is the same."""
    if to not in FORMATS:
        raise ToolError(f"--to {to!r}: choose kohya or diffusers")
    outp = check_output(out, overwrite, [path])
    lora, family, table, matched, unmatched = load_and_match(path, None, _base_dir(base), shapes=False)
    refuse_unmatched(lora, unmatched, family)
    tick = Ticker(len(matched), "Converting modules", progress)
    tick(0)
    meta = dict(lora.metadata)
    meta["ss_output_name"] = outp.stem
    written = write_lora(outp, matched, table, to, save_dtype(save_precision, lora.dtype), meta)
    tick(len(matched))
    fused = (" (q/k/v and the MLP input fused into the BFL layers, as sd-scripts writes them)" if table.fused
             and to == "kohya" else " (fused BFL layers split into their diffusers layers)" if table.fused
             and module_count(matched) != len(matched) else "")
    return Summary("Convert", str(outp), written=written, notes=[
        f"{written} modules written in the {to} form{fused}, from the {module_count(matched)} modules "
        f"({parts_line(part_counts(matched))}) of the {lora.format} form of {lora.path.name}; {family_words(family)}."])
