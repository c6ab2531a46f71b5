"""GPU benchmark (issue 15): encoder throughput by precision, batch, torch.compile and channels-last; accuracy of
each precision against float32 on real tissue; the reader with all cores; end to end; the paper's three figures;
the head against the authors' per-image loop.

Runs unchanged on any CUDA machine: ``python bench/bench_gpu.py [--large SLIDE]`` (``scripts/gpu/run.sh`` installs
the wheelhouse and runs it). ``--device cpu --quick`` exercises every code path on the CPU, to check the script;
it writes nothing. Models: the CONCH architecture (conch-fork, seeded random weights, 448 px) and open_clip
ViT-B-16 (seeded random weights, 224 px). The paper: 0.69 M trainable parameters, 3.61 ms per image at batch 28
(RTX 3090), 2098 MiB peak GPU memory.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from _common import host_line, machine, save
from _vit import vit_b16_weights
from bench_head import run as head_run

from napari_anonavila.backends import get_backend
from napari_anonavila.detector import Detector
from napari_anonavila.grid import make_grid
from napari_anonavila.pipeline import _read_patches, iter_embed_patches
from napari_anonavila.result import SlideResult
from napari_anonavila.scoring import PatchScores
from napari_anonavila.slide import open_slide
from napari_anonavila.training import TrainConfig

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "slides"
REAL = ["cmu-1-small-region.svs", "tcga-cr-7395-01a-01-ts1.svs"]
PRECISIONS = ("float32", "tf32", "bfloat16", "float16")


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def conch_weights() -> Path | None:
    try:
        from napari_anonavila.backends.conch import build_conch_model
    except ImportError:
        return None
    path = Path(tempfile.gettempdir()) / "anonavila-bench-conch-seed0.bin"
    if not path.is_file():
        torch.manual_seed(0)
        torch.save(build_conch_model().state_dict(), path)
    return path


def _quiet_open(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return open_slide(path, mpp=None)


def _timed(b, x, repeats: int) -> float:
    b.encode_images(x)
    sync(b.device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        b.encode_images(x)
        sync(b.device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def encoder_grid(spec: str, device: str, batches, repeats: int) -> list[dict]:
    """images/s for each precision x batch, plain, channels-last, and torch.compile (on the image tower)."""
    rows = []
    for variant in ("plain", "channels_last", "compile"):
        b = get_backend(spec, device=device)
        if variant == "channels_last":
            b.model.to(memory_format=torch.channels_last)
        if variant == "compile":
            tower = getattr(b.model, "visual", None)
            if tower is None:
                continue
            b.model.visual = torch.compile(tower)
        for precision in PRECISIONS:
            b.precision = precision
            for bs in batches:
                x = torch.randn(bs, 3, b.image_size, b.image_size, device=b.device)
                if variant == "channels_last":
                    x = x.contiguous(memory_format=torch.channels_last)
                try:
                    rate = bs / _timed(b, x, repeats)
                except torch.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    rate = float("nan")
                rows.append({"variant": variant, "precision": precision, "batch": bs, "images_per_s": rate})
                print("   ", rows[-1], flush=True)
        del b
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return rows


def accuracy(spec: str, device: str, slides: list[Path], quick: bool) -> list[dict]:
    """Per precision, against float32 on the same real tissue patches: Spearman of patch scores, top-10 overlap,
    largest relative change of the slide scores. The detector is fitted on each slide's own float32 embeddings."""
    from scipy.stats import spearmanr

    b = get_backend(spec, device=device)
    rows = []
    for path in slides:
        slide = _quiet_open(path)
        grid = make_grid(slide, patch_px=512 if quick else 128)
        idx = np.arange(len(grid))
        embs = {}
        for precision in PRECISIONS:
            b.precision = precision
            embs[precision] = torch.cat([e.float().cpu() for _, e, _ in
                                         iter_embed_patches(slide, grid, b, idx, batch_size=64)])
        det = Detector.create(b)
        det.fit(embs["float32"], config=TrainConfig(batch_size=64, accumulate=1, epochs=2 if quick else 10))
        ref = det.score_embeddings(embs["float32"])
        names = det.term_names("normal"), det.term_names("abnormal")
        ref_slide = SlideResult.from_run({}, grid, ref, *names, "sum", None).slide_scores()
        top_ref = set(np.argsort(-ref.score)[:10].tolist())
        for precision in PRECISIONS[1:]:
            s: PatchScores = det.score_embeddings(embs[precision])
            sl = SlideResult.from_run({}, grid, s, *names, "sum", None).slide_scores()
            rows.append({"slide": path.name, "patches": len(grid), "precision": precision,
                         "spearman": float(spearmanr(ref.score, s.score)[0]),
                         "top10_overlap": len(top_ref & set(np.argsort(-s.score)[:10].tolist())) / 10,
                         "slide_scores_max_rel_diff": max(abs(sl[k] - ref_slide[k]) / max(abs(ref_slide[k]), 1e-12)
                                                          for k in ref_slide if math.isfinite(ref_slide[k])),
                         "embedding_max_abs_diff": float((embs[precision] - embs["float32"]).abs().max())})
            print("   ", rows[-1], flush=True)
        slide.close()
    return rows


def reader(path: Path, b, threads: int, n: int) -> float:
    """Patches/s read and prepared (resize, crop) by ``threads`` reader threads, as scoring reads them."""
    slide = _quiet_open(path)
    grid = make_grid(slide, patch_px=b.image_size)
    xy = grid.xy_l0()[: n]
    level = slide.best_level(grid.patch_size_l0 / b.image_size)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda s: _read_patches(slide, xy[s : s + 8], grid.patch_size_l0, level, b),
                      range(0, len(xy), 8)))
    rate = len(xy) / (time.perf_counter() - t0)
    slide.close()
    return rate


def end_to_end(path: Path, b, det, batch: int, threads: int, n: int) -> dict:
    """Read, preprocess, encode, head and score: patches/s, against read-only and encode-only."""
    slide = _quiet_open(path)
    grid = make_grid(slide, patch_px=b.image_size)
    idx = np.arange(min(n, len(grid)))
    t0 = time.perf_counter()
    for _, e, _ in iter_embed_patches(slide, grid, b, idx, batch_size=batch, workers=threads, prefetch=4):
        det.score_embeddings(e)
    sync(b.device)
    e2e = len(idx) / (time.perf_counter() - t0)
    slide.close()
    read = reader(path, b, threads, len(idx))
    enc = batch / _timed(b, torch.randn(batch, 3, b.image_size, b.image_size, device=b.device), 5)
    return {"slide": path.name, "patches": len(idx), "threads": threads, "batch": batch, "end_to_end": e2e,
            "read_only": read, "encode_only": enc, "vs_slower_stage": e2e / min(read, enc)}


def paper_figures(b, det, repeats: int) -> dict:
    """Trainable parameters, latency per image at batch 28 (VLM + head), peak GPU memory: the paper's way."""
    x = torch.randn(28, 3, b.image_size, b.image_size, device=b.device)
    if b.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    det.score_embeddings(b.encode_images(x))
    times = []
    for _ in range(repeats):
        sync(b.device)
        t0 = time.perf_counter()
        det.score_embeddings(b.encode_images(x))
        sync(b.device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**20 if b.device.type == "cuda" else None
    return {"trainable_params": sum(p.numel() for p in det.mlp.parameters()), "precision": b.precision,
            "latency_ms_per_image_b28": 1e3 * statistics.median(times) / 28, "peak_gpu_mib": peak}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--large", type=Path, help="a large synthetic slide (bench/make_slides.py or write_wsi)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, to check the script (nothing written)")
    ap.add_argument("--models", nargs="+", default=["conch", "vit"], choices=["conch", "vit"])
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device here: the GPU figures are not measured (run scripts/gpu/run.sh on a GPU machine)")
        return
    q = args.quick
    threads = os.cpu_count() or 1
    batches = (8,) if q else (32, 64, 128, 256, 512)
    models = [("open_clip ViT-B-16", f"open_clip:ViT-B-16@{vit_b16_weights()}")] if "vit" in args.models else []
    cw = conch_weights() if "conch" in args.models else None
    if cw is not None:
        models.insert(0, ("CONCH (conch_ViT-B-16)", f"conch:{cw}"))
    local = Path(__file__).resolve().parent / "data" / "real"  # carried to the GPU machine by scripts/gpu
    real = [d / n for n in REAL for d in (SHARED, local) if (d / n).exists()]
    real = list({p.name: p for p in real}.values())[: 1 if q else None]
    slides = real + ([args.large] if args.large else [])
    res: dict = {"machine": machine(), "threads": threads, "models": []}
    for name, spec in models:
        print(name, flush=True)
        row: dict = {"model": name, "encoder": encoder_grid(spec, args.device, batches, 2 if q else 5)}
        row["accuracy"] = accuracy(spec, args.device, real, q)
        b = get_backend(spec, device=args.device)
        det = Detector.create(b)
        det.fit(torch.nn.functional.normalize(torch.randn(256, b.embed_dim), dim=1),
                config=TrainConfig(batch_size=64, accumulate=1, epochs=1))
        row["image_size"] = b.image_size
        row["paper"] = [paper_figures(b, det, 3 if q else 20)]
        b.precision = "bfloat16"
        row["paper"].append(paper_figures(b, det, 3 if q else 20))
        b.precision = "float32"
        best = max((r for r in row["encoder"] if r["variant"] == "plain" and r["precision"] == "float32"),
                   key=lambda r: r["images_per_s"])["batch"]
        row["end_to_end"] = [end_to_end(p, b, det, best, threads, 200 if q else 20000) for p in slides]
        row["reader_threads"] = {str(t): reader(slides[-1], b, t, 200 if q else 4000)
                                 for t in sorted({1, 4, threads})}
        print("   ", row["end_to_end"], row["reader_threads"], row["paper"], flush=True)
        res["models"].append(row)
    res["head"] = [head_run("cpu")] + ([head_run("cuda")] if torch.cuda.is_available() else [])
    if q:
        print("quick check done: every code path ran")
        return
    save("gpu", res, report(res))


def report(r: dict) -> str:
    m = r["machine"]
    md = ["## GPU: encoders, precision, reading, end to end, and the paper's figures", "",
          f"{m['gpu']}; {host_line(m)}, torch {m['versions'].get('torch')}. "
          "Reproduce: `bash scripts/gpu/prepare_wheelhouse.sh` here, then `bash scripts/gpu/run.sh` there.", ""]
    for row in r["models"]:
        md += [f"### {row['model']} ({row['image_size']} px)", "", "Encoder images/s:", "",
               "| variant | precision | " + " | ".join(f"batch {b}" for b in sorted({e['batch'] for e in
                                                                                  row['encoder']})) + " |",
               "|---|---|" + "---|" * len({e['batch'] for e in row['encoder']})]
        keys = sorted({(e["variant"], e["precision"]) for e in row["encoder"]}, key=lambda k: (k[0], PRECISIONS.index(
            k[1])))
        for v, p in keys:
            vals = [e["images_per_s"] for e in row["encoder"] if e["variant"] == v and e["precision"] == p]
            md.append(f"| {v} | {p} | " + " | ".join(f"{x:.0f}" for x in vals) + " |")
        md += ["", "Accuracy against float32 (same patches, same detector):", "",
               "| slide | patches | precision | Spearman | top-10 overlap | slide scores, max rel. change |",
               "|---|---|---|---|---|---|"]
        for a in row["accuracy"]:
            md.append(f"| {a['slide']} | {a['patches']} | {a['precision']} | {a['spearman']:.6f} | "
                      f"{a['top10_overlap']:.1f} | {a['slide_scores_max_rel_diff']:.1e} |")
        md += ["", "| slide | threads | batch | end to end | read only | encode only | e2e / slower stage |",
               "|---|---|---|---|---|---|---|"]
        for e in row["end_to_end"]:
            md.append(f"| {e['slide']} | {e['threads']} | {e['batch']} | **{e['end_to_end']:.0f}** | "
                      f"{e['read_only']:.0f} | {e['encode_only']:.0f} | {e['vs_slower_stage']:.2f} |")
        md += ["", "Reader patches/s by threads: " + ", ".join(f"{k}: {v:.0f}" for k, v in
                                                                row["reader_threads"].items()), ""]
        for p in row["paper"]:
            md.append(f"- paper's figures ({p['precision']}): {p['trainable_params']:,} trainable parameters, "
                      f"{p['latency_ms_per_image_b28']:.2f} ms per image at batch 28, peak {p['peak_gpu_mib']:.0f} "
                      "MiB (paper, RTX 3090: 0.69 M, 3.61 ms, 2098 MiB)")
        md.append("")
    for h in r["head"]:
        md.append(f"- head alone on {h['device']}: {h['batched_ms']:.2f} ms batched vs {h['per_image_ms']:.1f} ms "
                  f"for the authors' per-image loop ({h['speedup']:.0f}x), B=100")
    return "\n".join(md)


if __name__ == "__main__":
    main()
