"""The denoiser's blocks as blocks_to_swap counts them (and the VRAM estimate), for every family.

Flux: the double blocks (transformer_blocks) then the single blocks (single_transformer_blocks), 19 + 38 = 57 as
sd-scripts counts them. SD1.5/SD2/SDXL UNets: the down blocks, the mid block and the up blocks (SD1.5 4 + 1 + 4 = 9,
SDXL 3 + 1 + 3 = 7).
"""
from __future__ import annotations

from torch import nn

FLUX_BLOCK_LISTS = ("transformer_blocks", "single_transformer_blocks")
UNET_BLOCK_LISTS = ("down_blocks", "mid_block", "up_blocks")
BLOCK_WORDS = {FLUX_BLOCK_LISTS: "double + single transformer blocks", UNET_BLOCK_LISTS: "down + mid + up blocks"}


def block_lists(model: nn.Module) -> tuple[str, ...]:
    return FLUX_BLOCK_LISTS if hasattr(model, "single_transformer_blocks") else UNET_BLOCK_LISTS


def denoiser_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(module path, block) in forward order."""
    out: list[tuple[str, nn.Module]] = []
    for attr in block_lists(model):
        part = getattr(model, attr, None)
        if part is None:
            continue
        if isinstance(part, nn.ModuleList):
            out += [(f"{attr}.{i}", b) for i, b in enumerate(part)]
        else:
            out.append((attr, part))
    return out


def block_prefixes(model: nn.Module) -> tuple[str, ...]:
    return tuple(name + "." for name, _ in denoiser_blocks(model))


def blocks_word(model: nn.Module) -> str:
    return BLOCK_WORDS[block_lists(model)]
