"""argparse types for numbers that must be above zero: a negative --vram or --resolution is refused by name
('argument --vram: -8 is not above 0'), before anything runs."""
from __future__ import annotations

import argparse


def _number(cast, text: str):
    try:
        return cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def positive_int(text: str) -> int:
    v = _number(int, text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"{v} is not above 0")
    return v


def positive_float(text: str) -> float:
    v = _number(float, text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"{v:g} is not above 0")
    return v
