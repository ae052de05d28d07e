"""Reading, validating and writing training configs (TOML), with plain-words errors."""
from __future__ import annotations

import difflib
import json
import os
import tempfile
import tomllib
from pathlib import Path
from typing import Any, Iterable

import tomli_w
from pydantic import ValidationError

from ..failures import free_bytes
from .fields import field_meta
from .params import GROUPS
from .schema import TrainConfig


class ConfigError(ValueError):
    """A config problem, already phrased for the user: one line per bad field."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        super().__init__("\n".join(lines))


def _did_you_mean(key: str) -> str:
    close = difflib.get_close_matches(key, TrainConfig.model_fields.keys(), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _allowed(name: str) -> str:
    meta = field_meta(name)
    if "choices" in meta:
        return "one of " + ", ".join(str(c) for c in meta["choices"])
    bounds = []
    for op, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if op in meta:
            bounds.append(f"{sym} {meta[op]}")
    kind = getattr(meta["annotation"], "__name__", str(meta["annotation"]))
    return f"{kind} {' and '.join(bounds)}".strip()


def flatten(data: dict[str, Any]) -> dict[str, Any]:
    """Accept flat TOML or TOML with [sections] (like sd-scripts' grouped configs)."""
    flat: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict) and k not in TrainConfig.model_fields:
            flat.update(flatten(v))
        else:
            flat[k] = v
    return flat


def validate(data: dict[str, Any]) -> TrainConfig:
    """Build a TrainConfig, turning every problem into one line: key, value, what is allowed."""
    data = flatten(data)
    lines = [f"unknown key '{k}'{_did_you_mean(k)}" for k in data if k not in TrainConfig.model_fields]
    known = {k: v for k, v in data.items() if k in TrainConfig.model_fields}
    try:
        cfg = TrainConfig(**known)
    except ValidationError as e:
        for err in e.errors():
            loc = err.get("loc") or ()
            if loc:
                key = str(loc[0])
                value = known.get(key)
                lines.append(f"{key} = {value!r}: {err['msg'].removeprefix('Value error, ')}; allowed: {_allowed(key)}")
            else:
                lines.append(err["msg"].removeprefix("Value error, "))
        raise ConfigError(lines) from None
    if lines:
        raise ConfigError(lines)
    return cfg


def parse_set_value(name: str, text: str) -> Any:
    """Turn the text of --set key=value into a value the schema accepts."""
    if name not in TrainConfig.model_fields:
        return text
    ann = TrainConfig.model_fields[name].annotation
    if getattr(ann, "__origin__", None) is list:
        if text.strip().startswith("["):
            return json.loads(text)
        return [s for s in text.split("|") if s.strip()]
    if text.lower() in ("none", "null") and TrainConfig.model_fields[name].default is None:
        return None
    return text


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    data = dict(flatten(data))
    for item in overrides:
        if "=" not in item:
            raise ConfigError([f"--set {item!r}: write it as key=value"])
        key, text = item.split("=", 1)
        key = key.strip()
        data[key] = parse_set_value(key, text)
    return data


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError([f"config file not found: {p}"])
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError([f"{p}: not valid TOML: {e}"]) from None


def load_config(path: str | os.PathLike | None, overrides: Iterable[str] = ()) -> TrainConfig:
    data = read_toml(path) if path else {}
    return validate(apply_overrides(data, overrides))


def to_toml(cfg: TrainConfig | dict[str, Any], *, grouped: bool = False) -> str:
    data = cfg.model_dump() if isinstance(cfg, TrainConfig) else dict(cfg)
    data = {k: v for k, v in data.items() if v is not None}
    if not grouped:
        return tomli_w.dumps(data)
    out: dict[str, dict[str, Any]] = {}
    for k, v in data.items():
        g = field_meta(k)["group"] if k in TrainConfig.model_fields else "other"
        out.setdefault(g, {})[k] = v
    ordered = {g: out[g] for g in list(GROUPS) + ["other"] if g in out}
    return tomli_w.dumps(ordered)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


CHECK_ROOM_FROM = 1 << 20  # writes from 1 MB on (LoRA files, prepared images) check the free space first
ROOM_MARGIN = 16 << 20


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half a file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if len(data) >= CHECK_ROOM_FROM and free_bytes(p.parent) < len(data) + ROOM_MARGIN:
        from ..failures import DiskFull

        raise DiskFull(p, len(data))  # said before a byte is written, rather than half-way
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _default_mode())
        os.replace(tmp, p)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        from ..failures import DiskFull, is_disk_full

        if is_disk_full(e) and not isinstance(e, DiskFull):
            raise DiskFull(p, len(data)) from e
        raise


def _default_mode() -> int:
    """The permissions a plainly created file would get (mkstemp makes them user-only)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def save_config(cfg: TrainConfig, path: str | os.PathLike) -> None:
    atomic_write_text(path, to_toml(cfg, grouped=True))
