"""Splitting option strings: GUI 'key=value' lists and sd-scripts command-line options."""
from __future__ import annotations

import shlex
from typing import Any

from .keys import LIST_OPTIONS


def split_args(text: str) -> list[str]:
    """Split a GUI 'key=value key=value' string; brackets and quotes keep their spaces ('betas=(0.9, 0.99)')."""
    out: list[str] = []
    buf, depth, quote = "", 0, ""
    for ch in text:
        if quote:
            if ch == quote:
                quote = ""
            else:
                buf += ch
            continue
        if ch in "\"'":
            quote = ch
            continue
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(0, depth - 1)
        if ch.isspace() and depth == 0:
            if buf:
                out.append(buf)
                buf = ""
            continue
        buf += ch
    if buf:
        out.append(buf)
    merged: list[str] = []
    for tok in out:  # 'betas=0.9, 0.99' -> one item
        if merged and "=" not in tok:
            merged[-1] += tok if merged[-1].endswith(",") else " " + tok
        else:
            merged.append(tok)
    return merged


def parse_cli_args(text: str) -> tuple[dict[str, Any], list[str]]:
    """'--max_grad_norm=0 --network_args "conv_dim=4" "conv_alpha=1" --flag' -> {name: value}, stray tokens."""
    try:
        tokens = shlex.split(text)
    except ValueError:
        tokens = text.split()
    found: dict[str, list[str]] = {}
    stray: list[str] = []
    current = None
    for tok in tokens:
        if tok.startswith("--") and len(tok) > 2:
            name, eq, value = tok[2:].partition("=")
            current = name.replace("-", "_")
            found[current] = [value] if eq else []
        elif current is None:
            stray.append(tok)
        else:
            found[current].append(tok)
    out: dict[str, Any] = {}
    for name, values in found.items():
        if name in LIST_OPTIONS:
            out[name] = values
        elif not values:
            out[name] = True
        else:
            out[name] = values[0] if len(values) == 1 else values
    return out, stray
