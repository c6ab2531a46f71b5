"""Patch reads, warm and cold, in grid and in random order: ours against fastslide, OpenSlide and tiffslide, on
one clock.

Each run opens the slide (its time reported apart), reads the same N tissue patches (224 px at level 0) in one
calling thread, as a plain loop does, and closes it; wall time and CPU time (every thread of the process) per patch.
Orders: ``grid`` (N consecutive patches of our tissue grid, as scoring reads them) and ``random`` (N tissue patches
drawn at random over the whole slide, seeded). ``cold``: the page cache is dropped before each run (needs root);
``warm``: the file is in the page cache. 5 rounds, the tools' order rotating each round; median and range.
Pixels: each tool's largest difference from OpenSlide on the first 20 patches (0: identical).

Slides: bench/data/real-aperio.svs and real-ome.ome.tif (bench/make_real_tile_slides.py: real tissue in Aperio's
and QuPath's layouts). Peers in their own environment: ``bash bench/setup_peers.sh``.
``--load N``: N busy processes (one pure-Python loop each) run throughout, as on a shared machine; the results go
to their own section (reads_loaded), warm cache only.
Run: .bench-venv/bin/python bench/bench_reads.py [--quick] [--load N]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
from _common import drop_caches, host_line, machine, save

from napari_anonavila.slide import open_slide

DATA = Path(__file__).resolve().parent / "data"
SIZE = 224


def _ours(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = open_slide(path)
    return (lambda x, y: s.read_region((x, y), 0, (SIZE, SIZE))), s.close


def _fastslide(path):
    import fastslide

    f = fastslide.FastSlide.from_file_path(str(path))
    return (lambda x, y: f.read_region((x, y), 0, (SIZE, SIZE)).numpy()), f.close


def _openslide(path):
    import openslide

    o = openslide.OpenSlide(str(path))
    return (lambda x, y: np.asarray(o.read_region((x, y), 0, (SIZE, SIZE)).convert("RGB"))), o.close


def _tiffslide(path):
    import tiffslide

    t = tiffslide.TiffSlide(str(path))
    return (lambda x, y: t.read_region((x, y), 0, (SIZE, SIZE), as_array=True)), t.close


TOOLS = {"ours": _ours, "fastslide": _fastslide, "OpenSlide": _openslide, "tiffslide": _tiffslide}


def patches(path: Path, n: int) -> dict[str, list[tuple[int, int]]]:
    from napari_anonavila.grid import make_grid

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with open_slide(path) as s:
            xy = make_grid(s, patch_px=SIZE).xy_l0()
    start = max(0, len(xy) // 2 - n // 2)
    pick = np.random.default_rng(0).choice(len(xy), min(n, len(xy)), replace=False)
    return {"grid": [(int(x), int(y)) for x, y in xy[start : start + n]],
            "random": [(int(x), int(y)) for x, y in xy[pick]]}


def _warm(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(64 << 20):
            pass


def one_run(tool: str, path: Path, xy, cold: bool) -> dict:
    if cold:
        drop_caches()
    else:
        _warm(path)
    t0 = time.perf_counter()
    read, close = TOOLS[tool](path)
    t1, c1 = time.perf_counter(), time.process_time()
    for x, y in xy:
        read(x, y)
    t2, c2 = time.perf_counter(), time.process_time()
    close()
    return {"open_s": t1 - t0, "wall_ms": 1e3 * (t2 - t1) / len(xy), "cpu_ms": 1e3 * (c2 - c1) / len(xy)}


def pixels(path: Path, xy) -> dict[str, int]:
    ref_read, ref_close = _openslide(path)
    out = {}
    for tool in TOOLS:
        read, close = TOOLS[tool](path)
        out[tool] = int(max(np.abs(read(x, y)[..., :3].astype(int) - ref_read(x, y)).max() for x, y in xy[:20]))
        close()
    ref_close()
    return out


def _busy() -> None:
    while True:
        pass


def measure(path: Path, n: int, rounds: int, caches: tuple[bool, ...] = (False, True)) -> dict:
    xy = patches(path, n)
    res: dict = {"slide": path.name, "patches": len(xy["grid"]), "pixels_vs_openslide": pixels(path, xy["grid"]),
                 "runs": {}}
    tools = list(TOOLS)
    for r in range(rounds):
        for cold in caches:
            for order in ("grid", "random"):
                for tool in tools[r % len(tools):] + tools[: r % len(tools)]:
                    key = f"{tool}|{order}|{'cold' if cold else 'warm'}"
                    res["runs"].setdefault(key, []).append(one_run(tool, path, xy[order], cold))
        print(f"  round {r + 1} done", flush=True)
    return res


def report(rows: list[dict], m: dict, rounds: int, cold_ok: bool, load: int = 0) -> str:
    if load:
        md = [f"## Patch reads under load: {load} busy processes on {m['cores']} cores (warm cache)", "",
              f"{host_line(m)}, load {m['load_1min']:.2f} at the end. As the "
              f"section above, with {load} busy processes (a pure-Python loop each) running throughout, as on a "
              f"shared machine; warm cache; {rounds} rounds, tools rotating, median (range). Reproduce: "
              f"`.bench-venv/bin/python bench/bench_reads.py --load {load}`.", ""]
    else:
        md = ["## Patch reads: warm and cold, grid and random order, on one clock", "",
              f"{host_line(m)}. One calling thread; 224-px patches at level 0; "
              f"each run opens, reads and closes; {rounds} rounds, tools rotating, median (range). Cold: page cache "
              f"dropped before each run ({'done' if cold_ok else 'NOT possible here: cold equals warm'}). CPU time "
              "counts every thread (ours decodes a window's tiles in parallel; fastslide does too). Open time apart. "
              "Reproduce: `.bench-venv/bin/python bench/bench_reads.py`.", ""]
    for row in rows:
        px = ", ".join(f"{k} {v}" for k, v in row["pixels_vs_openslide"].items())
        md += [f"### {row['slide']} ({row['patches']} patches; largest pixel difference from OpenSlide: {px})", "",
               "| cache | order | tool | wall ms/patch | CPU ms/patch | open ms | ours vs it (wall) |",
               "|---|---|---|---|---|---|---|"]
        for cache in ("warm",) if load else ("warm", "cold"):
            for order in ("grid", "random"):
                ours = statistics.median(x["wall_ms"] for x in row["runs"][f"ours|{order}|{cache}"])
                for tool in TOOLS:
                    v = row["runs"][f"{tool}|{order}|{cache}"]
                    w = [x["wall_ms"] for x in v]
                    c = [x["cpu_ms"] for x in v]
                    o = statistics.median(x["open_s"] for x in v) * 1e3
                    vs = "" if tool == "ours" else f"**{statistics.median(w) / ours:.2f}x**"
                    md.append(f"| {cache} | {order} | {tool} | {statistics.median(w):.2f} ({min(w):.2f}-{max(w):.2f})"
                              f" | {statistics.median(c):.2f} | {o:.0f} | {vs} |")
        md.append("")
    return "\n".join(md)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--load", type=int, default=0, help="busy processes running throughout")
    args = ap.parse_args()
    rounds, n = (2, 100) if args.quick else (5, 300)
    paths = [p for p in (DATA / "real-aperio.svs", DATA / "real-ome.ome.tif") if p.exists()]
    if not paths:
        raise SystemExit("no benchmark slides: run bench/make_real_tile_slides.py first")
    import multiprocessing as mp

    cold_ok = drop_caches()
    busy = [mp.Process(target=_busy, daemon=True) for _ in range(args.load)]
    for b in busy:
        b.start()
    rows = []
    try:
        for p in paths:
            print(p.name, flush=True)
            rows.append(measure(p, n, rounds, (False,) if args.load else (False, True)))
        m = machine()
    finally:
        for b in busy:
            b.terminate()
    name = "reads_loaded" if args.load else "reads"
    save(name, {"machine": m, "rounds": rounds, "cold": cold_ok, "load": args.load, "results": rows},
         report(rows, m, rounds, cold_ok, args.load))


if __name__ == "__main__":
    main()
