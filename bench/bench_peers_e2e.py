"""End to end against lazyslide's and TIAToolbox's feature extraction with the same encoder, same slide, alternating
rounds, in patches per second and CPU seconds per patch (every thread of the process).

Encoders (``--encoder``): ``demo`` (the 64-px demo model: read-bound) or ``vit-b16`` (an open_clip ViT-B/16 with
seeded random weights: a real-size encoder). With ``vit-b16`` ours runs twice: float32 (the default) and
``--precision bfloat16`` (bfloat16 weights on a CPU); the peers run the same float32 weights, by default through our
backend's ``encode_images`` (its passes of 8 images included: the conservative comparison), with
``--peers-forward plain`` through the model's own forward, one pass per batch of 64 (what their users write).

- ours: ``iter_embed_patches`` over N consecutive tissue patches from the middle of our grid;
- lazyslide: ``feature_extraction`` over N tiles from the middle of its own tissue tiling;
- TIAToolbox: ``DeepFeatureExtractor.run`` (WSI mode, zarr output) with a mask of exactly our N patches' cells (its
  224-px tiling of level 0 is ours), so it encodes the same tiles; the encoder wrapped in its ``ModelABC``. Its time
  includes opening the slide and building its patch dataset (about 1 s).

Peers' environment: bash bench/setup_peers.sh. Run:
.bench-venv/bin/python bench/bench_peers_e2e.py [--encoder vit-b16 --n 128] [SLIDE ...]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from _common import host_line, machine, peak_rss_mib, save

from napari_anonavila.backends import get_backend
from napari_anonavila.grid import make_grid
from napari_anonavila.pipeline import iter_embed_patches
from napari_anonavila.slide import open_slide

N = 3000
ENCODER = "demo"
PEERS_FORWARD = "ours"


def _peer_encode(b, pixels: torch.Tensor) -> torch.Tensor:
    """The peers' encoder call: our backend's, or (``--peers-forward plain``) the model's forward in one pass."""
    if PEERS_FORWARD == "plain":
        with torch.inference_mode():
            return torch.nn.functional.normalize(b._encode_image_raw(pixels).float(), dim=-1)
    return b.encode_images(pixels)


def ours(path: Path, b) -> tuple[int, float]:
    s = open_slide(path)
    grid = make_grid(s, patch_px=224)
    start = max(0, len(grid) // 2 - N // 2)
    idx = np.arange(start, min(len(grid), start + N))
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in iter_embed_patches(s, grid, b, idx, batch_size=64):
        pass
    t, c = time.perf_counter() - t0, time.process_time() - c0
    s.close()
    return len(idx), t, c


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
            return _peer_encode(b, x)

    def transform(img):
        return b.to_pixels([b.prepare(np.asarray(img))])[0]

    t0, c0 = time.perf_counter(), time.process_time()
    zs.tl.feature_extraction(wsi, Encoder(), transform=transform, batch_size=64, num_workers=0, pbar=False,
                             model_name="demo")
    return len(wsi["tiles"]), time.perf_counter() - t0, time.process_time() - c0


def tiatoolbox(path: Path, b) -> tuple[int, float]:
    import shutil
    import tempfile

    import zarr
    from PIL import Image
    from tiatoolbox.models.architecture.vanilla import _infer_batch
    from tiatoolbox.models.engine.deep_feature_extractor import DeepFeatureExtractor
    from tiatoolbox.models.models_abc import ModelABC

    class Encoder(ModelABC):
        def __init__(self):
            super().__init__()
            self.preproc_func = b.prepare  # the same geometric transform, per patch, in its data loader

        def forward(self, x):  # (N, 3, S, S) float 0..255 from its loader -> our normalisation and encoder
            return _peer_encode(b, b.to_pixels(x.permute(0, 2, 3, 1).to(torch.uint8).numpy()))

        @staticmethod
        def infer_batch(model, batch_data, *, device="cpu"):
            return [_infer_batch(model=model, batch_data=batch_data, device=device)]

    s = open_slide(path)
    grid = make_grid(s, patch_px=224)
    start = max(0, len(grid) // 2 - N // 2)
    xy = grid.xy_l0()[start : start + N]
    w0, h0 = s.dimensions_xy
    s.close()
    ds = 32  # mask pixels of 32 level-0 pixels: 7 to a 224-px tile, so each of our cells is whole in the mask
    band = np.zeros((-(-h0 // ds), -(-w0 // ds)), bool)  # exactly our N patches' cells
    for x, y in xy:
        band[y // ds : (y + 224) // ds, x // ds : (x + 224) // ds] = True
    tmp = Path(tempfile.mkdtemp())
    try:
        Image.fromarray(band.astype(np.uint8) * 255).save(tmp / "mask.png")
        engine = DeepFeatureExtractor(model=Encoder(), batch_size=64, num_workers=0, verbose=False)
        t0, c0 = time.perf_counter(), time.process_time()
        out = engine.run(images=[path], masks=[tmp / "mask.png"], patch_mode=False, save_dir=tmp / "out",
                         output_type="zarr", patch_input_shape=(224, 224), min_mask_ratio=0.5,
                         input_resolutions=[{"units": "baseline", "resolution": 1.0}])
        t, c = time.perf_counter() - t0, time.process_time() - c0
        n = zarr.open(str(next(iter(out.values()))))["features"].shape[0]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return n, t, c


PEERS = {"ours": ours, "lazyslide": lazyslide, "TIAToolbox": tiatoolbox}
if "--encoder" in sys.argv and sys.argv[sys.argv.index("--encoder") + 1] == "vit-b16":
    ENCODER = "vit-b16"
    PEERS["ours (bfloat16)"] = ours
if "--peers-forward" in sys.argv:
    PEERS_FORWARD = sys.argv[sys.argv.index("--peers-forward") + 1]


def _backend(precision: str = "float32"):
    if ENCODER == "demo":
        return get_backend("demo", device="cpu", precision=precision)
    from _vit import vit_b16_weights

    return get_backend(f"open_clip:ViT-B-16@{vit_b16_weights()}", device="cpu", precision=precision)


def one(name: str, path: Path) -> None:
    """Run one tool once in this fresh process; print its tiles, seconds, CPU seconds and peak RSS as JSON."""
    warnings.simplefilter("ignore")
    b = _backend("bfloat16" if name == "ours (bfloat16)" else "float32")
    before = peak_rss_mib()
    n, t, c = PEERS[name](path, b)  # wall and CPU time over the same span: the extraction itself
    print(json.dumps({"tiles": n, "seconds": t, "cpu_s": c, "peak_rss_mib": peak_rss_mib(),
                      "before_mib": before}))


def measure(path: Path, rounds: int = 2) -> dict:
    """Each tool ``rounds`` times on ``path``, in rotating order, each run in a fresh process; a tool that fails
    (e.g. killed for memory) is reported and not retried."""
    runs: dict[str, list[dict]] = {k: [] for k in PEERS}
    failed: dict[str, str] = {}
    names = list(PEERS)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            if name in failed:
                continue
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, __file__, "--one", name, str(path), "--encoder", ENCODER, "--n",
                                  str(N), "--peers-forward", PEERS_FORWARD], capture_output=True, text=True)
            if out.returncode:
                why = (f"killed by signal {-out.returncode}" if out.returncode < 0 else
                       f"exit {out.returncode}: {(out.stderr.strip().splitlines() or [''])[-1][:200]}")
                failed[name] = f"failed after {time.perf_counter() - t0:.0f} s ({why})"
                print(f"  {name} on {path.name}: {failed[name]}", flush=True)
                continue
            runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    ok = {k: v for k, v in runs.items() if v and k not in failed}
    row = {"slide": path.name, "failed": failed, "tiles": {k: v[-1]["tiles"] for k, v in ok.items()},
           "peak_rss_mib": {k: max(x["peak_rss_mib"] for x in v) for k, v in ok.items()},
           **{k: statistics.median(x["tiles"] / x["seconds"] for x in v) for k, v in ok.items()},
           "range": {k: [min(x["tiles"] / x["seconds"] for x in v), max(x["tiles"] / x["seconds"] for x in v)]
                     for k, v in ok.items()},
           "cpu_s_per_tile": {k: statistics.median(x["cpu_s"] / x["tiles"] for x in v) for k, v in ok.items()},
           "cpu_range": {k: [min(x["cpu_s"] / x["tiles"] for x in v), max(x["cpu_s"] / x["tiles"] for x in v)]
                         for k, v in ok.items()},
           "rounds": rounds, "encoder": ENCODER}
    for k in ok:
        if k != "ours":
            row[f"ours_vs_{k}"] = row["ours"] / row[k]
    return row


def _cell(d: dict, key: str, fmt) -> str:
    return fmt(d[key]) if key in d else "failed"


def report(rows: list[dict], m: dict) -> str:
    tools = ("ours", "lazyslide", "TIAToolbox")
    md = ["## End to end against lazyslide and TIAToolbox (same encoder)", "",
          f"{host_line(m)}. Demo encoder (read-bound), 224-px tiles at level 0, batches "
          f"of 64, 2 rounds in rotating order, median. Ours: {N} consecutive tissue patches from the middle of our "
          f"grid. lazyslide 0.13 `feature_extraction` (its reader, `num_workers=0`, its default): {N} tiles from the "
          "middle of its own tiling. TIAToolbox 2.1 `DeepFeatureExtractor` (WSI mode, zarr output, "
          "`num_workers=0`): the tiles of our tissue mask in the rows of our patches; its time includes opening "
          "the slide and building its dataset. All with the same encoder and preprocessing, each run in a fresh "
          "process; peak RSS is that process's high-water mark (model, slide and run). Reproduce: "
          "`.bench-venv/bin/python bench/bench_peers_e2e.py`.", "",
          "| slide | tiles (ours / lazyslide / TIAToolbox) | ours patches/s | lazyslide | TIAToolbox | ours vs "
          "lazyslide | ours vs TIAToolbox | peak RSS (ours / lazyslide / TIAToolbox) |",
          "|---|---|---|---|---|---|---|---|"]
    rate, ratio = "{:.0f}".format, "**{:.2f}x**".format
    for r in rows:
        md.append(f"| {r['slide']} | {' / '.join(_cell(r['tiles'], k, str) for k in tools)} | {r['ours']:.0f} | "
                  f"{_cell(r, 'lazyslide', rate)} | {_cell(r, 'TIAToolbox', rate)} | "
                  f"{_cell(r, 'ours_vs_lazyslide', ratio)} | {_cell(r, 'ours_vs_TIAToolbox', ratio)} | "
                  f"{' / '.join(_cell(r['peak_rss_mib'], k, rate) for k in tools)} MiB |")
    for r in rows:
        md += [f"\n{k} on {r['slide']}: {why}." for k, why in r["failed"].items()]
    return "\n".join(md)


def report_cpu(rows: list[dict], m: dict) -> str:
    tools = [t for t in PEERS if any(t in r["cpu_s_per_tile"] for r in rows)]
    how = "" if PEERS_FORWARD == "ours" else ", the peers through the model's own forward"
    md = [f"## End to end with a real-size encoder (ViT-B/16) against lazyslide and TIAToolbox{how}", "",
          f"{host_line(m)}. As the table above, with an open_clip ViT-B/16 (seeded random "
          f"weights) as the encoder; {rows[0]['rounds']} rounds in rotating order, each run a fresh process; "
          "median. CPU time counts every thread of the process. The peers run the same float32 weights, "
          + ("through our backend's `encode_images` (its passes of 8 images included: the conservative comparison)"
             if PEERS_FORWARD == "ours" else "through the model's own forward, one pass per batch of 64 (what "
             "their users write)")
          + "; TIAToolbox's mask holds exactly our patches' cells. Ours runs float32 (the default) and "
          "`--precision bfloat16`. Reproduce: `.bench-venv/bin/python bench/bench_peers_e2e.py --encoder vit-b16 "
          f"--n {N} --rounds {rows[0]['rounds']} --peers-forward {PEERS_FORWARD} SLIDE`.", "",
          "| slide | tool | tiles | patches/s (median, range) | CPU s/patch (median, range) | ours float32 vs it "
          "(CPU) | ours bfloat16 vs it (CPU) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        c = r["cpu_s_per_tile"]
        for t in tools:
            if t not in c:
                md.append(f"| {r['slide']} | {t} | failed | | | | |")
                continue
            lo, hi = r["range"][t]
            f32 = "" if t == "ours" else f"**{c[t] / c['ours']:.2f}x**"
            bf16 = c.get("ours (bfloat16)")
            bf = "" if t == "ours (bfloat16)" or bf16 is None else f"**{c[t] / bf16:.2f}x**"
            spread = "({:.3f}-{:.3f})".format(*r["cpu_range"][t]) if t in r.get("cpu_range", {}) else ""
            md.append(f"| {r['slide']} | {t} | {r['tiles'][t]} | {r[t]:.2f} ({lo:.2f}-{hi:.2f}) | "
                      f"{c[t]:.3f} {spread} | {f32} | {bf} |")
    return "\n".join(md)


def main() -> None:
    global N
    if sys.argv[1:2] == ["--one"]:
        N = int(sys.argv[sys.argv.index("--n") + 1])
        return one(sys.argv[2], Path(sys.argv[3]))
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--encoder", default="demo", choices=["demo", "vit-b16"])
    ap.add_argument("--n", type=int, default=N)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--peers-forward", default="ours", choices=["ours", "plain"])
    ap.add_argument("slides", nargs="*")
    args = ap.parse_args()
    N = args.n
    paths = [Path(p) for p in args.slides] or [Path(__file__).parent / "data" / "large.svs"]
    rows = []
    for path in paths:
        rows.append(measure(path, args.rounds))
        print(rows[-1], flush=True)
    m = machine()
    if ENCODER == "demo":
        save("peers_e2e", {"machine": m, "results": rows}, report(rows, m))
    else:
        name = "peers_e2e_vit" if PEERS_FORWARD == "ours" else "peers_e2e_vit_plain"
        save(name, {"machine": m, "peers_forward": PEERS_FORWARD, "results": rows}, report_cpu(rows, m))


if __name__ == "__main__":
    main()
