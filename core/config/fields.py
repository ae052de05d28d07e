"""What the CLI, TOML files, presets and the GUI form read of the schema: each parameter's help, group, level,
default, limits and choices."""
from __future__ import annotations

from typing import Any, Literal, get_args, get_origin

from .schema import TrainConfig


def field_meta(name: str) -> dict[str, Any]:
    """Help, group, level, default and limits of one parameter, for the CLI and the GUI."""
    f = TrainConfig.model_fields[name]
    extra = f.json_schema_extra or {}
    meta: dict[str, Any] = {
        "name": name, "help": f.description or "", "group": extra.get("group", "model"),
        "basic": bool(extra.get("basic")), "default": f.default, "annotation": f.annotation,
        "families": tuple(extra.get("families", ())), "own": bool(extra.get("own")),
    }
    for m in f.metadata:
        for attr in ("ge", "gt", "le", "lt", "pattern"):
            if getattr(m, attr, None) is not None:
                meta[attr] = getattr(m, attr)
    choices = literal_choices(f.annotation)
    if choices:
        meta["choices"] = choices
    return meta


def literal_choices(annotation: Any) -> list[Any] | None:
    if get_origin(annotation) is Literal:
        return list(get_args(annotation))
    return None


def all_fields() -> list[dict[str, Any]]:
    return [field_meta(n) for n in TrainConfig.model_fields]
