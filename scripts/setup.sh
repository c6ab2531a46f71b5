#!/usr/bin/env bash
# Create .venv (if missing) and install napari-anonavila into it, non-editable, with the given extras.
# Usage: scripts/setup.sh [EXTRAS]   (default: all,test)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-all,test}"
py="${PYTHON:-python3}"
# pip's notes about unreachable local index folders on some machines are noise here
quiet_pip() { .venv/bin/pip "$@" 2>&1 | { grep -v "^WARNING: Location '" || true; }; }
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($py --version)"
  "$py" -m venv .venv
fi
# torch first, pinned: this machine's pip serves torch 2.14.1 / torchvision 0.29.1 from local disk.
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
  echo "[setup] installing torch 2.14.1 and torchvision 0.29.1 (large; a few minutes)"
  quiet_pip install -q "torch==2.14.1" "torchvision==0.29.1"
fi
echo "[setup] installing napari-anonavila[$extras]"
quiet_pip install -q ".[$extras]"
# Always refresh our own package from this checkout (non-editable: tests import the installed copy).
quiet_pip install -q --no-deps --force-reinstall .
echo "[setup] ready: $(.venv/bin/anonavila --version)"
