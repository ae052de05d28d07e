"""kohya's low-VRAM options that have an equivalent here: fp8_base (and Flux's fp8_base_unet) -> base_precision fp8,
Flux's blocks_to_swap -> blocks_to_swap (the same count: double + single blocks)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .coerce import off
from .report import fmt

if TYPE_CHECKING:
    from .converter import Converter

FP8_KEYS = ("fp8_base", "fp8_base_unet")


def step_memory(cv: Converter) -> None:
    """fp8 base weights (sd-scripts' --fp8_base, for SD and Flux; --fp8_base_unet: only the Flux transformer in fp8,
    which is all base_precision ever puts in fp8)."""
    for key in FP8_KEYS:
        if key not in cv.src or key in cv.used:
            continue
        v = cv.take(key)
        if off(v):
            cv.ignore(key)
        elif cv.out.get("base_precision") == "fp8":
            cv.ignore(key)
        elif cv.put("base_precision", "fp8", key):
            cv.note(f"{key} = {fmt(key, v)} -> base_precision = \"fp8\" (the frozen weights in float8, the LoRA in "
                    "full precision)")


def flux_blocks_to_swap(cv: Converter, value) -> None:
    if off(value):
        cv.ignore("blocks_to_swap")
    elif cv.put_checked("blocks_to_swap", value, "blocks_to_swap"):
        cv.note(f"blocks_to_swap = {fmt('blocks_to_swap', value)}: the same count of Flux blocks (19 double + 38 "
                "single); gradient checkpointing is turned on with it")
