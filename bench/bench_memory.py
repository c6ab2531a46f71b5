"""Peak memory of whole-slide scoring against slide size: 10^3 vs 5x10^4 patches (target: within 10%).

Each run is a fresh process (so peaks do not mix) that scores a synthetic slide with the demo backend and
writes every output and the embedding cache. The patch size is 32 px so that the patch count, not the
pixel count, is what grows. Run: .venv/bin/python bench/bench_memory.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import host_line, machine, save

CHILD = r"""
import json, sys, time, resource
from napari_anonavila.detector import Detector
from napari_anonavila.pipeline import score_slide
def rss_mb():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM'): return int(line.split()[1]) / 1024
det = Detector.load(sys.argv[2])
base = rss_mb()
t0 = time.perf_counter()
res = score_slide(det, sys.argv[1], out_dir=sys.argv[3], patch_px=32, min_tissue=0, batch_size=64)
print(json.dumps({"patches": len(res), "baseline_peak_mb": base, "peak_mb": rss_mb(),
                  "seconds": time.perf_counter() - t0}))
"""


def main() -> None:
    from napari_anonavila.detector import Detector
    from napari_anonavila.sample import make_tissue, write_pyramid_tiff
    from napari_anonavila.training import TrainConfig

    tmp = Path(tempfile.mkdtemp(prefix="anonavila-bench-"))
    det = Detector.create("demo")
    import torch

    det.fit(torch.nn.functional.normalize(torch.randn(64, det.embed_dim), dim=1), config=TrainConfig(batch_size=16))
    model = det.save(tmp / "model.safetensors")
    rows = []
    for side in (1024, 7168):  # 32x32 = 1,024 and 224x224 = 50,176 patches of 32 px
        img, _ = make_tissue(side, seed=1, n_anomalies=2)
        slide = write_pyramid_tiff(tmp / f"slide{side}.tif", img, mpp=0.5)
        del img
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", CHILD, str(slide), str(model), str(tmp / f"out{side}")],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        r.update(side_px=side, wall_s=time.perf_counter() - t0, scoring_mb=r["peak_mb"] - r["baseline_peak_mb"])
        rows.append(r)
        print(r, flush=True)
    ratio = rows[1]["peak_mb"] / rows[0]["peak_mb"]
    m = machine()
    md = ["## Memory: peak RSS against slide size", "",
          f"{host_line(m)}. Each row is a fresh process scoring a synthetic slide with "
          "the demo backend (32 px patches, every cell kept), writing all outputs and the embedding cache. "
          "Reproduce: `.venv/bin/python bench/bench_memory.py`.", "",
          "| slide | patches | peak RSS | of which scoring | time |", "|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['side_px']}x{r['side_px']} px | {r['patches']:,} | {r['peak_mb']:.0f} MiB | "
                  f"{r['scoring_mb']:.0f} MiB | {r['seconds']:.1f} s |")
    md += ["", f"Peak RSS ratio, 5x10^4 vs 10^3 patches: **{ratio:.3f}** (target: at most 1.10)."]
    save("memory", {"machine": m, "results": rows, "ratio": ratio}, "\n".join(md))


if __name__ == "__main__":
    main()
