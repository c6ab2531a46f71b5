"""Selecting patches by annotated regions, and drawing them in napari: an outline of 10^4 (and 10^5) vertices over a
grid of 10^5 patches (issue 36's target: well under a second), and the simplified outline napari is given.

Fresh process per size, 5 alternating rounds, median (range). Reproduce: ``.venv/bin/python bench/bench_regions.py``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import host_line, machine, save

CHILD = r"""
import json, sys, time
import numpy as np
from napari_anonavila.annotations import regions_of_polygons
n_vertices, n_patches = int(sys.argv[1]), int(sys.argv[2])
side = int(np.sqrt(n_patches))
p = 64
t = np.linspace(0, 2 * np.pi, n_vertices, endpoint=False)
r = side * p * (0.35 + 0.03 * np.sin(t * 97))  # a wiggly outline over most of the grid
ring = np.stack([side * p / 2 + r * np.cos(t), side * p / 2 + r * np.sin(t)], axis=1)
t0 = time.perf_counter()
rs = regions_of_polygons([ring], source="bench")
t1 = time.perf_counter()
cells = np.argwhere(np.ones((side, side), bool))
frac = rs.fractions(np.stack([cells[:, 1] * p, cells[:, 0] * p], axis=1), p)
t_sel = time.perf_counter()
from napari_anonavila._napari.annotation_layers import _outlines  # its import (napari's) is not the simplification
t2 = time.perf_counter()
shown = _outlines(rs.area(), side * p / 4000)
t3 = time.perf_counter()
print(json.dumps({"read_s": t1 - t0, "select_s": t_sel - t1, "simplify_s": t3 - t2, "inside": int((frac >= 0.25).sum()),
                  "shown_vertices": int(sum(len(s) for s in shown))}))
"""


def main(rounds: int = 5) -> None:
    cases = [(10_000, 100_000), (100_000, 100_000)]
    runs = {c: [] for c in cases}
    for _ in range(rounds):
        for c in cases:
            out = subprocess.run([sys.executable, "-c", CHILD, *map(str, c)], capture_output=True, text=True,
                                 check=True)
            runs[c].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(c, runs[c][-1], flush=True)
    m = machine()
    lines = ["### Patches selected by an annotated region (issue 36: well under a second)", "",
             f"{host_line(m)}, "
             f"load {m['load_1min']:.2f}. One outline (a polygon of N vertices) over a square grid of 10^5 patches; "
             "exact area fractions (GEOS through shapely: whole-inside patches by containment, boundary patches by "
             "intersection after recursive bisection cuts the outline to each group of squares); the outline napari "
             "draws is simplified to 1/4000 of the slide (napari's import not counted). Fresh process, "
             f"{rounds} alternating rounds, median (range). Reproduce: `.venv/bin/python bench/bench_regions.py`.", "",
             "| vertices | patches | select (s) | simplify for napari (s) | vertices shown |", "|---|---|---|---|---|"]
    rows = []
    for (nv, npatch), rs in runs.items():
        sel = [r["select_s"] for r in rs]
        simp = [r["simplify_s"] for r in rs]
        rows.append({"vertices": nv, "patches": npatch, "select_s": statistics.median(sel),
                     "simplify_s": statistics.median(simp), "shown": rs[0]["shown_vertices"]})
        lines.append(f"| {nv:,} | {npatch:,} | {statistics.median(sel):.3f} ({min(sel):.3f}-{max(sel):.3f}) | "
                     f"{statistics.median(simp):.3f} | {rs[0]['shown_vertices']:,} |")
    save("regions", {"machine": m, "rows": rows, "raw": {str(k): v for k, v in runs.items()}}, "\n".join(lines))


if __name__ == "__main__":
    main()
