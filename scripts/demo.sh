#!/usr/bin/env bash
# Command 1: set up .venv and run the main job on its built-in default (the synthetic planted-anomaly demo).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh all
exec .venv/bin/anonavila demo --out "${1:-demo-output}" --overwrite
