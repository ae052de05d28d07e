"""What an out-of-memory end of a training says: which phase ran out (loading, caching, training, sampling),
of which memory (GPU or RAM), and the estimate's cheapest changes that fit this GPU (core/estimate)."""
from __future__ import annotations

GENERIC = ("train_batch_size (to 1), resolution and network_dim; turn on gradient_checkpointing, cache_latents "
           "and network_train_unet_only; use optimizer_type AdamW8bit and mixed_precision bf16 or fp16")


def _gpu_gb() -> float | None:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_properties(0).total_memory / 1024 ** 3
    except Exception:  # noqa: BLE001 - advice only; the run has failed already
        pass
    return None


def cheapest_changes(cfg, vram_gb: float, most: int = 3) -> list[str]:
    """The estimate's changes for this GPU, one after the other, as 'what (key = value, ...) -> N GB' lines."""
    try:
        from ..estimate.vram import suggest

        est = suggest(cfg, vram_gb)
    except Exception:  # noqa: BLE001 - an estimate that cannot be made leaves the general advice
        return []
    out = []
    for s in est.suggestions[:most]:
        sets = ", ".join(f"{k} = {v!r}" for k, v in s.get("set", {}).items())
        out.append(f"{s['change']} ({sets}) -> {s['peak_vram_gb']:.1f} GB")
    return out


def out_of_memory_message(e: BaseException, phase: str, cfg, vram_gb: float | None = None) -> str:
    gpu = not isinstance(e, MemoryError)
    what = "GPU memory" if gpu else "memory (RAM)"
    text = f"Out of {what} while {phase}."
    if not gpu:
        return (text + " Close other programs, or lower resolution and train_batch_size; on a GPU machine, the "
                "training itself runs on the GPU (see `python -m core doctor`). The last saved state is kept: resume "
                "after changing nothing but memory settings.")
    vram_gb = vram_gb if vram_gb is not None else _gpu_gb()
    changes = cheapest_changes(cfg, vram_gb) if vram_gb else []
    if changes:
        gb = f"{vram_gb:.1f}".rstrip("0").rstrip(".")
        return (text + f" The estimate's cheapest changes for {gb} GB, one after the other: "
                + "; ".join(changes) + f". Then start again (`python -m core estimate --vram {gb}` shows the whole "
                "list).")
    return text + f" Lower these settings and start again: {GENERIC}."
