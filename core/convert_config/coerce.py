"""Reading source values: empty/off/equal tests and conversion to the type of one of our fields."""
from __future__ import annotations

import math
from typing import Any, Literal, Union, get_args, get_origin

from ..config.schema import TrainConfig


def blank(v: Any) -> bool:
    return v is None or v == [] or v == {} or (isinstance(v, str) and not v.strip())


def off(v: Any) -> bool:
    """Empty, false or zero: a GUI field that is simply not in use."""
    if blank(v) or v is False:
        return True
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return v == 0
    if isinstance(v, str):
        s = v.strip().lower()
        if s in ("false", "none", "no"):
            return True
        try:
            return float(s) == 0
        except ValueError:
            return False
    return False


def same(a: Any, b: Any) -> bool:
    if isinstance(b, bool) or isinstance(a, bool):
        return a is b or (isinstance(a, str) and a.strip().lower() == str(b).lower())
    if isinstance(b, (int, float)):
        try:
            return float(a) == float(b)
        except (TypeError, ValueError):
            return False
    return a == b


class BadValue(ValueError):
    pass


def to_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.strip().lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
        return v.strip().lower() in ("true", "1", "yes", "on")
    raise BadValue("not true or false")


def to_float(v: Any) -> float:
    if isinstance(v, bool):
        raise BadValue("not a number")
    try:
        return float(str(v).strip()) if isinstance(v, str) else float(v)
    except (TypeError, ValueError):
        raise BadValue("not a number") from None


def to_int(v: Any) -> int:
    f = to_float(v)
    if not math.isfinite(f) or f != int(f):
        raise BadValue("not a whole number")
    return int(f)


def to_lines(v: Any) -> list[str]:
    if isinstance(v, str):
        return [ln.strip() for ln in v.splitlines() if ln.strip()]
    if isinstance(v, (list, tuple)):
        return [str(x).strip() for x in v if str(x).strip()]
    raise BadValue("not a list of text lines")


def coerce(name: str, v: Any) -> Any:
    """Turn a source value (GUI configs keep many numbers as strings) into the type of field `name`."""
    ann = TrainConfig.model_fields[name].annotation
    origin = get_origin(ann)
    if ann is bool:
        return to_bool(v)
    if ann is int:
        return to_int(v)
    if ann is float or (origin is Union and float in get_args(ann)):
        return to_float(v)
    if origin is list:
        return to_lines(v)
    if origin is Literal:
        return str(v).strip()
    if ann is str:
        if isinstance(v, float) and v == int(v):
            v = int(v)
        if isinstance(v, (list, tuple)) and name == "resolution":
            return ",".join(str(int(to_float(x))) for x in v)
        return str(v).strip() if not isinstance(v, str) else v
    return v
