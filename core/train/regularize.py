"""Max-norm regularisation of the LoRA layers (sd-scripts' --scale_weight_norms), after each optimizer step."""
from __future__ import annotations

import torch
from torch import nn

from ..lora.dropout import ADAPTER, lora_layers
from ..lora.lycoris import delta_and_factors, lycoris_layers


def lora_delta(down: torch.Tensor, up: torch.Tensor, scale: float) -> torch.Tensor:
    """scale x up @ down in the weight's shape, as sd-scripts' apply_max_norm_regularization computes it."""
    if up.dim() == 4 and up.shape[2:] == (1, 1) and down.shape[2:] == (1, 1):
        updown = (up.squeeze(2).squeeze(2) @ down.squeeze(2).squeeze(2)).unsqueeze(2).unsqueeze(3)
    elif up.dim() == 4:  # a k x k convolution down, 1x1 up
        updown = torch.nn.functional.conv2d(down.permute(1, 0, 2, 3), up).permute(1, 0, 2, 3)
    else:
        updown = up @ down
    return updown * scale


@torch.no_grad()
def apply_max_norm(models: dict[str, nn.Module], max_norm: float) -> tuple[int, float, float]:
    """Scale down (up and down each by sqrt(ratio)) every LoRA layer whose change alpha/rank x up @ down has a
    Frobenius norm above `max_norm` (LoHa / LoKr: two factors, see lycoris.delta_and_factors). Returns (keys
    scaled, mean and max norm after scaling), as sd-scripts."""
    keys_scaled, norms = 0, []
    for model in models.values():
        for _, layer in lora_layers(model):
            down = layer.lora_A[ADAPTER].weight
            up = layer.lora_B[ADAPTER].weight
            updown = lora_delta(down.float(), up.float(), float(layer.scaling[ADAPTER]))
            norm = updown.norm().clamp(min=max_norm / 2)
            desired = torch.clamp(norm, max=max_norm)
            ratio = desired.cpu() / norm.cpu()
            if ratio != 1:
                keys_scaled += 1
                sqrt_ratio = ratio**0.5
                up.mul_(sqrt_ratio.to(up.device, up.dtype))
                down.mul_(sqrt_ratio.to(down.device, down.dtype))
            norms.append((updown.norm() * ratio.to(updown.device)).item())
        for _, layer in lycoris_layers(model):  # LoHa / LoKr: the change is linear in each of two factors
            updown, factors = delta_and_factors(layer)
            norm = updown.float().norm().clamp(min=max_norm / 2)
            ratio = torch.clamp(norm, max=max_norm).cpu() / norm.cpu()
            if ratio != 1:
                keys_scaled += 1
                for f in factors:
                    f.mul_((ratio**0.5).to(f.device, f.dtype))
            norms.append((updown.float().norm() * ratio.to(updown.device)).item())
    if not norms:
        return 0, 0.0, 0.0
    return keys_scaled, sum(norms) / len(norms), max(norms)


def norm_fields(result: tuple[int, float, float] | None) -> dict:
    """The step event's fields for one apply_max_norm result (none when scale_weight_norms is off)."""
    if result is None:
        return {}
    keys, mean, top = result
    return {"keys_scaled": keys, "average_key_norm": round(mean, 6), "max_key_norm": round(top, 6)}
