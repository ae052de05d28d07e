"""Process-wide setup of a training process: when it started, quiet libraries, no bitsandbytes unless needed."""
from __future__ import annotations

import time


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
