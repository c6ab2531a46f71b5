"""End to end against lazyslide's feature extraction with the same encoder (the demo model, read-bound), same
slide, same number of tissue tiles (each tool's own tissue detection and tiling), alternating rounds.

Run in the peers' environment: .bench-venv/bin/python bench/bench_peers_e2e.py [SLIDE ...]
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from _common import machine, save

from napari_anonavila.backends import get_backend
from napari_anonavila.grid import make_grid
from napari_anonavila.pipeline import iter_embed_patches
from napari_anonavila.slide import open_slide

N = 3000


def ours(path: Path, b) -> tuple[int, float]:
    s = open_slide(path)
    grid = make_grid(s, patch_px=224)
    start = max(0, len(grid) // 2 - N // 2)
    idx = np.arange(start, min(len(grid), start + N))
    t0 = time.perf_counter()
    for _ in iter_embed_patches(s, grid, b, idx, batch_size=64):
        pass
    t = time.perf_counter() - t0
    s.close()
    return len(idx), t


def lazyslide(path: Path, b) -> tuple[int, float]:
    import lazyslide as zs
    from wsidata import open_wsi

    wsi = open_wsi(str(path))
    zs.pp.find_tissues(wsi)
    zs.pp.tile_tissues(wsi, 224)
    tiles = wsi["tiles"]
    if len(tiles) > N:
        start = len(tiles) // 2 - N // 2
        wsi["tiles"] = tiles.iloc[start : start + N]

    class Encoder(torch.nn.Module):
        def forward(self, x):
            return b.encode_images(x)

    def transform(img):
        return b.to_pixels([b.prepare(np.asarray(img))])[0]

    t0 = time.perf_counter()
    zs.tl.feature_extraction(wsi, Encoder(), transform=transform, batch_size=64, num_workers=0, pbar=False,
                             model_name="demo")
    return len(wsi["tiles"]), time.perf_counter() - t0


def main() -> None:
    warnings.simplefilter("ignore")
    b = get_backend("demo", device="cpu")
    paths = [Path(p) for p in sys.argv[1:]] or [Path(__file__).parent / "data" / "large.svs"]
    rows = []
    for path in paths:
        rates: dict[str, list[float]] = {"ours": [], "lazyslide": []}
        counts = {}
        for r in range(2):
            for name, fn in ((("ours", ours), ("lazyslide", lazyslide)) if r % 2 == 0 else
                             (("lazyslide", lazyslide), ("ours", ours))):
                n, t = fn(path, b)
                counts[name] = n
                rates[name].append(n / t)
        row = {"slide": path.name, "tiles": counts, **{k: statistics.median(v) for k, v in rates.items()}}
        row["ours_vs_lazyslide"] = row["ours"] / row["lazyslide"]
        rows.append(row)
        print(row, flush=True)
    m = machine()
    md = ["## End to end against lazyslide (same encoder)", "",
          f"{m['date']}, {m['cpu']}, {m['cores']} cores. Demo encoder (read-bound), 224-px tiles, up to {N} tissue "
          "tiles per slide from each tool's own tissue detection, 2 alternating rounds, median. lazyslide "
          "0.13 `feature_extraction` (its reader, `num_workers=0`, its default) with the same encoder and "
          "preprocessing. Reproduce: `.bench-venv/bin/python bench/bench_peers_e2e.py`.", "",
          "| slide | tiles (ours / lazyslide) | ours patches/s | lazyslide patches/s | ours vs lazyslide |",
          "|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['slide']} | {r['tiles']['ours']} / {r['tiles']['lazyslide']} | {r['ours']:.0f} | "
                  f"{r['lazyslide']:.0f} | **{r['ours_vs_lazyslide']:.2f}x** |")
    md += ["", "TIAToolbox's `DeepFeatureExtractor` was not run: it needs its `ModelABC` wrapper and writes zarr "
           "stores; its tissue mask is compared above."]
    save("peers_e2e", {"machine": m, "results": rows}, "\n".join(md))


if __name__ == "__main__":
    main()
