"""End to end against lazyslide's and TIAToolbox's feature extraction with the same encoder (the demo model,
read-bound), same slide, alternating rounds, in patches per second.

- ours: ``iter_embed_patches`` over N consecutive tissue patches from the middle of our grid;
- lazyslide: ``feature_extraction`` over N tiles from the middle of its own tissue tiling;
- TIAToolbox: ``DeepFeatureExtractor.run`` (WSI mode, zarr output) with our tissue mask cut to the band of rows that
  holds our N patches, so it reads the same part of the slide; the encoder wrapped in its ``ModelABC``. Its time
  includes opening the slide and building its patch dataset (about 1 s).

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


def tiatoolbox(path: Path, b) -> tuple[int, float]:
    import shutil
    import tempfile

    import zarr
    from PIL import Image
    from tiatoolbox.models.architecture.vanilla import _infer_batch
    from tiatoolbox.models.engine.deep_feature_extractor import DeepFeatureExtractor
    from tiatoolbox.models.models_abc import ModelABC

    from napari_anonavila.grid.tissue import tissue_mask

    class Encoder(ModelABC):
        def __init__(self):
            super().__init__()
            self.preproc_func = b.prepare  # the same geometric transform, per patch, in its data loader

        def forward(self, x):  # (N, 3, S, S) float 0..255 from its loader -> our normalisation and encoder
            return b.encode_images(b.to_pixels(x.permute(0, 2, 3, 1).to(torch.uint8).numpy()))

        @staticmethod
        def infer_batch(model, batch_data, *, device="cpu"):
            return [_infer_batch(model=model, batch_data=batch_data, device=device)]

    s = open_slide(path)
    grid = make_grid(s, patch_px=224)
    start = max(0, len(grid) // 2 - N // 2)
    y = grid.xy_l0()[start : start + N, 1]
    tm = tissue_mask(s)
    s.close()
    band = tm.mask.copy()  # our tissue, in the rows of our N patches
    band[: int(y.min() / tm.downsample)] = False
    band[int(np.ceil((y.max() + 224) / tm.downsample)) :] = False
    tmp = Path(tempfile.mkdtemp())
    try:
        Image.fromarray(band.astype(np.uint8) * 255).save(tmp / "mask.png")
        engine = DeepFeatureExtractor(model=Encoder(), batch_size=64, num_workers=0, verbose=False)
        t0 = time.perf_counter()
        out = engine.run(images=[path], masks=[tmp / "mask.png"], patch_mode=False, save_dir=tmp / "out",
                         output_type="zarr", patch_input_shape=(224, 224), min_mask_ratio=0.5,
                         input_resolutions=[{"units": "baseline", "resolution": 1.0}])
        t = time.perf_counter() - t0
        n = zarr.open(str(next(iter(out.values()))))["features"].shape[0]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return n, t


PEERS = {"ours": ours, "lazyslide": lazyslide, "TIAToolbox": tiatoolbox}


def main() -> None:
    warnings.simplefilter("ignore")
    b = get_backend("demo", device="cpu")
    paths = [Path(p) for p in sys.argv[1:]] or [Path(__file__).parent / "data" / "large.svs"]
    rows = []
    for path in paths:
        rates: dict[str, list[float]] = {k: [] for k in PEERS}
        counts = {}
        names = list(PEERS)
        for r in range(2):
            for name in names[r % len(names):] + names[: r % len(names)]:  # rotate the order each round
                n, t = PEERS[name](path, b)
                counts[name] = n
                rates[name].append(n / t)
        row = {"slide": path.name, "tiles": counts, **{k: statistics.median(v) for k, v in rates.items()}}
        for k in PEERS:
            if k != "ours":
                row[f"ours_vs_{k}"] = row["ours"] / row[k]
        rows.append(row)
        print(row, flush=True)
    m = machine()
    md = ["## End to end against lazyslide and TIAToolbox (same encoder)", "",
          f"{m['date']}, {m['cpu']}, {m['cores']} cores. Demo encoder (read-bound), 224-px tiles at level 0, batches "
          f"of 64, 2 rounds in rotating order, median. Ours: {N} consecutive tissue patches from the middle of our "
          f"grid. lazyslide 0.13 `feature_extraction` (its reader, `num_workers=0`, its default): {N} tiles from the "
          "middle of its own tiling. TIAToolbox 2.1 `DeepFeatureExtractor` (WSI mode, zarr output, "
          "`num_workers=0`): the tiles of our tissue mask in the rows of our patches; its time includes opening "
          "the slide and building its dataset. All with the same encoder and preprocessing. Reproduce: "
          "`.bench-venv/bin/python bench/bench_peers_e2e.py`.", "",
          "| slide | tiles (ours / lazyslide / TIAToolbox) | ours patches/s | lazyslide | TIAToolbox | ours vs "
          "lazyslide | ours vs TIAToolbox |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        t = r["tiles"]
        md.append(f"| {r['slide']} | {t['ours']} / {t['lazyslide']} / {t['TIAToolbox']} | {r['ours']:.0f} | "
                  f"{r['lazyslide']:.0f} | {r['TIAToolbox']:.0f} | **{r['ours_vs_lazyslide']:.2f}x** | "
                  f"**{r['ours_vs_TIAToolbox']:.2f}x** |")
    save("peers_e2e", {"machine": m, "results": rows}, "\n".join(md))


if __name__ == "__main__":
    main()
