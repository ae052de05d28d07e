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
