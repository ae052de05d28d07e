#!/usr/bin/env bash
# Update LoRA Workshop: fetch the newest version (git checkouts only), then re-run the installer.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
if [ -d "$ROOT/.git" ] && command -v git >/dev/null 2>&1; then
  echo "==> Updating the code (git pull --ff-only)"
  if ! git -C "$ROOT" pull --ff-only; then
    echo "ERROR: git pull failed (local changes or a diverged branch?). Resolve it, then run: bash update.sh" >&2
    exit 1
  fi
else
  echo "==> Not a git checkout: download the new version yourself; re-running the installer now."
fi
exec bash "$ROOT/install.sh" "$@"
