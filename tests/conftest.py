"""Shared pytest setup: offline Hugging Face libraries and tiny model fixtures."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Must happen before huggingface_hub / transformers / diffusers are imported anywhere.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The run queue of the tests (GUI servers and CLI runs they start inherit it): never the project's queue/ folder.
# Tests of the queue itself set their own.
if "LW_QUEUE_DIR" not in os.environ:
    import tempfile

    os.environ["LW_QUEUE_DIR"] = tempfile.mkdtemp(prefix="lw-test-queue-")

_TESTS_DIR = Path(__file__).resolve().parent
for _p in (str(_TESTS_DIR), str(_TESTS_DIR.parent)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import pytest  # noqa: E402

from tiny_models import make_tiny_dataset, make_tiny_sd15, make_tiny_sdxl  # noqa: E402


@pytest.fixture(scope="session")
def tiny_sd15() -> Path:
    """Path of a shared tiny SD1.5 diffusers folder. Read-only: copy it before modifying."""
    return make_tiny_sd15()


@pytest.fixture(scope="session")
def tiny_sdxl() -> Path:
    """Path of a shared tiny SDXL diffusers folder. Read-only: copy it before modifying."""
    return make_tiny_sdxl()


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A train_data_dir holding ``10_zqx/`` with 4 captioned PNGs (64x64, 96x64, 64x96, 64x64)."""
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny_dataset"))


try:  # browser tests: the CI machine has 2 cores, so a page can take longer than playwright's 5 s default
    from playwright.sync_api import expect as _expect

    _expect.set_options(timeout=30_000)
except ImportError:  # pragma: no cover
    pass


@pytest.fixture(scope="module")
def browser():
    """One headless Debian chromium per GUI test module (each test opens its own pages). Module-scoped, not
    session-scoped: playwright's sync API keeps an asyncio loop running on the main thread while it is open, so a
    later non-GUI test that calls ``asyncio.run`` would fail if the browser outlived its module."""
    from gui_server import CHROMIUM, CHROMIUM_ARGS, playwright_api

    if playwright_api is None or not Path(CHROMIUM).exists():
        pytest.skip("needs the playwright package and Debian chromium (/usr/bin/chromium)")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def one_thread():
    """One CPU thread, for tests that compare two trainings bit for bit. With two threads MKL's summation order
    follows the memory layout, so two identical runs late in a long test session can differ by ~1e-6, which Adam
    turns into larger differences; on one thread the same seed gives the same bits in any process."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
