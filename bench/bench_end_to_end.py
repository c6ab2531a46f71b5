"""End to end on real slides: do reading/decoding and encoding overlap? (target: wall <= 1.15 x max(read, encode))

For the same patches, in one run: read-only (reader threads read, decode and preprocess), encode-only (the
model encodes tensors already in memory) and the streaming pipeline (both overlapped). Two regimes: a
real-size encoder (ViT-B-16, random weights, 224 px), where encoding dominates on this CPU, and the tiny demo
model, where reading dominates. Run: .venv/bin/python bench/bench_end_to_end.py
"""

from __future__ import annotations

import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from _common import host_line, machine, save
from _vit import vit_b16_weights

from napari_anonavila.backends import get_backend
from napari_anonavila.grid import make_grid
from napari_anonavila.pipeline import _read_patches, default_workers, iter_embed_patches
from napari_anonavila.slide import open_slide

SLIDES = "../shared/data/slides"


def measure(slide_name: str, backend, batch: int, patch_px=None) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slide = open_slide(f"{SLIDES}/{slide_name}")
    grid = make_grid(slide, patch_px=patch_px)
    xy = grid.xy_l0()
    level = slide.best_level(grid.patch_size_l0 / backend.image_size)
    workers = default_workers()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        parts = list(pool.map(lambda s: _read_patches(slide, xy[s : s + 8], grid.patch_size_l0, level, backend),
                              range(0, len(xy), 8)))
        stacked = backend.to_pixels([img for part in parts for img in part])
    t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    for s in range(0, len(stacked), batch):
        backend.encode_images(stacked[s : s + batch])
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in iter_embed_patches(slide, grid, backend, np.arange(len(grid)), batch_size=batch):
        pass
    t_e2e = time.perf_counter() - t0
    slide.close()
    return {"slide": slide_name, "backend": backend.description or str(backend.spec), "patches": len(grid),
            "read_s": t_read, "encode_s": t_enc, "end_to_end_s": t_e2e,
            "ratio": t_e2e / max(t_read, t_enc), "patches_per_s": len(grid) / t_e2e, "threads": workers}


def main() -> None:
    vit = get_backend(f"open_clip:ViT-B-16@{vit_b16_weights()}")  # CUDA when present, else the CPU
    demo = get_backend("demo")
    rows = [measure("cmu-1-small-region.svs", vit, batch=16),
            measure("tcga-cr-7395-01a-01-ts1.svs", demo, batch=64, patch_px=64),
            measure("fluorescence-dapi-40x.ndpi", demo, batch=64, patch_px=64)]
    for r in rows:
        print(r, flush=True)
    m = machine()
    md = ["## End to end on real slides: reading and encoding overlap", "",
          f"{host_line(m)}, GPU: {m['gpu'] or 'none'}. Same patches, one run each "
          "row: read-only "
          "(reader threads read, decode, resize and normalise), encode-only (tensors already in memory) and the "
          "streaming pipeline. Reproduce: `.venv/bin/python bench/bench_end_to_end.py`.", "",
          "| slide | encoder | patches | read only | encode only | end to end | end to end / max | patches/s |",
          "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['slide']} | {r['backend']} | {r['patches']:,} | {r['read_s']:.2f} s | {r['encode_s']:.2f} s "
                  f"| {r['end_to_end_s']:.2f} s | **{r['ratio']:.2f}** | {r['patches_per_s']:.1f} |")
    md += ["", "Target: end to end at most 1.15 x the larger of read-only and encode-only. **Met where the encoder "
           "dominates** (a real-size ViT on this CPU: reading hides completely behind encoding). **Missed in the "
           "read-dominated rows** (the tiny demo model): on 2 cores, the reader threads (OpenSlide/JPEG decode, "
           "resize) and torch's threads compete for the same two cores, so the floor is the total CPU time over "
           "the cores, (2 x read + 2 x encode core-seconds) / 2, not the larger stage alone. The target assumes "
           "the stages use different resources, as with the encoder on a GPU; on such a machine, run this script "
           "unchanged (it uses CUDA when present)."]
    save("end_to_end", {"machine": m, "results": rows}, "\n".join(md))


if __name__ == "__main__":
    main()
