"""Write the benchmark's large slides: 40x (0.25 um/px), 100,000 x 80,000 px, JPEG tiles, full pyramid,
real-looking tissue on glass, planted anomalies (ground truth beside each slide as ``<name>.truth.npy``).

Run: .venv/bin/python bench/make_slides.py [--size 100000x80000] [--layout svs ome-tiff]
Writes bench/data/large.svs (Aperio-like, read by OpenSlide) and bench/data/large.ome.tif (pyramidal OME-TIFF
with SubIFDs, read by tifffile). Each takes about 15 minutes on 2 cores and 1-2 GB of disk; an existing slide
with the same size and seed is kept.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from napari_anonavila.synthetic import write_wsi

DATA = Path(__file__).resolve().parent / "data"
SUFFIX = {"svs": ".svs", "ome-tiff": ".ome.tif"}


def slide_path(layout: str, name: str = "large") -> Path:
    return DATA / f"{name}{SUFFIX[layout]}"


def make(layout: str, width: int, height: int, seed: int = 0, name: str = "large") -> Path:
    path = slide_path(layout, name)
    meta_path = path.with_name(path.name + ".json")
    want = {"size": [width, height], "seed": seed, "layout": layout, "mpp": 0.25}
    if path.exists() and meta_path.exists() and json.loads(meta_path.read_text()).get("made") == want:
        print(f"{path}: exists")
        return path
    DATA.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    made = write_wsi(path, width, height, mpp=0.25, layout=layout, seed=seed, n_anomalies=12)
    np.save(path.with_name(path.name + ".truth.npy"), made.truth)
    secs = time.perf_counter() - t0
    meta_path.write_text(json.dumps({"made": want, "levels": made.levels, "truth_downsample": made.truth_downsample,
                                     "seconds": round(secs, 1), "bytes": path.stat().st_size}, indent=1))
    print(f"{path}: {width} x {height} px, {made.levels} levels, {path.stat().st_size / 2**30:.2f} GiB in {secs:.0f} s")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="100000x80000", help="WIDTHxHEIGHT in level-0 pixels")
    ap.add_argument("--layout", nargs="+", default=["svs", "ome-tiff"], choices=list(SUFFIX))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    for layout in args.layout:
        make(layout, w, h, args.seed)


if __name__ == "__main__":
    main()
