#!/usr/bin/env bash
# LoRA Workshop installer for Linux and macOS:  bash install.sh
#
# Creates ./venv with a Python 3.10-3.12, installs the torch build that fits this computer
# (CUDA build matched to the NVIDIA driver, else CPU), then requirements.txt, then runs the
# self-check `python -m core doctor`. Safe to run again: it reuses the venv and keeps a torch
# that already fits.
#
# Environment variables (all optional):
#   LW_TORCH=auto|cpu|pypi|cu126|cu128|cu130   which torch build (default auto)
#                      cpu:  the CPU-only build (smaller download; no GPU use)
#                      pypi: whatever PyPI serves for this platform
#                      cuXYZ: that CUDA build from the PyTorch wheel index
#   LW_TORCH_INDEX=URL  install torch and torchvision from this package index instead
#   LW_PYTHON=PATH      use this Python interpreter to create the venv
#   LW_INSTALL_DRY_RUN=1  only show the Python and torch build it would use, change nothing
set -euo pipefail

TORCH_VERSION="2.14.1"
TORCHVISION_VERSION="0.29.1"
TORCH_INDEX_BASE="https://download.pytorch.org/whl"
# CUDA builds of the pinned torch, best first, as "index:oldest driver CUDA version it runs on".
CUDA_BUILDS="cu130:13.0 cu128:12.8 cu126:12.6"
# Drivers older than the oldest build above but at least this still run CUDA 12 builds
# (CUDA minor-version compatibility), with a warning.
CUDA_MIN_DRIVER="12.0"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$ROOT/venv"
PY="$VENV/bin/python"

say()  { printf '\n==> %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }
warn() { printf '    WARNING: %s\n' "$*" >&2; }
die()  { printf '\nERROR: %s\n' "$*" >&2; printf 'The installation did not finish. Fix the problem above and run "bash install.sh" again.\n' >&2; exit 1; }

# "12.8" -> 1208, for comparisons
vnum() { local major="${1%%.*}" minor="${1#*.}"; minor="${minor%%.*}"; echo $(( 10#${major:-0} * 100 + 10#${minor:-0} )); }

cd "$ROOT"
START_TIME=$(date +%s)
say "LoRA Workshop installer (project folder: $ROOT)"
info "Platform: $(uname -s) $(uname -m)"

# ------------------------------------------------------------------ Python
python_ok() {  # prints "X.Y" when $1 is a Python 3.10-3.12 that can create venvs
  local v
  v="$("$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" || return 1
  case "$v" in 3.10|3.11|3.12) ;; *) printf 'version %s' "$v"; return 2 ;; esac
  "$1" -c 'import venv, ensurepip' >/dev/null 2>&1 || { printf '%s without venv/ensurepip' "$v"; return 3; }
  printf '%s' "$v"
}

find_python() {
  local c out rc candidates
  if [ -n "${LW_PYTHON:-}" ]; then candidates=("$LW_PYTHON"); else
    # 3.11 first: the best supported by the ML libraries.
    candidates=(python3.11 python3.12 python3.10 python3 python)
  fi
  REJECTED=""
  for c in "${candidates[@]}"; do
    command -v "$c" >/dev/null 2>&1 || continue
    rc=0; out="$(python_ok "$c")" || rc=$?
    if [ "$rc" -eq 0 ]; then
      BASE_PY="$("$c" -c 'import sys; print(sys.executable)' 2>/dev/null)" || BASE_PY=""
      [ -n "$BASE_PY" ] && [ -x "$BASE_PY" ] || BASE_PY="$(command -v "$c")"
      BASE_PY_VERSION="$out"; return 0
    fi
    [ -n "$out" ] && REJECTED="$REJECTED
      $(command -v "$c"): $out"
  done
  return 1
}

venv_python_ok() { [ -x "$PY" ] && python_ok "$PY" >/dev/null 2>&1; }

DRY_RUN="${LW_INSTALL_DRY_RUN:-}"
say "Step 1/5: Python"
if venv_python_ok; then
  info "Reusing the existing venv: $VENV (Python $("$PY" -c 'import platform; print(platform.python_version())'))"
else
  if [ -e "$VENV" ]; then
    warn "The folder $VENV exists but holds no usable Python 3.10-3.12; it will be replaced."
  fi
  if ! find_python; then
    msg="No suitable Python found. LoRA Workshop needs Python 3.10, 3.11 or 3.12 with the venv module."
    [ -n "$REJECTED" ] && msg="$msg
    Found but not usable:$REJECTED"
    msg="$msg
    Install one, for example:
      Debian/Ubuntu:  sudo apt install python3.11 python3.11-venv   (or python3-venv for the system python3)
      Fedora:         sudo dnf install python3.11
      macOS:          brew install python@3.11   (or the installer from https://www.python.org/downloads/)
    then run this script again. To use a specific interpreter: LW_PYTHON=/path/to/python3.11 bash install.sh"
    die "$msg"
  fi
  info "Using $BASE_PY (Python $BASE_PY_VERSION)"
fi
if [ -n "$DRY_RUN" ]; then
  venv_python_ok || info "Dry run: would create the venv in $VENV"
elif ! venv_python_ok; then
  if [ -e "$VENV" ]; then rm -rf "$VENV"; fi
  info "Creating the virtual environment in $VENV"
  "$BASE_PY" -m venv "$VENV" || die "Could not create the venv with $BASE_PY."
  info "Updating pip"
  "$PY" -m pip install --upgrade pip || warn "pip could not be updated; continuing with $("$PY" -m pip --version)"
fi
if [ -z "$DRY_RUN" ]; then
  "$PY" -m pip --version >/dev/null 2>&1 || die "pip does not work in $VENV. Delete the venv folder and run this script again."
fi

# ------------------------------------------------------------------ GPU and torch build
say "Step 2/5: GPU"
OS="$(uname -s)"
ARCH="$(uname -m)"
DRIVER_CUDA=""
if [ "$OS" != "Darwin" ] && command -v nvidia-smi >/dev/null 2>&1; then
  if SMI_OUT="$(nvidia-smi 2>/dev/null)"; then
    DRIVER_CUDA="$(printf '%s\n' "$SMI_OUT" | sed -n 's/.*CUDA Version: *\([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' | head -n 1)"
    GPU_LINE="$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -n 1 || true)"
    info "NVIDIA GPU: ${GPU_LINE:-unknown}; the driver supports CUDA ${DRIVER_CUDA:-?}"
  else
    warn "nvidia-smi is installed but failed (driver not loaded?). Installing without CUDA."
  fi
elif [ "$OS" = "Darwin" ]; then
  info "macOS: PyPI's torch uses the Apple GPU (MPS) where there is one."
else
  info "No NVIDIA GPU found (no nvidia-smi)."
fi

# TORCH_KIND: cpu | cuda | any (any build will do);  TORCH_INDEX: "" means PyPI
# TORCH_LOCAL: the wheels' local version label on that index ("+cu128", "+cpu"), so that pip
# replaces a torch of the same version but another build (downloading before it removes the old one).
TORCH_INDEX=""
TORCH_LOCAL=""
TORCH_KIND="any"
WANT_CUDA=""     # e.g. "12.8": the CUDA version of the chosen build
CHOICE="${LW_TORCH:-auto}"
if [ -n "${LW_TORCH_INDEX:-}" ]; then
  TORCH_INDEX="${LW_TORCH_INDEX%/}"
  case "${TORCH_INDEX##*/}" in
    cpu) TORCH_KIND="cpu"; TORCH_LOCAL="+cpu" ;;
    cu[0-9][0-9]*) TORCH_KIND="cuda"; c="${TORCH_INDEX##*/cu}"; WANT_CUDA="${c:0:$((${#c}-1))}.${c: -1}"
                   TORCH_LOCAL="+cu$c" ;;
  esac
  info "LW_TORCH_INDEX is set: torch comes from $TORCH_INDEX"
else
  case "$CHOICE" in
    auto)
      if [ -n "$DRIVER_CUDA" ]; then
        for b in $CUDA_BUILDS; do
          if [ "$(vnum "$DRIVER_CUDA")" -ge "$(vnum "${b#*:}")" ]; then CHOICE="${b%%:*}"; break; fi
        done
        if [ "$CHOICE" = auto ]; then
          oldest="${CUDA_BUILDS##* }"
          if [ "$(vnum "$DRIVER_CUDA")" -ge "$(vnum "$CUDA_MIN_DRIVER")" ]; then
            CHOICE="${oldest%%:*}"
            warn "The NVIDIA driver supports CUDA $DRIVER_CUDA; torch $TORCH_VERSION is built for CUDA ${oldest#*:} or newer."
            warn "Installing the ${oldest%%:*} build, which usually runs on CUDA 12.x drivers. If the self-check says"
            warn "'CUDA not available', update the NVIDIA driver (https://www.nvidia.com/drivers) and run this again."
          else
            die "The NVIDIA driver supports only CUDA $DRIVER_CUDA, too old for torch $TORCH_VERSION (needs a driver for CUDA ${oldest#*:} or newer).
    Update the NVIDIA driver (https://www.nvidia.com/drivers), reboot, and run this script again.
    To install without GPU support instead: LW_TORCH=cpu bash install.sh"
          fi
        fi
      else
        CHOICE="pypi"
      fi
      ;;
  esac
  case "$CHOICE" in
    pypi) TORCH_KIND="any" ;;
    cpu)
      TORCH_KIND="cpu"
      # PyPI's torch for Linux x86_64 is a large CUDA build; the CPU index has the small one.
      if [ "$OS" = "Linux" ]; then TORCH_INDEX="$TORCH_INDEX_BASE/cpu"; TORCH_LOCAL="+cpu"; fi
      ;;
    cu[0-9][0-9]*)
      TORCH_KIND="cuda"; TORCH_INDEX="$TORCH_INDEX_BASE/$CHOICE"; TORCH_LOCAL="+$CHOICE"
      c="${CHOICE#cu}"; WANT_CUDA="${c:0:$((${#c}-1))}.${c: -1}"
      [ "$OS" = "Darwin" ] && die "LW_TORCH=$CHOICE: there are no CUDA builds of torch for macOS."
      ;;
    *) die "LW_TORCH=$CHOICE is not understood. Use auto, cpu, pypi, cu126, cu128 or cu130 (or set LW_TORCH_INDEX=URL)." ;;
  esac
fi
case "$TORCH_KIND" in
  cuda) info "Chosen: torch $TORCH_VERSION, CUDA $WANT_CUDA build ($TORCH_INDEX)" ;;
  cpu)  info "Chosen: torch $TORCH_VERSION, CPU-only build${TORCH_INDEX:+ ($TORCH_INDEX)}" ;;
  *)    info "Chosen: torch $TORCH_VERSION from ${TORCH_INDEX:-PyPI} (the default build for $OS $ARCH)" ;;
esac

if [ -n "$DRY_RUN" ]; then
  say "Dry run (LW_INSTALL_DRY_RUN is set): nothing was changed."
  exit 0
fi

# ------------------------------------------------------------------ torch
say "Step 3/5: PyTorch $TORCH_VERSION and torchvision $TORCHVISION_VERSION"
# Prints "<torch version> <torchvision version> <cuda version or cpu>", or fails.
installed_torch() {
  "$PY" - 2>/dev/null <<'EOF' | tail -n 1
import importlib.metadata as m
tv, vv = m.version("torch"), m.version("torchvision")
import torch, torchvision  # noqa: E401  (a broken install fails here)
print(tv, vv, torch.version.cuda or "cpu")
EOF
}
torch_fits() {  # $1 torch version, $2 torchvision version, $3 cuda version or cpu
  [ "${1%%+*}" = "$TORCH_VERSION" ] && [ "${2%%+*}" = "$TORCHVISION_VERSION" ] || return 1
  case "$TORCH_KIND" in
    cpu)  [ "$3" = cpu ] ;;
    cuda)
      [ "$3" != cpu ] || return 1
      if [ "${LW_TORCH:-auto}" = auto ] && [ -z "${LW_TORCH_INDEX:-}" ]; then
        # chosen automatically: any CUDA build up to the chosen one runs on this driver
        [ "$(vnum "$3")" -le "$(vnum "$WANT_CUDA")" ]
      else
        [ "$3" = "$WANT_CUDA" ]
      fi ;;
    *)    return 0 ;;
  esac
}

CURRENT="$(installed_torch || true)"
if [ -n "$CURRENT" ] && torch_fits $CURRENT; then
  read -r tv vv tc <<<"$CURRENT"
  info "Already installed and fitting: torch $tv ($([ "$tc" = cpu ] && echo CPU build || echo "CUDA $tc build")), torchvision $vv. Skipping."
else
  if [ -n "$CURRENT" ]; then
    read -r tv vv tc <<<"$CURRENT"
    info "Replacing torch $tv / torchvision $vv ($tc build): not the wanted one."
  fi
  PIP_ARGS=(install "torch==$TORCH_VERSION$TORCH_LOCAL" "torchvision==$TORCHVISION_VERSION$TORCH_LOCAL")
  if [ -z "$CURRENT" ] && { "$PY" -m pip show torch >/dev/null 2>&1 || "$PY" -m pip show torchvision >/dev/null 2>&1; }; then
    info "torch or torchvision is installed but does not import: reinstalling."
    PIP_ARGS+=(--force-reinstall)
  fi
  [ -n "$TORCH_INDEX" ] && PIP_ARGS+=(--index-url "$TORCH_INDEX")
  info "Running: pip ${PIP_ARGS[*]}"
  info "(this downloads up to a few GB; it can take a while)"
  "$PY" -m pip "${PIP_ARGS[@]}" || die "Installing torch failed (see pip's message above).
    Check the internet connection and free disk space. To choose another build: LW_TORCH=cpu, LW_TORCH=cu128, ... or LW_TORCH_INDEX=URL."
  CURRENT="$(installed_torch || true)"
  [ -n "$CURRENT" ] || die "torch was installed but does not import (run: \"$PY\" -c 'import torch' to see why)."
  read -r tv vv tc <<<"$CURRENT"
  info "Installed torch $tv ($([ "$tc" = cpu ] && echo CPU build || echo "CUDA $tc build")), torchvision $vv"
fi

# Later `pip install -c venv/constraints.txt` runs (this script's, and yours) cannot replace torch.
CONSTRAINTS="$VENV/constraints.txt"
"$PY" - >"$CONSTRAINTS.tmp" <<'EOF' || die "Could not write $CONSTRAINTS."
import importlib.metadata as m
print("# Written by install.sh: the torch build matched to this computer. Install other packages with")
print("#   venv/bin/python -m pip install -c venv/constraints.txt PACKAGE")
print("# so that they cannot replace it.")
print(f"torch=={m.version('torch')}")
print(f"torchvision=={m.version('torchvision')}")
EOF
mv -f "$CONSTRAINTS.tmp" "$CONSTRAINTS"
info "Pinned in $CONSTRAINTS: $(grep -v '^#' "$CONSTRAINTS" | tr '\n' ' ')"

# ------------------------------------------------------------------ requirements
say "Step 4/5: libraries from requirements.txt"
"$PY" -m pip install -r "$ROOT/requirements.txt" -c "$CONSTRAINTS" \
  || die "Installing requirements.txt failed (see pip's message above)."

# ------------------------------------------------------------------ self-check
say "Step 5/5: self-check (python -m core doctor)"
if ! "$PY" -m core doctor; then
  die "The self-check found a problem (the FAIL lines above)."
fi

ELAPSED=$(( $(date +%s) - START_TIME ))
say "Done in $((ELAPSED / 60)) min $((ELAPSED % 60)) s. Start the GUI with:  bash run.sh"
