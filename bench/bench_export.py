"""Export of 10^5 tiles to QuPath GeoJSON: time and peak memory (streamed, never one document in memory).

Each size runs in a fresh process. Run: .venv/bin/python bench/bench_export.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile

from _common import host_line, machine, save

CHILD = r"""
import json, sys, time
import numpy as np
from napari_anonavila.grid import PatchGrid
from napari_anonavila.result import PatchTerms, SlideResult
from napari_anonavila.annotations.geojson import read_geojson
from napari_anonavila.export.geojson import write_geojson
def peak():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM'): return int(line.split()[1]) / 1024
n = int(sys.argv[1]); side = int(np.ceil(np.sqrt(n)))
rng = np.random.default_rng(0)
cells = np.argwhere(np.ones((side, side), bool))[:n]
k = np.zeros((n, 2), np.int32) + [0, 1]
terms = PatchTerms(("lymphocytes", "sinus"), ("tumor cells", "necrosis"), k, np.tile(np.float32([0.31, 0.12]), (n, 1)),
                   k, np.tile(np.float32([0.40, 0.10]), (n, 1)))
nan = np.full(n, np.nan)
t = SlideResult({"path": "synthetic.svs"}, PatchGrid(512, (side, side), cells, np.ones(n)), rng.random(n) * 1e-3,
                rng.random(n) * 1e-3, rng.random(n) * 2e-3, terms, "sum", nan, nan, {"calibrated": False})
base = peak()
t0 = time.perf_counter(); write_geojson(sys.argv[2], t, top_k=100); t1 = time.perf_counter()
import os
size = os.path.getsize(sys.argv[2])
print(json.dumps({"tiles": n, "write_s": t1 - t0, "peak_mb": peak(), "baseline_mb": base, "file_mb": size / 2**20}))
"""


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (10_000, 100_000):
            out = subprocess.run([sys.executable, "-c", CHILD, str(n), f"{tmp}/t{n}.geojson"], capture_output=True,
                                 text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    m = machine()
    md = ["## Export: QuPath GeoJSON with 10^5 tiles", "",
          f"{host_line(m)}. One tile object per patch (measurements, class band) plus "
          "the top 100 as annotations, streamed to disk; each size in a fresh process. Reproduce: "
          "`.venv/bin/python bench/bench_export.py`.", "",
          "| tiles | write time | file size | peak RSS | RSS before writing |", "|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['tiles']:,} | {r['write_s']:.1f} s | {r['file_mb']:.0f} MiB | {r['peak_mb']:.0f} MiB | "
                  f"{r['baseline_mb']:.0f} MiB |")
    save("export", {"machine": m, "results": rows}, "\n".join(md))


if __name__ == "__main__":
    main()
