#!/usr/bin/env bash
# Update LoRA Workshop: fetch the newest version (git checkouts only), then re-run the installer.
# Everything runs inside main(), which bash reads whole before running it: a `git pull` that replaces this
# file while it runs cannot make bash read the rest of the new file at the old offset.
set -euo pipefail

main() {
  local root
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  cd "$root"
  if [ -d "$root/.git" ] && command -v git >/dev/null 2>&1; then
    echo "==> Updating the code (git pull --ff-only)"
    if ! git -C "$root" pull --ff-only; then
      echo "ERROR: git pull failed (local changes or a diverged branch?). Resolve it, then run: bash update.sh" >&2
      exit 1
    fi
  else
    echo "==> Not a git checkout: download the new version yourself; re-running the installer now."
  fi
  exec bash "$root/install.sh" "$@"
}

main "$@"
exit
