"""The queue's worker (``python -m core queue work``): starts the waiting runs one after another.

One worker per queue folder: it holds worker.lock while it lives (the operating system drops the lock when the
process ends, however it ends), so a second worker exits at once saying it attached to the first. Its loop:
take the first waiting entry, mark it running, start it with launch.start_run, wait until core.runs.reader says
its run is no longer running, record how it ended (completed, failed, stopped, interrupted), go on; end when
nothing waits. A worker started while an entry is marked running (the previous worker was killed) waits for that
run instead of starting it again. Before starting an entry it waits for a training started outside the queue
(the GUI's Start) in the same outputs folder: two trainings on one GPU run out of memory.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

from ..config.toml_io import ConfigError, atomic_write_text, load_config
from .launch import start_run
from .queue import (POLL_ENV, STATES, Entry, FileLock, resolve_dir, entries, load, locked, save, update, waiting,
                    worker_info)
from .reader import LAUNCH_FILE, RunBusyError, RunExistsError, RunInfo, read_json, list_runs, read_run


def _poll_seconds() -> float:
    try:
        return max(0.05, float(os.environ.get(POLL_ENV) or 1.0))
    except ValueError:
        return 1.0


def _say(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}", flush=True)


def work(qdir: str | os.PathLike | None = None, poll: float | None = None,
         say: Callable[[str], None] = _say) -> int:
    """Work off the queue until nothing waits; 0 at once when another worker has it (attached)."""
    d = resolve_dir(qdir)
    poll = poll or _poll_seconds()
    lock = FileLock(d / "worker.lock")
    if not lock.acquire(0):
        info = worker_info(d)
        pid = f" (pid {info['pid']})" if info else ""
        say(f"A queue worker is already running{pid}: attached to it; it works off the queue in {d}.")
        return 0
    try:
        _write_info(d)
        say(f"Queue worker started (pid {os.getpid()}) for {d}.")
        while True:
            _wait_for_outside_runs(d, poll, say)
            job = _next_job(d, lock)
            if job is None:
                say("Nothing waits in the queue: the worker ends.")
                return 0
            entry, reattach = job
            try:
                _run(d, entry, reattach, poll, say)
            except Exception as e:  # noqa: BLE001 - one broken entry must not stop the queue
                say(f"Entry {entry.id} ('{entry.name}'): queue worker error:\n{traceback.format_exc()}")
                update(d, entry.id, state="failed", ended_at=time.time(),
                       message=f"queue worker error: {type(e).__name__}: {e} (see {d / 'worker.log'})")
    finally:
        if read_json(d / "worker.json").get("pid") == os.getpid():
            (d / "worker.json").unlink(missing_ok=True)
        lock.release()


def _write_info(d: Path, note: str = "") -> None:
    import psutil

    me = psutil.Process()
    atomic_write_text(d / "worker.json", json.dumps(
        {"pid": me.pid, "create_time": me.create_time(), "started_at": time.time(), "note": note}))


def _next_job(d: Path, lock: FileLock) -> tuple[Entry, bool] | None:
    """(entry, re-attach) to work on: an entry a killed worker left running, else the first waiting one, marked
    running now. None when nothing waits: then worker.json and worker.lock are given up inside the queue lock,
    so a run added meanwhile either is seen here or finds no worker and starts one."""
    with locked(d):
        items, next_id = load(d)
        running = [e for e in items if e.state == "running"]
        if running:
            return running[0], True
        ws = waiting(items)
        if not ws:
            (d / "worker.json").unlink(missing_ok=True)
            lock.release()
            return None
        e = ws[0]
        e.state, e.started_at, e.message = "running", time.time(), ""
        save(items, next_id, d)
        return e, False


def _outside_run(d: Path) -> RunInfo | None:
    """A training started outside the queue in an outputs folder of a waiting entry, while none of the queue's
    runs trains."""
    items = entries(d)
    if any(e.state == "running" for e in items):
        return None
    folders = sorted({str(Path(e.run_dir).parent) for e in waiting(items)})
    return next((r for r in list_runs(folders) if r.status == "running"), None)


def _wait_for_outside_runs(d: Path, poll: float, say: Callable[[str], None]) -> None:
    run = _outside_run(d)
    if run is None:
        return
    note = f"waiting for '{run.name}' (started outside the queue) to end before starting the next queued run"
    say(note)
    _write_info(d, note)
    while _outside_run(d) is not None:
        time.sleep(poll)
    _write_info(d)


def _launched_since(run_dir: Path, since: float | None) -> bool:
    """The run folder's last launch is this entry's (launch.json is written after the entry is marked running)."""
    started = read_json(run_dir / LAUNCH_FILE).get("started_at")
    return since is not None and isinstance(started, (int, float)) and started >= since - 0.001


def _start(d: Path, entry: Entry) -> str | None:
    """Start the entry's trainer; the reason in words when it cannot be started."""
    try:
        cfg = load_config(d / entry.config)
        cwd = entry.cwd if entry.cwd and Path(entry.cwd).is_dir() else os.getcwd()
        with contextlib.chdir(cwd):  # the config's relative paths are relative to where it was added
            start_run(cfg, overwrite=entry.overwrite)
    except ConfigError as e:
        return f"The queued config {d / entry.config} cannot be used: " + "; ".join(e.lines)
    except (RunExistsError, RunBusyError, FileNotFoundError, OSError) as e:
        return str(e)
    return None


def _run(d: Path, entry: Entry, reattach: bool, poll: float, say: Callable[[str], None]) -> None:
    run_dir = Path(entry.run_dir)
    label = f"Entry {entry.id} ('{entry.name}')"
    if reattach and _launched_since(run_dir, entry.started_at):
        say(f"{label}: its run was started by an earlier worker; waiting for it to end.")
    else:
        if reattach:  # the earlier worker was killed before it started the run
            update(d, entry.id, started_at=time.time())
        problem = _start(d, entry)
        if problem:
            say(f"{label}: failed to start: {problem}")
            update(d, entry.id, state="failed", ended_at=time.time(), message=problem)
            return
        say(f"{label}: started in {run_dir}.")
    info = read_run(run_dir)
    while info.status == "running":
        time.sleep(poll)
        info = read_run(run_dir)
    state = info.status if info.status in STATES else "failed"
    lines = [ln for ln in [info.message, *info.error_lines] if ln and ln.strip()]
    message = lines[0].strip() if lines else ""
    update(d, entry.id, state=state, ended_at=info.ended_at or time.time(), message=message)
    say(f"{label}: {state}." + (f" {message}" if message else ""))


if __name__ == "__main__":  # how core.runs.queue.ensure_worker starts it: without the CLI's imports (torch)
    from ..cli import run_guarded

    sys.exit(run_guarded(lambda _args: work(), None, ["queue", "work"]))
