"""Optimizers and learning-rate schedules, by their kohya names."""
from __future__ import annotations

import ast
from typing import Any

import torch


class OptimizerError(ValueError):
    pass


def parse_optimizer_args(items: list[str]) -> dict[str, Any]:
    """'weight_decay=0.01', 'betas=0.9,0.99', 'decouple=True' -> typed kwargs."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise OptimizerError(f"optimizer_args: '{item}' should be key=value, e.g. weight_decay=0.01")
        key, text = (s.strip() for s in item.split("=", 1))
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = {"true": True, "false": False}.get(text.lower(), text)
        out[key] = tuple(value) if isinstance(value, list) else value
    return out


def make_optimizer(name: str, groups: list[dict[str, Any]], args: list[str], device: torch.device):
    kwargs = parse_optimizer_args(args)
    try:
        if name == "AdamW":
            return torch.optim.AdamW(groups, **kwargs)
        if name == "SGD":
            return torch.optim.SGD(groups, **kwargs)
        if name in ("AdamW8bit", "Lion8bit"):
            if device.type != "cuda":
                raise OptimizerError(
                    f"optimizer_type {name} needs an NVIDIA GPU (bitsandbytes). On this computer use AdamW or Lion.")
            import bitsandbytes as bnb

            return (bnb.optim.AdamW8bit if name == "AdamW8bit" else bnb.optim.Lion8bit)(groups, **kwargs)
        if name == "Lion":
            if device.type == "cuda":
                import bitsandbytes as bnb

                return bnb.optim.Lion(groups, **kwargs)
            return _Lion(groups, **kwargs)
        if name == "Prodigy":
            from prodigyopt import Prodigy

            return Prodigy(groups, **kwargs)
        if name == "Adafactor":
            from transformers.optimization import Adafactor

            kwargs.setdefault("scale_parameter", False)
            kwargs.setdefault("relative_step", False)
            kwargs.setdefault("warmup_init", False)
            return Adafactor(groups, **kwargs)
    except TypeError as e:
        raise OptimizerError(f"optimizer_args not accepted by {name}: {e}") from None
    raise OptimizerError(f"unknown optimizer_type {name}")


class _Lion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023) for machines without bitsandbytes' CUDA kernels."""

    def __init__(self, params, lr: float = 1e-4, betas=(0.9, 0.99), weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                p.mul_(1 - group["lr"] * group["weight_decay"])
                update = (m * b1 + p.grad * (1 - b1)).sign_()
                p.add_(update, alpha=-group["lr"])
                m.mul_(b2).add_(p.grad, alpha=1 - b2)
        return None


def make_scheduler(optimizer, name: str, warmup: int, total: int, cycles: int, power: float):
    from diffusers.optimization import get_scheduler

    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=max(total, 1),
                         num_cycles=cycles, power=power)
