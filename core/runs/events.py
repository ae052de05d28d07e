"""The trainer's events.jsonl read incrementally: only the new bytes on each refresh, a half-written last line
left for the next reading, and a file that was replaced or shrank read again from the start."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def as_int(v: Any) -> int | None:
    try:
        return None if v is None or isinstance(v, bool) else int(v)
    except (TypeError, ValueError):
        return None


def as_float(v: Any) -> float | None:
    try:
        f = None if v is None or isinstance(v, bool) else float(v)
    except (TypeError, ValueError):
        return None
    return f if f is not None and math.isfinite(f) else None


def tail_events(path: str | os.PathLike, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Events appended to a JSONL file since byte ``offset``, and the offset to continue from.

    Only complete lines (ending in a newline) are consumed, so a line the trainer is still writing
    is read on the next call. A complete line that is not a JSON object is skipped. A missing file
    gives no events; a file shorter than ``offset`` (the run was started again) is read from 0.
    """
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            if size < offset:
                offset = 0
            f.seek(offset)
            data = f.read(size - offset)
    except OSError:
        return [], offset
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset
    events = []
    for line in data[: end + 1].splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            ev = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(ev, dict):
            events.append(ev)
    return events, offset + end + 1


def _head(path: Path, n: int) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


class EventLog:
    """What the events of one run say so far, updated incrementally with :meth:`update`.

    An "attempt" is one trainer process: it begins with a ``start`` event (a resumed run appends a
    new attempt to the same file). ``end`` and ``error`` describe the current attempt only; the loss
    history and samples cover the whole run.
    """

    def __init__(self, path: Path):
        self.path = path
        self.reset()

    def reset(self) -> None:
        self.offset = 0
        self.ident: tuple[int, int] | None = None  # (device, inode) of the file read so far
        self.head = b""  # its first bytes: a new file can get the inode number of the one it replaced
        self.count = 0
        self.first_time: float | None = None
        self.last_start: dict[str, Any] | None = None
        self.end: dict[str, Any] | None = None
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.plan: dict[str, Any] | None = None
        self.last_step: dict[str, Any] | None = None
        self.progress: dict[str, Any] | None = None
        self.losses: dict[int, tuple[float, float]] = {}
        self.validation: dict[int, dict[str, Any]] = {}  # step -> {"loss", "epoch", "path"} (the file saved then)
        self.sample_events: list[dict[str, Any]] = []
        self.lora_paths: list[str] = []
        self.last_time: float | None = None
        self.attempt_time: float | None = None  # time of the current attempt's first event
        self.prior_active = 0.0  # seconds the earlier attempts ran

    @property
    def active_seconds(self) -> float | None:
        """Seconds the trainer ran, over all attempts (pauses between stop and resume not counted)."""
        if self.attempt_time is None or self.last_time is None:
            return None
        return self.prior_active + max(0.0, self.last_time - self.attempt_time)

    @property
    def best(self) -> dict[str, Any] | None:
        """The saved file with the lowest validation loss so far (the trainer's own choice once it has ended)."""
        if self.end is not None and isinstance(self.end.get("best"), dict):
            return self.end["best"]
        saved = [(v["loss"], s) for s, v in self.validation.items() if v.get("path")]
        if not saved:
            return None
        loss, step = min(saved)
        return {"step": step, **self.validation[step]}

    def update(self) -> list[dict[str, Any]]:
        try:
            st = self.path.stat()
            size, ident = st.st_size, (st.st_dev, st.st_ino)
        except OSError:
            size, ident = 0, None
        # The file was replaced (the run started again): shorter than what was read, or another file
        # altogether (a new events.jsonl soon outgrows a short one, e.g. of an attempt that failed loading).
        if size < self.offset or (ident is not None and self.ident is not None and ident != self.ident) \
                or (self.head and _head(self.path, len(self.head)) != self.head):
            self.reset()
        self.ident = ident
        events, self.offset = tail_events(self.path, self.offset)
        if not self.head and self.offset:
            self.head = _head(self.path, min(self.offset, 64))
        for ev in events:
            self.apply(ev)
        return events

    def apply(self, ev: dict[str, Any]) -> None:
        kind = ev.get("type")
        self.count += 1
        t = as_float(ev.get("time"))
        if t is not None:
            if self.first_time is None:
                self.first_time = t
            new_process = kind == "start" and (self.end is not None or self.last_start is None
                                               or ev.get("pid") != self.last_start.get("pid"))
            if self.attempt_time is None or new_process:
                if self.attempt_time is not None and self.last_time is not None:
                    self.prior_active += max(0.0, self.last_time - self.attempt_time)
                self.attempt_time = t
            self.last_time = t
        if kind == "start":
            if self.last_start is None or self.end is not None:
                self.end, self.errors = None, []  # a new attempt
            self.last_start = ev
            self.progress = None
            step = as_int(ev.get("step"))
            if step:  # resumed from a saved state: later steps of the lost attempt are gone
                self.losses = {s: v for s, v in self.losses.items() if s <= step}
                self.validation = {s: v for s, v in self.validation.items() if s <= step}
        elif kind == "plan":
            self.plan = ev
        elif kind == "progress":
            self.progress = ev
        elif kind == "step":
            self.last_step = ev
            self.progress = None
            step = as_int(ev.get("step"))
            loss = as_float(ev.get("loss"))
            if step is not None and loss is not None:
                avg = as_float(ev.get("avg_loss"))
                self.losses[step] = (loss, loss if avg is None else avg)
        elif kind == "validation":
            step, loss = as_int(ev.get("step")), as_float(ev.get("loss"))
            if step is not None and loss is not None:
                point = self.validation.setdefault(step, {"loss": loss, "epoch": as_int(ev.get("epoch")),
                                                          "path": None})
                point["path"] = ev.get("path") or point["path"]
        elif kind == "sample":
            self.sample_events.append(ev)
        elif kind == "checkpoint":
            if ev.get("kind") != "state" and ev.get("path"):
                self.lora_paths.append(str(ev["path"]))
        elif kind == "warning":
            self.warnings = (self.warnings + [str(ev.get("message", ""))])[-20:]
        elif kind == "error":
            self.errors.append(str(ev.get("message", "")))
        elif kind == "end":
            self.end = ev

