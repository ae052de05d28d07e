"""The converter: the source keys, what has been taken from them, and the steps in order."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..config.toml_io import ConfigError, flatten, validate
from .coerce import BadValue, blank, coerce, off, to_bool, to_float
from .detect import KOHYA_GUI, OURS, SD_SCRIPTS, detect_kind, read_source
from .extra_settings import step_additional_parameters, step_dataset_config
from .flux import step_flux, step_flux_samples
from .masks import step_masks
from .memory import step_memory
from .leftovers import step_leftovers, step_sd_scripts_defaults
from .model import step_model, step_network
from .noise import step_noise
from .reasons import REASONS
from .report import Conversion, fmt
from .samples import step_samples
from .schedule import step_length, step_scheduler, step_warmup
from .training import step_attention, step_direct, step_learning_rates, step_optimizer, step_precision

# The steps for kohya_ss GUI and sd-scripts configs, in order; each takes the source keys it converts.
STEPS = (step_additional_parameters, step_dataset_config, step_model, step_network, step_memory, step_flux, step_noise,
         step_masks, step_direct, step_precision, step_learning_rates, step_optimizer, step_attention, step_samples,
         step_flux_samples, step_length, step_scheduler, step_warmup)


class Converter:
    """One conversion: the (flattened) source, our keys so far, and the tools the steps use."""

    def __init__(self, path: Path, raw: dict[str, Any]):
        self.path = path
        self.base = path.resolve().parent
        self.src: dict[str, Any] = flatten(raw)
        self.c = Conversion(path=path, kind=detect_kind(set(self.src)))
        self.out: dict[str, Any] = {}
        self.origin: dict[str, str] = {}  # our key -> source key it came from
        self.used: set[str] = set()
        self.flux = False  # a Flux.1 config (model_family "flux")
        self.flux_sd3 = False  # an SD3 config: its Flux/SD3 fields are listed as not converted

    # -- small tools
    @property
    def gui(self) -> bool:
        return self.c.kind == KOHYA_GUI

    def has(self, key: str) -> bool:
        return key in self.src

    def take(self, key: str) -> Any:
        """The source value (None when absent); the key counts as handled."""
        if key in self.src:
            self.used.add(key)
        return self.src.get(key)

    def note(self, text: str) -> None:
        self.c.notes.append(text)

    def ignore(self, key: str) -> None:
        if key in self.src and key not in self.c.ignored:
            self.c.ignored.append(key)
        self.used.add(key)

    def refuse_unless_off(self, key: str, reason: str, is_off=off) -> None:
        """Take `key`: ignored when `is_off(value)` (the default, nothing lost), else reported with `reason`."""
        v = self.take(key)
        if is_off(v):
            self.ignore(key)
        else:
            self.unmapped(key, v, reason)

    def unmapped(self, key: str, value: Any, reason: str | None = None) -> None:
        self.used.add(key)
        self.c.unmapped[key] = value
        reason = reason or REASONS.get(key)
        if reason:
            self.c.reasons[key] = reason

    def put(self, ours: str, value: Any, src_key: str | None = None) -> bool:
        """Set one of our keys from a source value, converting its type; a bad value is reported, not set."""
        src_key = src_key or ours
        try:
            self.out[ours] = coerce(ours, value)
        except BadValue as e:
            self.c.invalid.append(f"{src_key} = {fmt(src_key, value)}: {e}")
            return False
        self.origin[ours] = src_key
        return True

    def put_checked(self, ours: str, value: Any, src_key: str | None = None) -> bool:
        """Like put, but a value our schema rejects on its own is reported as not converted, with the reason."""
        src_key = src_key or ours
        try:
            v = coerce(ours, value)
            validate({ours: v})
        except BadValue as e:
            self.unmapped(src_key, value, f"not accepted here: {e}")
            return False
        except ConfigError as e:
            why = "; ".join(re.sub(rf"^{re.escape(ours)} = .*?: ", "", line, count=1) for line in e.lines)
            self.unmapped(src_key, value, f"not accepted here: {why}")
            return False
        self.out[ours] = v
        self.origin[ours] = src_key
        return True

    def number(self, key: str) -> float | None:
        """A numeric source value, or None when absent/empty/not a number (the latter is reported)."""
        v = self.take(key)
        if blank(v):
            if key in self.src:
                self.ignore(key)
            return None
        try:
            return to_float(v)
        except BadValue as e:
            self.c.invalid.append(f"{key} = {fmt(key, v)}: {e}")
            return None

    def flag(self, key: str) -> bool:
        v = self.take(key)
        if v is None:
            return False
        try:
            return to_bool(v)
        except BadValue:
            return not off(v)

    def find_dir(self, text: str) -> Path | None:
        if blank(text):
            return None
        p = Path(str(text)).expanduser()
        for cand in ([p] if p.is_absolute() else [Path.cwd() / p, self.base / p]):
            if cand.is_dir():
                return cand
        return None

    def find_file(self, text: str) -> tuple[Path | None, list[Path]]:
        p = Path(str(text).strip()).expanduser()
        cands = [p] if p.is_absolute() else [self.base / p, Path.cwd() / p]
        for cand in cands:
            if cand.is_file():
                return cand, cands
        return None, cands

    # -- steps
    def run(self) -> Conversion:
        """Run every step; the result's data always passes config_io.validate."""
        if self.c.kind == OURS:
            step_direct(self, all_fields=True)
        else:
            for step in STEPS:
                step(self)
            if self.c.kind == SD_SCRIPTS:
                step_sd_scripts_defaults(self)
        step_leftovers(self)
        self.step_validate()
        self.c.data = self.out
        self.c.origin = {k: v for k, v in self.origin.items() if k in self.out}
        return self.c

    def step_validate(self) -> None:
        """Keep only what config_io.validate accepts; report the rest with the reason and the source key."""
        for _ in range(len(self.out) + 2):
            try:
                validate(self.out)
                return
            except ConfigError as e:
                bad: set[str] = set()
                for line in e.lines:
                    m = re.match(r"^(\w+) = ", line) or re.match(r"^unknown key '(\w+)'", line)
                    keys = [m.group(1)] if m else [k for k in self.out if re.search(rf"\b{re.escape(k)}\b", line)]
                    keys = [k for k in keys if k in self.out]
                    for k in keys:
                        src = self.origin.get(k, k)
                        where = f" (from {src})" if src != k else ""
                        self.c.invalid.append(f"{line}{where}" if m else f"{line}: {k} = {fmt(k, self.out[k])}{where}")
                    bad.update(keys)
                if not bad:  # not attributable: test the keys one by one
                    for k in list(self.out):
                        try:
                            validate({k: self.out[k]})
                        except ConfigError as e1:
                            self.c.invalid.append("; ".join(e1.lines))
                            bad.add(k)
                    if not bad:
                        self.c.invalid.append("; ".join(e.lines) + " (all converted values left out)")
                        bad = set(self.out)
                for k in bad:
                    self.out.pop(k, None)


def convert_file(path: str | Path) -> Conversion:
    """Read a kohya_ss GUI .json or sd-scripts .toml and convert it; raises ConfigError if it cannot be read."""
    p = Path(path)
    return Converter(p, read_source(p)).run()


def convert(path: str | Path) -> tuple[dict[str, Any], list[str]]:
    """(converted keys, report lines). The keys always pass config_io.validate."""
    c = convert_file(path)
    return c.data, c.report
