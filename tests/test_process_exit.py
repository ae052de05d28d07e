"""How a `python -m core` training process starts and ends (core/train/process.py): on Linux it starts again once
with a better malloc (tcmalloc when the system has it, LW_ALLOCATOR to choose), and it ends without the
interpreter's teardown once everything it printed is flushed."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from core.train.process import find_allocator
from core.config.toml_io import save_config
from train_helpers import REPO, tiny_config

linux = pytest.mark.skipif(sys.platform != "linux", reason="the allocator is preloaded on Linux only")


def loaded_library(stem: str) -> str:
    """Path of a shared library this (Linux) test process has mapped, e.g. libm."""
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split()[-1]
            if os.path.basename(path).startswith(stem + ".so"):
                return path
    pytest.skip(f"{stem} is not mapped here")


def train_tiny(tiny_sd15, tiny_dataset, tmp_path, name: str, **env: str) -> str:
    cfg = tiny_config(tiny_sd15, tiny_dataset, tmp_path / "out", output_name=name, max_train_steps=1)
    config = tmp_path / f"{name}.toml"
    save_config(cfg, config)
    full_env = {k: v for k, v in os.environ.items() if k not in ("LW_ALLOCATOR", "LW_ALLOCATOR_ACTIVE")}
    full_env.update(env)
    r = subprocess.run([sys.executable, "-m", "core", "train", "--config", str(config)], cwd=REPO,
                       capture_output=True, text=True, timeout=600, env=full_env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Training complete" in r.stdout  # printed before the quick exit, so flushed
    return (tmp_path / "out" / name / "train.log").read_text()


@linux
def test_a_training_command_starts_again_once_with_the_chosen_allocator(tiny_sd15, tiny_dataset, tmp_path):
    lib = loaded_library("libm")  # any real library shows the mechanism: preloaded once, then the run goes on
    log = train_tiny(tiny_sd15, tiny_dataset, tmp_path, "chosen", LW_ALLOCATOR=lib)
    assert f"Memory allocator: {os.path.basename(lib)}" in log, log
    log = train_tiny(tiny_sd15, tiny_dataset, tmp_path, "system", LW_ALLOCATOR="system")
    assert "Memory allocator" not in log, log
    assert "Training complete" in log


@linux
def test_tcmalloc_is_used_when_the_system_has_it(tiny_sd15, tiny_dataset, tmp_path, monkeypatch):
    """(Debian 12 and Ubuntu 22.04 or newer: glibc 2.34+, where tcmalloc always loads.)"""
    monkeypatch.delenv("LW_ALLOCATOR", raising=False)
    lib = find_allocator()
    if lib is None:
        pytest.skip("no tcmalloc on this machine (Debian/Ubuntu: apt install libtcmalloc-minimal4)")
    assert "tcmalloc" in lib
    log = train_tiny(tiny_sd15, tiny_dataset, tmp_path, "default")
    assert f"Memory allocator: {os.path.basename(lib)}" in log, log


@linux
def test_a_missing_or_broken_allocator_is_said_in_the_log(tiny_sd15, tiny_dataset, tmp_path):
    missing = tmp_path / "nothing.so"
    log = train_tiny(tiny_sd15, tiny_dataset, tmp_path, "missing", LW_ALLOCATOR=str(missing))
    assert f"LW_ALLOCATOR={missing} is not a file: this run uses the C library's malloc" in log, log
    broken = tmp_path / "libbroken.so"
    broken.write_bytes(b"not a library")
    log = train_tiny(tiny_sd15, tiny_dataset, tmp_path, "broken", LW_ALLOCATOR=str(broken))
    assert f"LW_ALLOCATOR={broken} cannot be preloaded: this run uses the C library's malloc" in log, log


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_the_quick_exit_flushes_output_and_keeps_the_exit_code():
    r = run_python("""
        import sys
        from core.train.process import end_process
        print("done, no newline", end="")
        print("to stderr", file=sys.stderr, end="")
        end_process(3)
        print("never")
    """)
    assert r.returncode == 3 and r.stdout == "done, no newline" and r.stderr.endswith("to stderr"), r


def test_the_exit_waits_for_a_running_thread(tmp_path):
    marker = tmp_path / "written"
    r = run_python(f"""
        import threading, time
        from core.train.process import end_process
        def work():
            time.sleep(0.5)
            open({str(marker)!r}, "w").write("ok")
        threading.Thread(target=work).start()
        end_process(5)
    """)
    assert r.returncode == 5, r.stderr
    assert marker.read_text() == "ok"


def test_no_tcmalloc_before_glibc_2_34(monkeypatch):
    """There a tcmalloc that is not linked with libpthread stops the program (pthread_key_create), as
    AUTOMATIC1111's webui.sh checks too; a library chosen with LW_ALLOCATOR is still used."""
    import platform

    monkeypatch.delenv("LW_ALLOCATOR", raising=False)
    monkeypatch.setattr("ctypes.util.find_library", lambda name: "libtcmalloc_minimal.so.4")
    monkeypatch.setattr(platform, "libc_ver", lambda *a, **k: ("glibc", "2.31"))
    assert find_allocator() is None
    monkeypatch.setattr(platform, "libc_ver", lambda *a, **k: ("glibc", "2.36"))
    assert find_allocator() == "libtcmalloc_minimal.so.4"
    monkeypatch.setattr(platform, "libc_ver", lambda *a, **k: ("glibc", "2.31"))
    monkeypatch.setenv("LW_ALLOCATOR", sys.executable)  # any existing file: the user's choice
    assert find_allocator() == sys.executable
