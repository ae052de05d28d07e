"""One cache file (a latent, a text-encoder output, a loss mask) written whole or not at all: a temporary file
renamed into place; a full disk is said with the file and the room it needed (core.failures.DiskFull)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..failures import DiskFull, is_disk_full

if TYPE_CHECKING:
    import torch


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    try:
        save_file(tensors, str(tmp))
        tmp.replace(path)
    except Exception as e:
        tmp.unlink(missing_ok=True)
        if is_disk_full(e):
            needed = sum(t.numel() * t.element_size() for t in tensors.values())
            raise DiskFull(path, needed, then="start the training again (the cache files made so far are kept)") \
                from e
        raise
