#!/usr/bin/env bash
# On the GPU machine: install the carried wheelhouse (no index), make the test slides, run the GPU benchmark.
# Results come back under $OUT (bench/results/gpu.json and the docs/benchmarks.md section it writes).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/anonavila-gpu-out}
mkdir -p "$OUT"
python -m pip install -q --no-index --find-links .whl --no-deps .whl/*.whl 2>&1 | tail -3
python -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv || true
# a large synthetic pyramid for the reader (40,000 x 32,000 px, JPEG tiles), beside the real slides in ../shared
python -c "from napari_anonavila.synthetic import write_wsi; write_wsi('/tmp/gpu-large.svs', 40000, 32000, seed=0)"
python bench/bench_gpu.py --large /tmp/gpu-large.svs 2>&1 | tee "$OUT/bench_gpu.log"
cp bench/results/gpu.json "$OUT/" && cp docs/benchmarks.md "$OUT/"
