"""sd-scripts' rank_dropout and module_dropout (networks/lora.py LoRAModule.forward) on peft's LoRA layers.

peft's own lora_dropout drops the layer's input (sd-scripts' network_dropout); these two are added with forward
hooks on each peft LoRA layer, active only while the layer is in training mode, so samples, eval outputs and the
saved file are what they would be without them:

- module_dropout p: with probability p per call the layer gives its base layer's output alone (the LoRA's output
  is added times 0, so its parameters still get a (zero) gradient, as distributed training needs).
- rank_dropout p: each rank of the LoRA's down-projection output is zeroed with probability p, per sample, and the
  rest scaled by 1 / (1 - p).

The draws use torch's global CPU generator, like sd-scripts' `torch.rand(1)`; the training loop seeds it per batch
(seed, epoch, batch), so a resumed run draws the same, and gradient checkpointing, which replays the global
generator's state when it recomputes a block, sees the same masks again (a private generator would not be replayed).
"""
from __future__ import annotations

import torch
from torch import nn

ADAPTER = "default"


class _LayerDropout:
    """The hooks of one peft LoRA layer and what they share during one call."""

    def __init__(self, rank_dropout: float, module_dropout: float):
        self.rank_dropout = rank_dropout
        self.module_dropout = module_dropout
        self.skip = False
        self.base_out: torch.Tensor | None = None

    def decide(self, layer: nn.Module, args) -> None:
        self.skip = bool(layer.training and self.module_dropout and torch.rand(1).item() < self.module_dropout)
        self.base_out = None

    def keep_base(self, base: nn.Module, args, output: torch.Tensor) -> None:
        if self.skip:
            self.base_out = output

    def skip_lora(self, layer: nn.Module, args, output: torch.Tensor):
        if not self.skip or self.base_out is None:
            return None
        out = self.base_out + 0 * output  # the base output alone, the LoRA still in the graph (zero gradient)
        self.base_out = None
        return out

    def mask_ranks(self, lora_b: nn.Module, args):
        if not lora_b.training or not self.rank_dropout or self.skip:
            return None
        lx = args[0]
        rank = lora_b.weight.shape[1]
        mask = (torch.rand((lx.size(0), rank)) > self.rank_dropout).to(lx.device, lx.dtype)
        if lx.dim() == 3:
            mask = mask.unsqueeze(1)  # (batch, tokens, rank)
        elif lx.dim() == 4:
            mask = mask.unsqueeze(-1).unsqueeze(-1)  # conv: (batch, rank, h, w)
        return (lx * mask * (1.0 / (1.0 - self.rank_dropout)),) + tuple(args[1:])


def lora_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    from peft.tuners.lora import LoraLayer

    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer) and ADAPTER in m.lora_A]


def install(model: nn.Module, rank_dropout: float, module_dropout: float) -> int:
    """Put the hooks on every LoRA layer of `model`; returns how many layers got them."""
    if not rank_dropout and not module_dropout:
        return 0
    layers = lora_layers(model)
    for _, layer in layers:
        state = _LayerDropout(rank_dropout, module_dropout)
        layer._lw_dropout = state  # kept with the layer (the hooks hold bound methods of it)
        if module_dropout:
            layer.register_forward_pre_hook(state.decide)
            layer.base_layer.register_forward_hook(state.keep_base)
            layer.register_forward_hook(state.skip_lora)
        if rank_dropout:
            layer.lora_B[ADAPTER].register_forward_pre_hook(state.mask_ranks)
    return len(layers)
