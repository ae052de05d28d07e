"""Settings from elsewhere merged into the source first: GUI additional_parameters, an sd-scripts dataset_config."""
from __future__ import annotations

import json
import tomllib
from typing import TYPE_CHECKING

from .args import parse_cli_args
from .coerce import blank, same
from .keys import DATASET_KEYS
from .masks import subset_masks
from .report import fmt

if TYPE_CHECKING:
    from .converter import Converter


def step_additional_parameters(cv: Converter) -> None:
    """GUI 'additional_parameters' are extra sd-scripts options; they come last, so they win."""
    text = cv.take("additional_parameters")
    if blank(text):
        cv.ignore("additional_parameters")
        return
    found, stray = parse_cli_args(str(text))
    if found:
        cv.note(f"additional_parameters = {fmt('x', text)} read as sd-scripts options: "
                + ", ".join(f"--{n}" for n in found))
    for name, value in found.items():
        if name in cv.src and not blank(cv.src[name]) and not same(cv.src[name], value):
            cv.note(f"additional_parameters --{name} {fmt(name, value)} replaces {name} = "
                    f"{fmt(name, cv.src[name])}")
        cv.src[name] = value
        cv.used.discard(name)
    if stray:
        cv.unmapped("additional_parameters (unparsed part)", " ".join(stray),
                    "not understood: expected --option value")


def step_dataset_config(cv: Converter) -> None:
    """sd-scripts dataset_config: its dataset-wide settings win over the top-level ones, as in sd-scripts."""
    value = cv.take("dataset_config")
    if blank(value):
        cv.ignore("dataset_config")
        return
    path, cands = cv.find_file(str(value))
    reason = ("dataset config files are not supported: put the images into '<repeats>_<name>' folders under "
              "train_data_dir")
    if path is None:
        cv.unmapped("dataset_config", value, reason + " (file not found here, so its settings were not read)")
        return
    try:
        text = path.read_text(encoding="utf-8-sig")
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (OSError, ValueError) as e:
        cv.unmapped("dataset_config", value, f"{reason} (cannot read it: {e})")
        return
    datasets = data.get("datasets") or []
    merged = dict(data.get("general") or {})
    if datasets:
        merged.update({k: v for k, v in datasets[0].items() if k != "subsets"})
    subsets = [s for ds in datasets for s in (ds.get("subsets") or [])]
    if len(subsets) == 1:
        merged.update({k: v for k, v in subsets[0].items() if k in DATASET_KEYS})
    mask_note = subset_masks(subsets, merged)
    desc = "; ".join(
        f"{'reg ' if s.get('is_reg') else ''}image_dir {fmt('x', s.get('image_dir', ''))} x{s.get('num_repeats', 1)}"
        + (f" class_tokens {fmt('x', s['class_tokens'])}" if s.get("class_tokens") else "")
        + (f" conditioning_data_dir {fmt('x', s['conditioning_data_dir'])}" if s.get("conditioning_data_dir") else "")
        for s in subsets)
    taken = []
    for k, v in merged.items():
        name = "train_batch_size" if k == "batch_size" else k
        if k in DATASET_KEYS:
            cv.src[name] = v
            cv.used.discard(name)
            taken.append(name)
    extra = f"; its settings {', '.join(taken)} were used" if taken else ""
    if mask_note:
        extra += "; " + mask_note
    if len(datasets) > 1:
        extra += "; it has several datasets, only the first one's settings were used"
    cv.unmapped("dataset_config", value, f"{reason}. Subsets: {desc or 'none'}{extra}")
