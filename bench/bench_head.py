"""The batched head against the per-image formulation (the authors' loop), at B=100 with the 92/48 pools.

Run: .venv/bin/python bench/bench_head.py   -> bench/results/head.json and docs/benchmarks.md
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from _common import host_line, machine, median_time, save

from napari_anonavila.head import MLP, text_augmented_embeddings


def per_image(v, tn, ta, s, mlp):
    """The authors' formulation: a Python loop over images, concatenating [v; exp(w) t] for every term."""
    out_n, out_a = [], []
    for i in range(v.shape[0]):
        for text, out in ((tn, out_n), (ta, out_a)):
            w = torch.softmax(s * (v[i : i + 1] @ text.T), dim=-1)  # (1, K)
            x = torch.cat([v[i : i + 1].expand(text.shape[0], -1), torch.exp(w.T) * text], dim=1)  # (K, 2D)
            out.append(mlp(x).mean(0))
    return torch.stack(out_n), torch.stack(out_a)


def run(device: str = "cpu", b: int = 100, d: int = 512) -> dict:
    torch.manual_seed(0)
    mlp = MLP(d).to(device).eval()
    v = F.normalize(torch.randn(b, d, device=device), dim=1)
    tn = F.normalize(torch.randn(92, d, device=device), dim=1)
    ta = F.normalize(torch.randn(48, d, device=device), dim=1)
    s = 100.0
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    with torch.no_grad():
        ref = per_image(v, tn, ta, s, mlp)
        ours = text_augmented_embeddings(v, tn, ta, s, mlp)
        err = max(float((a - r).abs().max()) for a, r in zip(ours, ref, strict=False))
        t_ref = median_time(lambda: (per_image(v, tn, ta, s, mlp), sync()), repeats=7)
        t_ours = median_time(lambda: (text_augmented_embeddings(v, tn, ta, s, mlp), sync()), repeats=21)
    return {"device": device, "batch": b, "dim": d, "pools": [92, 48], "per_image_ms": t_ref * 1e3,
            "batched_ms": t_ours * 1e3, "speedup": t_ref / t_ours, "max_abs_diff": err,
            "batched_images_per_s": b / t_ours}


if __name__ == "__main__":
    rows = [run("cpu")]
    if torch.cuda.is_available():
        rows.append(run("cuda"))
    m = machine()
    md = ["## Head: batched vs per-image (B=100, D=512, pools 92/48)", "",
          f"{host_line(m)}, torch {m['versions'].get('torch')}, "
          f"{m['torch_threads']} threads. Medians of 7 (per-image) and 21 (batched) runs, both in the same process.",
          "Reproduce: `.venv/bin/python bench/bench_head.py`.", "",
          "| device | per-image (authors' loop) | batched (ours) | speed-up | images/s (batched) | max abs diff |",
          "|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['device']} | {r['per_image_ms']:.1f} ms | {r['batched_ms']:.2f} ms | {r['speedup']:.1f}x | "
                  f"{r['batched_images_per_s']:.0f} | {r['max_abs_diff']:.1e} |")
    save("head", {"machine": m, "results": rows}, "\n".join(md))
