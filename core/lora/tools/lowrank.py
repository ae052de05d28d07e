"""Exact SVDs of low-rank products, rank rules and clamping, shared by merge, resize and extract."""
from __future__ import annotations

import math

import torch

from .lorafile import ToolError

DYNAMIC = ("sv_ratio", "sv_fro", "sv_cumulative")


def svd_of_product(up: torch.Tensor, down: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SVD of up (out, r) @ down (r, in) without forming it: QR of both factors, SVD of the small r x r core.
    Returns (U (out, r'), S (r',), Vh (r', in)) with U @ diag(S) @ Vh == up @ down up to rounding; exact in the
    sense that every non-zero singular value of the product is there (r' = min(r, out, in))."""
    qa, ra = torch.linalg.qr(up.double())
    qb, rb = torch.linalg.qr(down.double().T)
    u, s, vh = torch.linalg.svd(ra @ rb.T, full_matrices=False)
    return (qa @ u).float(), s.float(), (vh @ qb.T).float()


def svd_dense(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    u, s, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
    return u.float(), s.float(), vh.float()


def choose_rank(s: torch.Tensor, rank: int | None, dynamic: str | None, param: float | None) -> int:
    """How many singular values to keep: `rank`, or the smallest number meeting the dynamic rule (capped at
    `rank` when both are given), as sd-scripts' resize_lora.py; at least 1."""
    n = int(s.numel())
    if n == 0:
        return 1
    if float(s.max()) == 0.0:
        return 1
    k = n if rank is None else min(rank, n)
    if dynamic:
        if dynamic == "sv_ratio":
            k_dyn = int((s > s[0] / param).sum())
        elif dynamic == "sv_cumulative":
            c = torch.cumsum(s.double(), 0) / s.double().sum()
            k_dyn = int((c < param - 1e-12).sum()) + 1
        elif dynamic == "sv_fro":
            c = torch.cumsum(s.double() ** 2, 0) / (s.double() ** 2).sum()
            k_dyn = int((c < param ** 2 - 1e-12).sum()) + 1
        else:
            raise ToolError(f"--dynamic {dynamic!r}: choose one of {', '.join(DYNAMIC)}")
        k = min(k, max(k_dyn, 1))
    return max(1, min(k, n))


def check_dynamic(dynamic: str | None, param: float | None) -> None:
    if dynamic is None:
        return
    if dynamic not in DYNAMIC:
        raise ToolError(f"--dynamic {dynamic!r}: choose one of {', '.join(DYNAMIC)}")
    if param is None:
        raise ToolError(f"--dynamic {dynamic} needs --param (e.g. 0.9 for sv_fro)")
    if dynamic == "sv_ratio" and not param >= 1:
        raise ToolError(f"--param {param}: for sv_ratio it is the largest kept ratio sigma_max/sigma (>= 1, e.g. 8)")
    if dynamic in ("sv_fro", "sv_cumulative") and not 0 < param <= 1:
        raise ToolError(f"--param {param}: for {dynamic} it is the fraction to keep, between 0 and 1 (e.g. 0.9)")


def retained(s: torch.Tensor, k: int) -> float:
    """Frobenius fraction of the change kept by the first k singular values (1.0 for an all-zero module)."""
    total = float((s.double() ** 2).sum())
    return 1.0 if total == 0 else math.sqrt(float((s[:k].double() ** 2).sum()) / total)


def clamp_quantile(up: torch.Tensor, down: torch.Tensor, q: float) -> tuple[torch.Tensor, torch.Tensor]:
    """sd-scripts' extraction clamp: both factors' values clipped at +-(the q-quantile of all their values)."""
    if q >= 1:
        return up, down
    values = torch.cat([up.flatten(), down.flatten()]).double()
    k = max(1, min(values.numel(), int(math.ceil(q * values.numel()))))
    hi = float(torch.kthvalue(values, k).values)
    return up.clamp(-hi, hi), down.clamp(-hi, hi)
