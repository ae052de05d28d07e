"""Tools that read base models: merge LoRAs into a checkpoint, extract a LoRA from two checkpoints."""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import nn

from ... import families
from .common import (Matched, Progress, Summary, Ticker, a_family, check_output, default_format, family_words,
                     parts_line, part_counts, refuse_unmatched, resolve, save_dtype, write_lora)
from .lorafile import ToolError, guess_family, read_lora
from .lowrank import clamp_quantile, retained, svd_dense
from .names import PART_TITLES, Layer, name_table
from .ops import lora_module, parse_strength

PARTS = ("unet", "transformer", "text_encoder", "text_encoder_2")
UNET_CONV = re.compile(r".*(resnets\.\d+\.(conv1|conv2|conv_shortcut)|downsamplers\.0\.conv|upsamplers\.0\.conv)$")
TE_LAYERS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2")


def _load(model: str, what: str, progress: Progress | None, config_dir: str = "", dtype=torch.float32):
    from diffusers.utils import logging as dlog

    from ...models.loading import ModelLoadError, load_pipeline

    say = (lambda m: progress(0, 1, m)) if progress else None
    dlog.disable_progress_bar()  # our own progress lines say what is loading
    try:
        return load_pipeline(model, dtype=dtype, progress=say, large_model_dtype=torch.bfloat16,
                             base_config_dir=config_dir)
    except ModelLoadError as e:
        raise ToolError(f"{what}: {e}") from e


def _layer_module(pipe, layer: Layer) -> nn.Module:
    model = getattr(pipe, layer.part, None)
    if model is None:
        raise ToolError(f"the model has no {PART_TITLES[layer.part]} for {layer.key}")
    for path in (layer.path, layer.path.removeprefix("text_model.")):
        try:
            return model.get_submodule(path)
        except AttributeError:
            continue
    raise ToolError(f"no layer {layer.key} in the loaded model")


def _table_dir(model: str, config_dir: str = "") -> str | None:
    p = Path(model).expanduser()
    return str(p) if p.is_dir() else (config_dir or None)


def merge_into_base(base: str, items: list, out: str | Path, *, save_precision: str | None = None,
                    skip_unmatched: bool = False, config_dir: str = "", clip_l: str = "", overwrite: bool = False,
                    progress: Progress | None = None) -> Summary:
    """A single-file checkpoint in the original layout (LDM/sgm for SD, what A1111, ComfyUI and diffusers'
    from_single_file load; BFL for Flux) equal to `base` with each LoRA added at its strength, text encoders
    included. Weights are summed in float32. `save_precision`: fp16 (SD default), bf16, float; Flux keeps its dtypes."""
    from ...models.ldm_convert import pipeline_to_ldm_state_dict, save_single_file

    pairs = [parse_strength(i) for i in items]
    if not pairs:
        raise ToolError("merge --base needs at least one --lora FILE:STRENGTH")
    outp = check_output(out, overwrite, [base, *(p for p, _ in pairs)])
    from ...models.loading import ModelLoadError, detect_family

    try:
        family, _ = detect_family(base, "auto", config_dir)
    except ModelLoadError as e:
        raise ToolError(str(e)) from e
    layout = families.get(family).checkpoint_layout
    if not layout:
        able = ", ".join(f.title for f in families.all_families() if f.checkpoint_layout)
        raise ToolError(f"merging into a checkpoint is available for {able}; {Path(base).name} is {a_family(family)} "
                        "model. Load the LoRA next to the model instead")
    if layout == "bfl" and Path(base).expanduser().is_dir():
        title = families.title(family)
        raise ToolError(f"{Path(base).name} is a {title} diffusers folder: merge into the {title} transformer file "
                        "(Black Forest Labs' layout, as flux1-dev.safetensors) that ComfyUI and Forge load")
    table = name_table(family, _table_dir(base, config_dir))
    plans = []
    for path, strength in pairs:
        lora = read_lora(path)
        lf = guess_family(lora) or family
        if lf != family:
            raise ToolError(f"{lora.path.name} is {a_family(lf)} LoRA; the base model is {family_words(family)}. "
                            "Nothing was written")
        matched, unmatched = resolve(lora, family, table)
        if not skip_unmatched:
            refuse_unmatched(lora, unmatched, family)
        plans.append((lora, strength, matched, unmatched))
    if layout == "bfl":
        from .flux_merge import merge_into_flux_file

        return merge_into_flux_file(base, plans, outp, clip_l=clip_l, save_precision=save_precision,
                                    overwrite=overwrite, progress=progress, title=families.title(family))
    save_precision = save_precision or "fp16"
    dtype = save_dtype(save_precision, torch.float16)
    pipe, _ = _load(base, "base model", progress, config_dir)
    total = sum(len(m) for _, _, m, _ in plans)
    tick = Ticker(total, "Applying modules", progress)
    done = 0
    summary = Summary("Merge into model", str(outp))
    with torch.no_grad():
        for lora, strength, matched, unmatched in plans:
            for key, m in matched.items():
                module = _layer_module(pipe, m.layer)
                new = m.module.applied_to(module.weight.data.float(), strength)
                module.weight.data.copy_(new.to(module.weight.dtype))
                done += 1
                tick(done, key)
            summary.add_applied(lora, strength, matched, unmatched)
    if progress:
        progress(total, total, f"Writing {outp.name}")
    sd = pipeline_to_ldm_state_dict(family, pipe.unet, pipe.vae, pipe.text_encoder, getattr(pipe, "text_encoder_2", None))
    sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    meta = {"lw_merged_loras": json.dumps([[Path(p).name, s] for p, s in pairs]), "lw_base_model": Path(base).name,
            "modelspec.architecture": families.get(family).architecture}
    save_single_file(outp, sd, meta)
    summary.notes.insert(0, f"{summary.applied} modules applied to {Path(base).name} ({family_words(family)}); "
                            f"saved in {save_precision or 'fp16'}.")
    return summary


def _candidates(family: str, part: str, path: str, module: nn.Module, conv_rank: int) -> str:
    """'' if a LoRA may target this layer, else why not (kohya's extraction targets)."""
    if part == "transformer":
        return "" if path.startswith(("transformer_blocks.", "single_transformer_blocks.")) and isinstance(
            module, nn.Linear) else "not a layer of the double/single blocks"
    if part.startswith("text_encoder"):
        return "" if any(path.endswith("." + s) for s in TE_LAYERS) else "not an attention/MLP layer"
    if ".attentions." in path:
        if isinstance(module, nn.Conv2d) and module.kernel_size != (1, 1):
            return "" if conv_rank > 0 else "a 3x3 convolution (set --conv-rank to extract it)"
        return ""
    if isinstance(module, nn.Conv2d) and UNET_CONV.match(path):
        if module.kernel_size == (1, 1) or conv_rank > 0:
            return ""
        return "a 3x3 convolution (set --conv-rank to extract it)"
    return "not a layer LoRAs train (time/class embedding, in/out convolution)"


def extract_lora(base: str, tuned: str, out: str | Path, *, rank: int = 32, conv_rank: int = 0,
                 clamp: float = 0.99, min_diff: float = 0.01, save_precision: str = "fp16", fmt: str | None = None,
                 config_dir: str = "", overwrite: bool = False, progress: Progress | None = None) -> Summary:
    """A LoRA approximating `tuned - base` per layer (truncated SVD, factors clamped at the `clamp` quantile;
    1 = off), alpha = rank. A text encoder whose largest change is at most `min_diff` is left out, and said so."""
    if rank < 1 or conv_rank < 0:
        raise ToolError("--rank must be at least 1 and --conv-rank at least 0")
    if not 0 < clamp <= 1:
        raise ToolError(f"--clamp-quantile {clamp}: between 0 and 1 (1 = no clamping)")
    outp = check_output(out, overwrite, [base, tuned])
    pb, fam_b = _load(base, "base model", progress, config_dir)
    pt, fam_t = _load(tuned, "tuned model", progress, config_dir)
    if fam_b.name != fam_t.name:
        raise ToolError(f"{Path(tuned).name} is {a_family(fam_t.name)} model but {Path(base).name} is "
                        f"{a_family(fam_b.name)} model: extract needs two models of the same family")
    family = fam_b.name
    table = name_table(family, _table_dir(base, config_dir) or _table_dir(tuned, config_dir))
    layers = list(table.layers.values())
    summary = Summary("Extract", str(outp))
    result: dict[str, Matched] = {}
    fractions: dict[str, float] = {}
    diffs: dict[str, list] = {}
    tick = Ticker(len(layers), "Comparing layers", progress)
    with torch.no_grad():
        for i, layer in enumerate(layers):
            try:
                mb, mt = _layer_module(pb, layer), _layer_module(pt, layer)
            except ToolError:
                continue
            why = _candidates(family, layer.part, layer.path, mb, conv_rank)
            wb, wt = mb.weight.float(), mt.weight.float()
            if wb.shape != wt.shape:
                raise ToolError(f"{layer.key} has shape {tuple(wb.shape)} in {Path(base).name} but {tuple(wt.shape)} in "
                                f"{Path(tuned).name}: the two models do not share an architecture")
            delta = wt - wb
            biggest = float(delta.abs().max()) if delta.numel() else 0.0
            if biggest == 0.0:
                tick(i + 1, layer.key)
                continue
            if why:
                summary.skipped.append((layer.key, f"changed (max |diff| {biggest:.3g}) but {why}"))
                tick(i + 1, layer.key)
                continue
            diffs.setdefault(layer.part, []).append((layer, delta, biggest))
            tick(i + 1, layer.key)
    work = []
    for part, items in diffs.items():
        top = max(b for _, _, b in items)
        if part.startswith("text_encoder") and top <= min_diff:
            summary.notes.append(f"The {PART_TITLES[part]} differs by at most {top:.3g} (<= --min-diff {min_diff}): "
                                 f"not extracted ({len(items)} layers left out).")
            summary.skipped += [(layer.key, f"{PART_TITLES[part]} change below --min-diff") for layer, _, _ in items]
            continue
        work += items
    tick = Ticker(len(work), "Extracting (SVD)", progress)
    for i, (layer, delta, _) in enumerate(work):
        conv3 = delta.dim() == 4 and delta.shape[-1] > 1
        r = conv_rank if conv3 else rank
        u, s, vh = svd_dense(delta.flatten(1))
        k = min(r, int(s.numel()))
        fractions[layer.key] = retained(s, k)
        up, down = clamp_quantile(u[:, :k] * s[:k], vh[:k], clamp)
        result[layer.key] = Matched(layer, lora_module(layer.key, up, down, k, tuple(delta.shape)))
        tick(i + 1, layer.key)
    if not result:
        raise ToolError(f"{Path(tuned).name} and {Path(base).name} do not differ in any layer a LoRA can hold: "
                        "nothing to extract")
    meta = {"ss_network_module": "networks.lora", "ss_network_dim": str(rank), "ss_network_alpha": str(rank),
            "ss_base_model_version": fam_b.ss_base_model_version, "modelspec.architecture": fam_b.modelspec_architecture,
            "ss_output_name": outp.stem, "lw_extracted_from": json.dumps([Path(base).name, Path(tuned).name]),
            "lw_extract": json.dumps({"rank": rank, "conv_rank": conv_rank, "clamp_quantile": clamp, "min_diff": min_diff})}
    if conv_rank:
        meta["ss_network_args"] = json.dumps({"conv_dim": conv_rank, "conv_alpha": conv_rank})
    summary.written = write_lora(outp, result, table, fmt or default_format(family), save_dtype(save_precision, torch.float16),
                                 meta)
    mean = sum(fractions.values()) / len(fractions)
    summary.notes.insert(0, f"{summary.written} modules extracted ({parts_line(part_counts(result))}), rank {rank}"
                            + (f", convolutions rank {conv_rank}" if conv_rank else "")
                            + f"; retained (Frobenius, before clamping) mean {mean:.4f}.")
    summary.details["retained"] = fractions
    return summary
