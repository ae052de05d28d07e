"""`lora inspect` (what a LoRA file holds) and `lora check` (does it fit this base model)."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import torch

from ... import families
from .common import a_family, family_words, match_lora, module_count, part_counts, parts_line
from .lorafile import FORMAT_TITLES, KIND_TITLES, ToolError, guess_family, read_lora
from .names import PART_TITLES, name_table

COMPONENT_WORDS = {"unet": "UNet", "transformer": "transformer", "text_encoder": "text encoder (CLIP-L for Flux)",
                   "text_encoder_2": "text encoder 2 (OpenCLIP bigG)"}


def _json(text: str):
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


def _single(counter: Counter):
    if not counter:
        return None
    return next(iter(counter)) if len(counter) == 1 else "mixed"


def _num(x):
    return int(x) if float(x).is_integer() else round(float(x), 6)


def metadata_summary(meta: dict[str, str]) -> dict:
    tags: Counter = Counter()
    for per_dir in (_json(meta.get("ss_tag_frequency", "")) or {}).values():
        if isinstance(per_dir, dict):
            tags.update({str(k).strip(): int(v) for k, v in per_dir.items() if isinstance(v, (int, float))})
    dirs = _json(meta.get("ss_dataset_dirs", "")) or {}
    dataset = [{"folder": k, "images": v.get("img_count"), "repeats": v.get("n_repeats")}
               for k, v in dirs.items() if isinstance(v, dict)]
    out = {
        "output_name": meta.get("ss_output_name", ""),
        "trigger": meta.get("modelspec.trigger_phrase", ""),
        "title": meta.get("modelspec.title", ""),
        "architecture": meta.get("modelspec.architecture", ""),
        "base_model_version": meta.get("ss_base_model_version", ""),
        "base_model": meta.get("ss_sd_model_name", ""),
        "base_model_hash": meta.get("ss_new_sd_model_hash", "") or meta.get("ss_sd_model_hash", ""),
        "network_module": meta.get("ss_network_module", ""),
        "network_args": _json(meta.get("ss_network_args", "")) or {},
        "resolution": meta.get("ss_resolution", "") or meta.get("modelspec.resolution", ""),
        "epoch": meta.get("ss_epoch", ""), "epochs": meta.get("ss_num_epochs", ""), "steps": meta.get("ss_steps", ""),
        "images": meta.get("ss_num_train_images", ""),
        "learning_rate": meta.get("ss_learning_rate", ""), "optimizer": meta.get("ss_optimizer", ""),
        "dataset": dataset, "dataset_hash": meta.get("lw_dataset_hash", ""),
        "top_tags": [[t, n] for t, n in tags.most_common(20)],
        "trained_at": meta.get("modelspec.date", "") or meta.get("ss_training_finished_at", ""),
    }
    return {k: v for k, v in out.items() if v not in ("", [], {}, None)}


def inspect_lora(path: str | Path) -> dict:
    """Everything a LoRA file says about itself (JSON-ready); reads the file once, modifies nothing."""
    lora = read_lora(path)
    family = guess_family(lora)
    warnings: list[str] = []
    parts: dict[str, int] = {}
    unmatched: list[tuple[str, str]] = []
    if families.find(family) is not None:
        _, _, _, matched, unmatched = match_lora(lora, family, shapes=False)
        parts = part_counts(matched)
        if unmatched:
            warnings.append(f"{len(unmatched)} module(s) do not map to a layer of {a_family(family)} model, so "
                            f"loaders skip them (first: {unmatched[0][0]}: {unmatched[0][1]})")
    else:
        warnings.append("The model family cannot be told from this file (no metadata, unknown key names).")
    ranks, alphas, conv_ranks, conv_alphas = Counter(), Counter(), Counter(), Counter()
    kinds = Counter()
    untrained, broken = [], []
    for name, mod in lora.modules.items():
        kinds[mod.kind] += 1
        conv3 = mod.conv and any(t.dim() == 4 and t.shape[-1] > 1 for t in mod.tensors.values())
        (conv_ranks if conv3 else ranks)[mod.rank] += 1
        alpha = mod.alpha if mod.alpha is not None else (mod.rank or 1)
        (conv_alphas if conv3 else alphas)[_num(alpha)] += 1
        ups = [t for r, t in mod.tensors.items() if r in ("up", "w1a", "w2a", "w1", "w2")]
        if any(not torch.isfinite(t.float()).all() for t in mod.tensors.values()):
            broken.append(name)
        elif mod.kind in ("lora", "dora") and ups and not bool(ups[0].any()):
            untrained.append(name)
    if broken:
        warnings.append(f"{len(broken)} module(s) hold NaN or infinite values (e.g. {broken[0]}): the file is "
                        "broken (training diverged); use an earlier epoch")
    if untrained:
        warnings.append(f"{len(untrained)} module(s) are all zero and change nothing (e.g. {untrained[0]}): they "
                        "were never trained")
    if "dora" in kinds:
        from ...generation.lora_files import DORA_NOTE

        warnings.append(DORA_NOTE[0].upper() + DORA_NOTE[1:])
    if lora.unknown:
        warnings.append(f"{len(lora.unknown)} tensor(s) are not LoRA weights and are ignored by loaders "
                        f"(e.g. {lora.unknown[0]})")
    meta = metadata_summary(lora.metadata)
    kind_words = " + ".join(KIND_TITLES[k] for k in KIND_TITLES if k in kinds)
    if kinds.keys() == {"lora"} and conv_ranks:
        kind_words = "LoCon (LoRA with convolution layers)"
    return {
        "file": str(lora.path), "size_bytes": lora.path.stat().st_size,
        "family": family, "family_title": family_words(family) if family else "unknown",
        "format": lora.format, "format_title": FORMAT_TITLES[lora.format],
        "network": kind_words, "kinds": dict(kinds),
        "modules": len(lora.modules),
        "parts": parts, "components": [COMPONENT_WORDS.get(p, p) for p in parts],
        "rank": _single(ranks), "alpha": _single(alphas), "ranks": dict(ranks), "alphas": dict(alphas),
        "conv_rank": _single(conv_ranks), "conv_alpha": _single(conv_alphas),
        "dtype": str(lora.dtype).replace("torch.", ""),
        "unmapped": [{"module": n, "reason": r} for n, r in unmatched],
        "unknown_tensors": lora.unknown,
        "untrained_modules": len(untrained), "broken_modules": len(broken),
        "summary": meta, "metadata": lora.metadata, "warnings": warnings,
    }


def inspect_lines(info: dict) -> list[str]:
    size = info["size_bytes"] / 2**20
    rank = info["rank"] if info["rank"] != "mixed" else f"mixed {info['ranks']}"
    alpha = info["alpha"] if info["alpha"] != "mixed" else f"mixed {info['alphas']}"
    lines = [f"{Path(info['file']).name}: {info['family_title']} {info['network']}, {info['modules']} modules, "
             f"{size:.1f} MiB ({info['dtype']})",
             f"  format: {info['format_title']}",
             f"  rank {rank}, alpha {alpha}" + (f"; convolutions rank {info['conv_rank']}, alpha {info['conv_alpha']}"
                                                if info["conv_rank"] is not None else ""),
             f"  modules per part: {parts_line(info['parts'])}"]
    s = info["summary"]
    for key, label in (("trigger", "trigger words"), ("base_model", "trained on"), ("base_model_hash", "base hash"),
                       ("resolution", "resolution"), ("epoch", "epoch"), ("steps", "steps"), ("images", "images"),
                       ("learning_rate", "learning rate"), ("optimizer", "optimizer"),
                       ("network_module", "network module"), ("dataset_hash", "dataset hash")):
        if key in s:
            lines.append(f"  {label}: {s[key]}")
    if s.get("dataset"):
        lines.append("  dataset: " + ", ".join(f"{d['folder']} ({d['images']} images x {d['repeats']})"
                                               for d in s["dataset"]))
    if s.get("top_tags"):
        lines.append("  top tags: " + ", ".join(f"{t} ({n})" for t, n in s["top_tags"][:12]))
    lines += [f"  warning: {w}" for w in info["warnings"]]
    return lines


def check_lora(path: str | Path, base: str, base_config_dir: str = "") -> dict:
    """Does this LoRA fit this base model: its family against the base's, then how many modules map to layers
    of that model (names and shapes). `ok` is False for another family or any module that maps to nothing."""
    from ...models.loading import ModelLoadError, detect_family, source_kind

    lora = read_lora(path)
    lora_family = guess_family(lora)
    try:
        base_family, _ = detect_family(base, "auto", base_config_dir)
    except ModelLoadError as e:
        raise ToolError(str(e)) from e
    name = Path(lora.path).name
    result = {"file": str(lora.path), "base": base, "lora_family": lora_family, "base_family": base_family,
              "modules": len(lora.modules), "mapped": 0, "unmapped": [], "parts": {}}
    if lora_family and lora_family != base_family and lora_family not in _siblings(base_family):
        result.update(ok=False, message=f"{name} is {a_family(lora_family)} LoRA; the base model is "
                                        f"{family_words(base_family)}. Choose {a_family(lora_family)} base model "
                                        f"or another LoRA.")
        return result
    folder = base if source_kind(base) == "folder" else (base_config_dir or None)
    _, fam, _, matched, unmatched = match_lora(lora, base_family, folder)
    result.update(mapped=module_count(matched), parts=part_counts(matched),
                  unmapped=[{"module": n, "reason": r} for n, r in unmatched])
    if unmatched:
        result.update(ok=False, message=f"{result['mapped']} of {len(lora.modules)} modules of {name} map to layers of "
                                        f"this {family_words(base_family)} model; {len(unmatched)} do not (first: "
                                        f"{unmatched[0][0]}: {unmatched[0][1]}), and loaders would skip them.")
    else:
        result.update(ok=True, message=f"All {result['mapped']} modules of {name} map to layers of this "
                                       f"{family_words(base_family)} model ({parts_line(result['parts'])}).")
    return result


__all__ = ["inspect_lora", "inspect_lines", "check_lora", "name_table", "PART_TITLES"]


def _siblings(family: str | None) -> tuple[str, ...]:
    spec = families.find(family)
    return spec.siblings if spec else ()
