#!/usr/bin/env bash
# Prepare .whl/: what the GPU machine lacks (it has PyTorch, timm, tifffile, scikit-image, transformers, no package
# registry), as Python 3.12 manylinux wheels, under 64 MiB; then one `run` call carries it (see scripts/gpu/run.sh):
#   bash scripts/gpu/prepare_wheelhouse.sh
#   run(command="bash scripts/gpu/run.sh", carry=[".whl", "bench/data/real"], timeout_s=600)
# The two real Aperio slides (about 6 MB) go to bench/data/real/ (ignored by git), for the accuracy figures.
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf .whl && mkdir -p .whl
.venv/bin/pip download -q --dest .whl --python-version 3.12 --only-binary=:all: --no-deps \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  openslide-python openslide-bin open_clip_torch conch-fork ftfy wcwidth imagecodecs \
  dask toolz cloudpickle partd locket fsspec pyyaml click
.venv/bin/pip wheel -q --no-deps --wheel-dir .whl .   # this package
mkdir -p bench/data/real
for f in cmu-1-small-region.svs tcga-cr-7395-01a-01-ts1.svs; do
  [ -f "../shared/data/slides/$f" ] && cp "../shared/data/slides/$f" bench/data/real/
done
du -sh .whl
size=$(du -sm .whl | cut -f1)
[ "$size" -lt 64 ] || { echo "wheelhouse is ${size} MiB: over the 64 MiB carry limit" >&2; exit 1; }
