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


def _usable(d: Path) -> bool:
    return (d / "trainer.json").is_file() and (d / "lora.safetensors").is_file()


def find_state(state_dir: Path) -> Path | None:
    for d in (state_dir, state_dir.with_name(state_dir.name + ".old")):
        if d.is_dir() and _usable(d):
            return d
    return None


def save_state(state_dir: Path, lora: dict[str, torch.Tensor], optimizer: dict, scheduler: dict, info: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    new = state_dir.with_name(state_dir.name + ".new")
    old = state_dir.with_name(state_dir.name + ".old")
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in lora.items()}, new / "lora.safetensors")
    torch.save(optimizer, new / "optimizer.pt")
    torch.save(scheduler, new / "scheduler.pt")
    (new / "trainer.json").write_text(json.dumps(info, indent=1), encoding="utf-8")  # written last: marks complete
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
