"""Library notices that say nothing to our users, silenced in every process we start (trainer, GUI, doctor).

Light on purpose (only `logging`): the GUI calls it at start-up without importing any ML library.
"""
from __future__ import annotations

import logging

# logger name -> text of the one notice dropped from it (other records of that logger still show).
# bitsandbytes, on a CPU with AVX512-BF16 and without the optional `kernels` package, logs at import time
# (bitsandbytes/backends/cpu/ops.py, logger.warning): "Failed to load CPU gemm_4bit_forward from
# kernels-community: No module named 'kernels'. ...". That is a 4-bit inference kernel, which LoRA training
# never uses; the import happens whenever diffusers, transformers or peft load (diffusers.quantizers).
NOTICES = {
    "bitsandbytes.backends.cpu.ops": "kernels-community",
    "bitsandbytes": "kernels-community",  # in case a version logs it on its top logger
}


class DropNotice(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            return self.text not in record.getMessage()
        except Exception:  # a record whose arguments do not format: let logging report it as usual
            return True


def quiet_library_notices() -> None:
    """Drop the NOTICES from their loggers; call before the library is imported. Idempotent."""
    for name, text in NOTICES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropNotice) and f.text == text for f in logger.filters):
            logger.addFilter(DropNotice(text))
