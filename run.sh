#!/usr/bin/env bash
# Start the LoRA Workshop GUI:  bash run.sh [--port 7860] [--no-browser] ...  (see: bash run.sh --help)
# The page opens in your browser once it answers (not with --no-browser or LW_NO_BROWSER=1, nor without a
# display); when port 7860 is taken (another web UI) the next free port is used and printed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="$ROOT/venv/bin/python"
if [ ! -x "$PY" ]; then
  echo "LoRA Workshop is not installed yet (no venv in $ROOT). Run first:  bash install.sh" >&2
  exit 1
fi
cd "$ROOT"
exec "$PY" app.py --inbrowser "$@"
