"""Reading and driving run directories from outside the trainer (the GUI's side of the contract).

The trainer writes ``<output_dir>/<output_name>/`` as docs/architecture.md describes. This module
reads it (incrementally, so a 1-second refresh costs only the new bytes), decides the run's status,
drops control requests, and starts the trainer as a detached subprocess so the GUI can be closed or
reloaded without touching the run. No gradio and no torch here.

Besides the trainer's files, :func:`start_run` writes two files of its own into the run directory:
``console.log`` (the trainer's stdout and stderr) and ``launch.json`` (pid, time and command of the
last launch), so a launch that dies before the trainer writes anything is still visible.

Tests set ``LW_TRAINER_CMD`` (e.g. ``"python tests/fake_trainer.py"``) to replace
``python -m core`` with a fake trainer; nothing else should.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import psutil

from ..config.toml_io import atomic_write_text
from ..config.schema import TrainConfig
from .events import EventLog, as_float, as_int

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TRAINER_CMD_ENV = "LW_TRAINER_CMD"
CONTROL_REQUESTS = ("stop", "sample", "save")
STATUSES = ("running", "completed", "failed", "stopped", "interrupted")
SAMPLE_RE = re.compile(r"^s(\d+)_(\d+)\.(png|jpg|jpeg|webp)$", re.IGNORECASE)
CONSOLE_LOG = "console.log"
LAUNCH_FILE = "launch.json"


class RunExistsError(RuntimeError):
    """Starting a run whose folder already holds one (resume it, overwrite it, or rename)."""


class RunBusyError(RuntimeError):
    """The run is already training."""


# --------------------------------------------------------------------------- process liveness
LAUNCHED: dict[str, subprocess.Popen] = {}


def pid_alive(pid: Any, started_at: float | None = None) -> bool:
    """True if ``pid`` is a live process (not a zombie) that is not younger than ``started_at``."""
    pid = as_int(pid)
    if not pid or pid <= 0:
        return False
    for proc in list(LAUNCHED.values()):
        if proc.pid == pid:
            proc.poll()  # reap our own child, or it lingers as a zombie
    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        if started_at is not None and p.create_time() > started_at + 5:
            return False  # the pid now belongs to a newer process
        return True
    except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
        return False
    except psutil.Error:
        return False


def launched_returncode(run_dir: str | os.PathLike) -> int | None:
    """Exit code of a trainer this process launched for ``run_dir`` (None if unknown or still running)."""
    proc = LAUNCHED.get(run_key(run_dir))
    return None if proc is None else proc.poll()


# --------------------------------------------------------------------------- run summary
@dataclass
class RunInfo:
    name: str
    dir: Path
    status: str
    step: int = 0
    total_steps: int | None = None
    epoch: int | None = None
    epochs: int | None = None
    it_per_s: float | None = None
    eta_s: float | None = None
    lr: float | None = None
    losses: list[tuple[int, float, float]] = field(default_factory=list)  # (step, loss, avg_loss)
    val_losses: list[tuple[int, float]] = field(default_factory=list)  # (step, validation loss)
    best: dict[str, Any] | None = None  # the saved file with the lowest validation loss: epoch, step, loss, path
    validation_images: int = 0  # images the run measures its validation loss on (plan event)
    error_lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    message: str = ""
    exit_code: int | None = None
    lora_path: str | None = None
    samples: list[tuple[str, str]] = field(default_factory=list)  # (path, "step 120"), oldest first
    started_at: float | None = None  # the run's first start (a resumed run keeps it)
    ended_at: float | None = None
    active_s: float | None = None  # seconds of training over all attempts, so far
    pid: int | None = None
    plan_text: str = ""
    stage: str = ""  # what a running trainer is doing before its first step, in words
    resumable: bool = False
    output_dir: Path | None = None

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "failed", "stopped")

    @property
    def fraction(self) -> float:
        if not self.total_steps:
            return 0.0
        return max(0.0, min(1.0, self.step / self.total_steps))


EVENT_LOGS: dict[str, EventLog] = {}


def run_key(run_dir: str | os.PathLike) -> str:
    return str(Path(run_dir).resolve())


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def has_state(run_dir: Path) -> bool:
    """The trainer's resumable state is there (same test as core.train.state.find_state)."""
    for d in (run_dir / "state", run_dir / "state.old"):
        if (d / "trainer.json").is_file() and (d / "lora.safetensors").is_file():
            return True
    return False


def is_run_dir(path: Path) -> bool:
    return any((path / n).is_file() for n in ("events.jsonl", "status.json", LAUNCH_FILE))


def tail_text(path: Path, lines: int = 40, max_bytes: int = 64 * 1024) -> list[str]:
    """The last ``lines`` lines of a text file (reads at most ``max_bytes`` from its end)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return []
    text = data.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    out = text.split("\n")
    if size > max_bytes:
        out = out[1:]
    while out and not out[-1].strip():
        out.pop()
    return out[-lines:]


def decide_status(*, end: dict[str, Any] | None, status_doc: dict[str, Any], alive: bool,
                  started: bool, launch_pending: bool = False, returncode: int | None = None) -> str:
    """The run's status from what is known about its current attempt.

    ``end``: the attempt's end event (None if it has none); ``status_doc``: status.json;
    ``alive``: its process runs; ``started``: the attempt wrote a start event; ``launch_pending``:
    a launch happened after the last start event (the trainer is still loading, or died loading);
    ``returncode``: exit code of a process we launched, if known.
    "completed" only with an end event saying completed and exit code 0.
    """
    if launch_pending:
        if alive:
            return "running"
        return "failed"  # the process ended without writing a start event: it never ran
    if end is not None:
        st, code = end.get("status"), as_int(end.get("exit_code"))
        doc_code = as_int(status_doc.get("exit_code"))
        if st == "completed":
            ok = code == 0 and doc_code in (None, 0) and returncode in (None, 0)
            return "completed" if ok else "failed"
        if st == "stopped":
            return "stopped"
        return "failed"
    if alive:
        return "running"
    if not started and not status_doc:
        return "failed" if returncode not in (None, 0) else "interrupted"
    return "interrupted"


def read_run(run_dir: str | os.PathLike) -> RunInfo:
    """Everything the GUI shows about one run. Cheap to call every second (reads only new events)."""
    run_dir = Path(run_dir)
    key = run_key(run_dir)
    log = EVENT_LOGS.get(key)
    if log is None:
        log = EVENT_LOGS[key] = EventLog(run_dir / "events.jsonl")
    log.update()
    doc = read_json(run_dir / "status.json")
    launch = read_json(run_dir / LAUNCH_FILE)

    start_ev = log.last_start or {}
    start_time = as_float(start_ev.get("time"))
    launch_time = as_float(launch.get("started_at"))
    launch_pending = is_launch_pending(log, launch)
    if not launch_pending and launch.get("pending_requests"):
        _deliver_pending_requests(run_dir, launch)
    if launch_pending:
        pid, since = as_int(launch.get("pid")), launch_time
    else:
        pid = as_int(doc.get("pid")) or as_int(start_ev.get("pid"))
        since = as_float(doc.get("started_at")) or start_time
    returncode = launched_returncode(run_dir)
    alive = pid_alive(pid, since) if log.end is None or launch_pending else False
    status = decide_status(end=None if launch_pending else log.end, status_doc=doc, alive=alive,
                           started=log.last_start is not None, launch_pending=launch_pending, returncode=returncode)

    info = RunInfo(name=run_dir.name, dir=run_dir, status=status, pid=pid, output_dir=run_dir.parent)
    last = log.last_step or {}
    info.step = as_int(last.get("step")) or as_int(doc.get("step")) or as_int(start_ev.get("step")) or 0
    info.total_steps = as_int(last.get("total_steps")) or as_int(doc.get("total_steps")) \
        or as_int((log.plan or {}).get("total_steps"))
    info.epoch = as_int(last.get("epoch"))
    info.epochs = as_int((log.plan or {}).get("epochs"))
    info.plan_text = str((log.plan or {}).get("text", ""))
    if status == "running" and not launch_pending:
        info.it_per_s = as_float(last.get("it_per_s"))
        info.eta_s = as_float(last.get("eta_s"))
    info.lr = as_float(last.get("lr"))
    info.losses = [(s, l, a) for s, (l, a) in sorted(log.losses.items())]
    info.val_losses = [(s, v["loss"]) for s, v in sorted(log.validation.items())]
    info.best = log.best
    info.validation_images = as_int((log.plan or {}).get("validation_images")) or 0
    info.warnings = list(log.warnings)
    info.started_at = log.first_time or as_float(doc.get("started_at")) or launch_time
    info.active_s = log.active_seconds
    if status == "running" and info.active_s is not None and log.last_time is not None:
        info.active_s += max(0.0, time.time() - log.last_time)
    info.resumable = has_state(run_dir)

    if status == "running":
        if launch_pending or log.last_start is None:
            info.stage = "starting the trainer (loading libraries)"
        elif log.progress is not None:
            p = log.progress
            info.stage = f"{str(p.get('stage', '')).replace('_', ' ')} {p.get('done', '?')}/{p.get('total', '?')}"
        elif log.last_step is None or (start_time and as_float(last.get("time")) and last["time"] < start_time):
            info.stage = "preparing (loading the model and data)"

    end = None if launch_pending else log.end
    if end is not None:
        info.exit_code = as_int(end.get("exit_code"))
        info.message = str(end.get("message", ""))
        info.ended_at = as_float(end.get("time"))
        if status == "completed" and end.get("lora_path"):
            info.lora_path = str(end["lora_path"])
    else:
        info.exit_code = returncode
        if status == "failed" and doc.get("message") and not launch_pending:  # the end event did not fit on the disk
            info.message = str(doc["message"])
    if info.lora_path is None and log.lora_paths:
        info.lora_path = log.lora_paths[-1]

    errors = [] if launch_pending else list(log.errors)
    if status == "failed" and info.message and info.message not in errors:
        errors.append(info.message)
    if status in ("failed", "interrupted") and (launch_pending or not log.count):
        console = [ln for ln in tail_text(run_dir / CONSOLE_LOG, 15) if ln.strip()]
        if status == "failed":
            code = f" (exit code {returncode})" if returncode is not None else ""
            info.message = f"The trainer exited before it started{code}."
        errors += console
    elif status == "interrupted":
        info.message = ("The trainer process is gone without finishing (killed, crashed or the computer "
                        "restarted)." + (" It can be resumed from its last saved state." if info.resumable else ""))
    info.error_lines = errors
    info.samples = _samples(run_dir, log)
    return info


def _samples(run_dir: Path, log: EventLog) -> list[tuple[str, str]]:
    """Sample images with a step label, oldest first: from sample events, plus any PNGs in samples/."""
    seen: dict[str, tuple[int, int, str]] = {}
    for ev in log.sample_events:
        step = as_int(ev.get("step")) or 0
        for i, p in enumerate(ev.get("paths") or []):
            path = Path(p)
            if not path.is_absolute():
                path = run_dir / path
            if path.is_file():
                seen[str(path)] = (step, i, path.name)
    sdir = run_dir / "samples"
    try:
        entries = list(os.scandir(sdir))
    except OSError:
        entries = []
    for e in entries:
        m = SAMPLE_RE.match(e.name)
        if m and e.is_file() and e.path not in seen:
            seen[str(Path(e.path))] = (int(m.group(1)), int(m.group(2)), e.name)
    ordered = sorted(seen.items(), key=lambda kv: (kv[1][0], kv[1][1]))
    return [(p, f"step {step}") for p, (step, _i, _n) in ordered]


def run_status(run_dir: str | os.PathLike) -> str:
    """One of running, completed, failed, stopped, interrupted."""
    return read_run(run_dir).status


def list_runs(output_dirs: Iterable[str | os.PathLike]) -> list[RunInfo]:
    """Every run folder directly inside the given output folders, newest first."""
    runs: list[RunInfo] = []
    seen: set[str] = set()
    for out in output_dirs:
        if not out:
            continue
        try:
            children = sorted(p for p in Path(out).iterdir() if p.is_dir())
        except OSError:
            continue
        for child in children:
            k = run_key(child)
            if k in seen or not is_run_dir(child):
                continue
            seen.add(k)
            runs.append(read_run(child))
    runs.sort(key=lambda r: r.started_at or 0.0, reverse=True)
    return runs


# --------------------------------------------------------------------------- control
def run_dir_of(config: TrainConfig) -> Path:
    return Path(config.output_dir) / config.output_name


def is_launch_pending(log: EventLog, launch: dict[str, Any]) -> bool:
    """A launch newer than the last start event: that trainer is still loading (or died loading)."""
    launch_time = as_float(launch.get("started_at"))
    start_time = as_float((log.last_start or {}).get("time"))
    return launch_time is not None and (start_time is None or launch_time > start_time + 0.002)


def _deliver_pending_requests(run_dir: Path, launch: dict[str, Any]) -> None:
    for kind in launch.get("pending_requests") or []:
        if kind in CONTROL_REQUESTS:
            (run_dir / "control").mkdir(parents=True, exist_ok=True)
            (run_dir / "control" / kind).touch()
    launch = {k: v for k, v in launch.items() if k != "pending_requests"}
    atomic_write_text(run_dir / LAUNCH_FILE, json.dumps(launch, indent=1))


# Launching, control requests and the command line live in core/runs/launch.py, the steps arithmetic in
# core/runs/steps_plan.py, the rule for replacing a run that trained nothing in core/runs/replace.py, reading
# events.jsonl in core/runs/events.py.
