"""The installer and launcher scripts.

Fast tests: the shell scripts parse, and install.sh picks the right torch build for a given NVIDIA
driver (a fake nvidia-smi, LW_INSTALL_DRY_RUN=1: nothing is installed).

The slow test (marked `slow`; leave it out with -m "not slow") does what a new user does: a clone
of the repository's HEAD in a folder whose path contains a space, `bash install.sh`, the self-check,
`import core`, a second install.sh run that must skip torch, and the GUI answering HTTP 200. It takes
a few minutes (torch alone is several GB); pip's cache (~/.cache/pip, or PIP_CACHE_DIR) makes it
faster after the first time. LW_INSTALL_TEST_REPO=PATH clones another repository instead of this one.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHELL_SCRIPTS = ["install.sh", "run.sh", "update.sh", ".ci/run"]
needs_bash = pytest.mark.skipif(sys.platform == "win32" or shutil.which("bash") is None, reason="needs bash")


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: no venv of ours active, pip's cache left on."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PIP_NO_CACHE_DIR", "PIP_REQUIRE_VIRTUALENV",
                        "LW_TORCH", "LW_TORCH_INDEX", "LW_PYTHON", "LW_INSTALL_DRY_RUN")}
    venv_bin = str(ROOT / "venv" / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env.update(extra)
    return env


# ------------------------------------------------------------------------------------------ fast


@needs_bash
@pytest.mark.parametrize("script", SHELL_SCRIPTS)
def test_shell_script_parses(script):
    path = ROOT / script
    if not path.exists():
        pytest.skip(f"{script} is not there")
    p = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


FAKE_SMI = """#!/bin/sh
case "$1" in
  --query-gpu*) echo "NVIDIA GeForce RTX 4070, 12282 MiB, 570.00"; exit 0 ;;
esac
echo "+-----------------------------------------------------------------------------------------+"
echo "| NVIDIA-SMI 570.00                 Driver Version: 570.00         CUDA Version: $FAKE_CUDA     |"
echo "+-----------------------------------------------------------------------------------------+"
"""


@pytest.fixture()
def dry_project(tmp_path):
    """install.sh alone in a folder whose path has a space, plus a fake nvidia-smi."""
    proj = tmp_path / "my project"
    proj.mkdir()
    shutil.copy(ROOT / "install.sh", proj / "install.sh")
    bin_dir = tmp_path / "fake bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(FAKE_SMI)
    smi.chmod(0o755)
    return proj, bin_dir


def _dry_run(proj: Path, bin_dir: Path | None, **env: str) -> subprocess.CompletedProcess:
    e = _clean_env(**{"LW_INSTALL_DRY_RUN": "1", "LW_PYTHON": sys.executable, **env})
    if bin_dir is not None:
        e["PATH"] = str(bin_dir) + os.pathsep + e["PATH"]
    else:  # hide any real nvidia-smi
        e["PATH"] = os.pathsep.join(p for p in e["PATH"].split(os.pathsep)
                                    if not (Path(p) / "nvidia-smi").exists())
    return subprocess.run(["bash", str(proj / "install.sh")], cwd=proj, env=e, capture_output=True, text=True,
                          timeout=120)


@needs_bash
@pytest.mark.skipif(sys.platform == "darwin", reason="macOS takes PyPI's torch, whatever the GPU")
@pytest.mark.parametrize("driver_cuda, build", [
    ("13.1", "cu130"), ("13.0", "cu130"), ("12.9", "cu128"), ("12.8", "cu128"), ("12.6", "cu126"),
    ("12.4", "cu126"),  # older 12.x drivers: the oldest 12.x build, with a warning
])
def test_install_picks_the_cuda_build_for_the_driver(dry_project, driver_cuda, build):
    proj, bin_dir = dry_project
    p = _dry_run(proj, bin_dir, FAKE_CUDA=driver_cuda)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert f"the driver supports CUDA {driver_cuda}" in out
    assert f"https://download.pytorch.org/whl/{build}" in out
    assert "Dry run" in out and not (proj / "venv").exists()
    assert ("WARNING" in out) == (driver_cuda == "12.4")


@needs_bash
def test_install_refuses_a_too_old_driver(dry_project):
    proj, bin_dir = dry_project
    p = _dry_run(proj, bin_dir, FAKE_CUDA="11.8")
    assert p.returncode != 0
    assert "too old" in p.stderr and "LW_TORCH=cpu" in p.stderr


@needs_bash
def test_install_env_overrides(dry_project):
    proj, bin_dir = dry_project
    p = _dry_run(proj, bin_dir, FAKE_CUDA="13.0", LW_TORCH="cpu")
    assert p.returncode == 0 and "CPU-only build" in p.stdout
    p = _dry_run(proj, bin_dir, FAKE_CUDA="13.0", LW_TORCH="cu126")
    assert p.returncode == 0 and "whl/cu126" in p.stdout
    p = _dry_run(proj, bin_dir, FAKE_CUDA="13.0", LW_TORCH_INDEX="https://example.org/simple/cu128/")
    assert p.returncode == 0 and "CUDA 12.8 build (https://example.org/simple/cu128)" in p.stdout
    p = _dry_run(proj, bin_dir, LW_TORCH="nonsense")
    assert p.returncode != 0 and "LW_TORCH=nonsense is not understood" in p.stderr


@needs_bash
@pytest.mark.skipif(sys.platform == "darwin", reason="other default on macOS")
def test_install_without_gpu_takes_pypi(dry_project):
    proj, _ = dry_project
    p = _dry_run(proj, None)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "No NVIDIA GPU found" in p.stdout and "from PyPI" in p.stdout


@needs_bash
def test_install_explains_a_missing_python(dry_project):
    proj, bin_dir = dry_project
    p = _dry_run(proj, bin_dir, FAKE_CUDA="12.8", LW_PYTHON="/nonexistent/python3.11")
    assert p.returncode != 0
    assert "No suitable Python found" in p.stderr and "3.10, 3.11 or 3.12" in p.stderr


@needs_bash
def test_run_sh_without_install_says_what_to_do(tmp_path):
    proj = tmp_path / "not installed"
    proj.mkdir()
    shutil.copy(ROOT / "run.sh", proj / "run.sh")
    p = subprocess.run(["bash", str(proj / "run.sh")], cwd=proj, env=_clean_env(), capture_output=True, text=True,
                       timeout=60)
    assert p.returncode != 0 and "bash install.sh" in p.stderr


# ------------------------------------------------------------------------------------------ slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return None


def _tail(path: Path, n: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


@pytest.mark.slow
@needs_bash
def test_fresh_clone_installs_and_starts():
    if shutil.which("git") is None:
        pytest.skip("needs git")
    source = Path(os.environ.get("LW_INSTALL_TEST_REPO") or ROOT)
    head = subprocess.run(["git", "-C", str(source), "rev-parse", "--verify", "-q", "HEAD"], capture_output=True,
                          text=True)
    if head.returncode != 0:
        pytest.skip(f"{source} has no commit yet (HEAD does not exist): nothing to clone")
    listed = subprocess.run(["git", "-C", str(source), "ls-tree", "--name-only", "HEAD", "install.sh"],
                            capture_output=True, text=True).stdout.strip()
    if not listed:
        pytest.skip("install.sh is not committed yet: the clone of HEAD would not have it")

    base = Path(tempfile.mkdtemp(prefix="lw install test "))  # the space is deliberate
    proj = base / "LoRA Workshop"
    log = base / "install.log"
    env = _clean_env()
    gui = None
    try:
        subprocess.run(["git", "clone", "--quiet", str(source), str(proj)], check=True, timeout=300)

        t0 = time.monotonic()
        with open(log, "w") as f:
            p = subprocess.run(["bash", "install.sh"], cwd=proj, env=env, stdout=f, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, timeout=2400)
        first_s = time.monotonic() - t0
        assert p.returncode == 0, f"install.sh failed (exit {p.returncode}):\n{_tail(log)}"
        text = log.read_text(errors="replace")
        assert "Step 5/5" in text and "Summary:" in text and "\nFAIL " not in text
        print(f"\nfirst install.sh run: {first_s:.0f} s")

        py = proj / "venv" / "bin" / "python"
        constraints = (proj / "venv" / "constraints.txt").read_text()
        assert "torch==" in constraints and "torchvision==" in constraints

        d = subprocess.run([str(py), "-m", "core", "doctor"], cwd=proj, env=env, capture_output=True, text=True,
                           timeout=600)
        assert d.returncode == 0, d.stdout + d.stderr
        assert "Summary:" in d.stdout and not any(line.startswith("FAIL") for line in d.stdout.splitlines())

        i = subprocess.run([str(py), "-c", "import core, sys; print(core.__file__)"], cwd=proj, env=env,
                           capture_output=True, text=True, timeout=120)
        assert i.returncode == 0, i.stderr
        assert str(proj) in i.stdout

        # Running it again is safe and quick: the venv and torch are kept.
        t0 = time.monotonic()
        again = subprocess.run(["bash", "install.sh"], cwd=proj, env=env, capture_output=True, text=True,
                               stdin=subprocess.DEVNULL, timeout=1200)
        second_s = time.monotonic() - t0
        assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
        assert "Reusing the existing venv" in again.stdout and "Skipping" in again.stdout
        print(f"second install.sh run: {second_s:.0f} s")

        if not (proj / "app.py").exists():
            return  # no GUI in this commit yet
        port = _free_port()
        gui_log = base / "gui.log"
        with open(gui_log, "w") as f:
            gui = subprocess.Popen(["bash", "run.sh", "--port", str(port)] if (proj / "run.sh").exists()
                                   else [str(py), "app.py", "--port", str(port)],
                                   cwd=proj, env=env, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline:
            status = _http_status(url)
            if status == 200 or gui.poll() is not None:
                break
            time.sleep(1)
        assert status == 200, f"GUI at {url} answered {status} (exit code {gui.poll()}):\n{_tail(gui_log)}"
    finally:
        if gui is not None and gui.poll() is None:
            gui.terminate()
            try:
                gui.wait(timeout=15)
            except subprocess.TimeoutExpired:
                gui.kill()
                gui.wait(timeout=15)
        shutil.rmtree(base, ignore_errors=True)  # the venv is ~7 GB
