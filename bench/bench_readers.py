"""Readers side by side, in one run, on the same slides and the same patches, alternating rounds.

- patch reads: ours (``Slide.read_region``) against raw OpenSlide (``read_region``, a PIL RGBA image, and the
  same made into an RGB array) and tiffslide (``as_array=True``); each round reopens every reader (cold
  internal tile caches, warm OS page cache) and reads the same patches in grid order, as scoring does;
- napari level chunks: tile-aligned windows through ``Slide.level_arrays`` (what the napari layer indexes) and
  through the dask ``levels``, in pixels/s against our patch reads of the same size;
- tissue mask: ours (``tissue_mask``) against TIAToolbox's Otsu mask at 1.25x (``WSIReader.tissue_mask``);
- end to end: read + encode of the same tissue patches with the demo encoder (read-bound), ours at 1, 2 and 4
  reader threads, against a plain OpenSlide loop; each in its own process, with its peak RSS and its growth during
  the run (lazyslide's and TIAToolbox's extractors: bench/bench_peers_e2e.py).

Peers are optional, in their own environment (they pin other torch versions): ``bash bench/setup_peers.sh``.
Run: .bench-venv/bin/python bench/bench_readers.py [--quick]   (slides from bench/make_slides.py)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from _common import host_line, machine, save

from napari_anonavila.slide import open_slide

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "data"
SHARED = ROOT.parent / "shared" / "data" / "slides"


def _quiet_open(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return open_slide(path)


def tissue_patches(path: Path, n: int, size: int) -> list[tuple[int, int]]:
    """``n`` tissue patches of ``size`` level-0 px, consecutive in grid order from the middle of the grid."""
    from napari_anonavila.grid import make_grid

    s = _quiet_open(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            xy = make_grid(s, patch_px=size).xy_l0()
    finally:
        s.close()
    start = max(0, len(xy) // 2 - n // 2)
    return [(int(x), int(y)) for x, y in xy[start : start + n]]


# ---- patch readers: open() -> read(x, y, size) -> object; close() ----

def ours(path):
    s = _quiet_open(path)
    return (lambda x, y, w: s.read_region((x, y), 0, (w, w))), s.close


def openslide_rgba(path):
    import openslide

    o = openslide.OpenSlide(str(path))
    return (lambda x, y, w: o.read_region((x, y), 0, (w, w))), o.close


def openslide_rgb(path):
    import openslide

    o = openslide.OpenSlide(str(path))
    return (lambda x, y, w: np.asarray(o.read_region((x, y), 0, (w, w)).convert("RGB"))), o.close


def tiffslide_array(path):
    import tiffslide

    t = tiffslide.TiffSlide(str(path))
    return (lambda x, y, w: t.read_region((x, y), 0, (w, w), as_array=True)), t.close


def patch_reads(path: Path, size: int, n: int, rounds: int) -> dict:
    readers = {"ours": ours, "tiffslide": tiffslide_array}
    if path.suffix.lower() in (".svs", ".ndpi", ".mrxs", ".scn"):
        readers = {"ours": ours, "OpenSlide (RGBA image)": openslide_rgba, "OpenSlide + RGB array": openslide_rgb,
                   "tiffslide": tiffslide_array}
    xy = tissue_patches(path, n, size)
    times: dict[str, list[float]] = {k: [] for k in readers}
    names = list(readers)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:  # rotate the order each round
            try:
                read, close = readers[name](path)
            except Exception as err:  # a peer that cannot open a format: reported
                times.pop(name, None)
                print(f"  {name}: cannot open {path.name} ({type(err).__name__}: {err})")
                names.remove(name)
                continue
            t0 = time.perf_counter()
            for x, y in xy:
                read(x, y, size)
            times[name].append(time.perf_counter() - t0)
            close()
    rate = {k: len(xy) / statistics.median(v) for k, v in times.items() if v}
    return {"slide": path.name, "size": size, "patches": len(xy), "patches_per_s": rate,
            "ours_vs": {k: rate["ours"] / v for k, v in rate.items() if k != "ours"}}


def chunk_reads(path: Path, rounds: int, n: int = 48) -> dict:
    """Tile-aligned chunk windows at level 0 and level 2: through level_arrays (napari), the dask levels, and as
    patch reads of the same windows (``read_region`` at that level), each with a cold tile cache."""
    s = _quiet_open(path)
    out: dict = {"slide": path.name}
    try:
        for level in (0, min(2, len(s.level_shapes) - 1)):
            arr = s.level_arrays[level]
            ch, cw = arr.chunks
            H, W = arr.shape[:2]
            rng = np.random.default_rng(level)
            ys = rng.integers(0, max(1, H // ch), n) * ch
            xs = rng.integers(0, max(1, W // cw), n) * cw
            ds = s.level_downsamples[level]
            ways = ("level_arrays", "dask", "read_region")
            times: dict[str, list[float]] = {k: [] for k in ways}
            for r in range(rounds):
                for name in ways[r % 3:] + ways[: r % 3]:  # rotate the order each round
                    s2 = _quiet_open(path)  # cold tile cache for each way
                    t0 = time.perf_counter()
                    for y, x in zip(ys, xs, strict=True):
                        _window(s2, name, level, int(y), int(x), (ch, cw), ds)
                    times[name].append(time.perf_counter() - t0)
                    s2.close()
            px = n * ch * cw
            out[f"level{level}"] = {"chunk": [int(ch), int(cw)],
                                    **{f"{k}_mpx_s": px / statistics.median(v) / 1e6 for k, v in times.items()}}
    finally:
        s.close()
    return out


def _window(s, way: str, level: int, y: int, x: int, hw: tuple[int, int], ds: float) -> np.ndarray:
    """One (h, w) window of ``level`` at level pixel (y, x), the way napari, dask or a patch read gets it."""
    h, w = hw
    if way == "level_arrays":
        return np.asarray(s.level_arrays[level][y : y + h, x : x + w])
    if way == "dask":
        return s.levels[level][y : y + h, x : x + w].compute()
    return s.read_region((round(x * ds), round(y * ds)), level, (w, h))


def tissue_masks(path: Path, rounds: int) -> dict:
    from napari_anonavila.grid.tissue import tissue_mask

    res: dict[str, list[float]] = {"ours": []}
    tia = None
    try:
        from tiatoolbox.wsicore.wsireader import WSIReader

        tia = WSIReader
        res["TIAToolbox (Otsu, 1.25x)"] = []
    except ImportError:
        pass
    frac = {}
    for _ in range(rounds):
        s = _quiet_open(path)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tm = tissue_mask(s)
        res["ours"].append(time.perf_counter() - t0)
        frac["ours"] = tm.fraction
        s.close()
        if tia is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t0 = time.perf_counter()
                r = tia.open(str(path))
                m = r.tissue_mask(resolution=1.25, units="power")
                mask = m.img if hasattr(m, "img") else np.asarray(m)
                res["TIAToolbox (Otsu, 1.25x)"].append(time.perf_counter() - t0)
                frac["TIAToolbox (Otsu, 1.25x)"] = float(np.asarray(mask).astype(bool).mean())
    med = {k: statistics.median(v) for k, v in res.items()}
    return {"slide": path.name, "seconds": med, "fraction": frac,
            "ours_speed_vs": {k: v / med["ours"] for k, v in med.items() if k != "ours"}}


E2E_CODE = r"""
import json, sys, time, warnings
import numpy as np
warnings.simplefilter("ignore")
kind, path, n, workers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
from napari_anonavila.backends import get_backend
from napari_anonavila.grid import make_grid
from napari_anonavila.pipeline import iter_embed_patches
from napari_anonavila.slide import open_slide
s = open_slide(path)
grid = make_grid(s, patch_px=224)
start = max(0, len(grid) // 2 - n // 2)
idx = np.arange(start, min(len(grid), start + n))  # the same patches as tissue_patches()
xy = grid.xy_l0()[idx]
b = get_backend("demo", device="cpu")
def peak_mib():  # this process's own high-water mark (ru_maxrss would carry the parent's over exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
rss0 = peak_mib()
t0 = time.perf_counter()
if kind == "ours":
    for _ in iter_embed_patches(s, grid, b, idx, batch_size=64, workers=workers):
        pass
elif kind == "plain loop":
    import openslide, torch
    from PIL import Image
    o = openslide.OpenSlide(path)
    for i in range(0, len(xy), 64):
        imgs = [o.read_region((int(x), int(y)), 0, (224, 224)).convert("RGB") for x, y in xy[i:i + 64]]
        b.encode_images(b.preprocess(imgs))
t = time.perf_counter() - t0
s.close()
rss = peak_mib()
print(json.dumps({"patches_per_s": len(xy) / t, "peak_rss_mib": rss, "rss_growth_mib": rss - rss0}))
"""


def end_to_end(path: Path, n: int) -> list[dict]:
    rows = []
    runs = [("ours", 1), ("ours", 2), ("ours", 4)]
    if path.suffix.lower() == ".svs":
        runs.append(("plain loop", 1))
    for kind, workers in runs:
        out = subprocess.run([sys.executable, "-c", E2E_CODE, kind, str(path), str(n), str(workers)],
                             capture_output=True, text=True)
        if out.returncode:
            print(f"  {kind}: failed\n{out.stderr[-2000:]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append({"slide": path.name, "method": kind, "threads": workers, **r})
        print("  ", rows[-1], flush=True)
    return rows


def slides(quick: bool) -> list[Path]:
    found = [p for p in (DATA / "large.svs", DATA / "large.ome.tif") if p.exists()]
    if not found:
        sys.exit("no benchmark slides: run bench/make_slides.py first")
    real = [SHARED / n for n in ("cmu-1-small-region.svs", "fluorescence-dapi-40x.ndpi")] if not quick else []
    return found + [p for p in real if p.exists()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    rounds, n = (2, 100) if args.quick else (5, 400)
    result: dict = {"machine": machine(), "reads": [], "chunks": [], "masks": [], "end_to_end": []}
    for path in slides(args.quick):
        print(path.name, flush=True)
        for size in (224, 512):
            result["reads"].append(patch_reads(path, size, n, rounds))
            print("  ", result["reads"][-1], flush=True)
        if path.parent == DATA:
            result["chunks"].append(chunk_reads(path, rounds))
            print("  ", result["chunks"][-1], flush=True)
            result["masks"].append(tissue_masks(path, max(2, rounds // 2)))
            print("  ", result["masks"][-1], flush=True)
            result["end_to_end"] += end_to_end(path, 1000 if args.quick else 3000)
    save("readers", result, report(result))


def report(r: dict) -> str:
    m = r["machine"]
    md = ["## Readers at scale: patch reads, napari chunks, tissue masks, end to end", "",
          f"{host_line(m)}. One run, same slides and patches, alternating rounds "
          "(median). `large.*` are 100,000 x 80,000 px 40x slides from `bench/make_slides.py` (JPEG tiles, full "
          "pyramid); the others are the real slides in `../shared`. Reproduce: `.bench-venv/bin/python "
          "bench/bench_readers.py`.", "", "### Patch reads (level 0, grid order, single thread)", "",
          "| slide | patch | ours (patches/s) | peers (patches/s) | ours vs each |", "|---|---|---|---|---|"]
    for x in r["reads"]:
        peers = ", ".join(f"{k} {v:.0f}" for k, v in x["patches_per_s"].items() if k != "ours")
        vs = ", ".join(f"**{v:.2f}x** {k}" for k, v in x["ours_vs"].items())
        md.append(f"| {x['slide']} | {x['size']} px | {x['patches_per_s']['ours']:.0f} | {peers} | {vs} |")
    md += ["", "### napari level chunks (tile-aligned windows, cold tile cache)", "",
           "| slide | level | chunk | level_arrays (napari) | dask levels | our patch reads, same windows | "
           "our 512-px level-0 patch reads |", "|---|---|---|---|---|---|---|"]
    for c in r["chunks"]:
        p512 = next(x for x in r["reads"] if x["slide"] == c["slide"] and x["size"] == 512)
        ref = p512["patches_per_s"]["ours"] * 512 * 512 / 1e6
        for k, v in c.items():
            if k.startswith("level"):
                same = v["read_region_mpx_s"]
                md.append(f"| {c['slide']} | {k[5:]} | {v['chunk'][0]} x {v['chunk'][1]} | "
                          f"{v['level_arrays_mpx_s']:.0f} Mpx/s (**{v['level_arrays_mpx_s'] / same:.2f}x** same "
                          f"windows, {v['level_arrays_mpx_s'] / ref:.2f}x level 0) | {v['dask_mpx_s']:.0f} Mpx/s | "
                          f"{same:.0f} Mpx/s | {ref:.0f} Mpx/s |")
    md += ["", "### Tissue mask", "", "| slide | ours | peers | tissue fraction |", "|---|---|---|---|"]
    for t in r["masks"]:
        peers = ", ".join(f"{k} {v:.2f} s ({r_:.2f}x ours)" for (k, v), r_ in
                          zip([(k, v) for k, v in t["seconds"].items() if k != "ours"], t["ours_speed_vs"].values(),
                              strict=True)) or "TIAToolbox not installed"
        fr = ", ".join(f"{k} {v:.0%}" for k, v in t["fraction"].items())
        md.append(f"| {t['slide']} | {t['seconds']['ours']:.2f} s | {peers} | {fr} |")
    md += ["", "### End to end: read + encode (demo encoder, read-bound), 224-px tissue patches", "",
           "| slide | method | reader threads | patches/s | peak RSS | of which during the run |",
           "|---|---|---|---|---|---|"]
    for e in r["end_to_end"]:
        md.append(f"| {e['slide']} | {e['method']} | {e['threads']} | {e['patches_per_s']:.0f} | "
                  f"{e['peak_rss_mib']:.0f} MiB | {e.get('rss_growth_mib', float('nan')):.0f} MiB |")
    return "\n".join(md)


if __name__ == "__main__":
    main()
