"""Which torch build fits this computer: nvidia-smi read (old and new spellings), the GPUs' compute
capabilities, the driver, and the builds torch 2.14 ships. Standard library only (Python 3.7+): the installers
run it through core/install/plan.py before the venv exists, and the doctor asks the same functions.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess

TORCH_VERSION = "2.14.1"
TORCHVISION_VERSION = "0.29.1"
INDEX_BASE = "https://download.pytorch.org/whl"

# The CUDA builds of torch 2.14 (pytorch/pytorch#190355), newest first: name, CUDA version, the oldest driver
# branch that runs it (CUDA minor-version compatibility: 13.x needs >= 580, 12.x >= 525), and the compute
# capabilities it has kernels for (12.6: Maxwell 5.0 to Hopper 9.0; 13.x: Turing 7.5 to Blackwell 12.x).
CUDA_BUILDS = [
    ("cu132", (13, 2), 580, (7, 5), None),
    ("cu130", (13, 0), 580, (7, 5), None),
    ("cu126", (12, 6), 525, (5, 0), (9, 9)),
]
RECOMMENDED_DRIVER = 580
BUILD_NAMES = [b[0] for b in CUDA_BUILDS]
LEGACY_NOTE = ("PyTorch 2.15 publishes no cu126 build (pytorch/pytorch#190385), so this GPU stays on torch 2.14 "
               "with this project")
DRIVER_URL = "https://www.nvidia.com/drivers"

# Compute capability from the GPU's name, for drivers too old to answer --query-gpu=compute_cap.
_CC_BY_NAME = [
    (r"RTX PRO \d+ Blackwell|RTX 50\d0|B200|B100|GB10|GB200", (12, 0)),
    (r"RTX 40\d0|RTX \d+ Ada|L4\b|L40", (8, 9)),
    (r"H100|H200|GH200", (9, 0)),
    (r"RTX 30\d0|RTX A\d+|A10\b|A40|A16|A2\b", (8, 6)),
    (r"A100|A30\b", (8, 0)),
    (r"RTX 20\d0|GTX 16\d0|TITAN RTX|Quadro RTX|T4\b|T1000|T600|T400", (7, 5)),
    (r"TITAN V|V100|Quadro GV100", (7, 0)),
    (r"GTX 10\d0|TITAN Xp|TITAN X \(Pascal\)|P100|P40|P4\b|Quadro P\d+|MX[123]\d0", (6, 1)),
    (r"GTX 9\d0|GTX 750|TITAN X\b|M40|M60|Quadro M\d+", (5, 2)),
    (r"GTX 6\d0|GTX 7[0-46-9]0|GT 7\d0|K80|K40|K20|Quadro K\d+", (3, 5)),
]


def version_tuple(text):
    """'13.3' -> (13, 3); '610.47.02' -> (610, 47, 2); None when there are no digits."""
    nums = re.findall(r"\d+", text or "")
    return tuple(int(n) for n in nums) if nums else None


def fmt(v):
    return ".".join(str(x) for x in v) if v else "?"


# ------------------------------------------------------------------------------------------------ nvidia-smi


class Gpu:
    def __init__(self, name, memory_mib=None, cc=None, cc_guessed=False):
        self.name, self.memory_mib, self.cc, self.cc_guessed = name, memory_mib, cc, cc_guessed

    def describe(self):
        mem = f", {self.memory_mib / 1024:.0f} GB" if self.memory_mib else ""
        cc = f", compute capability {fmt(self.cc)}{' (from its name)' if self.cc_guessed else ''}" if self.cc else ""
        return f"{self.name}{mem}{cc}"


class SmiInfo:
    """What nvidia-smi said: found (the command exists), error (it failed), GPUs, driver and its CUDA version."""

    def __init__(self, found=False, error=None, gpus=None, driver=None, cuda=None, driver_text=None):
        self.found, self.error, self.gpus, self.driver, self.cuda = found, error, gpus or [], driver, cuda
        self.driver_text = driver_text or fmt(driver)


_BANNER_CUDA = re.compile(r"CUDA(?: UMD)? Version\s*:\s*(\d+\.\d+)")
_BANNER_DRIVER = re.compile(r"(?:Driver|KMD) Version\s*:\s*(\d+\.\d+(?:\.\d+)?)")


def parse_versions(text):
    """Driver (as written) and CUDA version from nvidia-smi's banner or `nvidia-smi -q`, old spelling ('Driver
    Version', 'CUDA Version') or new (610+: 'KMD Version', 'CUDA UMD Version')."""
    text = text or ""
    c = _BANNER_CUDA.search(text)
    d = _BANNER_DRIVER.search(text)
    return (d.group(1) if d else None), (version_tuple(c.group(1)) if c else None)


def cc_from_name(name):
    for pattern, cc in _CC_BY_NAME:
        if re.search(pattern, name, re.IGNORECASE):
            return cc
    return None


def parse_query(text):
    """GPUs from `--query-gpu=name,memory.total,driver_version[,compute_cap] --format=csv,noheader`; returns
    (gpus, driver)."""
    gpus, driver = [], None
    for line in (text or "").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 3 or not parts[0] or parts[0].startswith(("Field", "ERROR")):
            continue
        mem = version_tuple(parts[1])
        cc = version_tuple(parts[3]) if len(parts) > 3 and re.match(r"^\d+\.\d+$", parts[3]) else None
        guessed = cc is None
        if cc is None:
            cc = cc_from_name(parts[0])
        gpus.append(Gpu(parts[0], mem[0] if mem else None, cc, guessed and cc is not None))
        driver = driver or (parts[2] if version_tuple(parts[2]) else None)
    return gpus, driver


def _run(args):
    """(exit code, output) of a command; (None, reason) when it cannot be started."""
    try:
        p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        return None, str(e)
    return p.returncode, p.stdout.decode("utf-8", "replace")


def read_nvidia_smi(run=_run, which=shutil.which):
    exe = which("nvidia-smi")
    if not exe and os.name == "nt":
        cand = os.path.join(os.environ.get("SystemRoot", r"C:\Windows"), "System32", "nvidia-smi.exe")
        exe = cand if os.path.isfile(cand) else None
    if not exe:
        return SmiInfo()
    rc, banner = run([exe])
    if rc != 0:
        first = next((ln.strip() for ln in (banner or "").splitlines() if ln.strip()), "no output")
        return SmiInfo(found=True, error=f"nvidia-smi failed (exit code {rc}): {first}")
    driver, cuda = parse_versions(banner)
    if cuda is None or driver is None:  # the banner moved again: ask the detailed report
        rc_q, detail = run([exe, "-q"])
        if rc_q == 0:
            d2, c2 = parse_versions(detail)
            driver, cuda = driver or d2, cuda or c2
    rc, out = run([exe, "--query-gpu=name,memory.total,driver_version,compute_cap", "--format=csv,noheader"])
    if rc != 0:  # drivers before 510 do not know compute_cap
        rc, out = run([exe, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"])
    gpus, qdriver = parse_query(out if rc == 0 else "")
    driver_text = driver or qdriver
    driver = version_tuple(driver_text)
    if cuda is None and driver:  # the CUDA version each driver branch supports, at least
        cuda = (13, 0) if driver[0] >= 580 else (12, 0) if driver[0] >= 525 else None
    return SmiInfo(found=True, gpus=gpus, driver=driver, cuda=cuda, driver_text=driver_text)


# ------------------------------------------------------------------------------------------------ torch build


class Plan:
    """The torch build to install. build: cu132, cu130, cu126, cpu, pypi, or an index's last path part; index:
    the package index ('' = PyPI); local: the wheels' local version label ('+cu130'); accept: the builds an
    existing torch may have to be kept (empty: any); error: why nothing can work, with what to do."""

    def __init__(self, build="pypi", index="", local="", cuda="", lines=None, warnings=None, accept=None,
                 error=None, auto=True):
        self.build, self.index, self.local, self.cuda = build, index, local, cuda
        self.lines, self.warnings, self.accept = lines or [], warnings or [], accept or []
        self.error, self.auto = error, auto

    def env(self):
        return {"TORCH_BUILD": self.build, "TORCH_INDEX": self.index, "TORCH_LOCAL": self.local,
                "TORCH_CUDA": self.cuda, "TORCH_ACCEPT": " ".join(self.accept), "TORCH_VERSION": TORCH_VERSION,
                "TORCHVISION_VERSION": TORCHVISION_VERSION}


def _cuda_plan(name, **kw):
    b = next(b for b in CUDA_BUILDS if b[0] == name)
    return Plan(build=name, index=f"{INDEX_BASE}/{name}", local="+" + name, cuda=fmt(b[1]), **kw)


def builds_for_gpu(cc):
    """The CUDA builds with kernels for this compute capability (all of them when it is not known)."""
    if cc is None:
        return list(BUILD_NAMES)
    return [b[0] for b in CUDA_BUILDS if b[3] <= cc[:2] and (b[4] is None or cc[:2] <= b[4])]


def _fail(lines, text):
    return Plan(build="none", lines=lines, error=text)


def choose_torch(smi, system, env=None):
    """The plan for this computer. system: 'Linux', 'Windows' or 'Darwin' (platform.system())."""
    env = os.environ if env is None else env
    custom = (env.get("LW_TORCH_INDEX") or "").strip().rstrip("/")
    choice = (env.get("LW_TORCH") or "auto").strip().lower()
    if custom:
        last = custom.rsplit("/", 1)[-1].lower()
        m = re.match(r"^cu(\d+)(\d)$", last)
        local = "+" + last if (m or last == "cpu") else ""
        return Plan(build=last or "index", index=custom, local=local, cuda=f"{m.group(1)}.{m.group(2)}" if m else "",
                    lines=[f"LW_TORCH_INDEX is set: torch {TORCH_VERSION} comes from {custom}"], auto=False)
    if choice != "auto":
        return _named_plan(choice, smi, system)
    if system == "Darwin":
        return Plan(lines=["macOS: torch from PyPI, which uses the Apple GPU (MPS) where there is one."])
    if not smi.found:
        what = "its CPU-only build" if system == "Windows" else "a CUDA build that also runs on the CPU"
        return Plan(lines=[f"No NVIDIA GPU found (no nvidia-smi): torch from PyPI ({what}). LW_TORCH=cpu picks the "
                           "smaller CPU-only build."])
    if smi.error:
        return _fail([], f"{smi.error}.\n  The NVIDIA driver is installed but does not answer: reboot, or reinstall "
                         f"the driver ({DRIVER_URL}), then run the installer again.\n  To install without GPU "
                         "support instead: LW_TORCH=cpu")
    return _auto_plan(smi, system)


def _describe_driver(smi):
    return f"driver {smi.driver_text}" + (f" (CUDA {fmt(smi.cuda)})" if smi.cuda else "")


def _auto_plan(smi, system):
    lines = [f"NVIDIA GPU: {g.describe()}" for g in smi.gpus] or ["NVIDIA GPU: (nvidia-smi listed none)"]
    lines.append(f"NVIDIA {_describe_driver(smi)}")
    if smi.cuda is None:
        return _fail(lines, "nvidia-smi did not say which CUDA version the driver supports.\n  Choose a build "
                            f"yourself: LW_TORCH=cu130 (driver {RECOMMENDED_DRIVER}+, RTX 20xx or newer), "
                            "LW_TORCH=cu126 (GTX 9xx/10xx, driver 525+) or LW_TORCH=cpu")
    gpus = smi.gpus or [Gpu("unknown GPU")]
    too_old = [g for g in gpus if g.cc is not None and g.cc < (5, 0)]
    if len(too_old) == len(gpus):
        g = too_old[0]
        return _fail(lines, f"The {g.name} (compute capability {fmt(g.cc)}) is too old for every CUDA build "
                            f"of torch {TORCH_VERSION} (Maxwell, GTX 9xx, or newer is needed).\n  Install "
                            "without GPU support: LW_TORCH=cpu (training on the CPU is only practical for "
                            "tiny tests).")
    skipped = [g.name for g in too_old]
    gpus = [g for g in gpus if g not in too_old]
    usable = [b for b in BUILD_NAMES if all(b in builds_for_gpu(g.cc) for g in gpus)]
    if not usable:  # GPUs of different generations: serve the one with the most memory
        main = max(gpus, key=lambda g: g.memory_mib or 0)
        usable = builds_for_gpu(main.cc)
        skipped += [g.name for g in gpus if g is not main]
    by_driver = [b for b in CUDA_BUILDS if b[0] in usable and smi.driver and smi.driver[0] >= b[2]]
    if smi.driver is None:  # only the CUDA version is known
        by_driver = [b for b in CUDA_BUILDS if b[0] in usable and smi.cuda[0] >= b[1][0]]
    if not by_driver:
        need = min(b[2] for b in CUDA_BUILDS if b[0] in usable)
        new_gpu = any(g.cc and g.cc >= (10, 0) for g in gpus)
        why = ("Blackwell GPUs (RTX 50xx) need CUDA 12.8 or newer, which torch " + TORCH_VERSION + " ships as "
               "cu130/cu132" if new_gpu else f"torch {TORCH_VERSION}'s builds for this GPU need it")
        return _fail(lines, f"The NVIDIA {_describe_driver(smi)} is too old: {why}.\n  Update the NVIDIA driver "
                            f"to version {need} or newer ({DRIVER_URL}), reboot, and run the installer again.\n"
                            "  To install without GPU support instead: LW_TORCH=cpu")
    full = [b for b in by_driver if b[1] <= smi.cuda[:2]]
    chosen = full[0] if full else by_driver[-1]
    accept = [b[0] for b in by_driver if b[1][0] == chosen[1][0] and b[1] <= chosen[1]]
    plan = _cuda_plan(chosen[0], lines=lines, accept=accept)
    reason = (f"the newest build for a CUDA {fmt(smi.cuda)} driver" if full else
              f"the driver's CUDA {fmt(smi.cuda)} runs it through CUDA minor-version compatibility")
    if chosen[0] == "cu126" and usable == ["cu126"]:
        reason = ("the only build with kernels for this GPU (CUDA 13 supports RTX 20xx / compute capability 7.5 and "
                  "newer); " + LEGACY_NOTE)
    elif chosen[0] == "cu126" and smi.driver and smi.driver[0] < RECOMMENDED_DRIVER:
        plan.warnings.append(f"With NVIDIA driver {RECOMMENDED_DRIVER} or newer this GPU would get the cu130 build; "
                             f"{LEGACY_NOTE.replace('this GPU stays', 'update the driver before moving')}.")
    lines.append(f"Chosen: torch {TORCH_VERSION} {chosen[0]} (CUDA {fmt(chosen[1])}): {reason}.")
    if skipped:
        plan.warnings.append(f"No torch build runs on all these GPUs; this one leaves out: {', '.join(skipped)}.")
    if any(g.cc_guessed for g in gpus):
        plan.warnings.append("The driver does not report compute capabilities; they were guessed from the names.")
    return plan


def _named_plan(choice, smi, system):
    lines = [f"LW_TORCH={choice}"]
    if choice == "pypi":
        return Plan(lines=lines + ["torch from PyPI (its default build for this platform)."], auto=False)
    if choice == "cpu":
        if system == "Darwin":
            return Plan(build="cpu", lines=lines + ["macOS: PyPI's torch."], auto=False)
        return Plan(build="cpu", index=f"{INDEX_BASE}/cpu", local="+cpu", auto=False,
                    lines=lines + [f"torch {TORCH_VERSION}, CPU-only build."])
    if choice in BUILD_NAMES:
        if system == "Darwin":
            return _fail(lines, f"LW_TORCH={choice}: there are no CUDA builds of torch for macOS.")
        plan = _cuda_plan(choice, lines=lines, auto=False)
        plan.lines.append(f"torch {TORCH_VERSION}, CUDA {plan.cuda} build.")
        for g in smi.gpus:
            if choice not in builds_for_gpu(g.cc):
                plan.warnings.append(f"{choice} has no kernels for the {g.name} (compute capability {fmt(g.cc)}): "
                                     "the GPU will not be usable. LW_TORCH=auto picks one that is.")
        return plan
    if re.match(r"^cu\d+$", choice):
        return _fail(lines, f"torch {TORCH_VERSION} has no {choice} build (CUDA 12.8 and 12.9 were dropped in "
                            f"torch 2.12). Its builds: cu132, cu130, cu126 (legacy). Use LW_TORCH=auto (the default), "
                            "one of those, cpu, or pypi.")
    return _fail(lines, f"LW_TORCH={choice} is not understood. Use auto, cpu, pypi, cu126, cu130 or cu132 (or set "
                        "LW_TORCH_INDEX=URL).")


def build_of(torch_cuda):
    """The build name of an installed torch from torch.version.cuda ('13.0' -> 'cu130', None -> 'cpu')."""
    if not torch_cuda:
        return "cpu"
    v = version_tuple(torch_cuda)
    return f"cu{v[0]}{v[1]}" if v and len(v) > 1 else "cu" + str(torch_cuda)
