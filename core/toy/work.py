"""The toy-model build's plumbing: progress lines with rate and ETA, and the stage state in ``<out>.work/``
that lets an interrupted or paused build (``--max-minutes``) continue where it stopped."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

class Progress:
    """Progress lines with the stage's rate and ETA, and the whole build's elapsed time."""

    def __init__(self, echo=print):
        self.echo = echo
        self.t0 = time.time()

    def stage(self, name: str, total: int, start: int = 0):
        return _Stage(self, name, total, start)

    def say(self, text: str) -> None:
        self.echo(f"[{_hms(time.time() - self.t0)}] {text}")


class _Stage:
    def __init__(self, p: Progress, name: str, total: int, start: int = 0):
        self.p, self.name, self.total, self.start = p, name, total, start
        self.t0 = time.time()
        self.every = max(1, total // 40)

    def step(self, i: int, **values) -> None:
        if i % self.every and i != self.total:
            return
        dt = time.time() - self.t0
        rate = dt / max(i - self.start, 1)
        vals = " ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())
        self.p.say(f"{self.name} {i}/{self.total} {vals} {rate:.2f}s/step ETA {_hms(rate * (self.total - i))}")


def _hms(s: float) -> str:
    s = int(max(s, 0))
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Paused(Exception):
    """--max-minutes ran out: the stage state is saved; the same command continues it."""


class Work:
    """Stage state in ``<out>.work/``: the same command continues an interrupted or paused build."""

    def __init__(self, out: Path, key: str, deadline: float | None):
        """``key`` identifies the plan: saved state of another plan is not used (and is replaced on saving)."""
        self.dir = out.with_name(out.name + ".work")
        self.deadline = deadline
        self.key = key

    def load(self, name: str) -> dict | None:
        import torch

        f = self.dir / f"{name}.pt"
        if not f.is_file() or (self.dir / "plan.json").read_text(encoding="utf-8") != self.key:
            return None
        return torch.load(f, map_location="cpu", weights_only=True)

    def save(self, name: str, state: dict) -> None:
        import torch

        self.dir.mkdir(parents=True, exist_ok=True)
        plan_file = self.dir / "plan.json"
        if not plan_file.is_file() or plan_file.read_text(encoding="utf-8") != self.key:
            for old in self.dir.glob("*.pt"):
                old.unlink()
            plan_file.write_text(self.key, encoding="utf-8")
        tmp = self.dir / f"{name}.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(self.dir / f"{name}.pt")

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.time() > self.deadline

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def rng_state(rng: np.random.Generator) -> dict:
    st = rng.bit_generator.state
    return {"state": str(st["state"]["state"]), "inc": str(st["state"]["inc"]),
            "has_uint32": int(st["has_uint32"]), "uinteger": int(st["uinteger"])}


def set_rng_state(rng: np.random.Generator, d: dict) -> None:
    rng.bit_generator.state = {"bit_generator": "PCG64", "state": {"state": int(d["state"]), "inc": int(d["inc"])},
                               "has_uint32": int(d["has_uint32"]), "uinteger": int(d["uinteger"])}
