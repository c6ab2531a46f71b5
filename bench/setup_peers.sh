#!/usr/bin/env bash
# The peers' environment for the comparison benches (bench_reads, bench_tissue, bench_readers, bench_peers_e2e,
# bench_encoder_runtimes):
# .bench-venv with ours, OpenSlide, tiffslide 3.0.1, fastslide 0.8.1, TIAToolbox 2.1.3 and lazyslide 0.13.0, all
# beside the same torch 2.14.1. TIAToolbox and lazyslide pin older torch releases, which pip's resolver cannot
# satisfy here, so they go in without their dependencies and their imports are installed after them.
# Run: bash bench/setup_peers.sh   (then .bench-venv/bin/python bench/bench_*.py)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
[ -x .bench-venv/bin/python ] || "$py" -m venv .bench-venv
pip() { .bench-venv/bin/pip install -q --disable-pip-version-check "$@" 2>&1 | grep -v "WARNING: Location" || true; }
pip torch==2.14.1 torchvision==0.29.1
pip ".[all]"
pip tiffslide==3.0.1 fastslide==0.8.1
pip --no-deps tiatoolbox==2.1.3 lazyslide==0.13.0
# their imports (without the torch pins): TIAToolbox's readers, models and masks; lazyslide's wsidata stack
pip opencv-python-headless SimpleITK defusedxml universal-pathlib wsidata spatialdata umap-learn transformers \
  lazyslide-models
# other CPU runtimes for the encoder (bench_encoder_runtimes)
pip onnxruntime==1.32.0 onnx==1.23.2 onnxscript==0.7.2 openvino==2026.4.1
.bench-venv/bin/python - <<'PY'
import fastslide, lazyslide, lazyslide_models, onnxruntime, openslide, openvino, tiffslide, torch  # noqa: F401
import tiatoolbox.models, tiatoolbox.wsicore.wsireader  # noqa: F401
assert torch.__version__.startswith("2.14.1"), torch.__version__
print(f"[bench] .bench-venv ready: torch {torch.__version__}, tiffslide {tiffslide.__version__}, "
      f"TIAToolbox {__import__('tiatoolbox').__version__}, lazyslide {lazyslide.__version__}")
PY
