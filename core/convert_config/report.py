"""The result of a conversion, its report lines, and the output TOML with the report as a comment header."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config.toml_io import to_toml

SECRET = re.compile(r"(api_key|password|secret|(^|_)token)$", re.I)


def fmt(key: str, value: Any, limit: int = 160) -> str:
    """A source value for the report: JSON-like, on one line, shortened; secrets hidden."""
    if SECRET.search(key) and value not in (None, "", False):
        return '"<hidden>"'
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (int, float)):
        text = repr(value)
    else:
        try:
            text = json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError):
            text = repr(value)
    text = text.replace("\n", "\\n").replace("\r", "")
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class Conversion:
    """What :func:`convert_file` found: the converted keys and everything the report says."""

    path: Path
    kind: str
    data: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    unmapped: dict[str, Any] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    runtime: dict[str, Any] = field(default_factory=dict)
    flux_sd3: dict[str, Any] = field(default_factory=dict)  # the Flux/SD3 fields of an SD3 config
    invalid: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    origin: dict[str, str] = field(default_factory=dict)  # our key -> the source key it came from

    @property
    def report(self) -> list[str]:
        lines = [f"converted from {self.kind} config {self.path}"]
        lines += [f"converted: {n}" for n in self.notes]
        for key, value in self.unmapped.items():
            lines.append(f"NOT converted: {key} = {fmt(key, value)} ({self.reasons.get(key, 'no equivalent here')})")
        if self.flux_sd3:
            lines.append("NOT converted (SD3 / Flux.1 settings of an SD3 config; SD3 is not supported): "
                         + ", ".join(f"{k} = {fmt(k, v)}" for k, v in self.flux_sd3.items()))
        lines += [f"invalid, left out: {n}" for n in self.invalid]
        if self.runtime:
            lines.append("not needed here (process, logging and upload settings): "
                         + ", ".join(f"{k} = {fmt(k, v)}" for k, v in self.runtime.items()))
        if self.ignored:
            lines.append("ignored (empty, off or default in the source): " + ", ".join(self.ignored))
        return lines


def render(c: Conversion) -> str:
    """The output TOML: a comment header with the whole report, then the converted keys grouped as usual."""
    head = ["# LoRA Workshop training config, made by `python -m core convert-config`.",
            "# Check the notes; keys listed as NOT converted have no equivalent here."]
    head += ["# " + line for line in c.report]
    body = to_toml(c.data, grouped=True) if c.data else ""
    return "\n".join(head) + "\n\n" + body
