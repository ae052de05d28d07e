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
import re
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


DATA = Path(__file__).resolve().parent / "data" / "nvidia_smi"
# A stand-in for nvidia-smi that answers from the recorded outputs in tests/data/nvidia_smi: FAKE_SMI_BANNER
# (a file there), FAKE_SMI_GPUS (the CSV query's answer, compute_cap last), FAKE_SMI_RC (the banner's exit code).
FAKE_SMI = """#!/bin/sh
case "$1" in
  --query-gpu=*compute_cap*) printf '%s\\n' "$FAKE_SMI_GPUS"; exit 0 ;;
  --query-gpu=*) printf '%s\\n' "$FAKE_SMI_GPUS" | cut -d, -f1-3; exit 0 ;;
  -q) exit 6 ;;
esac
cat "$FAKE_SMI_DATA/$FAKE_SMI_BANNER"
exit "${FAKE_SMI_RC:-0}"
"""


@pytest.fixture()
def dry_project(tmp_path):
    """install.sh and core/install alone in a folder whose path has a space, plus a fake nvidia-smi."""
    proj = tmp_path / "my project"
    (proj / "core").mkdir(parents=True)
    shutil.copy(ROOT / "install.sh", proj / "install.sh")
    shutil.copytree(ROOT / "core" / "install", proj / "core" / "install")
    bin_dir = tmp_path / "fake bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(FAKE_SMI)
    smi.chmod(0o755)
    return proj, bin_dir


def _dry_run(proj: Path, bin_dir: Path | None, **env: str) -> subprocess.CompletedProcess:
    e = _clean_env(**{"LW_INSTALL_DRY_RUN": "1", "LW_PYTHON": sys.executable, "FAKE_SMI_DATA": str(DATA), **env})
    if bin_dir is not None:
        e["PATH"] = str(bin_dir) + os.pathsep + e["PATH"]
    else:  # hide any real nvidia-smi
        e["PATH"] = os.pathsep.join(p for p in e["PATH"].split(os.pathsep)
                                    if not (Path(p) / "nvidia-smi").exists())
    return subprocess.run(["bash", str(proj / "install.sh")], cwd=proj, env=e, capture_output=True, text=True,
                          timeout=120)


def _build_line(out: str) -> str | None:
    m = re.search(r"^torch build: (\S+)$", out, re.MULTILINE)
    return m.group(1) if m else None


@needs_bash
@pytest.mark.skipif(sys.platform == "darwin", reason="macOS takes PyPI's torch, whatever the GPU")
@pytest.mark.parametrize("banner, gpu, build", [
    ("banner_610.txt", "NVIDIA GeForce RTX 4070, 12282 MiB, 610.47, 8.9", "cu132"),
    ("banner_580.txt", "NVIDIA GeForce RTX 3060, 12288 MiB, 580.95.05, 8.6", "cu130"),
    ("banner_580.txt", "NVIDIA GeForce GTX 1080, 8192 MiB, 580.95.05, 6.1", "cu126"),
    ("banner_572.txt", "NVIDIA GeForce RTX 4090, 24564 MiB, 572.83, 8.9", "cu126"),
])
def test_install_picks_the_cuda_build_for_the_gpu_and_driver(dry_project, banner, gpu, build):
    proj, bin_dir = dry_project
    p = _dry_run(proj, bin_dir, FAKE_SMI_BANNER=banner, FAKE_SMI_GPUS=gpu)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert _build_line(p.stdout) == build, out
    assert gpu.split(",")[0] in out and f"driver {gpu.split(', ')[2]}" in out
    assert "Dry run" in out and not (proj / "venv").exists() and not (proj / "logs").exists()


@needs_bash
@pytest.mark.parametrize("banner, gpu, needed", [
    ("banner_572.txt", "NVIDIA GeForce RTX 5090, 32607 MiB, 572.83, 12.0", "version 580 or newer"),
    ("banner_470.txt", "NVIDIA GeForce GTX 1060 6GB, 6144 MiB, 470.256.02, 6.1", "version 525 or newer"),
])
def test_install_refuses_a_driver_too_old_for_the_gpu(dry_project, banner, gpu, needed):
    proj, bin_dir = dry_project
    p = _dry_run(proj, bin_dir, FAKE_SMI_BANNER=banner, FAKE_SMI_GPUS=gpu)
    assert p.returncode != 0 and _build_line(p.stdout) is None
    assert needed in p.stderr and "LW_TORCH=cpu" in p.stderr and "https://www.nvidia.com/drivers" in p.stderr


@needs_bash
def test_install_stops_when_nvidia_smi_fails(dry_project):
    proj, bin_dir = dry_project
    p = _dry_run(proj, bin_dir, FAKE_SMI_BANNER="failed.txt", FAKE_SMI_RC="9", FAKE_SMI_GPUS="")
    assert p.returncode != 0 and "couldn't communicate with the NVIDIA driver" in p.stderr


@needs_bash
def test_install_env_overrides(dry_project):
    proj, bin_dir = dry_project
    gpu = dict(FAKE_SMI_BANNER="banner_610.txt", FAKE_SMI_GPUS="NVIDIA GeForce RTX 4070, 12282 MiB, 610.47, 8.9")
    p = _dry_run(proj, bin_dir, LW_TORCH="cpu", **gpu)
    assert p.returncode == 0 and _build_line(p.stdout) == "cpu" and "CPU-only build" in p.stdout
    p = _dry_run(proj, bin_dir, LW_TORCH="cu126", **gpu)
    assert p.returncode == 0 and _build_line(p.stdout) == "cu126"
    p = _dry_run(proj, bin_dir, LW_TORCH_INDEX="https://example.org/simple/cu130/", **gpu)
    assert p.returncode == 0 and _build_line(p.stdout) == "cu130" and "https://example.org/simple/cu130" in p.stdout
    p = _dry_run(proj, bin_dir, LW_TORCH="cu128", **gpu)
    assert p.returncode != 0 and "no cu128 build" in p.stderr
    p = _dry_run(proj, bin_dir, LW_TORCH="nonsense", **gpu)
    assert p.returncode != 0 and "LW_TORCH=nonsense is not understood" in p.stderr


@needs_bash
@pytest.mark.skipif(sys.platform == "darwin", reason="other default on macOS")
def test_install_without_gpu_takes_pypi(dry_project):
    proj, _ = dry_project
    p = _dry_run(proj, None)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "No NVIDIA GPU found" in p.stdout and _build_line(p.stdout) == "pypi"


@needs_bash
def test_install_explains_a_missing_python(dry_project):
    proj, bin_dir = dry_project
    p = _dry_run(proj, bin_dir, LW_PYTHON="/nonexistent/python3.11", FAKE_SMI_BANNER="banner_580.txt")
    assert p.returncode != 0
    assert "No suitable Python found" in p.stderr and "/nonexistent/python3.11: not found" in p.stderr
    assert "3.11, 3.12 or 3.13" in p.stderr and "python3.12-venv" in p.stderr


def _python_310() -> str | None:
    found = shutil.which("python3.10")
    if found and subprocess.run([found, "-c", "1"], capture_output=True).returncode == 0:
        return found
    pyenv = sorted((Path.home() / ".pyenv" / "versions").glob("3.10.*/bin/python3.10"))
    return str(pyenv[0]) if pyenv else None


@needs_bash
@pytest.mark.skipif(_python_310() is None, reason="needs a Python 3.10")
def test_install_refuses_python_310_and_replaces_its_venv(dry_project):
    proj, bin_dir = dry_project
    py310 = _python_310()
    p = _dry_run(proj, bin_dir, LW_PYTHON=py310, FAKE_SMI_BANNER="banner_580.txt")
    assert p.returncode != 0
    assert "No suitable Python found" in p.stderr and "Python 3.10." in p.stderr and "too old" in p.stderr
    # an existing venv of 3.10 (an AUTOMATIC1111 habit) is not reused
    (proj / "venv" / "bin").mkdir(parents=True)
    (proj / "venv" / "bin" / "python").symlink_to(py310)
    p = _dry_run(proj, bin_dir, FAKE_SMI_BANNER="banner_580.txt",
                 FAKE_SMI_GPUS="NVIDIA GeForce RTX 3060, 12288 MiB, 580.95.05, 8.6")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "holds no usable Python (Python 3.10." in p.stderr and "it will be replaced" in p.stderr
    assert "would create the venv" in p.stdout


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
        logs = list((proj / "logs").glob("install-*.log"))  # the installer's own log, for bug reports
        assert len(logs) == 1 and "Step 5/5" in logs[0].read_text() and "torch build: " in logs[0].read_text()
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
        assert len(list((proj / "logs").glob("install-*.log"))) == 2
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
