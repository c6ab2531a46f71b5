"""The image encoder on a CPU: per-patch cost of each execution path, and each faster path's accuracy against the
exact float32 one on real slides.

Speed: a ViT-B/16 (224 px, open_clip) and CONCH's architecture (ViT-B/16 at 448 px, if the [conch] extra is
installed), both with seeded random weights loaded through our backends; the same batch of real tissue patches
for every path; 5 alternating rounds after one warm-up batch; CPU time (all threads) and wall time per patch.
Paths: float32 eager, a batch of 32 in forward passes of 8 side by side on one thread each (the default on a
CPU), the same passes one after another with the threads sharing each, and one pass; float32
with ``torch.compile`` (inductor, weight freezing; its compile time apart); int8 dynamic quantisation of the
linear layers (``--precision int8``); bfloat16 weights (``--precision bfloat16`` on a CPU); bfloat16 CPU autocast (what
``--precision bfloat16`` did before).

Accuracy: a detector fitted on float32 ViT-B/16 embeddings of one real slide; then, on every real slide in
../shared/data/slides, the same grid patches embedded by each path and scored by that one detector: Spearman of the
patch scores, overlap of the top 10, and the change of the slide scores (max, top 1%) against float32. Random
weights make nearby patches' embeddings close together, so precision noise weighs more than it would with trained
weights: a pessimistic test.

Run: .venv/bin/python bench/bench_encoder_cpu.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from _common import host_line, machine, save
from _vit import vit_b16_weights

from napari_anonavila.backends import get_backend

SLIDES = Path(__file__).resolve().parents[2] / "shared" / "data" / "slides"
REAL = ["cmu-1-small-region.svs", "tcga-cr-7395-01a-01-ts1.svs", "kidney-48-5.tif", "os-2-ki67-crop.ome.tif"]


def real_patches(path: Path, n: int, px: int = 256) -> list[np.ndarray]:
    """``n`` tissue patches of ``px`` level-0 pixels from the middle of our grid."""
    from napari_anonavila.grid import make_grid
    from napari_anonavila.slide import open_slide

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with open_slide(path) as s:
            xy = make_grid(s, patch_px=px).xy_l0()
            start = max(0, len(xy) // 2 - n // 2)
            return [s.read_region((int(x), int(y)), 0, (px, px)) for x, y in xy[start : start + n]]


def paths(spec: str, conch: bool):
    """name -> backend with that execution path (built lazily: each holds a model)."""
    def f32():
        return get_backend(spec, device="cpu")

    def compiled():
        import torch._inductor.config as cfg

        cfg.freezing = True
        b = f32()
        b.model.visual = torch.compile(b.model.visual)
        return b

    def int8():
        return get_backend(spec, device="cpu", precision="int8")

    def bf16_autocast():
        b = f32()
        b.precision = "bfloat16"  # the autocast path, as before the weights were cast
        return b

    def one_pass():
        b = f32()
        b.micro_batch = 0  # the batch of 32 in one forward pass, as before
        return b

    def shared_threads():
        b = f32()
        b.cpu_streams = False  # passes of 8 one after another, the threads sharing each (as before)
        return b

    out = {"float32 (default: passes of 8)": (f32, 32),
           "float32, passes of 8 one after another on all threads (before)": (shared_threads, 32),
           "float32, one pass of 32 (before)": (one_pass, 32),
           "int8 (--precision int8)": (int8, 32),
           "bfloat16 weights (--precision bfloat16)": (lambda: get_backend(spec, device="cpu", precision="bfloat16"),
                                                       32),
           "bfloat16 autocast (before)": (bf16_autocast, 32)}
    if not conch:
        out["float32 + torch.compile"] = (compiled, 32)
    return out


def speed(spec: str, pixels_src: list[np.ndarray], rounds: int, conch: bool) -> dict:
    made = {}
    for name, (make, bs) in paths(spec, conch).items():
        bs = 16 if conch else bs  # CONCH's 448-px passes are 4x dearer: batches of 16 keep the run short
        t0 = time.perf_counter()
        b = make()
        x = b.to_pixels([b.prepare(p) for p in (pixels_src * 8)[:bs]])
        b.encode_images(x)  # warm-up (and compilation)
        made[name] = (b, x, time.perf_counter() - t0)
    res = {k: {"cpu": [], "wall": []} for k in made}
    for r in range(rounds):
        for name in (list(made)[r % len(made):] + list(made)[: r % len(made)]):
            b, x, _ = made[name]
            c0, t0 = time.process_time(), time.perf_counter()
            b.encode_images(x)
            res[name]["cpu"].append((time.process_time() - c0) / len(x))
            res[name]["wall"].append((time.perf_counter() - t0) / len(x))
    return {k: {"cpu_ms": [1e3 * t for t in v["cpu"]], "wall_ms": [1e3 * t for t in v["wall"]],
                "setup_s": made[k][2]} for k, v in res.items()}


def accuracy(spec: str, n: int) -> list[dict]:
    from scipy.stats import spearmanr

    from napari_anonavila.detector import Detector
    from napari_anonavila.maps.slide_scores import top_percent_mean
    from napari_anonavila.training import TrainConfig

    makers = paths(spec, False)
    backends = {k: makers[k][0]() for k in ("float32 (default: passes of 8)", "bfloat16 weights (--precision bfloat16)",
                                           "int8 (--precision int8)")}
    f32 = backends["float32 (default: passes of 8)"]
    slides = [SLIDES / s for s in REAL if (SLIDES / s).is_file()]
    det = Detector.create(f32)
    fit = f32.embed_images(real_patches(slides[0], n))
    det.fit(fit, config=TrainConfig(epochs=10, batch_size=32, accumulate=1))
    rows = []
    for path in slides:
        pats = real_patches(path, n)
        if len(pats) < 20:
            print(f"{path.name}: {len(pats)} tissue patches, skipped")
            continue
        scores = {}
        for name, b in backends.items():
            embs = torch.cat([b.embed_images(pats[i : i + 32]) for i in range(0, len(pats), 32)])
            scores[name] = det.score_embeddings(embs).score
        ref = scores["float32 (default: passes of 8)"]
        top = set(np.argsort(-ref)[:10])
        for name, s in scores.items():
            if name == "float32 (default: passes of 8)":
                continue
            rows.append({"slide": path.name, "path": name, "patches": len(pats),
                         "spearman": float(spearmanr(ref, s).statistic),
                         "top10_overlap": len(top & set(np.argsort(-s)[:10])),
                         "max_change": float(abs(s.max() - ref.max()) / ref.max()),
                         "top1_change": float(abs(top_percent_mean(s) - top_percent_mean(ref)) / top_percent_mean(ref)),
                         "score_spread": float(ref.std())})
        print(rows[-2:], flush=True)
    return rows


def report(res: dict, acc: list[dict], m: dict, rounds: int) -> str:
    md = ["## The image encoder on a CPU: each path's cost and accuracy", "",
          f"{host_line(m)}, torch {m['versions'].get('torch')}, "
          f"{m['torch_threads']} threads. Seeded random weights loaded through our backends; the same real tissue "
          f"patches for every path; {rounds} alternating rounds after a warm-up; median and range per patch. CPU "
          "time counts every thread. Reproduce: `.venv/bin/python bench/bench_encoder_cpu.py`.", "",
          "| model | path | CPU ms/patch (median, range) | wall ms/patch | vs float32 (CPU) | setup s |",
          "|---|---|---|---|---|---|"]
    for model, r in res.items():
        base = statistics.median(r["float32 (default: passes of 8)"]["cpu_ms"])
        for name, v in r.items():
            c, w = v["cpu_ms"], v["wall_ms"]
            md.append(f"| {model} | {name} | {statistics.median(c):.0f} ({min(c):.0f}-{max(c):.0f}) | "
                      f"{statistics.median(w):.0f} | **{base / statistics.median(c):.2f}x** | {v['setup_s']:.1f} |")
    if acc:
        md += ["", "Accuracy against float32 (ViT-B/16, one detector fitted on float32 embeddings of the first "
               "slide; the same grid patches of each real slide):", "",
               "| slide | path | patches | Spearman | top-10 overlap | max change | top-1% change |",
               "|---|---|---|---|---|---|---|"]
        for a in acc:
            md.append(f"| {a['slide']} | {a['path']} | {a['patches']} | {a['spearman']:.4f} | {a['top10_overlap']}/10"
                      f" | {100 * a['max_change']:.3f}% | {100 * a['top1_change']:.3f}% |")
    return "\n".join(md)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    rounds = 2 if args.quick else 5
    src = real_patches(SLIDES / REAL[0], 32)
    res = {"ViT-B/16, 224 px": speed(f"open_clip:ViT-B-16@{vit_b16_weights()}", src, rounds, False)}
    print(res, flush=True)
    try:
        import conch.open_clip_custom  # noqa: F401

        from napari_anonavila.backends.conch import build_conch_model

        w = Path("/tmp/anonavila-bench-conch-seed0.bin")
        if not w.is_file():
            torch.manual_seed(0)
            torch.save(build_conch_model().state_dict(), w)
        res["CONCH architecture, 448 px"] = speed(f"conch:{w}", src[:8], rounds, True)
        print(res["CONCH architecture, 448 px"], flush=True)
    except ImportError:
        print("CONCH architecture skipped: the [conch] extra is not installed")
    acc = accuracy(f"open_clip:ViT-B-16@{vit_b16_weights()}", 64 if args.quick else 256)
    m = machine()
    save("encoder_cpu", {"machine": m, "speed": res, "accuracy": acc}, report(res, acc, m, rounds))


if __name__ == "__main__":
    main()
