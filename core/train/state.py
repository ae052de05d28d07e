"""Resumable training state, written so that a kill at any moment leaves a usable state behind.

state/ holds lora.safetensors (the LoRA in peft form, one prefix per model), optimizer.pt and
scheduler.pt (loaded with weights_only=True) and trainer.json (step, epoch, position in the epoch).
A new state is written to state.new/ and swapped in with renames.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from ..failures import DiskFull, free_bytes, is_disk_full


def _usable(d: Path) -> bool:
    return (d / "trainer.json").is_file() and (d / "lora.safetensors").is_file()


def find_state(state_dir: Path) -> Path | None:
    for d in (state_dir, state_dir.with_name(state_dir.name + ".old")):
        if d.is_dir() and _usable(d):
            return d
    return None


RESUME_AFTER_FREEING = "resume the run: its last complete state is kept"


def tensor_bytes(obj: Any) -> int:
    """The bytes of every tensor in a nest of dicts, lists and tuples (what saving it writes, give or take)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def state_bytes(lora: dict[str, torch.Tensor], optimizer: dict) -> int:
    return tensor_bytes(lora) + tensor_bytes(optimizer) + (1 << 20)


def save_state(state_dir: Path, lora: dict[str, torch.Tensor], optimizer: dict, scheduler: dict, info: dict[str, Any]) -> None:
    """Write state.new/ whole, then swap it in. It needs room for a second state beside the current one: when the
    drive has less, or fills up while writing, nothing is swapped, state.new/ is removed and DiskFull says so."""
    from safetensors.torch import save_file


    new = state_dir.with_name(state_dir.name + ".new")
    old = state_dir.with_name(state_dir.name + ".old")
    shutil.rmtree(new, ignore_errors=True)
    needed = state_bytes(lora, optimizer)
    if free_bytes(state_dir.parent) < needed:
        raise DiskFull(new, needed, then=RESUME_AFTER_FREEING)
    try:
        new.mkdir(parents=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in lora.items()}, new / "lora.safetensors")
        torch.save(optimizer, new / "optimizer.pt")
        torch.save(scheduler, new / "scheduler.pt")
        (new / "trainer.json").write_text(json.dumps(info, indent=1), encoding="utf-8")  # written last: complete
    except Exception as e:
        shutil.rmtree(new, ignore_errors=True)
        # torch.save's error does not say ENOSPC ("unexpected pos ..."): the free space does
        if is_disk_full(e) or free_bytes(state_dir.parent) < needed:
            raise DiskFull(new, needed, then=RESUME_AFTER_FREEING) from e
        raise
    shutil.rmtree(old, ignore_errors=True)
    if state_dir.exists():
        state_dir.rename(old)
    new.rename(state_dir)
    shutil.rmtree(old, ignore_errors=True)


def load_state(state_dir: Path) -> tuple[dict[str, torch.Tensor], dict, dict, dict[str, Any]]:
    from safetensors.torch import load_file

    d = find_state(state_dir)
    if d is None:
        raise FileNotFoundError(f"no saved state in {state_dir}")
    lora = load_file(d / "lora.safetensors")
    optimizer = torch.load(d / "optimizer.pt", map_location="cpu", weights_only=True)
    scheduler = torch.load(d / "scheduler.pt", map_location="cpu", weights_only=True)
    info = json.loads((d / "trainer.json").read_text(encoding="utf-8"))
    return lora, optimizer, scheduler, info
