"""Process-wide setup of a training process: its memory allocator, when it started, quiet libraries, no
bitsandbytes unless needed, and a quick exit."""
from __future__ import annotations

import os
import sys
import time

# ---------------------------------------------------------------------------------------------- memory allocator
ALLOCATOR_ENV = "LW_ALLOCATOR"  # "system" keeps the C library's malloc; a path picks another library
ALLOCATOR_ACTIVE_ENV = "LW_ALLOCATOR_ACTIVE"  # set in the restarted process: restart once only
TCMALLOC_NAMES = ("tcmalloc_minimal", "tcmalloc")  # Debian/Ubuntu: libtcmalloc-minimal4, google-perftools
TRAINING_COMMANDS = ("train", "demo")
SYSTEM_ALLOCATOR = ("system", "glibc", "default", "off", "0", "no", "false")


def choose_allocator() -> tuple[str | None, str]:
    """(the malloc library a training process on Linux should run with, or None for the C library's own; why none:
    "system" (LW_ALLOCATOR says so), "missing" (LW_ALLOCATOR names no file), "old glibc", "not found"; "" with a
    library).

    tcmalloc when the system has it (as AUTOMATIC1111's webui.sh does): on the bench setup (real-size SD1.5 on the
    CPU) it lowers the peak memory by about 230 MiB against glibc's malloc, whose single heap leaves freed
    activations in holes between live ones, at the same step time (docs/benchmarks.md). `LW_ALLOCATOR=system`
    turns it off; `LW_ALLOCATOR=/path/to/libX.so` picks another (jemalloc, mimalloc)."""
    choice = os.environ.get(ALLOCATOR_ENV, "").strip()
    if choice.lower() in SYSTEM_ALLOCATOR:
        return None, "system"
    if choice:
        return (choice, "") if os.path.isfile(choice) else (None, "missing")
    import ctypes.util
    import platform

    libc, version = platform.libc_ver()
    if libc != "glibc" or tuple(int(x) for x in version.split(".")[:2] if x.isdigit()) < (2, 34):
        return None, "old glibc"  # there a tcmalloc not linked with libpthread fails to load (pthread_key_create)
    for name in TCMALLOC_NAMES:
        lib = ctypes.util.find_library(name)
        if lib:
            return lib, ""
    return None, "not found"


def find_allocator() -> str | None:
    """The library of `choose_allocator()`, or None."""
    return choose_allocator()[0]


def preloads_cleanly(lib: str) -> bool:
    """Whether a program starts with `lib` preloaded: a library that cannot be opened is only reported by ld.so
    ("cannot be preloaded ... ignored"), a missing symbol stops the program. A bare interpreter tries it."""
    import subprocess

    env = dict(os.environ, LD_PRELOAD=lib)
    try:
        r = subprocess.run([sys.executable, "-S", "-c", ""], env=env, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0 and b"ld.so" not in r.stderr and b"error" not in r.stderr.lower()


def restart_with_allocator(args: list[str]) -> None:
    """`python -m core train|demo` on Linux: start this process again, before anything is imported, with
    `find_allocator()`'s library preloaded (a malloc can only be replaced when a process starts). Returns when
    there is nothing to do or the restart is not possible; the same process id goes on either way."""
    if sys.platform != "linux" or not args or args[0] not in TRAINING_COMMANDS:
        return
    if ALLOCATOR_ACTIVE_ENV in os.environ:
        return
    lib = find_allocator()
    if not lib or not preloads_cleanly(lib):
        return
    env = dict(os.environ)
    env[ALLOCATOR_ACTIVE_ENV] = lib
    env["LD_PRELOAD"] = ":".join([lib] + [p for p in env.get("LD_PRELOAD", "").split(":") if p])
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    except OSError:
        return


def allocator_in_use() -> str | None:
    """The preloaded malloc library this process runs with (its file name), or None for the C library's."""
    lib = os.environ.get(ALLOCATOR_ACTIVE_ENV)
    if not lib or sys.platform != "linux":
        return None
    name = os.path.basename(lib).split(".so")[0]
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            loaded = any(f"/{name}.so" in line for line in f)
    except OSError:
        return None
    return os.path.basename(lib) if loaded else None


def allocator_note() -> str | None:
    """What a training log says about its malloc: the preloaded library, or why a chosen one is not used."""
    lib = allocator_in_use()
    if lib:
        return f"Memory allocator: {lib} ({ALLOCATOR_ENV}=system keeps the C library's)"
    choice = os.environ.get(ALLOCATOR_ENV, "").strip()
    if sys.platform != "linux" or not choice:
        return None
    lib, why = choose_allocator()
    if lib:  # chosen, but not loaded
        return f"{ALLOCATOR_ENV}={choice} cannot be preloaded: this run uses the C library's malloc"
    if why == "missing":
        return f"{ALLOCATOR_ENV}={choice} is not a file: this run uses the C library's malloc"
    return None


def end_process(code: int) -> None:
    """End a finished `python -m core` process at once: flush what it printed, then exit without the interpreter's
    teardown, which takes 1-2 s after a training run (every module and object freed one by one) and pages in about
    130 MiB of the CUDA libraries' code for their destructors, the highest memory of the whole run on the CPU.
    Everything the commands write is closed by then (`with open`, atomic writes). If a thread other than the main
    one is still running, the normal exit waits for it."""
    import logging
    import threading

    if any(t is not threading.main_thread() and not t.daemon and t.is_alive() for t in threading.enumerate()):
        sys.exit(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    os._exit(code)


def process_start_time() -> float:
    """When this process started (a Stop pressed while the model was still loading must not be lost)."""
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:
        return time.time()


BNB_OPTIMIZERS = ("AdamW8bit", "Lion8bit")


def skip_bitsandbytes(cfg) -> None:
    """A training process whose run uses no 8-bit optimizer never needs bitsandbytes, whose import (pulled in by
    diffusers, peft and transformers when it is installed) costs about 1.5 s and loads torch's compiler: make it look
    absent. Only for a process that trains one config (`python -m core train`), never a long-lived one."""
    import sys

    uses_bnb = cfg.optimizer_type in BNB_OPTIMIZERS or getattr(cfg, "base_precision", "auto") == "nf4"
    if not uses_bnb and "bitsandbytes" not in sys.modules:
        sys.modules["bitsandbytes"] = None  # importlib.util.find_spec -> None: the libraries see it as not installed


def skip_triton() -> None:
    """A training process on a machine without CUDA never runs a Triton kernel (the GPU kernel compiler), but
    diffusers' import pulls in torch's compiler, which imports triton when it is installed (it comes with CUDA
    torch): about 75 MiB of memory for nothing. Make it look absent there. Only for a process that trains one
    config (`python -m core train`)."""
    import sys

    import torch

    if "triton" not in sys.modules and not torch.cuda.is_available():
        sys.modules["triton"] = None  # as for bitsandbytes: import fails, find_spec says not installed


def quiet_libraries() -> None:
    """Keep the log readable: no per-file progress bars and no optional-kernel notices from libraries."""
    from ..logs import quiet_library_notices

    quiet_library_notices()  # before diffusers/peft import bitsandbytes, which logs its notice at import time
    try:
        from diffusers.utils import logging as dlog
        from transformers.utils import logging as tlog

        dlog.disable_progress_bar()
        tlog.disable_progress_bar()
    except ImportError:
        pass


# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_BYTES = 512 << 20  # blocks below it come from the heap (at 1 GiB glibc 2.36 faults them in again)
TRIM_THRESHOLD_BYTES = 1 << 30  # free memory at the heap's top kept up to this (a C int: below 2 GiB)


def keep_freed_memory_for_reuse() -> bool:
    """Training on the CPU: let glibc hand freed tensor memory back to the next allocation instead of to the system.

    By default every activation larger than glibc's mmap threshold (at most 32 MiB) is a fresh mmap, so each step
    page-faults and zeroes its activations again: on the real-size SD1.5 UNet at 256 px that is about 600,000 page
    faults and 1.3 s of kernel time per step (measured by bench/vs_diffusers.py's setup; see docs/benchmarks.md).
    Raising glibc's mmap threshold to 512 MiB and its trim threshold to 1 GiB keeps those pages in the heap; the
    peak memory stays the same.
    Returns whether it was applied (Linux with glibc only; elsewhere nothing changes)."""
    import ctypes
    import platform
    import sys

    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
            libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False
