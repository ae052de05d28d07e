"""The run queue: trainings that start one after another, kept on disk so no browser or GUI process is needed.

The queue folder (``<project>/queue/``, or the folder ``LW_QUEUE_DIR`` names) holds:

``queue.json``   ``{"version": 1, "next_id": N, "entries": [...]}``, the entries in order; rewritten atomically,
                 only while holding ``queue.lock``
``<id>.toml``    each entry's config as it was when it was added (later edits of the user's TOML change nothing)
``queue.lock``   an operating-system lock (fcntl.flock / msvcrt.locking) held while queue.json is changed: the
                 system drops it when its process dies, so a killed process never leaves a stale lock behind
``worker.lock``  held by the one worker for its whole life (a second worker cannot take it and exits, "attached")
``worker.json``  that worker's pid and process start time, which psutil checks (a reused pid is not the worker)
``worker.log``   what the workers did

The worker (core/runs/queue_worker.py, ``python -m core queue work``) takes the first waiting entry, starts it
with core.runs.launch.start_run (so its run folder is like any other) and waits for it to end. No gradio, no torch.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterator

from ..config.schema import TrainConfig
from ..config.toml_io import atomic_write_text, save_config
from .reader import PROJECT_ROOT, RunExistsError, is_run_dir, read_run, run_dir_of

QUEUE_DIR_ENV = "LW_QUEUE_DIR"
POLL_ENV = "LW_QUEUE_POLL"  # seconds between the worker's looks at its run (tests make it short)
STATES = ("waiting", "running", "completed", "failed", "stopped", "interrupted", "removed")
ENDED = ("completed", "failed", "stopped", "interrupted", "removed")
LOCK_TIMEOUT = 10.0


class QueueError(RuntimeError):
    """Something the user asked of the queue that cannot be done, phrased with the fix."""


@dataclass
class Entry:
    id: int
    name: str
    run_dir: str
    family: str = ""
    steps: int | None = None
    state: str = "waiting"
    added_at: float = 0.0
    started_at: float | None = None
    ended_at: float | None = None
    message: str = ""
    config: str = ""  # the saved config's file name in the queue folder
    cwd: str = ""  # relative paths of the config are relative to this folder (where it was added)
    overwrite: bool = False  # replace a run already in the run folder

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Entry":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- the folder and its lock
def queue_dir() -> Path:
    return Path(os.environ.get(QUEUE_DIR_ENV, "").strip() or PROJECT_ROOT / "queue").expanduser()


def resolve_dir(qdir: str | os.PathLike | None) -> Path:
    return Path(qdir) if qdir else queue_dir()


class FileLock:
    """An exclusive operating-system lock on a file, released when it is closed or its process ends."""

    def __init__(self, path: Path):
        self.path = path
        self._file = None

    def acquire(self, timeout: float = 0.0) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+b")  # noqa: SIM115 - kept open while held
        deadline = time.monotonic() + timeout
        while True:
            try:
                _lock_file(f)
                self._file = f
                return True
            except OSError:
                if time.monotonic() >= deadline:
                    f.close()
                    return False
                time.sleep(0.05)

    def release(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            try:
                _unlock_file(f)
            except OSError:
                pass
            f.close()


def _lock_file(f) -> None:
    if os.name == "nt":
        import msvcrt

        f.seek(0)
        msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
    else:
        import fcntl

        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def _unlock_file(f) -> None:
    if os.name == "nt":
        import msvcrt

        f.seek(0)
        msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)
    else:
        import fcntl

        fcntl.flock(f.fileno(), fcntl.LOCK_UN)


@contextmanager
def locked(qdir: str | os.PathLike | None = None, timeout: float = LOCK_TIMEOUT) -> Iterator[Path]:
    """Hold queue.lock (waiting up to ``timeout`` seconds) while queue.json is read and changed."""
    d = resolve_dir(qdir)
    lock = FileLock(d / "queue.lock")
    if not lock.acquire(timeout):
        raise QueueError(f"The queue is busy: another process has held {lock.path} for over {timeout:.0f} s. "
                         "Try again in a moment.")
    try:
        yield d
    finally:
        lock.release()


# --------------------------------------------------------------------------- queue.json
def _retrying(action):
    """Windows refuses to replace a file another process has open for a moment (the GUI reads queue.json every
    second): try again for up to a second there."""
    for attempt in range(20):
        try:
            return action()
        except PermissionError:
            if os.name != "nt" or attempt == 19:
                raise
            time.sleep(0.05)


def load(qdir: str | os.PathLike | None = None) -> tuple[list[Entry], int]:
    """The entries in order and the next id. Reading needs no lock: queue.json is only ever replaced whole."""
    path = resolve_dir(qdir) / "queue.json"
    try:
        data = json.loads(_retrying(lambda: path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return [], 1
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise QueueError(f"{path} cannot be read ({e}): fix it or delete it (the queue then starts empty).") from None
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        raise QueueError(f"{path} is not a queue file: delete it (the queue then starts empty).")
    entries = [Entry.from_dict(e) for e in data["entries"] if isinstance(e, dict) and "id" in e]
    next_id = max([int(data.get("next_id") or 1)] + [e.id + 1 for e in entries])
    return entries, next_id


def save(entries: list[Entry], next_id: int, qdir: str | os.PathLike | None = None) -> None:
    """Write queue.json atomically; call it only inside :func:`locked`."""
    doc = {"version": 1, "next_id": next_id, "entries": [e.to_dict() for e in entries]}
    text = json.dumps(doc, indent=1, ensure_ascii=False)
    _retrying(lambda: atomic_write_text(resolve_dir(qdir) / "queue.json", text))


def entries(qdir: str | os.PathLike | None = None) -> list[Entry]:
    return load(qdir)[0]


def find(items: list[Entry], entry_id: int | str) -> Entry:
    try:
        wanted = int(entry_id)
    except (TypeError, ValueError):
        wanted = None
    for e in items:
        if e.id == wanted:
            return e
    raise QueueError(f"The queue has no entry {entry_id}: `python -m core queue list` shows the ids.")


def waiting(items: list[Entry]) -> list[Entry]:
    return [e for e in items if e.state == "waiting"]


def position(items: list[Entry], entry: Entry) -> int | None:
    """1 for the waiting entry that starts next, 2 for the one after it ...; None for the others."""
    ws = waiting(items)
    return ws.index(entry) + 1 if entry in ws else None


def update(qdir: str | os.PathLike | None, entry_id: int, **changes: Any) -> Entry | None:
    """Change fields of one entry under the lock; None when it is no longer in the queue."""
    with locked(qdir) as d:
        items, next_id = load(d)
        for e in items:
            if e.id == entry_id:
                for k, v in changes.items():
                    setattr(e, k, v)
                save(items, next_id, d)
                return e
    return None


# --------------------------------------------------------------------------- what the user does
def _family(cfg: TrainConfig) -> str:
    if cfg.model_family != "auto":
        return cfg.model_family
    from ..models.choose import describe_base  # file headers only, no torch

    return describe_base(cfg.pretrained_model_name_or_path, cfg.base_config_dir)[0] or "auto"


def _steps(cfg: TrainConfig) -> int | None:
    from .steps_plan import steps_plan

    plan = steps_plan(cfg.train_data_dir, cfg.model_copy(update={"alpha_mask": False, "masked_loss": False}))
    return plan.total_steps if plan.ok else None


def _check_run_folder(cfg: TrainConfig, run_dir: Path, overwrite: bool) -> None:
    """The refusals of launch.start_run, said at add time: a run training there, or a run that would be lost."""
    from .replace import replaceable_run_note

    if not is_run_dir(run_dir):
        return
    if read_run(run_dir).status == "running":
        raise QueueError(f"The run '{cfg.output_name}' ({run_dir}) is training now: choose another output_name.")
    if not overwrite and (run_dir / "events.jsonl").is_file() and replaceable_run_note(run_dir) is None:
        raise RunExistsError(
            f"The folder {run_dir} already holds a run named '{cfg.output_name}'. Choose another output name, or "
            "replace that run (--overwrite; in the GUI tick 'Replace an existing run with the same output name').")


def add(cfg: TrainConfig, *, overwrite: bool = False, qdir: str | os.PathLike | None = None,
        cwd: str | os.PathLike | None = None) -> Entry:
    """Queue a validated config at the end. Refuses a run folder that holds a run (unless ``overwrite``) or that a
    waiting or running entry already uses. The config is saved as ``<id>.toml`` in the queue folder."""
    cwd = Path(cwd or os.getcwd()).resolve()
    out = Path(cfg.output_dir).expanduser()
    cfg = cfg.model_copy(update={"output_dir": str(out if out.is_absolute() else cwd / out)})
    run_dir = Path(os.path.abspath(run_dir_of(cfg)))
    _check_run_folder(cfg, run_dir, overwrite)
    family, steps = _family(cfg), _steps(cfg)
    with locked(qdir) as d:
        items, next_id = load(d)
        for e in items:
            if e.state in ("waiting", "running") and Path(e.run_dir) == run_dir:
                raise QueueError(
                    f"'{e.name}' is already in the queue (entry {e.id}, {e.state}) with the run folder {run_dir}: "
                    f"choose another output_name, or remove entry {e.id} first (`python -m core queue remove {e.id}`).")
        entry = Entry(id=next_id, name=cfg.output_name, run_dir=str(run_dir), family=family, steps=steps,
                      added_at=time.time(), config=f"{next_id}.toml", cwd=str(cwd), overwrite=overwrite)
        save_config(cfg, d / entry.config)
        items.append(entry)
        save(items, next_id + 1, d)
    return entry


def remove(entry_id: int | str, qdir: str | os.PathLike | None = None) -> Entry:
    """Take a waiting entry out of the queue (it stays listed as removed until ``clear``)."""
    with locked(qdir) as d:
        items, next_id = load(d)
        e = find(items, entry_id)
        if e.state == "running":
            raise QueueError(f"Entry {e.id} ('{e.name}') is training: stop it with Stop on the Training tab or "
                             f"`python -m core queue stop {e.id}`; the queue then goes on with the next run.")
        if e.state != "waiting":
            raise QueueError(f"Entry {e.id} ('{e.name}') has already ended ({e.state}): `python -m core queue clear` "
                             "drops the ended entries from the list.")
        e.state, e.ended_at, e.message = "removed", time.time(), "removed from the queue before it started"
        save(items, next_id, d)
    return e


def move(entry_id: int | str, *, by: int = 0, to: int | None = None, qdir: str | os.PathLike | None = None) -> int:
    """Move a waiting entry ``by`` places among the waiting ones (-1: it starts sooner), or ``to`` a position
    (1 = next). Returns its new position."""
    with locked(qdir) as d:
        items, next_id = load(d)
        e = find(items, entry_id)
        if e.state != "waiting":
            raise QueueError(f"Entry {e.id} ('{e.name}') is {e.state}: only waiting entries can be moved.")
        ws = waiting(items)
        old = ws.index(e)
        new = (to - 1) if to is not None else old + by
        new = max(0, min(len(ws) - 1, new))
        slots = [i for i, x in enumerate(items) if x.state == "waiting"]  # the others keep their places
        ws.insert(new, ws.pop(old))
        for slot, x in zip(slots, ws):
            items[slot] = x
        save(items, next_id, d)
    return new + 1


def clear(qdir: str | os.PathLike | None = None) -> list[Entry]:
    """Drop the ended entries (completed, failed, stopped, interrupted, removed) and their saved configs."""
    with locked(qdir) as d:
        items, next_id = load(d)
        gone = [e for e in items if e.state in ENDED]
        save([e for e in items if e.state not in ENDED], next_id, d)
    for e in gone:
        if e.config:
            (d / e.config).unlink(missing_ok=True)
    return gone


def stop(entry_id: int | str, qdir: str | os.PathLike | None = None) -> Entry:
    """Ask the running entry's trainer to stop (it saves a resumable state); the queue then goes on."""
    from .launch import request

    e = find(entries(qdir), entry_id)
    if e.state != "running":
        raise QueueError(f"Entry {e.id} ('{e.name}') is {e.state}, not training: "
                         + (f"`python -m core queue remove {e.id}` takes it out." if e.state == "waiting" else
                            "there is nothing to stop."))
    request(e.run_dir, "stop")
    return e


def running_training(qdir: str | os.PathLike | None = None) -> Entry | None:
    """The queued run that is training right now, if any (its entry says running and its trainer runs)."""
    try:
        items = entries(qdir)
    except QueueError:
        return None
    for e in items:
        if e.state == "running" and is_run_dir(Path(e.run_dir)) and read_run(e.run_dir).status == "running":
            return e
    return None


# --------------------------------------------------------------------------- the worker process
_SPAWNED: list[subprocess.Popen] = []


def worker_info(qdir: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """worker.json of the live worker ({"pid", "create_time", "started_at", "note"}), or None when none runs."""
    for p in list(_SPAWNED):  # reap workers this process started, or they linger as zombies
        if p.poll() is not None:
            _SPAWNED.remove(p)
    try:
        info = json.loads((resolve_dir(qdir) / "worker.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(info, dict):
        return None
    return info if _is_process(info.get("pid"), info.get("create_time")) else None


def _is_process(pid: Any, create_time: Any) -> bool:
    import psutil

    try:
        p = psutil.Process(int(pid))
        return p.status() != psutil.STATUS_ZOMBIE and abs(p.create_time() - float(create_time)) < 1.0
    except (psutil.Error, TypeError, ValueError):
        return False


def ensure_worker(qdir: str | os.PathLike | None = None, env: dict[str, str] | None = None) -> tuple[int, bool]:
    """(pid of the worker, whether it was started now): starts the worker (``python -m core.runs.queue_worker``,
    what ``python -m core queue work`` runs, without the other subcommands' imports: it lives as long as the
    queue) detached from this process, so closing the GUI or the terminal does not end it, unless one runs.
    ``env``: added to its environment (the GUI's Hugging Face token), and so to the trainers it starts."""
    d = resolve_dir(qdir)
    info = worker_info(d)
    if info:
        return int(info["pid"]), False
    from .launch import detach_kwargs

    child_env = dict(os.environ)
    child_env.update(env or {})
    child_env[QUEUE_DIR_ENV] = str(d.resolve())
    child_env["PYTHONUNBUFFERED"] = "1"
    child_env["PYTHONPATH"] = os.pathsep.join(
        [str(PROJECT_ROOT)] + [p for p in child_env.get("PYTHONPATH", "").split(os.pathsep) if p])
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "worker.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "core.runs.queue_worker"], cwd=str(PROJECT_ROOT),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=child_env,
                                close_fds=True, **detach_kwargs())
    _SPAWNED.append(proc)
    return proc.pid, True
