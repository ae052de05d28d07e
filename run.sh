#!/usr/bin/env bash
# Start the LoRA Workshop GUI:  bash run.sh [--port 7860] [--inbrowser] ...  (see: bash run.sh --help)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="$ROOT/venv/bin/python"
if [ ! -x "$PY" ]; then
  echo "LoRA Workshop is not installed yet (no venv in $ROOT). Run first:  bash install.sh" >&2
  exit 1
fi
cd "$ROOT"
exec "$PY" app.py "$@"
