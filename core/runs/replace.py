"""Whether a run folder's run may simply be started again: the one rule the CLI and the GUI share."""
from __future__ import annotations

import os
import re
from pathlib import Path

from .events import EventLog, as_float, as_int
from .reader import read_json, has_state, pid_alive


def _lora_files(run_dir: Path) -> list[Path]:
    """LoRA files the trainer saves beside the run folder: `<name>.safetensors`, `<name>-step00000120`,
    `<name>-000002` (epochs) and `<name>.diffusers.safetensors`."""
    pattern = re.compile(re.escape(run_dir.name) + r"(-step\d+|-\d+|\.diffusers)?\.safetensors")
    try:
        return [p for p in run_dir.parent.iterdir() if pattern.fullmatch(p.name)]
    except OSError:
        return []


def replaceable_run_note(run_dir: str | os.PathLike) -> str | None:
    """Whether the run folder's run may simply be started again: the sentence to log if so, else None.

    The one rule for the CLI (Trainer._prepare_run_dir) and the GUI (launch.start_run): a run whose
    trainer has ended (an end event, or its process is gone) without training a step (no `step` event,
    step 0 in status.json), without a saved LoRA (no checkpoint event, no `<name>[-...].safetensors`
    beside the folder) and without a resumable state has nothing to lose, so it is replaced without
    --overwrite. A completed or partly trained run, or one whose trainer is still at work, is not.
    """
    run_dir = Path(run_dir)
    log = EventLog(run_dir / "events.jsonl")  # a fresh reading, not the GUI's cached one
    log.update()
    doc = read_json(run_dir / "status.json")
    if log.last_step is not None or log.losses or log.lora_paths:
        return None
    if as_int(doc.get("step")) or has_state(run_dir) or _lora_files(run_dir):
        return None
    start = log.last_start or {}
    if log.end is None:
        pid = as_int(doc.get("pid")) or as_int(start.get("pid"))
        if pid_alive(pid, as_float(doc.get("started_at")) or as_float(start.get("time"))):
            return None  # still loading: not ours to take
        how, verb = "the trainer process ended without finishing", "ended"
    else:
        message = str(log.end.get("message") or (log.errors[-1] if log.errors else "")).strip()
        first = message.splitlines()[0].strip() if message else ""
        how = first if len(first) <= 200 else first[:197] + "..."
        verb = "failed" if log.end.get("status") == "failed" else "ended"
        how = how or f"status {log.end.get('status', 'unknown')}"
    return f"The previous attempt at this run {verb} before training ({how}); starting it again."
