"""Starting the trainer as a detached subprocess, control requests, and the equivalent command line.

The GUI's side of the run-directory contract, with core/runs.py (which reads run folders). See the
docstring of core/runs.py for the files :func:`start_run` writes.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..config.toml_io import atomic_write_text, save_config
from .reader import (LAUNCHED, EVENT_LOGS, CONSOLE_LOG, CONTROL_REQUESTS, LAUNCH_FILE, PROJECT_ROOT, TRAINER_CMD_ENV,
                   EventLog, RunBusyError, RunExistsError, run_key, is_launch_pending, read_json, has_state, is_run_dir,
                   read_run, run_dir_of)
from .replace import replaceable_run_note
from ..config.schema import TrainConfig


def request(run_dir: str | os.PathLike, kind: str) -> Path:
    """Ask the running trainer to stop (saving a resumable state), make samples, or save a LoRA now.

    A trainer that is still loading clears control/ when it takes the run folder, so a request made
    before its start event is also kept in launch.json and made again by :func:`read_run` once the
    start event is there.
    """
    if kind not in CONTROL_REQUESTS:
        raise ValueError(f"unknown request {kind!r}: use one of {', '.join(CONTROL_REQUESTS)}")
    run_dir = Path(run_dir)
    path = run_dir / "control" / kind
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    launch = read_json(run_dir / LAUNCH_FILE)
    log = EVENT_LOGS.get(run_key(run_dir)) or EventLog(run_dir / "events.jsonl")
    log.update()
    if launch and is_launch_pending(log, launch):
        launch["pending_requests"] = sorted(set(launch.get("pending_requests") or []) | {kind})
        atomic_write_text(run_dir / LAUNCH_FILE, json.dumps(launch, indent=1))
    return path


def trainer_command() -> list[str]:
    """``python -m core``, or the test suite's fake trainer when LW_TRAINER_CMD is set."""
    override = os.environ.get(TRAINER_CMD_ENV, "").strip()
    if override:
        return shlex.split(override, posix=os.name != "nt")
    return [sys.executable, "-m", "core"]


def detach_kwargs() -> dict[str, Any]:
    if os.name == "nt":
        flags = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0x200) | getattr(subprocess, "CREATE_NO_WINDOW", 0x8000000)
        return {"creationflags": flags}
    return {"start_new_session": True}


def start_run(config: TrainConfig, resume: bool = False, *, overwrite: bool = False,
              env: dict[str, str] | None = None) -> subprocess.Popen:
    """Write the config into the run folder and start the trainer on it, detached from this process.

    Raises RunBusyError if the run is training, RunExistsError if the folder already holds a run
    (and neither ``resume`` nor ``overwrite`` is given), FileNotFoundError when resuming a run
    without saved state. A run that ended before training anything (replace.replaceable_run_note)
    is no obstacle: the trainer replaces it and says so in its log.
    """
    run_dir = run_dir_of(config)
    if is_run_dir(run_dir) and read_run(run_dir).status == "running":
        raise RunBusyError(f"The run '{config.output_name}' is already training.")
    has_events = (run_dir / "events.jsonl").is_file()
    if resume and not has_state(run_dir):
        raise FileNotFoundError(f"Nothing to resume: {run_dir} has no saved state yet.")
    if not resume and has_events and not overwrite and replaceable_run_note(run_dir) is None:
        raise RunExistsError(
            f"The folder {run_dir} already holds a run named '{config.output_name}'. Choose another output "
            "name, resume that run, or start it again from scratch (overwrite).")
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "config.toml"
    save_config(config, config_path)
    cmd = trainer_command() + ["train", "--config", str(config_path.resolve())]
    if resume:
        cmd.append("--resume")
    elif overwrite and has_events:
        cmd.append("--overwrite")

    child_env = dict(os.environ)
    child_env.update(env or {})
    child_env["PYTHONUNBUFFERED"] = "1"
    child_env["PYTHONPATH"] = os.pathsep.join(
        [str(PROJECT_ROOT)] + [p for p in child_env.get("PYTHONPATH", "").split(os.pathsep) if p])
    started_at = time.time()
    mode = "ab" if resume else "wb"
    with open(run_dir / CONSOLE_LOG, mode) as console:
        console.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {command_text(cmd)}\n".encode("utf-8"))
        console.flush()
        proc = subprocess.Popen(cmd, cwd=os.getcwd(), stdin=subprocess.DEVNULL, stdout=console,
                                stderr=subprocess.STDOUT, env=child_env, close_fds=True, **detach_kwargs())
    LAUNCHED[run_key(run_dir)] = proc
    if not resume:
        EVENT_LOGS.pop(run_key(run_dir), None)
    atomic_write_text(run_dir / LAUNCH_FILE, json.dumps(
        {"pid": proc.pid, "started_at": started_at, "resume": resume, "command": cmd}, indent=1))
    return proc


# --------------------------------------------------------------------------- command line
def command_text(args: list[str]) -> str:
    if os.name == "nt":
        return subprocess.list2cmdline(args)
    return " ".join(shlex.quote(a) for a in args)


def command_args(config: TrainConfig, resume: bool = False) -> list[str]:
    """CLI arguments that reproduce ``config``: every value that differs from the default."""
    args = [sys.executable, "-m", "core", "train"]
    defaults = TrainConfig()
    for name in TrainConfig.model_fields:
        value = getattr(config, name)
        if value == getattr(defaults, name):
            continue
        if isinstance(value, bool):
            args.append(f"--{name}" if value else f"--no-{name}")
        elif isinstance(value, list):
            args.append(f"--set={name}={json.dumps(value, ensure_ascii=False)}")
        elif value is None:
            args.append(f"--set={name}=none")
        else:
            args.append(f"--{name}={_plain(value)}")
    if resume:
        args.append("--resume")
    return args


def _plain(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


def command_line(config: TrainConfig, resume: bool = False) -> str:
    """The command that trains ``config`` from a terminal (for the GUI's "Show command")."""
    return command_text(command_args(config, resume))
