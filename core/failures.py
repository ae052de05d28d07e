"""Errors as a person reads them: the command line's boundary (core/cli.py) turns the project's own errors and
the operating system's (a missing file, no permission, a full disk, a file of the wrong kind, out of memory)
into one plain message and an exit code; anything else is a bug, whose traceback goes to logs/errors.log (the
folder LW_LOGS names, if set) with a one-line summary on screen. Standard library only.
"""
from __future__ import annotations

import errno
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EXIT_BAD_INPUT = 2      # the project's own errors: a bad file, folder, option or setting
EXIT_SYSTEM = 1         # the operating system said no: missing, permission, disk full
EXIT_OUT_OF_MEMORY = 3
EXIT_BUG = 70           # EX_SOFTWARE
EXIT_INTERRUPTED = 130


def free_bytes(folder: str | os.PathLike) -> int:
    """Free bytes on the drive of folder (or its nearest existing parent); very large when it cannot be told."""
    p = Path(folder)
    for candidate in (p, *p.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return 1 << 62


def free_space_text(path: str | os.PathLike) -> str:
    """'12.3 GB free' on the drive of path (or its nearest existing parent); '' when it cannot be told."""
    p = Path(path)
    for candidate in (p, *p.parents):
        try:
            if candidate.exists():
                free = shutil.disk_usage(candidate).free
                return f"{free / 1024 ** 3:.1f} GB free" if free >= 1024 ** 3 else f"{free / 1024 ** 2:.0f} MB free"
        except OSError:
            return ""
    return ""


class DiskFull(OSError):
    """A write that did not fit on its drive, said plainly (which file, how much is free, how much it needed)."""

    def __init__(self, path: str | os.PathLike | None, needed: int | None = None, then: str = "run it again"):
        super().__init__(errno.ENOSPC, disk_full_message(path, needed, then), str(path) if path else None)

    def __str__(self) -> str:
        return self.strerror


def disk_full_message(path: str | os.PathLike | None, needed: int | None = None, then: str = "run it again") -> str:
    where = Path(path).parent if path else None
    text = f"Disk full while writing {path}" if path else "Disk full"
    free = free_space_text(where) if where else ""
    if free:
        text += f" ({free} in {where})"
    if needed:
        text += f"; it needs about {size_text(needed)}"
    return text + f". Free some space on that drive (or choose a folder on another one) and {then}."


def size_text(n: int) -> str:
    return f"{n / 1024 ** 3:.1f} GB" if n >= 1024 ** 3 else f"{max(n, 1) / 1024 ** 2:.0f} MB"


def is_disk_full(e: BaseException) -> bool:
    """An OSError ENOSPC/EDQUOT, or a library's wrapped form of it (safetensors: 'No space left on device (os
    error 28)'). torch.save's own error does not say it: its callers also look at the free space."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return True
    text = str(e)
    return any(s in text for s in ("No space left on device", "os error 28", "StorageFull", "There is not enough "
                                   "space on the disk", "os error 112"))


def is_out_of_memory(e: BaseException) -> bool:
    """CPU MemoryError or torch's CUDA out-of-memory (checked by name: torch need not be imported)."""
    if isinstance(e, MemoryError):
        return True
    return type(e).__name__ in ("OutOfMemoryError", "OutOfMemory") or "CUDA out of memory" in str(e)


def os_error_message(e: OSError) -> str:
    name = e.filename or ""
    if isinstance(e, DiskFull):
        return str(e)
    if is_disk_full(e):
        return disk_full_message(name or None)
    if isinstance(e, FileNotFoundError):
        return f"Not found: {name}. Check the path (and that the drive is connected)." if name else \
            f"A file or folder was not found ({e.strerror})."
    if isinstance(e, PermissionError):
        return (f"No permission to use {name}: close programs that hold it open, or choose a folder you can write "
                "to." if name else f"Permission denied ({e.strerror}).")
    if isinstance(e, IsADirectoryError):
        return f"{name} is a folder; a file is expected here."
    if isinstance(e, NotADirectoryError):
        return f"{name} is a file; a folder is expected here."
    return f"{e.strerror or e}: {name}" if name else f"{e.strerror or e}"


def explain(e: BaseException) -> tuple[str, int] | None:
    """(message, exit code) for an error a person can fix; None for a bug."""
    if isinstance(e, KeyboardInterrupt):
        return "Interrupted.", EXIT_INTERRUPTED
    if is_out_of_memory(e):
        return ("Out of memory" + (" on the GPU" if "CUDA" in str(e) or "OutOfMemory" in type(e).__name__
                                   else " (RAM)") + ": close other programs, or use smaller settings (for training, "
                "`python -m core estimate` lists the cheapest changes that fit).", EXIT_OUT_OF_MEMORY)
    if isinstance(e, OSError) or is_disk_full(e):
        return (os_error_message(e) if isinstance(e, OSError) else disk_full_message(None)), EXIT_SYSTEM
    if type(e).__name__ == "SafetensorError":
        return (f"A file could not be read as .safetensors ({e}): it is not one, or it is incomplete (a download "
                "or copy that stopped early). Download or copy it again.", EXIT_BAD_INPUT)
    if isinstance(e, UnicodeDecodeError):
        return ("A file expected to be text holds binary data (a model or image where a text or TOML file was "
                "expected?). Check the file you gave.", EXIT_BAD_INPUT)
    if type(e).__module__.startswith("core.") and not isinstance(e, AssertionError):
        return str(e), EXIT_BAD_INPUT  # the project's own errors (ConfigError, ToolError, ModelFileError ...)
    return None


def bug_log_path() -> Path:
    logs = Path(os.environ.get("LW_LOGS") or PROJECT_ROOT / "logs")
    try:
        logs.mkdir(exist_ok=True)
        probe = logs / "errors.log"
        with open(probe, "a", encoding="utf-8"):
            pass
        return probe
    except OSError:
        return Path(tempfile.gettempdir()) / "lora-workshop-errors.log"


def report_bug(e: BaseException, argv: list[str]) -> tuple[str, Path]:
    """Append the traceback to the bug log; return the one-line summary and the log's path."""
    path = bug_log_path()
    text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"\n=== {stamp}  python -m core {' '.join(argv)}  (Python {sys.version.split()[0]})\n{text}")
    except OSError:
        sys.stderr.write(text)  # nowhere to write it: the screen is the log
    first = (str(e).strip().splitlines() or [""])[0][:200]
    return f"Unexpected error (a bug in LoRA Workshop): {type(e).__name__}: {first}", path
