"""The GUI's guided start: from a subject, a base model (or a family), a dataset folder and the GPU (detected or
chosen), the values of the table's cell (core/config/suggest.py), and what was chosen and why, in words.

Also the live VRAM check of the form (`fit_check`). torch is imported only to ask CUDA for the GPU's memory.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from .recipes import FAMILIES, TIERS, family_of, subject_of

AUTO = "auto"


@dataclass
class Gpu:
    name: str = ""
    vram_gb: float | None = None  # None: no NVIDIA GPU (CPU only)


@lru_cache(maxsize=1)
def detect_gpu() -> Gpu:
    """The first CUDA device's name and memory (torch.cuda), or Gpu() on a computer without one."""
    from ..ml_lock import ML_IMPORT_LOCK

    try:
        with ML_IMPORT_LOCK:
            import torch
        if not torch.cuda.is_available():
            return Gpu()
        props = torch.cuda.get_device_properties(0)
        return Gpu(props.name, round(props.total_memory / 1024 ** 3, 1))
    except Exception:  # a broken driver is reported by the system check; here it means no GPU to plan for
        return Gpu()


@dataclass
class Guided:
    ok: bool
    values: dict[str, Any] = field(default_factory=dict)  # TrainConfig keys for the form
    headline: str = ""
    reasons: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # why it could not fill the form
    family: str | None = None
    vram_gb: float | None = None
    fits: bool | None = None


def vram_choice(choice: str | float | None, gpu: Gpu) -> tuple[float | None, str]:
    """(VRAM to plan for, where it comes from) for the GUI's VRAM choice ('auto' or a number of GB)."""
    if choice not in (None, "", AUTO):
        try:
            gb = float(choice)
        except (TypeError, ValueError):
            gb = 0.0
        if gb > 0:
            return gb, f"{gb:g} GB, chosen by hand"
    if gpu.vram_gb:
        return gpu.vram_gb, f"{gpu.vram_gb:g} GB, detected ({gpu.name})"
    return None, "no NVIDIA GPU found (CPU only)"


def guided_start(subject: str, model: str, family: str | None, data_dir: str, vram: str | float | None,
                 gpu: Gpu | None = None, model_folders: list[str] = ()) -> Guided:
    """The form values for this subject, base model (or family), dataset and VRAM, with the reasons. Without a
    base model, one of the family's in `model_folders` is chosen (with the parts it needs), else the catalog's
    is named."""
    from ..models.choose import describe_base
    from ..runs.steps_plan import scan_concepts
    from ..toy.starter import TOY_MODEL
    from .suggest import suggest_config

    gpu = gpu if gpu is not None else detect_gpu()
    model = (model or "").strip()
    base = {"pretrained_model_name_or_path": model} if model else {}
    if data_dir and data_dir.strip():
        base["train_data_dir"] = data_dir.strip()
    folders, folder_problems = scan_concepts(data_dir or "")
    images = sum(f.images for f in folders)
    if model and Path(model).expanduser().resolve() == TOY_MODEL.resolve():
        return _demo(base, gpu)
    fam = family if family and family != AUTO else describe_base(model)[0] if model else None
    if fam is None:
        return Guided(False, problems=[f"Choose the base model's family ({', '.join(f.label for f in FAMILIES.values())}), "
                                       "or a base model file or diffusers folder the program can read."])
    if fam not in FAMILIES:
        return Guided(False, family=fam, problems=[f"The base model is {fam}: the table has presets for "
                                                   f"{', '.join(f.label for f in FAMILIES.values())} only. Fill the "
                                                   "form by hand, or choose the family."])
    gb, where = vram_choice(vram, gpu)
    reasons = []
    cpu = gb is None
    if cpu:
        gb = float(TIERS[0])
        reasons.append("No NVIDIA GPU was found: training a real model on the CPU takes many hours or days. The "
                       f"{TIERS[0]} GB settings (the smallest); choose your GPU's VRAM by hand if another computer "
                       "will train.")
    if images == 0:
        reasons.append("The dataset folder has no usable images yet ("
                       + (" ".join(folder_problems) or "no folder given") + "): the steps are for a typical count.")
    s = suggest_config(fam, gb, images or None, subject)
    values = {**s.values, **base}
    if cpu and values.get("optimizer_type") in ("AdamW8bit", "Lion8bit"):
        values["optimizer_type"] = "AdamW"
        reasons.append("optimizer_type = AdamW: 8-bit AdamW needs an NVIDIA GPU")
    sub = subject_of(subject)
    fam_label = family_of(fam).label
    if not s.fits:
        return Guided(False, family=fam, vram_gb=gb, fits=False, reasons=reasons + s.reasons, problems=[s.message],
                      headline=f"{fam_label} {sub.label}: nothing fits {gb:g} GB.")
    own = _own_base(fam, model_folders, TOY_MODEL) if not model else None
    if own is not None:  # the user's own model of this family, with the part files it needs
        values.update(own[1])
        reasons.insert(0, f"Base model: {Path(own[0]).name} from your model folders (the first {fam_label} model "
                          "there that has every part it needs; choose another in the Base model list if you like)")
    elif not model:  # no base model yet: the catalog's one for this family and GPU
        from ..failures import size_text
        from ..models.catalog import CatalogError, suggest_entry

        try:
            e = suggest_entry(fam, None if cpu else gb)
        except CatalogError:
            e = None
        if e is not None:
            gate = f"; gated: accept its licence at {e.licence_page} and set your token" if e.gated else ""
            reasons.insert(0, f"No base model chosen yet: the catalog's {fam_label} model is {e.title} "
                              f"({size_text(e.size)}, licence {e.license}{gate}). Download it in 'Download a base "
                              f"model' above (or `python -m core models get {e.name}`), then choose it.")
    count = f"{images} images" if images else f"{s.images} images (typical)"
    where = f"{gb:g} GB settings for a computer without an NVIDIA GPU" if cpu else where
    headline = (f"Filled in for {fam_label}, {sub.label}, {where}, {count}: "
                f"{values['max_train_steps']} steps, estimated peak {s.peak_vram_gb:.1f} GB.")
    return Guided(True, values, headline, reasons + s.reasons, family=fam, vram_gb=gb, fits=True)


def _own_base(family: str, folders: list[str], toy: Path) -> tuple[str, dict[str, str]] | None:
    """(path, {part setting: file}) of the first base model of `family` in `folders` whose parts are all there."""
    if not folders:
        return None
    from ..models.library import scan

    lib = scan(list(folders))
    for f in lib.by_family().get(family, []):
        if Path(f.path).resolve() == toy.resolve():
            continue
        parts = lib.best_parts(f)
        if set(parts) == set(f.needs):
            return f.path, {"pretrained_model_name_or_path": f.path, **parts}
    return None


def _demo(base: dict[str, Any], gpu: Gpu) -> Guided:
    from ..toy.starter import DEMO_PRESET
    from .presets import find_preset

    pr = find_preset(DEMO_PRESET)
    where = f"{gpu.name}, {gpu.vram_gb:g} GB" if gpu.vram_gb else "CPU only"
    return Guided(True, {**pr.values, **base}, f"The built-in toy model: the {DEMO_PRESET} preset ({where}).",
                  [f"The toy model is for trying the program: {pr.description}"], family="sd15",
                  vram_gb=gpu.vram_gb, fits=True)


def fit_check(cfg, family: str | None, vram_gb: float | None):
    """The estimate of `cfg` (with the cheapest changes that make it fit when `vram_gb` is given), or None when
    the family is not known."""
    from ..estimate.vram import estimate, suggest

    fam = family if family and family != AUTO else (cfg.model_family if cfg.model_family != AUTO else None)
    if fam is None:
        from .guardrails import base_family

        fam = base_family(cfg)
    if fam is None:
        return None
    return suggest(cfg, vram_gb, fam) if vram_gb else estimate(cfg, fam)
