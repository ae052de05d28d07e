#!/usr/bin/env bash
# LoRA Workshop installer for Linux and macOS:  bash install.sh
#
# Creates ./venv with Python 3.11-3.13, installs the torch build that fits this computer (the CUDA build for
# the NVIDIA GPU and driver, else PyPI's), then requirements.txt, then runs the self-check
# `python -m core doctor`. Safe to run again: it reuses the venv and keeps a torch that already fits.
# Every decision (which Python, which torch build, what to tell you) is made by core/install/plan.py, which
# install.bat runs too. Each run is logged in logs/install-<date>-<time>.log.
#
# Environment variables (all optional):
#   LW_TORCH=auto|cpu|pypi|cu126|cu130|cu132   which torch build (default auto)
#                      cpu:  the CPU-only build (smaller download; no GPU use)
#                      pypi: whatever PyPI serves for this platform
#                      cuXYZ: that CUDA build from the PyTorch wheel index (torch 2.14 has no cu128)
#   LW_TORCH_INDEX=URL  install torch and torchvision from this package index instead
#   LW_PYTHON=PATH      use this Python interpreter to create the venv
#   LW_INSTALL_DRY_RUN=1  only show the Python and torch build it would use (and the line
#                      "torch build: NAME"), change nothing
set -euo pipefail
unset PYTHONHOME PYTHONPATH

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$ROOT/venv"
PY="$VENV/bin/python"
PLAN="$ROOT/core/install/plan.py"
DRY_RUN="${LW_INSTALL_DRY_RUN:-}"
LOG=""

say()  { printf '\n==> %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }
warn() { printf '    WARNING: %s\n' "$*" >&2; }
die()  {
  printf '\nERROR: %s\n' "$*" >&2
  printf 'The installation did not finish. Fix the problem above and run "bash install.sh" again.\n' >&2
  [ -z "$LOG" ] || printf 'The log of this run, to attach to a bug report: %s\n' "$LOG" >&2
  exit 1
}

main() {
  cd "$ROOT"
  [ -f "$PLAN" ] || die "$PLAN is missing: the project folder is incomplete. Download or clone it again."
  local start
  start=$(date +%s)
  if [ -z "$DRY_RUN" ]; then
    mkdir -p "$ROOT/logs"
    LOG="$ROOT/logs/install-$(date +%Y%m%d-%H%M%S).log"
    exec > >(tee -a "$LOG") 2> >(tee -a "$LOG" >&2)
  fi
  say "LoRA Workshop installer (project folder: $ROOT)"
  info "Platform: $(uname -s) $(uname -m)$([ -z "$LOG" ] || printf ', log: %s' "$LOG")"

  say "Step 1/5: Python"
  local run_py=""
  if [ -x "$PY" ] && "$PY" -I "$PLAN" python >/dev/null 2>&1; then
    info "Reusing the existing venv: $VENV ($("$PY" -I "$PLAN" python | sed 's/^ *//'))"
    run_py="$PY"
  else
    if [ -e "$VENV" ]; then
      local old
      old="$("$PY" -I "$PLAN" python 2>/dev/null | sed 's/^ *//' || true)"
      warn "The folder $VENV holds no usable Python${old:+ ($old)}; it will be replaced."
    fi
    find_python || die "No suitable Python found.${REJECTED:+
    Found but not usable:$REJECTED}
$(python_advice)"
    info "Using $BASE_PY ($("$BASE_PY" -I "$PLAN" python | sed 's/^ *//'))"
    run_py="$BASE_PY"
    if [ -n "$DRY_RUN" ]; then
      info "Dry run: would create the venv in $VENV"
    else
      info "Creating the virtual environment in $VENV"
      "$BASE_PY" -I "$PLAN" make-venv "$VENV" || die "Could not create the venv with $BASE_PY."
      info "Updating pip"
      "$PY" -I -m pip install --upgrade pip || warn "pip could not be updated; continuing with $("$PY" -m pip --version)"
      run_py="$PY"
    fi
  fi
  if [ -z "$DRY_RUN" ]; then
    "$PY" -I -m pip --version >/dev/null 2>&1 || die "pip does not work in $VENV. Delete the venv folder and run this script again."
  fi

  say "Step 2/5: GPU and PyTorch build"
  local envf rc=0
  envf="$(mktemp "${TMPDIR:-/tmp}/lw_plan.XXXXXX")"
  "$run_py" -I "$PLAN" torch --env-file "$envf" || rc=$?
  if [ "$rc" -ne 0 ]; then rm -f "$envf"; die "No PyTorch build was chosen (see above)."; fi
  local TORCH_BUILD="" TORCH_INDEX="" TORCH_LOCAL="" TORCH_ACCEPT="" TORCH_VERSION="" TORCHVISION_VERSION="" k v
  while IFS='=' read -r k v; do
    case "$k" in
      TORCH_BUILD|TORCH_INDEX|TORCH_LOCAL|TORCH_ACCEPT|TORCH_VERSION|TORCHVISION_VERSION) printf -v "$k" '%s' "$v" ;;
    esac
  done < "$envf"
  rm -f "$envf"
  "$run_py" -I "$PLAN" folder "$ROOT" --kind "$TORCH_BUILD" >&2 || true

  if [ -n "$DRY_RUN" ]; then
    say "Dry run (LW_INSTALL_DRY_RUN is set): nothing was changed."
    exit 0
  fi

  say "Step 3/5: PyTorch $TORCH_VERSION and torchvision $TORCHVISION_VERSION"
  rc=0
  "$PY" -I "$PLAN" installed --build "$TORCH_BUILD" --accept "$TORCH_ACCEPT" || rc=$?
  if [ "$rc" -ne 0 ]; then
    local pip_args=(install "torch==$TORCH_VERSION$TORCH_LOCAL" "torchvision==$TORCHVISION_VERSION$TORCH_LOCAL")
    [ "$rc" -ne 4 ] || pip_args+=(--force-reinstall)
    [ -z "$TORCH_INDEX" ] || pip_args+=(--index-url "$TORCH_INDEX")
    info "Running: pip ${pip_args[*]}"
    info "(this downloads up to a few GB; it can take a while)"
    "$PY" -I -m pip "${pip_args[@]}" || die "Installing torch failed (see pip's message above).
    Check the internet connection and free disk space. To choose another build: LW_TORCH=cpu, LW_TORCH=cu126, ...
    or LW_TORCH_INDEX=URL."
    "$PY" -I "$PLAN" installed --after --build "$TORCH_BUILD" --accept "$TORCH_ACCEPT" \
      || die "torch was installed but does not import or is not the wanted build (run: \"$PY\" -c 'import torch' to see why)."
  fi
  # Later `pip install -c venv/constraints.txt` runs (this script's, and yours) cannot replace torch.
  "$PY" -I "$PLAN" constraints "$VENV/constraints.txt" || die "Could not write $VENV/constraints.txt."

  say "Step 4/5: libraries from requirements.txt"
  "$PY" -I -m pip install -r "$ROOT/requirements.txt" -c "$VENV/constraints.txt" \
    || die "Installing requirements.txt failed (see pip's message above)."

  say "Step 5/5: self-check (python -m core doctor)"
  "$PY" -m core doctor || die "The self-check found a problem (the FAIL lines above)."

  local elapsed=$(( $(date +%s) - start ))
  say "Done in $((elapsed / 60)) min $((elapsed % 60)) s. Start the GUI with:  bash run.sh"
  info "The log of this installation: $LOG"
}

# BASE_PY: the first acceptable interpreter (LW_PYTHON, else 3.12, 3.11, 3.13, python3, python); REJECTED lists
# the others with the reason core/install/plan.py gave.
find_python() {
  local c out rc candidates
  if [ -n "${LW_PYTHON:-}" ]; then candidates=("$LW_PYTHON"); else
    candidates=(python3.12 python3.11 python3.13 python3 python)
  fi
  REJECTED=""
  for c in "${candidates[@]}"; do
    command -v "$c" >/dev/null 2>&1 || { [ -z "${LW_PYTHON:-}" ] || REJECTED="$REJECTED
      $c: not found"; continue; }
    rc=0; out="$("$c" -I "$PLAN" python 2>&1)" || rc=$?
    if [ "$rc" -eq 0 ]; then BASE_PY="$(command -v "$c")"; return 0; fi
    # a Python too old to run core/install/plan.py at all still says its version
    printf '%s' "$out" | grep -q 'Python [0-9]' || out="$("$c" --version 2>&1 | head -n 1): too old"
    REJECTED="$REJECTED
      $(command -v "$c"): $(printf '%s' "$out" | sed 's/^ *//' | tail -n 1)"
  done
  return 1
}

python_advice() {
  local c
  for c in python3 python3.12 python3.11 python3.13 python3.10 python3.9 python3.8 python; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -I "$PLAN" advice 2>/dev/null; then return 0; fi
  done
  echo "LoRA Workshop needs Python 3.11, 3.12 or 3.13 (64-bit) with the venv module, for example"
  echo "  Debian/Ubuntu: sudo apt install python3.12 python3.12-venv;  macOS: brew install python@3.12"
}

main "$@"
exit $?
