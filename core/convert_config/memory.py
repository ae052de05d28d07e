"""kohya's low-VRAM options that have an equivalent here: fp8_base (and Flux's fp8_base_unet) -> base_precision fp8,
for Flux fp8_base also -> t5xxl_precision fp8 (sd-scripts then stores T5-XXL in fp8 too, unless fp8_base_unet), and
Flux's blocks_to_swap -> blocks_to_swap (the same count: double + single blocks)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .coerce import off
from .report import fmt

if TYPE_CHECKING:
    from .converter import Converter

FP8_KEYS = ("fp8_base", "fp8_base_unet")
T5_FP8 = ("T5-XXL in fp8 while the captions are cached, as sd-scripts' fp8_base stores the text encoders (CLIP-L, "
          "0.25 GB, stays in bf16 here)")


def step_memory(cv: Converter) -> None:
    """fp8 base weights (sd-scripts' --fp8_base, for SD and Flux; --fp8_base_unet: only the Flux transformer in fp8,
    the text encoders in bf16). For Flux, fp8_base without fp8_base_unet also puts T5-XXL in fp8 (t5xxl_precision)."""
    on = {key: key in cv.src and not off(cv.src[key]) for key in FP8_KEYS}
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
    if not cv.flux or "t5xxl_precision" in cv.out:
        return
    if on["fp8_base"] and not on["fp8_base_unet"]:
        if cv.put("t5xxl_precision", "fp8", "fp8_base"):
            cv.note(f"fp8_base = true (Flux) -> t5xxl_precision = \"fp8\": {T5_FP8}")
    elif on["fp8_base_unet"]:
        cv.note("fp8_base_unet = true: only the transformer in fp8, as sd-scripts does; T5-XXL stays in bf16 while "
                "the captions are cached (t5xxl_precision = \"auto\"; \"fp8\" would halve its 9.5 GB)")


def flux_blocks_to_swap(cv: Converter, value) -> None:
    if off(value):
        cv.ignore("blocks_to_swap")
    elif cv.put_checked("blocks_to_swap", value, "blocks_to_swap"):
        cv.note(f"blocks_to_swap = {fmt('blocks_to_swap', value)}: the same count of Flux blocks (19 double + 38 "
                "single); gradient checkpointing is turned on with it")
