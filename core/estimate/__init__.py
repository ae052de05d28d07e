"""VRAM estimate of a training run (`python -m core estimate`; usable by the GUI: estimate(cfg) -> Estimate)."""
from .vram import Estimate, estimate, suggest

__all__ = ["Estimate", "estimate", "suggest"]
