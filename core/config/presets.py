"""Presets: partial training configs (TOML) that fill in a set of values over the current ones.

A preset file holds a ``[preset]`` table (``name``, ``description``, ``order``, optionally ``family`` and
``subject``, and ``vram``: the GB tier of core/config/recipes.py it is a cell of) and any training keys, flat or in
the usual group sections. Every value is checked against :class:`TrainConfig` when the file is read. Shipped presets
live in ``presets/``; the user's own in ``presets/user/``. The presets per family x subject x VRAM tier are generated
from the table in core/config/recipes.py (:func:`generated_presets`), listed after the shipped files.

Filling the form from a preset or the guided start (:func:`fill_values`) sets what it chooses and resets every other
field to its default, except the user's own inputs (``own`` in the schema), so nothing of an earlier preset stays.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from .toml_io import ConfigError, atomic_write_text, flatten, validate
from .fields import all_fields, field_meta
from .params import GROUPS
from .schema import TrainConfig

PRESETS_DIR = Path(__file__).resolve().parents[2] / "presets"
USER_DIR = PRESETS_DIR / "user"


# How long to train, the one thing a hand-made preset (presets/*.toml with [preset] vram) sets apart from its cell of
# core/config/recipes.py: the file counts epochs (each image seen repeats x epochs times, whatever the image count),
# the table counts steps for a typical image count (the guided start fits them to the real one). tests/test_presets.py
# checks that every other value is the cell's.
LENGTH_KEYS = frozenset({"max_train_epochs", "max_train_steps", "save_every_n_epochs", "save_every_n_steps",
                         "sample_every_n_epochs", "sample_every_n_steps"})


@dataclass
class Preset:
    name: str
    values: dict[str, Any]
    description: str = ""
    path: Path | None = None
    user: bool = False
    order: int = 1000
    family: str | None = None  # the model family it is made for (sd15, sdxl, flux); None: any
    subject: str | None = None  # character, style, concept, clothing (core/config/recipes.py)
    vram: int | None = None  # the VRAM tier (GB) it is made for
    generated: bool = False  # made from the table of core/config/recipes.py (not a file)
    reasons: list[str] = field(default_factory=list)  # why each value (generated presets)

    @property
    def label(self) -> str:
        return f"{self.name} (mine)" if self.user else self.name


def read_preset(path: str | Path, *, user: bool = False) -> Preset:
    """Read and check one preset file; ConfigError lines start with the file name."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError([f"{p.name}: cannot read the preset: {e}"]) from None
    meta = data.pop("preset", {})
    if not isinstance(meta, dict):
        raise ConfigError([f"{p.name}: [preset] must be a table with name and description"])
    values = flatten(data)
    try:
        validate(values)
    except ConfigError as e:
        raise ConfigError([f"{p.name}: {line}" for line in e.lines]) from None
    try:
        order = int(meta.get("order", 1000))
    except (TypeError, ValueError):
        order = 1000
    fam, sub, vram = meta.get("family"), meta.get("subject"), meta.get("vram")
    if vram is not None and not (isinstance(vram, int) and vram > 0):
        raise ConfigError([f"{p.name}: [preset] vram = {vram!r}: give the GPU memory it is made for in GB, e.g. 12"])
    return Preset(name=str(meta.get("name") or p.stem), values=values, description=str(meta.get("description", "")),
                  path=p, user=user, order=order, family=str(fam) if fam else None, subject=str(sub) if sub else None,
                  vram=vram)


def preset_name(family: str, subject: str, tier: int) -> str:
    from .recipes import FAMILIES

    # not "SDXL character 12 GB": a shipped name ("SDXL character") must not be a part of a generated one
    return f"{FAMILIES[family].label} · {subject} · {tier} GB"


def generated_presets() -> list[Preset]:
    """One preset per family x subject x VRAM tier of core/config/recipes.py where something fits, for the
    subject's typical image count (the guided start and `python -m core suggest` use the real count)."""
    from .recipes import FAMILIES, MEMORY, SUBJECTS, num
    from .suggest import recipe_values, table_cells

    out = []
    for i, (fam, sub, tier) in enumerate(table_cells()):
        if not MEMORY[fam][tier].fits:
            continue
        values, reasons = recipe_values(fam, sub, tier)
        cfg = validate(values)
        v = cfg.model_dump()
        s = SUBJECTS[sub]
        mem = [f"{v['base_precision']} base" if v["base_precision"] != "auto" else "",
               f"{v['blocks_to_swap']} blocks swapped" if v["blocks_to_swap"] else "",
               "gradient checkpointing" if v["gradient_checkpointing"] else ""]
        text = (f"{FAMILIES[fam].label}, {s.label}, for a {tier} GB GPU: rank {v['network_dim']} / alpha "
                f"{v['network_alpha']:g}, {v['optimizer_type']} at {num(v['learning_rate'])}, batch "
                f"{v['train_batch_size']}, {v['resolution']} px" + "".join(f", {m}" for m in mem if m)
                + f"; {v['max_train_steps']} steps for {s.typical_images} images (the guided start fits the steps to "
                f"your image count). Generated from core/config/recipes.py.")
        out.append(Preset(name=preset_name(fam, sub, tier), values={k: v[k] for k in values}, description=text, order=100 + i, family=fam,
                          subject=sub, vram=tier, reasons=reasons, generated=True))
    return out


def list_presets(shipped_dir: Path | None = None, user_dir: Path | None = None) -> list[Preset]:
    """Shipped presets in their order, then the user's by name. A broken user file is skipped."""
    shipped_dir = shipped_dir or PRESETS_DIR
    user_dir = user_dir or USER_DIR
    shipped = [read_preset(p) for p in sorted(shipped_dir.glob("*.toml"))] + generated_presets()
    shipped.sort(key=lambda pr: (pr.order, pr.name))
    mine = []
    for p in sorted(user_dir.glob("*.toml")) if user_dir.is_dir() else []:
        try:
            mine.append(read_preset(p, user=True))
        except ConfigError:
            continue
    mine.sort(key=lambda pr: pr.name.lower())
    return shipped + mine


def find_preset(label: str, presets: list[Preset] | None = None) -> Preset:
    for pr in presets if presets is not None else list_presets():
        if label in (pr.label, pr.name):
            return pr
    raise KeyError(f"no preset named {label!r}")


def filter_presets(presets: list[Preset], family: str | None = None, vram: int | None = None) -> list[Preset]:
    """The presets for a model family (None: every family) and a GPU of `vram` GB (None: any size), in their order:
    the table's presets of that tier, the hand-made ones that fit it; one made for any family (the user's own) or
    for no tier (the CPU demo) is always listed."""
    def fits(p: Preset) -> bool:
        if vram is None or p.vram is None:
            return True
        return p.vram == vram if p.generated else p.vram <= vram  # a generated preset of another tier: not it

    return [p for p in presets if (family is None or p.family in (None, family)) and fits(p)]


def own_fields() -> frozenset[str]:
    """The user's own inputs (``own`` in the schema): the base model and its files, the dataset, mask and cache
    folders, caption extension, trigger word, output folder and name, training comment and sample prompts."""
    return frozenset(m["name"] for m in all_fields() if m["own"])


def fill_values(chosen: dict[str, Any], current: TrainConfig | dict[str, Any] | None = None,
                earlier: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a preset or the guided start writes into the form: the `chosen` values and the default of every other
    field, so nothing of an earlier preset or edit stays (conv_dim, network_type, masked_loss, noise options ...).
    The user's own inputs (:func:`own_fields`) are left out, so they stay as they are, unless `earlier` (the own
    values an earlier preset put in, e.g. the Demo's 32 px sample prompts) shows that `current` still holds them:
    those are reset too."""
    own, earlier = own_fields(), earlier or {}
    cur = current.model_dump() if isinstance(current, TrainConfig) else dict(current or {})
    defaults = TrainConfig().model_dump()
    out: dict[str, Any] = {}
    for name, default in defaults.items():
        if name in chosen:
            out[name] = chosen[name]
        elif name not in own or (name in earlier and _same(name, cur.get(name), earlier[name])):
            out[name] = default
    return out


def own_values_set(chosen: dict[str, Any], typed: tuple[str, ...] = ()) -> dict[str, Any]:
    """The user's own fields a fill sets other than those the user typed for it (`typed`): the `earlier` of the
    next :func:`fill_values`."""
    own = own_fields()
    return {k: v for k, v in chosen.items() if k in own and k not in typed}


def _same(name: str, a: Any, b: Any) -> bool:
    """Whether two values of a field are the same once the schema has read them (the form's text for a list...)."""
    cfg = TrainConfig()
    try:
        setattr(cfg, name, a)
        x = getattr(cfg, name)
        setattr(cfg, name, b)
    except ValueError:
        return False
    return x == getattr(cfg, name)


def apply_preset(preset: Preset, base: TrainConfig | dict[str, Any] | None = None) -> TrainConfig:
    """The preset over the base config (defaults if None): its values, the base's own inputs, defaults elsewhere."""
    data = base.model_dump() if isinstance(base, TrainConfig) else dict(base or {})
    data.update(fill_values(preset.values, data))
    return validate(data)


def changed_values(config: TrainConfig) -> dict[str, Any]:
    """The values of ``config`` that differ from the defaults."""
    defaults = TrainConfig()
    return {k: v for k, v in config.model_dump().items() if v != getattr(defaults, k) and v is not None}


def slug(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name.strip()).strip("._")
    return s[:60] or "preset"


def save_user_preset(name: str, config: TrainConfig, description: str = "", user_dir: Path | None = None) -> Path:
    """Save the values of ``config`` that differ from the defaults as the user's preset ``name``."""
    name = name.strip()
    if not name:
        raise ConfigError(["preset name is empty: type a name for it"])
    user_dir = user_dir or USER_DIR
    values = changed_values(config)
    grouped: dict[str, dict[str, Any]] = {}
    for k, v in values.items():
        grouped.setdefault(field_meta(k)["group"], {})[k] = v
    doc: dict[str, Any] = {"preset": {"name": name, "description": description or "Saved from the GUI."}}
    doc.update({g: grouped[g] for g in GROUPS if g in grouped})
    path = user_dir / f"{slug(name)}.toml"
    atomic_write_text(path, tomli_w.dumps(doc))
    return path
