"""Environment self-check: `python -m core doctor` (also `python -m core.doctor`).

Every check returns a :class:`Check`; ``ok`` is True (OK), None (WARN: works, but something
is worth knowing) or False (FAIL: training will not work until fixed). The exit code of
:func:`main` is 1 when any check failed, else 0: a CPU-only machine passes with warnings.

This module imports only the standard library at import time. torch and the ML libraries are
imported inside the checks; gradio is never imported (core/ must not), only looked up.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from core.install import plan as install_plan
from core.install import torch_choice

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MIN_FREE_GB = 20.0
HUB_TIMEOUT_S = 3.0
SUPPORTED_PYTHON = (install_plan.PYTHON_MIN, install_plan.PYTHON_MAX)
RERUN_INSTALL = "Run the installer again: `bash install.sh` (Linux/macOS) or `install.bat` (Windows)."
# Libraries the trainer and GUI need: (distribution name, import name).
LIBRARIES = [
    ("diffusers", "diffusers"),
    ("transformers", "transformers"),
    ("peft", "peft"),
    ("accelerate", "accelerate"),
    ("safetensors", "safetensors"),
    ("gradio", "gradio"),
]
# Never imported by core/ (only found): the GUI's own libraries.
FIND_ONLY = {"gradio"}


@dataclass
class Check:
    name: str
    ok: bool | None  # True: OK, None: WARN, False: FAIL
    detail: str
    fix: str = ""

    @property
    def status(self) -> str:
        return "OK" if self.ok is True else ("WARN" if self.ok is None else "FAIL")

    def line(self) -> str:
        text = f"{self.status:<4}  {self.name}: {self.detail}"
        if self.ok is not True and self.fix:
            text += f"  -> Fix: {self.fix}"
        return text


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


# --------------------------------------------------------------------------------------------
# individual checks


def check_python() -> Check:
    text = f"{platform.python_version()} ({sys.executable})"
    lo, hi = SUPPORTED_PYTHON
    supported = f"{torch_choice.fmt(lo)}-{torch_choice.fmt(hi)}"
    fix = f"Delete the venv folder and run the installer again with a Python {supported} (it says where to get one)."
    if sys.version_info[:2] < lo:
        return Check("Python", False, f"{text} is too old (this project needs {supported})", fix)
    if sys.version_info[:2] > hi:
        return Check("Python", None, f"{text} is newer than {supported}; some libraries may lack builds", fix)
    problem = install_plan.python_problem(bounds=(sys.version_info[:2], sys.version_info[:2]))
    if problem:
        return Check("Python", False, f"{text}: {problem}", fix)
    return Check("Python", True, text)


def _nvidia_smi_gpus() -> list[str]:
    """GPU names nvidia-smi reports (empty when there is no NVIDIA driver)."""
    return [g.name for g in _smi().gpus]


_smi_info: torch_choice.SmiInfo | None = None


def _smi() -> torch_choice.SmiInfo:
    global _smi_info
    if _smi_info is None:
        _smi_info = torch_choice.read_nvidia_smi()
    return _smi_info


def installer_advice(installed_cuda: str | None) -> tuple[bool, str]:
    """What the installer would do on this computer now, for a torch built for installed_cuda (None: CPU):
    (True, advice) when running it again would install another build, else (False, what to do instead). So
    the doctor never sends the user back to an installer that would make the same choice."""
    plan = torch_choice.choose_torch(_smi(), platform.system(), env={})
    if plan.error:
        return False, plan.error.replace("\n  ", " ")
    have = torch_choice.build_of(installed_cuda)
    if plan.build in torch_choice.BUILD_NAMES and have not in plan.accept:
        why = next((ln.split(": ", 1)[1] for ln in plan.lines if ln.startswith("Chosen: ")), "")
        return True, (f"Run the installer again: it installs the {plan.build} build for this GPU and driver ({why}) "
                      f"instead of this {have} build. Windows: install.bat, Linux: bash install.sh.")
    return False, ""


class _TorchInfo:
    """What the torch checks share: the module (or the import error) and CUDA availability."""

    def __init__(self) -> None:
        self.torch = None
        self.error = ""
        self.cuda = False
        try:
            import torch  # noqa: PLC0415

            self.torch = torch
            self.cuda = bool(torch.cuda.is_available())
        except Exception as e:  # a broken install raises all kinds of errors
            self.error = f"{type(e).__name__}: {e}"


_torch_info: _TorchInfo | None = None


def _torch() -> _TorchInfo:
    global _torch_info
    if _torch_info is None:
        _torch_info = _TorchInfo()
    return _torch_info


def check_torch() -> Check:
    t = _torch()
    if t.torch is None:
        if importlib.util.find_spec("torch") is None:
            return Check("PyTorch", False, "not installed", RERUN_INSTALL)
        return Check("PyTorch", False, f"installed but cannot be imported ({t.error})", RERUN_INSTALL)
    torch = t.torch
    cuda_build = torch.version.cuda
    hip_build = getattr(torch.version, "hip", None)
    build = f"CUDA {cuda_build} build" if cuda_build else (f"ROCm {hip_build} build" if hip_build else "CPU build")
    detail = f"{torch.__version__} ({build})"
    try:
        tv = importlib.metadata.version("torchvision")
        detail += f", torchvision {tv}"
    except importlib.metadata.PackageNotFoundError:
        return Check("PyTorch", False, detail + "; torchvision is not installed", RERUN_INSTALL)
    if not cuda_build and not hip_build and platform.system() != "Darwin" and _nvidia_smi_gpus():
        rerun, advice = installer_advice(None)
        return Check("PyTorch", None, detail + ", but this computer has an NVIDIA GPU that a CPU build cannot use",
                     advice if advice else "This CPU build was chosen by hand (LW_TORCH=cpu or pypi): run "
                     "the installer again without it to get the CUDA build.")
    return Check("PyTorch", True, detail)


def check_cuda() -> Check:
    t = _torch()
    if t.torch is None:
        return Check("CUDA", False, "unknown: torch does not import", RERUN_INSTALL)
    torch = t.torch
    if t.cuda:
        n = torch.cuda.device_count()
        return Check("CUDA", True, f"available ({n} device{'s' if n != 1 else ''})")
    mps = getattr(getattr(torch, "backends", None), "mps", None)
    if mps is not None and mps.is_available():
        return Check("CUDA", None, "not available; an Apple GPU (MPS) is present",
                     "Training on Apple GPUs is not tuned; expect it to be slow.")
    gpus = _nvidia_smi_gpus()
    if gpus and torch.version.cuda:
        rerun, advice = installer_advice(torch.version.cuda)
        if not rerun and not advice:  # the installer would choose this build again: not its fault
            advice = ("This build fits the GPU and driver, so the installer would choose it again. Reboot (a "
                      "driver update needs one), check that `nvidia-smi` works, and that CUDA_VISIBLE_DEVICES is "
                      "not empty; then run `python -c \"import torch; torch.cuda.init()\"` in the venv to see the "
                      "error.")
        return Check("CUDA", None, f"not available although nvidia-smi lists {', '.join(gpus)}", advice)
    return Check("CUDA", None, "not available: training runs on the CPU (works, but very slowly)",
                 "For real trainings use a computer with an NVIDIA GPU (8 GB+ for SD1.5, 10-12 GB for SDXL).")


def check_gpu() -> Check:
    t = _torch()
    if not t.cuda:
        return Check("GPU", None, "no CUDA GPU", "Training on the CPU is only practical for tiny tests.")
    torch = t.torch
    parts = []
    min_gb = None
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        gb = p.total_memory / 1024**3
        min_gb = gb if min_gb is None else min(min_gb, gb)
        parts.append(f"{p.name} {gb:.1f} GB (compute {p.major}.{p.minor})")
    detail = "; ".join(parts)
    if min_gb is not None and min_gb < 6:
        return Check("GPU", None, detail + ": little VRAM for Stable Diffusion training",
                     "SD1.5 needs about 8 GB: use batch size 1, gradient checkpointing, cached latents, 8-bit Adam, "
                     "fp16/bf16 mixed precision and 512 px.")
    if min_gb is not None and min_gb < 10:
        return Check("GPU", True, detail + " (enough for SD1.5; SDXL needs 10-12 GB)")
    return Check("GPU", True, detail)


def check_bitsandbytes() -> Check:
    name = "bitsandbytes (8-bit optimizers)"
    if importlib.util.find_spec("bitsandbytes") is None:
        return Check(name, None, "not installed: the AdamW8bit/Lion8bit optimizers are unavailable",
                     RERUN_INSTALL + " Or choose the AdamW optimizer.")
    try:
        version = importlib.metadata.version("bitsandbytes")
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    t = _torch()
    if not t.cuda:
        return Check(name, None, f"{version} installed; 8-bit step not tested (no CUDA GPU)",
                     "8-bit optimizers need a CUDA GPU; on the CPU choose AdamW.")
    try:
        import bitsandbytes as bnb  # noqa: PLC0415

        torch = t.torch
        # 4096 elements: the size from which bitsandbytes really keeps 8-bit optimizer state.
        p = torch.nn.Parameter(torch.ones(64, 64, device="cuda"))
        opt = bnb.optim.AdamW8bit([p], lr=0.1)
        p.grad = torch.ones_like(p)
        opt.step()
        torch.cuda.synchronize()
        if not bool(torch.isfinite(p).all()) or float(p.detach().mean()) >= 1.0:
            raise RuntimeError("the parameter did not change as expected")
        del opt, p
        torch.cuda.empty_cache()
    except Exception as e:
        return Check(name, False, f"{version}: an 8-bit AdamW step on the GPU failed ({type(e).__name__}: {e})",
                     RERUN_INSTALL + " Until then choose the AdamW optimizer.")
    return Check(name, True, f"{version}, 8-bit AdamW step on the GPU works")


def _requirement_pins() -> dict[str, str]:
    """`name==version` pins of requirements.txt (names normalised)."""
    pins: dict[str, str] = {}
    try:
        text = (PROJECT_ROOT / "requirements.txt").read_text(encoding="utf-8")
    except OSError:
        return pins
    for line in text.splitlines():
        line = line.split("#", 1)[0].split(";", 1)[0].strip()
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*==\s*([^\s,]+)", line)
        if m:
            pins[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return pins


def check_library(dist: str, module: str) -> Check:
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return Check(dist, False, "not installed", RERUN_INSTALL)
    if importlib.util.find_spec(module) is None:
        return Check(dist, False, f"{version} is registered but its module '{module}' is missing", RERUN_INSTALL)
    if module not in FIND_ONLY:
        try:
            importlib.import_module(module)
        except Exception as e:
            return Check(dist, False, f"{version} does not import ({type(e).__name__}: {e})", RERUN_INSTALL)
    wanted = _requirement_pins().get(dist.lower())
    if wanted and version != wanted:
        return Check(dist, None, f"{version}, but requirements.txt asks for {wanted}", RERUN_INSTALL)
    return Check(dist, True, version)


def check_disk(root: Path | None = None) -> Check:
    root = root or PROJECT_ROOT
    try:
        free_gb = shutil.disk_usage(root).free / 1024**3
    except OSError as e:
        return Check("Free disk", None, f"cannot tell for {root}: {e}")
    detail = f"{free_gb:.1f} GB free in {root}"
    if free_gb < MIN_FREE_GB:
        return Check("Free disk", None, detail + f" (less than {MIN_FREE_GB:.0f} GB)",
                     "Base models take 2-7 GB each, the Hugging Face cache and outputs more: free some space or "
                     "point the models/outputs folders (GUI Settings) to a bigger drive.")
    return Check("Free disk", True, detail)


def check_write_access(root: Path | None = None) -> Check:
    root = root or PROJECT_ROOT
    try:
        with tempfile.NamedTemporaryFile(dir=root, prefix=".lw-write-test-", delete=True) as f:
            f.write(b"ok")
            f.flush()
    except OSError as e:
        return Check("Write access", False, f"cannot write in {root}: {e}",
                     "Move the project to a folder your user can write to (not C:\\Program Files), or fix its "
                     "permissions.")
    return Check("Write access", True, f"can write in {root}")


def _hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or "https://huggingface.co"


def _head(url: str, timeout: float) -> str | None:
    """None when the server answered (any HTTP status), else why not."""
    req = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "lora-workshop-doctor"})
    try:
        with urllib.request.urlopen(req, timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None  # it answered: reachable
    except Exception as e:
        reason = getattr(e, "reason", None) or e
        return f"{type(e).__name__}: {reason}"


def check_hub(offline: bool | None = None) -> Check:
    name = "Hugging Face hub"
    if offline is None:
        offline = _env_true("HF_HUB_OFFLINE")
    if offline:
        return Check(name, True, "check skipped (HF_HUB_OFFLINE is set): base models must be local files or "
                                 "already in the Hugging Face cache")
    url = _hub_endpoint()
    result: list[str | None] = []
    # A thread bounds the whole request, name lookup included (the socket timeout does not cover DNS).
    th = threading.Thread(target=lambda: result.append(_head(url, HUB_TIMEOUT_S)), daemon=True)
    th.start()
    th.join(HUB_TIMEOUT_S + 1.0)
    if not result:
        problem = f"no answer within {HUB_TIMEOUT_S:.0f} s"
    else:
        problem = result[0]
    if problem is None:
        return Check(name, True, f"{url} reachable")
    return Check(name, None, f"{url} not reachable ({problem}): models must be local",
                 "Use a local .safetensors checkpoint or diffusers folder as base model, or check the internet "
                 "connection/proxy (HTTPS_PROXY).")


def check_allocator() -> Check:
    """Linux: the malloc library a training process starts with (core/train/process.py)."""
    from .train.process import ALLOCATOR_ENV, choose_allocator, preloads_cleanly

    name = "Memory allocator"
    choice = os.environ.get(ALLOCATOR_ENV, "").strip()
    lib, why = choose_allocator()
    if lib and preloads_cleanly(lib):
        return Check(name, True, f"training runs with {os.path.basename(lib)}")
    if lib:
        return Check(name, None, f"{lib} cannot be preloaded: training runs with the C library's malloc",
                     f"Point {ALLOCATOR_ENV} at a working malloc library (.so), or set {ALLOCATOR_ENV}=system.")
    if why == "system":
        return Check(name, True, f"training runs with the C library's malloc ({ALLOCATOR_ENV}={choice})")
    if why == "missing":
        return Check(name, None, f"{ALLOCATOR_ENV}={choice} is not a file: training runs with the C library's malloc",
                     f"Point {ALLOCATOR_ENV} at an existing malloc library (.so), or unset it.")
    if why == "old glibc":
        return Check(name, True, "training runs with the C library's malloc (tcmalloc is used from glibc 2.34 on)")
    return Check(name, None, "no tcmalloc found: training runs with the C library's malloc, which needs about 5 % "
                             "more memory on the CPU",
                 "Optional: `sudo apt install libtcmalloc-minimal4` (Debian/Ubuntu) or `sudo dnf install "
                 "gperftools-libs` (Fedora); training then uses it by itself.")


# --------------------------------------------------------------------------------------------


def _checks(offline: bool | None) -> list[tuple[str, Callable[[], Check]]]:
    out: list[tuple[str, Callable[[], Check]]] = [
        ("Python", check_python),
        ("PyTorch", check_torch),
        ("CUDA", check_cuda),
        ("GPU", check_gpu),
        ("bitsandbytes (8-bit optimizers)", check_bitsandbytes),
    ]
    out += [(dist, (lambda d=dist, m=mod: check_library(d, m))) for dist, mod in LIBRARIES]
    if sys.platform == "linux":
        out.append(("Memory allocator", check_allocator))
    out += [
        ("Free disk", check_disk),
        ("Write access", check_write_access),
        ("Hugging Face hub", lambda: check_hub(offline)),
    ]
    return out


def run_doctor(offline: bool | None = None) -> list[Check]:
    """Run every check. A check that crashes is reported as a FAIL, never raised."""
    from .logs import quiet_library_notices

    # Import-time chatter that says nothing about this installation (bitsandbytes' optional 4-bit CPU
    # kernel notice); only that notice is dropped, bitsandbytes' own setup warnings still show.
    quiet_library_notices()
    results = []
    for name, fn in _checks(offline):
        try:
            results.append(fn())
        except Exception as e:
            results.append(Check(name, False, f"the check itself crashed: {type(e).__name__}: {e}",
                                 "Please report this with the output of `python -m core doctor`."))
    return results


def format_report(checks: list[Check]) -> str:
    counts = {s: sum(c.status == s for c in checks) for s in ("OK", "WARN", "FAIL")}
    lines = [f"LoRA Workshop system check ({platform.system()} {platform.machine()}, project folder {PROJECT_ROOT})"]
    lines += [c.line() for c in checks]
    summary = f"Summary: {counts['OK']} OK, {counts['WARN']} WARN, {counts['FAIL']} FAIL"
    if counts["FAIL"]:
        summary += " - fix the FAIL lines before training."
    elif counts["WARN"]:
        summary += " - ready (warnings are worth reading, none blocks)."
    else:
        summary += " - ready."
    lines.append(summary)
    return "\n".join(lines)


def _report_in_subprocess(timeout: float) -> str | None:
    """The report from a fresh `python -m core.doctor`, or None if that could not run.

    Used by the GUI, so that torch (and a CUDA context holding VRAM) is not loaded into its process.
    """
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    try:
        proc = subprocess.run([sys.executable, "-m", "core.doctor"], cwd=str(PROJECT_ROOT), env=env,
                              capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    out = proc.stdout.strip()
    if not out.startswith("LoRA Workshop system check"):
        return None
    return out


def doctor_report_text(offline: bool | None = None, subprocess_first: bool = True, timeout: float = 180.0) -> str:
    """The same text `python -m core doctor` prints, for the GUI.

    By default the checks run in a separate Python process (torch is not loaded into the caller);
    if that fails they run here.
    """
    if subprocess_first and offline is None:
        text = _report_in_subprocess(timeout)
        if text is not None:
            return text
    return format_report(run_doctor(offline))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core doctor",
                                     description="Check this installation: Python, torch and CUDA, GPU, libraries, "
                                                 "disk, hub access. Exit code 1 if any check FAILs.")
    parser.add_argument("--offline", action="store_true", help="Skip the Hugging Face hub check.")
    args = parser.parse_args(argv if argv is not None else [])
    checks = run_doctor(offline=True if args.offline else None)
    print(format_report(checks), flush=True)
    return 1 if any(c.ok is False for c in checks) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
