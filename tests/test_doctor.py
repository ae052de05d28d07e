"""core.doctor: the checks run, the report has the promised shape, offline mode skips the hub,
only FAIL makes the exit code non-zero, and core never imports gradio."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import pytest

from core import doctor
from core.doctor import Check

ROOT = Path(__file__).resolve().parent.parent
LINE_RE = re.compile(r"^(OK|WARN|FAIL) +\S[^:]*: \S.*$")
SUMMARY_RE = re.compile(r"^Summary: \d+ OK, \d+ WARN, \d+ FAIL")
EXPECTED_NAMES = ["Python", "PyTorch", "CUDA", "GPU", "bitsandbytes (8-bit optimizers)", "diffusers", "transformers",
                  "peft", "accelerate", "safetensors", "gradio"] + (["Memory allocator"] if sys.platform == "linux" else []) \
    + ["Free disk", "Write access", "Hugging Face hub"]


@pytest.fixture(scope="module")
def checks() -> list[Check]:
    return doctor.run_doctor(offline=True)


def test_every_check_runs(checks):
    assert [c.name for c in checks] == EXPECTED_NAMES
    for c in checks:
        assert c.ok in (True, None, False)
        assert isinstance(c.detail, str) and c.detail.strip()
        if c.ok is not True:
            assert c.fix.strip(), f"{c.name}: a WARN/FAIL must say what to do"


def test_this_installation_has_no_fail(checks):
    """An environment made by install.sh (it leaves venv/constraints.txt) has nothing that FAILs (CPU-only warnings
    are fine)."""
    if not (Path(sys.prefix) / "constraints.txt").is_file():
        pytest.skip(f"{sys.prefix} was not made by install.sh (no constraints.txt)")
    failed = [c.line() for c in checks if c.ok is False]
    assert not failed, "\n".join(failed)
    by_name = {c.name: c for c in checks}
    assert by_name["Python"].ok is True
    assert by_name["PyTorch"].ok in (True, None)
    assert re.search(r"\d+\.\d+", by_name["PyTorch"].detail)
    assert "build" in by_name["PyTorch"].detail  # says CUDA x.y build or CPU build


def test_cpu_only_is_a_warning_not_a_failure(checks):
    by_name = {c.name: c for c in checks}
    if by_name["CUDA"].ok is True:
        pytest.skip("this machine has CUDA")
    assert by_name["CUDA"].ok is None
    assert by_name["GPU"].ok is None
    assert by_name["bitsandbytes (8-bit optimizers)"].ok is None  # the 8-bit step needs CUDA


def test_main_prints_one_line_per_check(capsys):
    rc = doctor.main(["--offline"])
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0
    assert out[0].startswith("LoRA Workshop system check")
    body = out[1:-1]
    assert len(body) == len(EXPECTED_NAMES)
    for line in body:
        assert LINE_RE.match(line), line
        if not line.startswith("OK"):
            assert "-> Fix: " in line, line
    assert SUMMARY_RE.match(out[-1]), out[-1]


def test_offline_skips_the_hub_check(monkeypatch):
    def no_network(*a, **k):
        raise AssertionError("the hub check must not touch the network when offline")

    monkeypatch.setattr(doctor.urllib.request, "urlopen", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    c = doctor.check_hub()
    assert c.ok is True and "skipped" in c.detail
    c = doctor.check_hub(offline=True)
    assert c.ok is True and "skipped" in c.detail


def test_unreachable_hub_is_a_warning(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(doctor, "_head", lambda url, timeout: "URLError: no route")
    c = doctor.check_hub()
    assert c.ok is None
    assert "models must be local" in c.detail and c.fix


def test_reachable_hub_is_ok_and_honours_hf_endpoint(monkeypatch):
    seen = []
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.example/")
    monkeypatch.setattr(doctor, "_head", lambda url, timeout: seen.append((url, timeout)))
    c = doctor.check_hub()
    assert c.ok is True
    assert seen == [("https://hf-mirror.example", doctor.HUB_TIMEOUT_S)]


def test_hub_check_is_bounded_in_time(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(doctor, "HUB_TIMEOUT_S", 0.2)
    monkeypatch.setattr(doctor, "_head", lambda url, timeout: time.sleep(5))
    t0 = time.monotonic()
    c = doctor.check_hub()
    assert time.monotonic() - t0 < 3
    assert c.ok is None and "no answer" in c.detail


def test_head_counts_an_http_error_as_reachable(monkeypatch):
    def answer_403(req, timeout):
        assert req.get_method() == "HEAD" and timeout == 3
        raise urllib.error.HTTPError(req.full_url, 403, "Forbidden", {}, None)

    monkeypatch.setattr(doctor.urllib.request, "urlopen", answer_403)
    assert doctor._head("https://huggingface.co", 3) is None

    def no_dns(req, timeout):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(doctor.urllib.request, "urlopen", no_dns)
    assert "Name or service not known" in doctor._head("https://huggingface.co", 3)


def test_exit_code_is_one_only_for_a_fail(monkeypatch, capsys):
    monkeypatch.setattr(doctor, "run_doctor", lambda offline=None: [Check("A", True, "fine"),
                                                                     Check("B", None, "hmm", "do this")])
    assert doctor.main([]) == 0
    monkeypatch.setattr(doctor, "run_doctor", lambda offline=None: [Check("A", True, "fine"),
                                                                     Check("B", False, "broken", "fix it")])
    assert doctor.main([]) == 1
    out = capsys.readouterr().out
    assert "FAIL  B: broken  -> Fix: fix it" in out


def test_a_crashing_check_becomes_a_fail(monkeypatch):
    def boom():
        raise RuntimeError("kaputt")

    monkeypatch.setattr(doctor, "check_python", boom)
    monkeypatch.setattr(doctor, "check_hub", lambda offline=None: Check("Hugging Face hub", True, "skipped"))
    results = doctor.run_doctor(offline=True)
    python = results[0]
    assert python.name == "Python" and python.ok is False and "kaputt" in python.detail


def test_disk_space(monkeypatch, tmp_path):
    class Usage:
        def __init__(self, free):
            self.total, self.used, self.free = 500 * 1024**3, 0, free

    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda p: Usage(5 * 1024**3))
    c = doctor.check_disk(tmp_path)
    assert c.ok is None and "5.0 GB free" in c.detail and "less than 20 GB" in c.detail
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda p: Usage(100 * 1024**3))
    assert doctor.check_disk(tmp_path).ok is True


def test_write_access(tmp_path):
    assert doctor.check_write_access(tmp_path).ok is True
    assert list(tmp_path.iterdir()) == []  # the probe file is gone
    c = doctor.check_write_access(tmp_path / "does-not-exist")
    assert c.ok is False and c.fix


def test_missing_library_fails():
    c = doctor.check_library("lw-surely-not-installed", "lw_surely_not_installed")
    assert c.ok is False and "not installed" in c.detail and "install" in c.fix


def test_requirement_pins_are_read():
    pins = doctor._requirement_pins()
    assert "diffusers" in pins and re.fullmatch(r"[\d.]+\w*", pins["diffusers"])


def test_python_version_bounds(monkeypatch):
    assert doctor.check_python().ok is True  # tests run on a supported Python
    monkeypatch.setattr(doctor, "SUPPORTED_PYTHON", ((3, 99), (3, 100)))
    assert doctor.check_python().ok is False
    monkeypatch.setattr(doctor, "SUPPORTED_PYTHON", ((3, 0), (3, 1)))
    assert doctor.check_python().ok is None


def test_report_text_in_process(monkeypatch):
    monkeypatch.setattr(doctor, "_report_in_subprocess", lambda timeout: None)
    text = doctor.doctor_report_text(offline=True)
    assert text.startswith("LoRA Workshop system check")
    assert SUMMARY_RE.match(text.splitlines()[-1])


def test_cli_doctor_in_a_fresh_process_never_imports_gradio():
    """`python -m core doctor` (core.cli) works, and core stays free of gradio (it is only looked up)."""
    code = ("import sys\n"
            "from core.cli import main\n"
            "rc = main(['doctor'])\n"
            "print('GRADIO_IMPORTED' if 'gradio' in sys.modules else 'GRADIO_NOT_IMPORTED')\n"
            "sys.exit(rc)\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.strip().splitlines()
    assert lines[-1] == "GRADIO_NOT_IMPORTED"
    assert lines[0].startswith("LoRA Workshop system check") and SUMMARY_RE.match(lines[-2])
    for line in lines[1:-2]:
        assert LINE_RE.match(line), line


def test_report_text_runs_in_a_separate_process(monkeypatch):
    """The GUI's path: the checks run in `python -m core.doctor`, so torch stays out of the GUI process."""
    calls = []
    real_run = doctor.subprocess.run

    def spy(cmd, **kw):
        calls.append(cmd)
        return real_run(cmd, **kw)

    monkeypatch.setattr(doctor.subprocess, "run", spy)
    text = doctor.doctor_report_text()
    assert [sys.executable, "-m", "core.doctor"] in calls
    assert text.startswith("LoRA Workshop system check") and SUMMARY_RE.match(text.splitlines()[-1])


def test_only_the_bitsandbytes_kernel_notice_is_dropped(caplog):
    import logging

    from core.logs import quiet_library_notices

    quiet_library_notices()
    quiet_library_notices()  # idempotent: one filter per logger
    log = logging.getLogger("bitsandbytes.backends.cpu.ops")
    assert len(log.filters) == 1
    with caplog.at_level(logging.WARNING):
        log.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please ...", "No module")
        log.warning("some other bitsandbytes warning")
        logging.getLogger("bitsandbytes.cextension").warning("bitsandbytes was compiled without GPU support")
    assert [r.getMessage() for r in caplog.records] == ["some other bitsandbytes warning",
                                                        "bitsandbytes was compiled without GPU support"]


@pytest.mark.skipif(sys.platform != "linux", reason="the allocator is chosen on Linux only")
def test_the_allocator_check_says_what_training_runs_with(monkeypatch, tmp_path):
    fake = tmp_path / "libfake.so"
    fake.write_bytes(b"not a library")
    monkeypatch.setenv("LW_ALLOCATOR", str(fake))
    c = doctor.check_allocator()
    assert c.ok is None and "cannot be preloaded" in c.detail and c.fix
    libm = next(line.split()[-1] for line in open("/proc/self/maps") if "/libm.so" in line)
    monkeypatch.setenv("LW_ALLOCATOR", libm)
    c = doctor.check_allocator()
    assert c.ok is True and os.path.basename(libm) in c.detail
    monkeypatch.setenv("LW_ALLOCATOR", "system")
    assert doctor.check_allocator().ok is True
    monkeypatch.setenv("LW_ALLOCATOR", str(tmp_path / "missing.so"))
    c = doctor.check_allocator()
    assert c.ok is None and "missing.so" in c.detail and c.fix
    monkeypatch.delenv("LW_ALLOCATOR")
    monkeypatch.setattr("ctypes.util.find_library", lambda name: None)  # a machine without tcmalloc
    c = doctor.check_allocator()
    assert c.ok is None and "libtcmalloc-minimal4" in c.fix


def _smi_from(banner: str, gpu: str):
    from test_install_plan import smi
    return smi(banner, [gpu])


def test_installer_advice_never_sends_the_user_back_to_the_same_choice(monkeypatch):
    """The doctor asks core/install what the installer would do now: 'run it again' only when it would install
    another build; otherwise what else to do (the driver)."""
    rtx4070_610 = _smi_from("banner_610.txt", "NVIDIA GeForce RTX 4070, 12282 MiB, 610.47, 8.9")
    monkeypatch.setattr(doctor, "_smi", lambda: rtx4070_610)
    rerun, advice = doctor.installer_advice(None)  # a CPU build on a machine with a GPU
    assert rerun and "installs the cu132 build" in advice and "instead of this cpu build" in advice
    assert doctor.installer_advice("13.2") == (False, "")  # the build it would choose anyway
    assert doctor.installer_advice("13.0") == (False, "")  # an accepted older 13.x build
    rerun, advice = doctor.installer_advice("12.6")  # the legacy build where a 13.x one runs
    assert rerun and "cu132" in advice

    rtx5090_572 = _smi_from("banner_572.txt", "NVIDIA GeForce RTX 5090, 32607 MiB, 572.83, 12.0")
    monkeypatch.setattr(doctor, "_smi", lambda: rtx5090_572)
    rerun, advice = doctor.installer_advice(None)
    assert not rerun and "version 580 or newer" in advice and "run the installer again" not in advice.lower()[:40]


def test_cuda_unavailable_with_the_right_build_does_not_blame_the_installer(monkeypatch):
    class FakeCuda:
        @staticmethod
        def is_available():
            return False

    class FakeTorch:
        cuda = FakeCuda()
        backends = None

        class version:
            cuda = "13.2"
            hip = None

    info = doctor._TorchInfo.__new__(doctor._TorchInfo)
    info.torch, info.error, info.cuda = FakeTorch, "", False
    monkeypatch.setattr(doctor, "_torch", lambda: info)
    monkeypatch.setattr(doctor, "_smi", lambda: _smi_from("banner_610.txt",
                                                          "NVIDIA GeForce RTX 4070, 12282 MiB, 610.47, 8.9"))
    c = doctor.check_cuda()
    assert c.ok is None and "RTX 4070" in c.detail
    assert "would choose it again" in c.fix and "Reboot" in c.fix
    FakeTorch.version.cuda = "12.6"
    c = doctor.check_cuda()
    assert "Run the installer again: it installs the cu132 build" in c.fix
