"""A result of 2 x 10^6 patches (32-px patches over a large slide) written and opened back: time and peak memory.

Each size runs in a fresh process (peak RSS is that process's own), alternating write-then-open rounds. Reproduce:
``.venv/bin/python bench/bench_result_io.py [--sizes 200000,2000000] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile

from _common import host_line, machine, save

CHILD = r"""
import json, sys, time
import numpy as np
from napari_anonavila.grid import PatchGrid
from napari_anonavila.result import PatchTerms, SlideResult
from napari_anonavila.reviews import ReviewMarks, write_reviews
def peak():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM'): return int(line.split()[1]) / 1024
n, folder, what = int(sys.argv[1]), sys.argv[2], sys.argv[3]
if what == 'write':
    side = int(np.ceil(np.sqrt(n)))
    rng = np.random.default_rng(0)
    cells = np.argwhere(np.ones((side, side), bool))[:n]
    k = np.tile(np.int32([0, 1, 2]), (n, 1))
    w = np.tile(np.float32([0.31, 0.12, 0.05]), (n, 1))
    terms = PatchTerms(("lymphocytes", "sinus", "capsule"), ("tumor cells", "necrosis", "mitosis"), k, w, k, w)
    s = rng.random(n) * 1e-3
    res = SlideResult({"path": "/slides/big.svs", "fingerprint_sha256": "f" * 64},
                      PatchGrid(32, (side, side), cells, np.ones(n, np.float32)), s / 2, s / 2, s, terms, "sum",
                      rng.normal(size=n), rng.uniform(0.001, 1, n), {"calibrated": True, "fdr": 0.05})
    from napari_anonavila.export.result_folder import write_result_folder
    base = peak(); t0 = time.perf_counter()
    write_result_folder(folder, res, None, thumbnail=(np.full((256, 256, 3), 230, np.uint8), side * 32 / 256))
    marks = ReviewMarks(dict.fromkeys(ReviewMarks.keys_of(res.grid, range(0, n, 100)), "rejected"))
    write_reviews(folder, marks, slide_fingerprint="f" * 64)
    print(json.dumps({"seconds": time.perf_counter() - t0, "peak_mib": peak(), "baseline_mib": base}))
else:
    from napari_anonavila import open_result
    base = peak(); t0 = time.perf_counter()
    r = open_result(folder, verify=what == 'verify')
    states = r.review_states()
    r.heatmap(values="z", eroded=True)
    print(json.dumps({"seconds": time.perf_counter() - t0, "peak_mib": peak(), "baseline_mib": base,
                      "n": len(r), "marks": len(states)}))
"""


def run(n: int, folder: str, what: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(n), folder, what], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="200000,2000000")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    rows = []
    for n in (int(v) for v in args.sizes.split(",")):
        samples: dict[str, list[dict]] = {"write": [], "open": [], "verify": []}
        for _ in range(args.rounds):
            with tempfile.TemporaryDirectory() as tmp:
                folder = f"{tmp}/big"
                for what in ("write", "open", "verify"):
                    samples[what].append(run(n, folder, what))
        for what, runs in samples.items():
            secs = [r["seconds"] for r in runs]
            rows.append({"patches": n, "step": what, "median_s": statistics.median(secs), "min_s": min(secs),
                         "max_s": max(secs), "peak_mib": max(r["peak_mib"] for r in runs),
                         "baseline_mib": min(r["baseline_mib"] for r in runs)})
            print(rows[-1], flush=True)
    m = machine()
    lines = ["### Result folders of many patches (write, open, open with every output's SHA-256 verified)", "",
             f"{host_line(m)}, "
             f"load {m['load_1min']:.2f}. A calibrated synthetic result with three terms per pool and a review mark "
             f"on every 100th patch; fresh process per step, {args.rounds} alternating rounds, median (range). "
             "Opening reads `patches.npz` (exact columns) and `reviews.json`, puts the marks on the grid and draws "
             "the eroded z heatmap. Reproduce: `.venv/bin/python bench/bench_result_io.py`.", "",
             "| patches | step | seconds | peak RSS MiB (baseline) |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['patches']:,} | {r['step']} | {r['median_s']:.2f} ({r['min_s']:.2f}-{r['max_s']:.2f}) | "
                     f"{r['peak_mib']:.0f} ({r['baseline_mib']:.0f}) |")
    save("result_io", {"machine": m, "rows": rows}, "\n".join(lines))


if __name__ == "__main__":
    main()
