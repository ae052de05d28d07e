"""core/install: the installers' decisions, table-driven over recorded nvidia-smi outputs (tests/data/nvidia_smi:
the old banner, the 610+ banner with 'KMD Version' / 'CUDA UMD Version', `-q`, a failing nvidia-smi, a driver
that does not know compute_cap), GPUs from Kepler to Blackwell, LW_TORCH / LW_TORCH_INDEX, the Python check,
the installed-torch check and the folder warnings. What install.bat hands to the module is checked here too
(there is no Windows to run it on)."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from core.install import plan as install_plan
from core.install import torch_choice as tc

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data" / "nvidia_smi"
PLAN = ROOT / "core" / "install" / "plan.py"


def fake_runner(banner: str | None, gpus: list[str], rc: int = 0, knows_cc: bool = True, q: str | None = None):
    """A stand-in for running nvidia-smi: banner and -q from recorded files, the CSV query from `gpus`
    ('name, memory, driver, compute_cap')."""
    def run(args):
        if args[1:] == []:
            return rc, (DATA / banner).read_text() if banner else ""
        if args[1] == "-q":
            return (0, (DATA / q).read_text()) if q else (6, "")
        if "compute_cap" in args[1]:
            if not knows_cc:
                return 6, (DATA / "query_unknown_field.txt").read_text()
            return 0, "\n".join(gpus) + "\n"
        return 0, "\n".join(",".join(g.split(",")[:3]) for g in gpus) + "\n"
    return run


def smi(banner, gpus, **kw):
    return tc.read_nvidia_smi(run=fake_runner(banner, gpus, **kw), which=lambda name: "/usr/bin/nvidia-smi")


RTX4070 = "NVIDIA GeForce RTX 4070, 12282 MiB, {d}, 8.9"
RTX3060 = "NVIDIA GeForce RTX 3060, 12288 MiB, {d}, 8.6"
RTX3090 = "NVIDIA GeForce RTX 3090, 24576 MiB, {d}, 8.6"
RTX5090 = "NVIDIA GeForce RTX 5090, 32607 MiB, {d}, 12.0"
RTX5070 = "NVIDIA GeForce RTX 5070, 12227 MiB, {d}, 12.0"
GTX1080 = "NVIDIA GeForce GTX 1080, 8192 MiB, {d}, 6.1"
GTX780 = "NVIDIA GeForce GTX 780, 3072 MiB, {d}, 3.5"
RTX2060 = "NVIDIA GeForce RTX 2060, 6144 MiB, {d}, 7.5"

# (case, banner file, driver, GPUs, options, expected build or None, text the explanation or error must hold)
CASES = [
    ("610 banner, Ada", "banner_610.txt", "610.47", [RTX4070], {}, "cu132", "CUDA 13.3"),
    ("580, Ampere", "banner_580.txt", "580.95.05", [RTX3060], {}, "cu130", "newest build for a CUDA 13.0 driver"),
    ("580, Pascal: legacy cu126", "banner_580.txt", "580.95.05", [GTX1080], {}, "cu126", "pytorch/pytorch#190385"),
    ("572 (12.8), Blackwell: update", "banner_572.txt", "572.83", [RTX5090], {}, None, "version 580 or newer"),
    ("572 (12.8), Turing: cu126", "banner_572.txt", "572.83", [RTX2060], {}, "cu126", "CUDA 12.8"),
    ("535 (12.2), Ampere: minor-version compat", "banner_535.txt", "535.183.01", [RTX3090], {}, "cu126",
     "minor-version compatibility"),
    ("470, Pascal without compute_cap", "banner_470.txt", "470.256.02", [GTX1080], {"knows_cc": False}, None,
     "version 525 or newer"),
    ("Kepler", "banner_580.txt", "580.95.05", [GTX780], {}, None, "too old for every CUDA build"),
    ("banner without CUDA: -q", "banner_no_cuda.txt", "615.12", [RTX5070], {"q": "q_615.txt"}, "cu132", "CUDA 13.4"),
    ("banner and -q without CUDA: from the driver", "banner_no_cuda.txt", "615.12", [RTX5070], {}, "cu130",
     "CUDA 13.0"),
    ("two GPUs of one build", "banner_580.txt", "580.95.05", [RTX3090, GTX1080], {}, "cu126", "GTX 1080"),
    ("Blackwell and Pascal: the bigger one", "banner_610.txt", "610.47", [RTX5090, GTX1080], {}, "cu132",
     "leaves out: NVIDIA GeForce GTX 1080"),
    ("Ampere and Kepler: Kepler left out", "banner_580.txt", "580.95.05", [GTX780, RTX3060], {}, "cu130",
     "leaves out: NVIDIA GeForce GTX 780"),
]


@pytest.mark.parametrize("case, banner, driver, gpus, opts, build, text", CASES, ids=[c[0] for c in CASES])
def test_auto_choice(case, banner, driver, gpus, opts, build, text):
    info = smi(banner, [g.format(d=driver) for g in gpus], **opts)
    for system in ("Linux", "Windows"):
        plan = tc.choose_torch(info, system, env={})
        said = "\n".join(plan.lines + plan.warnings + [plan.error or ""])
        assert text in said, said
        if build is None:
            assert plan.error and plan.build == "none", said
            assert "LW_TORCH=cpu" in plan.error
        else:
            assert plan.error is None, said
            assert plan.build == build and plan.index == f"{tc.INDEX_BASE}/{build}" and plan.local == "+" + build
            assert build in plan.accept and all(a in tc.BUILD_NAMES for a in plan.accept)
            assert f"driver {driver}" in said


def test_both_banner_spellings_and_q():
    old = (DATA / "banner_580.txt").read_text()
    new = (DATA / "banner_610.txt").read_text()
    assert tc.parse_versions(old) == ("580.95.05", (13, 0))
    assert tc.parse_versions(new) == ("610.47", (13, 3))
    assert tc.parse_versions((DATA / "q_615.txt").read_text()) == ("615.12", (13, 4))
    assert tc.parse_versions((DATA / "failed.txt").read_text()) == (None, None)


def test_compute_capability_from_the_name_when_the_driver_does_not_say():
    gpus, driver = tc.parse_query("NVIDIA GeForce GTX 1060 6GB, 6144 MiB, 470.256.02\n")
    assert driver == "470.256.02" and gpus[0].cc == (6, 1) and gpus[0].cc_guessed
    assert tc.cc_from_name("NVIDIA GeForce RTX 5060 Ti") == (12, 0)
    assert tc.cc_from_name("NVIDIA GeForce RTX 2080 SUPER") == (7, 5)
    assert tc.cc_from_name("Some Future GPU") is None
    assert tc.builds_for_gpu(None) == tc.BUILD_NAMES  # unknown: not ruled out


def test_a_failing_nvidia_smi_stops_with_what_to_do():
    info = smi("failed.txt", [], rc=9)
    assert info.found and "couldn't communicate with the NVIDIA driver" in info.error
    plan = tc.choose_torch(info, "Windows", env={})
    assert plan.build == "none" and "reboot" in plan.error and "LW_TORCH=cpu" in plan.error


def test_no_nvidia_smi_takes_pypi_and_macos_too():
    none = tc.read_nvidia_smi(run=None, which=lambda name: None)
    assert not none.found
    plan = tc.choose_torch(none, "Linux", env={})
    assert plan.build == "pypi" and plan.index == "" and "No NVIDIA GPU found" in plan.lines[0]
    assert "CPU-only" in tc.choose_torch(none, "Windows", env={}).lines[0]
    info = smi("banner_610.txt", [RTX4070.format(d="610.47")])
    assert tc.choose_torch(info, "Darwin", env={}).build == "pypi"


@pytest.mark.parametrize("env, build, index, text", [
    ({"LW_TORCH": "cpu"}, "cpu", f"{tc.INDEX_BASE}/cpu", "CPU-only build"),
    ({"LW_TORCH": "pypi"}, "pypi", "", "PyPI"),
    ({"LW_TORCH": "cu130"}, "cu130", f"{tc.INDEX_BASE}/cu130", "CUDA 13.0 build"),
    ({"LW_TORCH": "CU126"}, "cu126", f"{tc.INDEX_BASE}/cu126", "CUDA 12.6 build"),
    ({"LW_TORCH_INDEX": "https://example.org/simple/cu130/"}, "cu130", "https://example.org/simple/cu130",
     "LW_TORCH_INDEX is set"),
])
def test_the_user_can_choose(env, build, index, text):
    info = smi("banner_610.txt", [RTX4070.format(d="610.47")])
    plan = tc.choose_torch(info, "Linux", env=env)
    assert plan.error is None and plan.build == build and plan.index == index and not plan.auto
    assert text in " ".join(plan.lines)


def test_a_build_torch_does_not_ship_is_refused():
    info = smi("banner_572.txt", [RTX4070.format(d="572.83")])
    plan = tc.choose_torch(info, "Linux", env={"LW_TORCH": "cu128"})
    assert plan.error and "no cu128 build" in plan.error and "cu132, cu130, cu126" in plan.error
    plan = tc.choose_torch(info, "Linux", env={"LW_TORCH": "nonsense"})
    assert plan.error and "LW_TORCH=nonsense is not understood" in plan.error
    assert "no CUDA builds of torch for macOS" in tc.choose_torch(info, "Darwin", env={"LW_TORCH": "cu130"}).error


def test_a_chosen_build_without_kernels_for_the_gpu_is_warned_about():
    info = smi("banner_580.txt", [GTX1080.format(d="580.95.05")])
    plan = tc.choose_torch(info, "Windows", env={"LW_TORCH": "cu130"})
    assert plan.build == "cu130" and any("no kernels for the NVIDIA GeForce GTX 1080" in w for w in plan.warnings)


# ------------------------------------------------------------------------------------------------ Python


@pytest.mark.parametrize("version, bits, modules, problem", [
    ((3, 11, 9), 64, True, None),
    ((3, 12, 10), 64, True, None),
    ((3, 13, 1), 64, True, None),
    ((3, 10, 11), 64, True, "too old"),
    ((3, 9, 18), 64, True, "too old"),
    ((3, 14, 2), 64, True, "newer than 3.13"),
    ((3, 12, 10), 32, True, "32-bit"),
    ((3, 12, 3), 64, False, "python3.12-venv"),
])
def test_which_python(version, bits, modules, problem):
    got = install_plan.python_problem(version=version, bits=bits, modules_ok=modules, free_threaded=False)
    assert (got is None) if problem is None else (problem in got), got
    assert "free-threaded" in install_plan.python_problem(version=(3, 13, 1), bits=64, modules_ok=True,
                                                          free_threaded=True)


def test_python_advice_names_what_to_install():
    win = install_plan.python_advice("Windows")
    assert "py install 3.12" in win and "https://www.python.org/downloads/windows/" in win
    assert "python-3.12.10-amd64.exe" in win and "LW_PYTHON" in win
    assert "apt install python3.12 python3.12-venv" in install_plan.python_advice("Linux")
    assert "brew install python@3.12" in install_plan.python_advice("Darwin")


def _python_10():
    for p in [Path.home() / ".pyenv" / "versions"]:
        for cand in sorted(p.glob("3.10.*/bin/python3.10")) if p.is_dir() else []:
            return cand
    return None


@pytest.mark.skipif(_python_10() is None, reason="needs a Python 3.10 to run the module with")
def test_the_module_runs_on_an_old_python_and_refuses_it():
    p = subprocess.run([str(_python_10()), "-I", str(PLAN), "python"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "Python 3.10." in p.stdout and "too old" in p.stdout


# ------------------------------------------------------------------------------------------------ installed torch


@pytest.mark.parametrize("found, build, accept, fits", [
    (("2.14.1+cu130", "0.29.1+cu130", "13.0"), "cu132", ["cu132", "cu130"], True),
    (("2.14.1+cu126", "0.29.1+cu126", "12.6"), "cu132", ["cu132", "cu130"], False),  # legacy build replaced
    (("2.14.1+cu132", "0.29.1+cu132", "13.2"), "cu130", ["cu130"], False),  # too new for the driver
    (("2.14.1+cpu", "0.29.1+cpu", None), "cu130", ["cu130"], False),
    (("2.14.1+cpu", "0.29.1+cpu", None), "cpu", [], True),
    (("2.14.1", "0.29.1", "13.0"), "pypi", [], True),
    (("2.13.0", "0.28.0", "13.0"), "pypi", [], False),  # another torch version
])
def test_installed_torch_fits(found, build, accept, fits):
    assert install_plan.torch_fits(found, build, accept) is fits


def test_this_venvs_torch_is_found():
    found = install_plan.installed_torch()
    assert found is not None and found[0].split("+")[0] == tc.TORCH_VERSION


# ------------------------------------------------------------------------------------------------ folder


def test_folder_warnings():
    ok = install_plan.folder_warnings(r"C:\LoRA-Workshop", "Windows", env={}, long_paths=False, free_gb=100)
    assert ok == []
    one = install_plan.folder_warnings(r"C:\Users\Jürgen Müller\OneDrive\Documents\lora", "Windows",
                                       env={}, long_paths=True, free_gb=100)
    assert len(one) == 1 and "inside OneDrive" in one[0]
    by_env = install_plan.folder_warnings(r"D:\Sync\lora", "Windows", env={"OneDrive": r"D:\Sync"},
                                          long_paths=True, free_gb=100)
    assert "inside OneDrive" in by_env[0]
    deep = "C:\\" + "\\".join(["a-rather-long-folder-name"] * 4)
    long = install_plan.folder_warnings(deep, "Windows", env={}, long_paths=False, free_gb=100)
    assert len(long) == 1 and "260-character limit" in long[0] and "Enable long paths" in long[0]
    assert install_plan.folder_warnings(deep, "Windows", env={}, long_paths=True, free_gb=100) == []
    assert install_plan.folder_warnings("/home/u/" + "x" * 200, "Linux", env={}, free_gb=100) == []
    full = install_plan.folder_warnings("/home/u/lora", "Linux", env={}, free_gb=3.2, kind="cu130")
    assert "Only 3.2 GB free" in full[0] and "about 14 GB" in full[0]


# ------------------------------------------------------------------------------------------------ command line


def test_env_file_and_machine_line(tmp_path, monkeypatch):
    env_file = tmp_path / "plan.env"
    monkeypatch.setattr(install_plan, "read_nvidia_smi", lambda: smi("banner_610.txt", [RTX4070.format(d="610.47")]))
    monkeypatch.delenv("LW_TORCH", raising=False)
    monkeypatch.delenv("LW_TORCH_INDEX", raising=False)
    rc = install_plan.main(["--system", "Windows", "torch", "--env-file", str(env_file)])
    assert rc == 0
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    assert values == {"TORCH_BUILD": "cu132", "TORCH_INDEX": f"{tc.INDEX_BASE}/cu132", "TORCH_LOCAL": "+cu132",
                      "TORCH_CUDA": "13.2", "TORCH_ACCEPT": "cu132 cu130", "TORCH_VERSION": tc.TORCH_VERSION,
                      "TORCHVISION_VERSION": tc.TORCHVISION_VERSION, "TORCH_AUTO": "1"}
    env_file.read_bytes().decode("ascii")  # cmd reads it: ASCII only


def test_tee_keeps_non_ascii_output_and_the_exit_code(tmp_path):
    log = tmp_path / "logs" / "install.log"
    log.parent.mkdir()
    code = "import sys; print('Jürgen Müller'); sys.exit(3)"
    p = subprocess.run([sys.executable, "-I", str(PLAN), "tee", str(log), "--", sys.executable, "-c", code],
                       capture_output=True, timeout=60)
    assert p.returncode == 3
    assert "Jürgen Müller" in log.read_text(encoding="utf-8")


def _bat_calls() -> list[list[str]]:
    """The argument lists install.bat gives core/install/plan.py, its variables replaced by sample values."""
    text = (ROOT / "install.bat").read_text()
    samples = {"%PLANLOG%": '--log "C:\\x\\install.log"', "%TORCH_BUILD%": "cu130", "%TORCH_ACCEPT%": "cu130",
               "%ROOT%": "C:\\LoRA", "%VENV%": "C:\\LoRA\\venv", "%TMPF%": "C:\\t.txt", "%LOG%": "C:\\x.log",
               "%PY%": "C:\\LoRA\\venv\\Scripts\\python.exe"}
    calls = []
    for line in text.splitlines():
        if '"%PLAN%"' not in line or line.lstrip().lower().startswith(("rem", "set ", "if not exist")):
            continue
        rest = line.split('"%PLAN%"', 1)[1].split(" >", 1)[0]
        for k, v in samples.items():
            rest = rest.replace(k, v)
        assert "%" not in rest, f"unknown variable in install.bat's call: {line}"
        calls.append(shlex.split(rest.replace("\\", "/")))
    return calls


def test_what_install_bat_hands_to_the_module_parses():
    calls = _bat_calls()
    commands = {c[2] if c[0] == "--log" else c[0] for c in calls}
    assert commands >= {"python", "make-venv", "torch", "folder", "installed", "constraints", "tee"}, commands
    parser = install_plan.build_parser()
    for args in calls:
        parser.parse_args(args)  # SystemExit (a failed test) on anything the module does not take


def test_install_bat_reads_only_what_the_module_writes():
    text = (ROOT / "install.bat").read_text()
    used = set(re.findall(r"%(TORCH\w*)%", text))
    assert used and used <= set(tc.Plan().env()), used
    # the decisions live in the module, not in cmd: no nvidia-smi parsing, no version arithmetic
    assert "CUDA Version" not in text and "nvidia-smi" not in text and "set /a" not in text.lower()
    # Windows' own find/findstr/where, never whatever is first on PATH (Git's find, a Unix find)
    for tool in ("findstr", "where", "find"):
        for m in re.finditer(rf"(?<![\w.\\]){tool}(\.exe)?\s", text):
            line = text[text.rfind("\n", 0, m.start()) + 1:m.start()]
            assert line.lstrip().lower().startswith("rem") or "%SYS32%\\" in line[-12:], line + tool
    assert "PYTHONHOME=" in text and "PYTHONPATH=" in text
    raw = (ROOT / "install.bat").read_bytes()
    assert raw.count(b"\n") == raw.count(b"\r\n")  # cmd misreads labels in a batch file with bare LF lines
