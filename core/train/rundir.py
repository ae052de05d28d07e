"""The run directory: the trainer's side of the contract in docs/architecture.md."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ..config.toml_io import atomic_write_text
from ..data.holdout import RECORD as VALIDATION_RECORD

CONTROL_REQUESTS = ("stop", "sample", "save")


class RunDir:
    def __init__(self, output_dir: str | Path, output_name: str):
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / output_name
        self.samples = self.path / "samples"
        self.state = self.path / "state"
        self.control = self.path / "control"
        self.events_file = self.path / "events.jsonl"
        self.status_file = self.path / "status.json"
        self.log_file = self.path / "train.log"
        self.config_file = self.path / "config.toml"
        self._status: dict[str, Any] = {}

    def create(self) -> None:
        for d in (self.path, self.samples, self.state, self.control):
            d.mkdir(parents=True, exist_ok=True)

    # ---------------------------------------------------------- taking it
    def check_free(self, *, resume: bool, overwrite: bool) -> str | None:
        """Refuse a folder this start may not use (ConfigError). Returns the note to log when it holds an attempt
        that failed before training, which is replaced without asking (one rule with the GUI's start_run)."""
        from ..config.toml_io import ConfigError
        from .state import find_state

        if resume and find_state(self.state) is None:
            raise ConfigError([f"Nothing to resume: {self.path} has no saved state. Start the run without --resume."])
        if resume or overwrite or not self.events_file.exists():
            return None
        from ..runs.replace import replaceable_run_note

        note = replaceable_run_note(self.path)
        if note is None:
            raise ConfigError([
                f"The run folder {self.path} already holds a run. Use --resume to continue it, --overwrite to "
                "start it again from scratch, or choose another output_name."])
        return note

    def take(self, cfg, *, resume: bool, clear: bool) -> None:
        """Make the folder this process's run: clear an earlier attempt (`clear`, never when resuming), drop
        requests older than this launch, write the config, status "running" and the start event."""
        import shutil

        from ..config.toml_io import save_config
        from .process import process_start_time

        if clear and not resume:
            for p in (self.state, self.samples, self.control):
                shutil.rmtree(p, ignore_errors=True)
            for f in (self.events_file, self.status_file, self.log_file, self.path / VALIDATION_RECORD):
                f.unlink(missing_ok=True)
        self.create()
        self.clear_requests(older_than=process_start_time())
        save_config(cfg, self.config_file)
        self.set_status(status="running", step=0, total_steps=None)
        self.event("start", pid=os.getpid(), resumed=resume, step=0)

    # ------------------------------------------------------------- events
    def event(self, type_: str, **fields: Any) -> dict[str, Any]:
        ev = {"type": type_, "time": round(time.time(), 3), **fields}
        line = json.dumps(ev, ensure_ascii=False, default=str) + "\n"
        with open(self.events_file, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
        return ev

    def log(self, message: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        with open(self.log_file, "a", encoding="utf-8") as f:
            f.write(f"{stamp} {message}\n")

    # ------------------------------------------------------------- status
    def set_status(self, **fields: Any) -> None:
        if not self._status:
            self._status = {"pid": os.getpid(), "started_at": time.time(), "exit_code": None}
        self._status.update(fields, updated_at=time.time())
        text = json.dumps(self._status, indent=1)
        try:
            atomic_write_text(self.status_file, text)
        except OSError:
            # a full disk has no room for the temporary copy: overwrite in place (a few hundred bytes, within the
            # file's own block), so that the run's outcome is still on record
            with open(self.status_file, "r+" if self.status_file.exists() else "w", encoding="utf-8") as f:
                f.write(text)
                f.truncate()

    # ------------------------------------------------------------ control
    def take_request(self, name: str) -> bool:
        """True once if someone asked for `name` (a file in control/); the request is consumed."""
        f = self.control / name
        if f.exists():
            try:
                f.unlink()
            except OSError:
                pass
            return True
        return False

    def clear_requests(self, older_than: float) -> None:
        """Drop requests left over from an earlier process; keep those made since `older_than` (this launch)."""
        for name in CONTROL_REQUESTS:
            f = self.control / name
            try:
                if f.stat().st_mtime < older_than:
                    f.unlink()
            except FileNotFoundError:
                pass

    # ------------------------------------------------------------- names
    def lora_path(self, suffix: str = "") -> Path:
        return self.output_dir / f"{self.path.name}{suffix}.safetensors"
