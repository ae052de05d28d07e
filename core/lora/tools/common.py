"""What every LoRA tool shares: matching a file's modules to a model's layers, the summary it prints, progress,
writing the output (atomic, never over an existing file unless asked, never over an input)."""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch

from ... import families
from ..kohya_format import SAVE_DTYPES, kohya_name, model_hash, save_lora
from .lorafile import LoraFile, Module, ToolError, guess_family
from .names import PART_TITLES, Layer, NameTable, name_table

Progress = Callable[[int, int, str], None]


def family_words(family: str | None) -> str:
    return families.title(family, "an unknown model family") if family else "an unknown model family"


def a_family(family: str | None) -> str:
    words = family_words(family)
    return words if words.startswith("an ") else ("an " if words.startswith(("SD", "A", "E", "I", "O", "U")) else "a ") + words


@dataclass
class Summary:
    """What a tool did: the numbers every tool reports, and lines for people."""

    action: str
    out: str = ""
    written: int = 0  # modules in the output file
    applied: int = 0  # modules applied to a model (merge into a base)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (module, why)
    notes: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [f"{self.action}: {line}" for line in self.notes[:1]] + self.notes[1:]
        if self.skipped:
            out.append(f"Skipped {len(self.skipped)} module(s):")
            out += [f"  {name}: {why}" for name, why in self.skipped[:50]]
            if len(self.skipped) > 50:
                out.append(f"  ... and {len(self.skipped) - 50} more (see --json)")
        if self.out:
            out.append(f"Wrote {self.out}")
        return out

    def add_applied(self, lora, strength: float, matched: dict, unmatched: list[tuple[str, str]]) -> None:
        """Count one LoRA merged into a model, with its line for people."""
        self.applied += module_count(matched)
        self.skipped += [(f"{lora.path.name}: {n}", why) for n, why in unmatched]
        self.notes.append(f"{lora.path.name} at {strength:g}: {module_count(matched)} modules applied "
                          f"({parts_line(part_counts(matched))})" + (f", {len(unmatched)} skipped" if unmatched else ""))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["skipped"] = [{"module": n, "reason": r} for n, r in self.skipped]
        return d


class Ticker:
    """Progress with an ETA for a known number of items; calls `progress(done, total, text)`."""

    def __init__(self, total: int, what: str, progress: Progress | None):
        self.total, self.what, self.progress = max(total, 1), what, progress
        self.start = time.monotonic()
        self.last = 0.0

    def __call__(self, done: int, item: str = "") -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if done < self.total and now - self.last < 0.2:
            return
        self.last = now
        elapsed = now - self.start
        eta = elapsed / done * (self.total - done) if done else 0.0
        text = f"{self.what} {done}/{self.total}" + (f", about {eta:.0f} s left" if done and done < self.total else "")
        self.progress(done, self.total, text + (f" ({item})" if item else ""))


@dataclass
class Matched:
    layer: Layer
    module: Module
    source: str = ""  # the module's name in the file (a fused Flux module is matched to several layers)

    def __post_init__(self):
        self.source = self.source or self.module.name


def module_count(matched: dict[str, Matched]) -> int:
    """How many of the file's modules these are (a fused Flux module counts once)."""
    return len({m.source for m in matched.values()})


def resolve(lora: LoraFile, family: str, table: NameTable, shapes: bool = True
            ) -> tuple[dict[str, Matched], list[tuple[str, str]]]:
    """Each module of `lora` -> the layer it changes (canonical key), and the modules that map to none, with why.
    `shapes`: also require the module's change to have the layer's shape (off when the table comes from the
    shipped configs of a real-size model and only the names matter)."""
    matched: dict[str, Matched] = {}
    unmatched = []
    for name, mod in lora.modules.items():
        layer = table.resolve(name)
        if layer is None and name in table.fused:
            _resolve_fused(name, mod, table, shapes, matched, unmatched)
            continue
        if layer is None:
            unmatched.append((name, f"no layer of that name in {a_family(family)} model"))
            continue
        _add_match(name, mod, layer, shapes, matched, unmatched)
    return matched, unmatched


def _add_match(name: str, mod: Module, layer: Layer, shapes: bool, matched: dict, unmatched: list) -> bool:
    why = shape_problem(mod, layer) if shapes else ""
    if why:
        unmatched.append((name, why))
        return False
    if layer.key in matched:
        unmatched.append((name, f"a second module for {layer.key} (also {matched[layer.key].source})"))
        return False
    matched[layer.key] = Matched(layer, mod, name)
    return True


def _resolve_fused(name: str, mod: Module, table: NameTable, shapes: bool, matched: dict, unmatched: list) -> None:
    """A module on a fused Flux layer (sd-scripts / ComfyUI form): one module per diffusers layer it holds."""
    from .flux_bfl import split_module

    bfl = table.fused[name]
    try:
        parts = split_module(mod, table.bfl_parts[bfl])
    except ToolError as e:
        unmatched.append((name, str(e).split(": ", 1)[-1]))
        return
    if shapes:
        want = sum(table.layers[k].shape[0] for k, _ in table.bfl_parts[bfl])
        got = change_shape(mod)[0]
        if got != want:
            unmatched.append((name, f"its change has {got} rows, the layer {bfl} {want}"))
            return
    for key, part in parts:
        _add_match(name, part, table.layers[key], shapes, matched, unmatched)


def change_shape(mod: Module) -> tuple[int, ...]:
    t = mod.tensors
    kind = mod.kind
    if kind in ("lora", "dora"):
        return (int(t["up"].shape[0]), *t["down"].shape[1:]) if "mid" not in t else (
            int(t["up"].shape[0]), int(t["down"].shape[1]), *t["mid"].shape[2:])
    if kind == "loha":
        return (int(t["w1a"].shape[0]), *t["w1b"].shape[1:]) if "t1" not in t else (
            int(t["w1a"].shape[1]), int(t["w1b"].shape[1]), *t["t1"].shape[2:])
    return tuple(mod.delta().shape)


def shape_problem(mod: Module, layer: Layer) -> str:
    shape = change_shape(mod)
    want = layer.shape
    n = 1
    for s in shape:
        n *= int(s)
    m = 1
    for s in want:
        m *= int(s)
    if shape[0] != want[0] or n != m:
        return f"its change is {tuple(shape)}, the layer's weight is {tuple(want)}"
    return ""


def load_and_match(path: str | Path, family: str | None = None, base_dir: str | None = None, shapes: bool = True):
    """Read a LoRA, decide its family, match its modules; refuse unknown tensors (nothing is dropped silently)."""
    from .lorafile import read_lora

    return match_lora(read_lora(path), family, base_dir, shapes)


def match_lora(lora: LoraFile, family: str | None = None, base_dir: str | None = None, shapes: bool = True):
    """load_and_match for a file already read."""
    fam = family or guess_family(lora)
    if fam is None:
        raise ToolError(f"{lora.path.name}: cannot tell which model family this LoRA is for (no metadata, unknown "
                        "key names)")
    if families.find(fam) is None:
        raise ToolError(f"{lora.path.name} is {a_family(fam)} LoRA; the LoRA tools handle "
                        + ", ".join(f.title for f in families.all_families()))
    table = name_table(fam, base_dir)
    matched, unmatched = resolve(lora, fam, table, shapes)
    return lora, fam, table, matched, unmatched


def refuse_unmatched(lora: LoraFile, unmatched: list[tuple[str, str]], family: str) -> None:
    problems = [f"{n}: {why}" for n, why in unmatched] + [f"{k}: not a LoRA tensor" for k in lora.unknown]
    if problems:
        head = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ToolError(f"{lora.path.name}: {len(problems)} of its tensors/modules do not map to "
                        f"{a_family(family)} model ({head}). Nothing was written; check that the file is a "
                        f"{family_words(family)} LoRA (`python -m core lora inspect {lora.path.name}`)")


def check_output(out: str | Path, overwrite: bool, inputs: Iterable[str | Path] = ()) -> Path:
    p = Path(out).expanduser()
    if p.suffix.lower() != ".safetensors":
        raise ToolError(f"--out {p}: the output must be a .safetensors file")
    for i in inputs:
        if Path(i).expanduser().resolve() == p.resolve():
            raise ToolError(f"--out {p} is one of the inputs: choose another name (inputs are never overwritten)")
    if p.exists() and not overwrite:
        raise ToolError(f"{p} already exists; choose another name or pass --overwrite")
    if not p.parent.is_dir():
        raise ToolError(f"--out {p}: the folder {p.parent} does not exist")
    return p


def save_dtype(name: str | None, default: torch.dtype) -> torch.dtype:
    if not name:
        return default
    if name not in SAVE_DTYPES:
        raise ToolError(f"--save-precision {name!r}: choose one of {', '.join(SAVE_DTYPES)}")
    return SAVE_DTYPES[name]


KOHYA_ROLE_SUFFIX = {"down": "lora_down.weight", "up": "lora_up.weight", "mid": "lora_mid.weight",
                     "dora_scale": "dora_scale"}


def module_tensors(layer: Layer, mod: Module, table: NameTable, fmt: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """A module's tensors under its output key: kohya (alpha kept) or diffusers (scale folded into lora_B)."""
    if fmt == "kohya":
        name = table.kohya_out.get(layer.key) if layer.part != "transformer" else kohya_name("lora_unet", layer.path)
        pairs = ([(s, t) for s, t in mod.raw.items() if s != "alpha"] if mod.kind in ("loha", "lokr")
                 else [(KOHYA_ROLE_SUFFIX[r], t) for r, t in mod.tensors.items()])
        out = {f"{name}.{s}": t.to(dtype).contiguous() for s, t in pairs}
        alpha = mod.alpha if mod.alpha is not None or mod.kind in ("loha", "lokr") else mod.rank  # kohya always has one
        if alpha is not None:
            out[f"{name}.alpha"] = torch.tensor(float(alpha), dtype=torch.float32)
        return out
    if mod.kind != "lora" or "mid" in mod.tensors:
        raise ToolError(f"{mod.name}: a {mod.kind.upper() if mod.kind != 'lora' else 'Tucker LoCon'} module has no "
                        "diffusers/peft form; keep the kohya form, or resize it to a plain LoRA first "
                        "(`python -m core lora resize --rank N`)")
    up, down = mod.tensors["up"].float() * mod.scale, mod.tensors["down"].float()
    return {f"{layer.key}.lora_A.weight": down.to(dtype).contiguous(),
            f"{layer.key}.lora_B.weight": up.to(dtype).contiguous()}


def default_format(family: str) -> str:
    return families.get(family).lora_format


def write_lora(out: Path, modules: dict[str, Matched], table: NameTable, fmt: str, dtype: torch.dtype,
               metadata: dict[str, str]) -> int:
    tensors: dict[str, torch.Tensor] = {}
    if fmt == "kohya":  # sd-scripts' names (Flux: BFL layers, q/k/v fused)
        modules = families.family_module(table.family).tool_kohya_modules(modules, table)
    seen: set[int] = set()
    for m in modules.values():
        for k, t in module_tensors(m.layer, m.module, table, fmt, dtype).items():
            if t.numel() and t.data_ptr() in seen:  # a down matrix shared by the layers of a split fused module
                t = t.clone()
            seen.add(t.data_ptr())
            tensors[k] = t
    meta = {k: v for k, v in metadata.items() if not k.startswith("sshs_")}
    meta["sshs_model_hash"] = model_hash(tensors)
    save_lora(out, tensors, meta)
    return len(modules)


def part_counts(matched: dict[str, Matched]) -> dict[str, int]:
    """Modules of the file per part (a fused Flux module counts once)."""
    counts: dict[str, int] = {}
    for part, _ in {(m.layer.part, m.source) for m in matched.values()}:
        counts[part] = counts.get(part, 0) + 1
    return {p: counts[p] for p in sorted(counts, key=list(PART_TITLES).index)}


def parts_line(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {PART_TITLES.get(p, p)}" for p, n in counts.items()) or "none"


def json_dumps(obj) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False, default=str)
