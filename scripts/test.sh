#!/usr/bin/env bash
# Command 2: set up .venv (with test tools) and run the whole test suite against the installed package.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh all,conch,test
bash scripts/setup_tf4.sh || echo "[test] could not make .venv-tf4; the transformers 4.x token test will skip"
# A real napari window needs an X server: install Xvfb and Mesa when we are root and they are missing.
if ! command -v xvfb-run >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[test] installing Xvfb and the Qt xcb libraries for the napari GUI tests"
  (apt-get update -qq && apt-get install -y -qq xvfb libgl1-mesa-dri libglx-mesa0 libegl1 libxkbcommon-x11-0 \
    libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 \
    libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 libdbus-1-3 libfontconfig1) >/dev/null 2>&1 \
    || echo "[test] could not install Xvfb; GUI tests will skip"
fi
xvfb=()
command -v Xvfb >/dev/null 2>&1 || xvfb=(-p no:xvfb)  # without Xvfb the napari tests skip, saying why
exec .venv/bin/python -m pytest "${xvfb[@]}" "$@"
