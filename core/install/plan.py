"""What install.sh and install.bat decide, in one place: which Python is acceptable, which torch build
to install (core/install/torch_choice.py), whether the venv's torch already fits, warnings about the project
folder, and what to tell the user. Both installers run it; the doctor (core/doctor.py) asks the same functions.

Standard library only, and runnable by any Python 3.7+ as a script: the installers run it before the venv
exists, with the Python they are about to use, in isolated mode (-I) so that PYTHONHOME/PYTHONPATH and the
current folder play no part:

    python -I core/install/plan.py python                 # exit 0: this Python can be used
    python -I core/install/plan.py torch [--env-file F]   # choose the torch build (reads nvidia-smi)
    python -I core/install/plan.py make-venv DIR          # create (or replace) the venv with this Python
    python -I core/install/plan.py installed --build cu132 --accept "cu132 cu130"   # exit 0: torch fits
    python -I core/install/plan.py folder DIR             # warnings about the project folder
    python -I core/install/plan.py tee LOG -- CMD ...     # run CMD, its output to the screen and LOG

`torch` prints a plain explanation and one machine-readable line `torch build: NAME` (NAME: cu132, cu130,
cu126, cpu, pypi, or what LW_TORCH_INDEX names); with --env-file it also writes KEY=VALUE lines (ASCII only) for
the shell scripts. Where no build can work it exits 3 and says what to do.
"""
from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys

if __package__:
    from .torch_choice import BUILD_NAMES, TORCH_VERSION, TORCHVISION_VERSION, build_of, choose_torch, fmt, \
        read_nvidia_smi
else:  # run as a script: its folder holds only this package's modules, so nothing of the stdlib is shadowed
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from torch_choice import BUILD_NAMES, TORCH_VERSION, TORCHVISION_VERSION, build_of, choose_torch, fmt, \
        read_nvidia_smi

# diffusers 0.42 and transformers 5.23 need 3.11+; every pinned package has wheels for 3.11-3.13 (and 3.14) on
# Windows and Linux (checked with pip's resolver for win_amd64 and manylinux x86_64: docs/install.md); the
# project is installed and tested here with 3.11 and 3.13.
PYTHON_MIN = (3, 11)
PYTHON_MAX = (3, 13)
PYTHON_ADVICE_VERSION = "3.12"


# ------------------------------------------------------------------------------------------------ Python


def python_problem(version=None, bits=None, modules_ok=None, free_threaded=None, bounds=None):
    """Why this Python cannot run the project (None when it can). bounds: (oldest, newest) minor versions."""
    lo, hi = bounds or (PYTHON_MIN, PYTHON_MAX)
    v = tuple(version or sys.version_info[:3])
    bits = bits or struct.calcsize("P") * 8
    name = f"Python {fmt(v)}"
    if v[:2] < lo:
        return (f"{name} is too old: diffusers 0.42 and transformers 5.23 need Python {fmt(PYTHON_MIN)} or newer "
                f"(this project uses {fmt(PYTHON_MIN)} to {fmt(PYTHON_MAX)})")
    if v[:2] > hi:
        return (f"{name} is newer than {fmt(PYTHON_MAX)}, the newest this project is installed and tested "
                "with")
    if bits != 64:
        return f"{name} is a {bits}-bit Python; PyTorch needs a 64-bit one"
    if free_threaded is None:
        import sysconfig
        free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    if free_threaded:
        return f"{name} is the free-threaded build (python{fmt(v[:2])}t); use the regular one"
    if modules_ok is None:
        try:
            import ensurepip  # noqa: F401
            import venv  # noqa: F401
            modules_ok = True
        except ImportError:
            modules_ok = False
    if not modules_ok:
        return (f"{name} lacks the venv/ensurepip modules (Debian/Ubuntu: sudo apt install "
                f"python{fmt(v[:2])}-venv)")
    return None


def python_advice(system):
    want = PYTHON_ADVICE_VERSION
    supported = f"Python {fmt(PYTHON_MIN)}, {fmt((3, 12))} or {fmt(PYTHON_MAX)} (64-bit)"
    if system == "Windows":
        return (f"LoRA Workshop needs {supported}. Install Python {want} with the Python Install Manager\n"
                "  (https://www.python.org/downloads/windows/ or 'Python Install Manager' in the Microsoft Store),\n"
                f"  then in a NEW terminal:  py install {want}\n"
                "  or with the classic installer of its last release, ticking 'Add python.exe to PATH':\n"
                "  https://www.python.org/ftp/python/3.12.10/python-3.12.10-amd64.exe\n"
                "  Then run install.bat again. A given interpreter: set LW_PYTHON=C:\\path\\to\\python.exe")
    if system == "Darwin":
        return (f"LoRA Workshop needs {supported}. Install one:  brew install python@{want}\n"
                "  (or the installer from https://www.python.org/downloads/macos/), then run this again.\n"
                "  A given interpreter: LW_PYTHON=/path/to/python3 bash install.sh")
    return (f"LoRA Workshop needs {supported} with the venv module. Install one, for example:\n"
            f"  Debian/Ubuntu:  sudo apt install python{want} python{want}-venv   (Ubuntu 22.04: from the deadsnakes "
            "PPA)\n"
            f"  Fedora:         sudo dnf install python{want}\n"
            "  any Linux:      uv python install 3.12   (https://docs.astral.sh/uv/)\n"
            "  then run this again. A given interpreter: LW_PYTHON=/path/to/python3.12 bash install.sh")


def make_venv(path):
    """Create the venv at path with this Python, replacing whatever is there (a venv of another Python)."""
    import venv
    venv.EnvBuilder(with_pip=True, clear=True, symlinks=os.name != "nt").create(path)


# ------------------------------------------------------------------------------------------------ installed torch


def installed_torch():
    """(torch version, torchvision version, torch.version.cuda) of this Python; None when torch or
    torchvision is not installed; raises ImportError with the reason when installed but broken."""
    try:
        from importlib import metadata
    except ImportError:
        return None
    try:
        tv, vv = metadata.version("torch"), metadata.version("torchvision")
    except metadata.PackageNotFoundError:
        return None
    try:
        import torch
        import torchvision  # noqa: F401
    except Exception as e:  # a half-installed torch raises all kinds of errors
        raise ImportError(f"{type(e).__name__}: {e}") from e
    return tv, vv, torch.version.cuda


def describe_torch(tv, vv, cuda):
    return f"torch {tv} ({'CUDA ' + cuda + ' build' if cuda else 'CPU build'}), torchvision {vv}"


def torch_fits(found, build, accept):
    """Whether an installed (torch, torchvision, cuda) is the wanted version and a build the plan accepts."""
    tv, vv, cuda = found
    if tv.split("+")[0] != TORCH_VERSION or vv.split("+")[0] != TORCHVISION_VERSION:
        return False
    have = build_of(cuda)
    if build == "cpu":
        return have == "cpu"
    if build in BUILD_NAMES or re.match(r"^cu\d+$", build):
        return have in (accept or [build])
    return True  # pypi or another index: whatever it served


def _accept_list(text):
    return [a for a in (text or "").split() if a]


# ------------------------------------------------------------------------------------------------ project folder

# The longest path inside a venv of this project, relative to the project folder: 171 characters on Linux
# (venv/lib/python3.11/site-packages/diffusers/pipelines/deprecated/...), where Windows has no "python3.11/".
VENV_DEEPEST = 165
DISK_NEEDED_GB = {"cuda": 14, "cpu": 5}


def folder_warnings(root, system, env=None, long_paths=None, free_gb=None, kind="cuda"):
    env = os.environ if env is None else env
    out = []
    norm = os.path.normcase(os.path.abspath(root)) if system != "Windows" else root.lower()
    clouds = [env.get(k) for k in ("OneDrive", "OneDriveConsumer", "OneDriveCommercial") if env.get(k)]
    in_cloud = any(norm.startswith(c.lower().rstrip("\\/")) for c in clouds) or \
        any(part.lower().startswith("onedrive") for part in re.split(r"[\\/]", root))
    if in_cloud:
        out.append(f"The project folder {root} is inside OneDrive. OneDrive uploads the 6-8 GB venv and locks "
                   "files while pip writes them, so installs fail at random and the disk fills twice. Move the "
                   "folder out of OneDrive (for example C:\\LoRA-Workshop) and install there.")
    if system == "Windows":
        deepest = len(root) + 1 + VENV_DEEPEST
        if long_paths is None:
            long_paths = _windows_long_paths()
        if deepest > 259 and not long_paths:
            out.append(f"The project folder's path is long ({len(root)} characters): the deepest file of the venv "
                       f"would have {deepest}, over Windows' 260-character limit, and pip would fail. Move the folder "
                       "to a short path (for example C:\\LoRA-Workshop), or enable long paths (Windows Settings > "
                       "System > For developers > Enable long paths) and run this again.")
    if free_gb is None:
        try:
            free_gb = shutil.disk_usage(root).free / 1024 ** 3
        except OSError:
            free_gb = None
    need = DISK_NEEDED_GB["cuda" if kind.startswith("cu") or kind == "pypi" else "cpu"]
    if free_gb is not None and free_gb < need:
        out.append(f"Only {free_gb:.1f} GB free on the drive of {root}; the installation needs about {need} GB "
                   "(PyTorch with CUDA and the libraries, plus pip's download cache). Free some space first.")
    return out


def _windows_long_paths():
    try:
        import winreg
        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, r"SYSTEM\CurrentControlSet\Control\FileSystem") as k:
            return winreg.QueryValueEx(k, "LongPathsEnabled")[0] == 1
    except (ImportError, OSError):
        return False


# ------------------------------------------------------------------------------------------------ command line


class _Tee:
    def __init__(self, stream, log):
        self.stream, self.log = stream, log

    def write(self, text):
        self.stream.write(text)
        self.log.write(text)
        return len(text)

    def flush(self):
        self.stream.flush()
        self.log.flush()


def _say(lines, prefix="    "):
    for line in lines:
        print(prefix + line)


def _cmd_torch(args, system):
    plan = choose_torch(read_nvidia_smi(), system)
    _say(plan.lines)
    _say(plan.warnings, "    WARNING: ")
    if plan.error:
        sys.stdout.flush()
        print("ERROR: " + plan.error, file=sys.stderr)
        return 3 if plan.build == "none" else 2
    print(f"torch build: {plan.build}")
    if args.env_file:
        env = plan.env()
        env["TORCH_AUTO"] = "1" if plan.auto else "0"
        with open(args.env_file, "w", encoding="ascii", errors="replace", newline="\n") as f:
            f.writelines(f"{k}={v}\n" for k, v in env.items())
    return 0


def _cmd_installed(args):
    try:
        found = installed_torch()
    except ImportError as e:
        print(f"    torch or torchvision is installed but does not import ({e}): reinstalling.")
        return 4
    if found is None:
        print("    torch is not installed yet.")
        return 1
    if torch_fits(found, args.build, _accept_list(args.accept)):
        print(f"    Installed: {describe_torch(*found)}." if args.after else
              f"    Already installed and fitting: {describe_torch(*found)}. Skipping.")
        return 0
    print(f"    {'Installed, but not the wanted build' if args.after else 'Replacing'}: {describe_torch(*found)} "
          f"(wanted: torch {TORCH_VERSION}, {args.build}).")
    return 1


def _cmd_tee(args):
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    env = dict(os.environ, PYTHONIOENCODING="utf-8", PYTHONUNBUFFERED="1")
    try:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    except OSError as e:
        print(f"ERROR: cannot run {cmd[0]}: {e}", file=sys.stderr)
        return 127
    with open(args.log, "a", encoding="utf-8") as log:
        out = getattr(sys.stdout, "buffer", None)  # bytes: a console or a file, whatever its encoding
        for raw in iter(p.stdout.readline, b""):
            text = raw.decode("utf-8", "replace")
            if out is not None:
                out.write(raw)
                out.flush()
            else:
                sys.stdout.write(text)
                sys.stdout.flush()
            log.write(text)
    return p.wait()


def _cmd_constraints(args):
    from importlib import metadata
    text = ("# Written by the installer: the torch build matched to this computer. Install other packages with\n"
            "#   venv/bin/python -m pip install -c venv/constraints.txt PACKAGE   (Windows: venv\\Scripts\\python)\n"
            "# so that they cannot replace it.\n"
            f"torch=={metadata.version('torch')}\ntorchvision=={metadata.version('torchvision')}\n")
    tmp = args.file + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    os.replace(tmp, args.file)
    print(f"    Pinned in {args.file}: " + " ".join(text.splitlines()[-2:]))
    return 0


def build_parser():
    import argparse
    import platform
    ap = argparse.ArgumentParser(prog="core/install/plan.py", description="The installers' decisions (stdlib only).")
    ap.add_argument("--log", help="also append what this prints to this file")
    ap.add_argument("--system", default=platform.system(), help=argparse.SUPPRESS)
    sub = ap.add_subparsers(dest="cmd")
    sub.add_parser("python", help="exit 0 when this Python can run the project")
    sub.add_parser("advice", help="how to install a suitable Python")
    t = sub.add_parser("torch", help="choose the torch build (reads nvidia-smi, LW_TORCH, LW_TORCH_INDEX)")
    t.add_argument("--env-file", help="write KEY=VALUE lines for the shell scripts here")
    v = sub.add_parser("make-venv", help="create (or replace) a venv with this Python")
    v.add_argument("dir")
    i = sub.add_parser("installed", help="exit 0 when this Python's torch is the wanted build")
    i.add_argument("--build", required=True)
    i.add_argument("--accept", default="")
    i.add_argument("--after", action="store_true", help="checking right after installing it")
    f = sub.add_parser("folder", help="warnings about the project folder (OneDrive, long paths, disk space)")
    f.add_argument("dir")
    f.add_argument("--kind", default="cuda")
    c = sub.add_parser("constraints", help="write the pip constraints file that pins this Python's torch")
    c.add_argument("file")
    te = sub.add_parser("tee", help="run a command, its output to the screen and appended to LOG")
    te.add_argument("logfile")
    te.add_argument("command", nargs=argparse.REMAINDER)
    return ap


def main(argv=None):
    ap = build_parser()
    args = ap.parse_args(argv)
    if not args.cmd:
        ap.print_help()
        return 2
    log = open(args.log, "a", encoding="utf-8") if args.log else None
    if log:
        sys.stdout, sys.stderr = _Tee(sys.stdout, log), _Tee(sys.stderr, log)
    try:
        if args.cmd == "python":
            problem = python_problem()
            print(f"    {problem}." if problem else f"    Python {fmt(sys.version_info[:3])} (64-bit): usable.")
            return 1 if problem else 0
        if args.cmd == "advice":
            print(python_advice(args.system))
            return 0
        if args.cmd == "torch":
            return _cmd_torch(args, args.system)
        if args.cmd == "make-venv":
            make_venv(args.dir)
            return 0
        if args.cmd == "installed":
            return _cmd_installed(args)
        if args.cmd == "folder":
            for w in folder_warnings(os.path.abspath(args.dir), args.system, kind=args.kind):
                print("    WARNING: " + w)
            return 0
        if args.cmd == "constraints":
            return _cmd_constraints(args)
        args.log = args.logfile
        return _cmd_tee(args)
    finally:
        if log:
            sys.stdout.flush()
            sys.stdout, sys.stderr = sys.stdout.stream, sys.stderr.stream
            log.close()


if __name__ == "__main__":
    sys.exit(main())
