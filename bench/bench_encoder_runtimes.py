"""Other CPU runtimes for the image encoder: ONNX Runtime and OpenVINO against our float32 path (issue 24 asks
whether they help).

ViT-B/16 (224 px, open_clip, seeded random weights loaded through our backend). Its image tower is exported once to
ONNX (torch's dynamo exporter, dynamic batch); ONNX Runtime and OpenVINO (float32 inference, 2 threads) run that
file. Every path embeds the same batch of 32 real tissue patches, preprocessed once by our backend; 5 alternating
rounds after a warm-up; CPU time (all threads) and wall time per patch, median (range); the largest difference of
each runtime's embeddings from ours. A runtime that is not installed is skipped and says so. The packages live in
the bench environment only: `.bench-venv/bin/pip install onnxruntime onnx onnxscript openvino`.

Run: .bench-venv/bin/python bench/bench_encoder_runtimes.py
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import host_line, machine, save
from _vit import vit_b16_weights
from bench_encoder_cpu import REAL, SLIDES, real_patches

from napari_anonavila.backends import get_backend

ROUNDS, BATCH, THREADS = 5, 32, 2


def _export(visual: torch.nn.Module, example: torch.Tensor) -> Path:
    path = Path(tempfile.gettempdir()) / "anonavila-bench-vit-b-16-seed0.onnx"
    if not path.is_file():
        n = torch.export.Dim("n", min=1, max=256)
        with torch.no_grad():
            torch.onnx.export(visual, (example[:2],), str(path), input_names=["x"], output_names=["y"],
                              dynamic_shapes=({0: n},), opset_version=18, dynamo=True)
    return path


def _onnxruntime(onnx: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = THREADS, 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(onnx), so, providers=["CPUExecutionProvider"])
    return f"ONNX Runtime {ort.__version__}", lambda x, bs: [sess.run(None, {"x": x[i:i + bs]})[0]
                                                            for i in range(0, len(x), bs)]


def _openvino(onnx: Path):
    import openvino as ov

    compiled = ov.Core().compile_model(str(onnx), "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                          "INFERENCE_NUM_THREADS": THREADS,
                                                          "PERFORMANCE_HINT": "LATENCY"})
    return f"OpenVINO {ov.__version__.split('-')[0]}", lambda x, bs: [compiled(x[i:i + bs])[0]
                                                                      for i in range(0, len(x), bs)]


def main() -> None:
    torch.set_num_threads(THREADS)
    backend = get_backend(f"open_clip:ViT-B-16@{vit_b16_weights()}", device="cpu")
    pixels = backend.to_pixels([backend.prepare(p) for p in (real_patches(SLIDES / REAL[0], BATCH) * 8)[:BATCH]])
    with torch.no_grad():
        reference = backend.model.visual(pixels).numpy()
    onnx, x = _export(backend.model.visual.eval(), pixels), pixels.numpy()
    ours = "ours: float32, passes of 8 side by side (default)"
    paths, diffs, skipped = {ours: lambda: backend.encode_images(pixels)}, {}, []
    for make in (_onnxruntime, _openvino):
        try:
            name, run = make(onnx)
        except ImportError as err:
            skipped.append(f"{make.__name__[1:]} ({err.name} not installed)")
            continue
        for bs in (8, BATCH):
            label = f"{name}, float32, batches of {bs}"
            paths[label] = lambda run=run, bs=bs: run(x, bs)
            diffs[label] = float(np.abs(np.concatenate(paths[label]()) - reference).max())
    for f in paths.values():
        f()  # warm-up
    res: dict[str, dict[str, list[float]]] = {k: {"cpu_ms": [], "wall_ms": []} for k in paths}
    names = list(paths)
    for r in range(ROUNDS):
        for k in names[r % len(names):] + names[: r % len(names)]:
            c0, t0 = time.process_time(), time.perf_counter()
            paths[k]()
            res[k]["cpu_ms"].append(1e3 * (time.process_time() - c0) / BATCH)
            res[k]["wall_ms"].append(1e3 * (time.perf_counter() - t0) / BATCH)
    m = machine()
    base = statistics.median(res[names[0]]["cpu_ms"])
    md = ["## The image encoder on other CPU runtimes (ONNX Runtime, OpenVINO)", "",
          f"{host_line(m)}, {THREADS} threads for every runtime. ViT-B/16 at 224 px, "
          f"seeded random weights; its image tower exported once to ONNX; the same {BATCH} real tissue patches, "
          f"preprocessed once; {ROUNDS} alternating rounds after a warm-up, median (range) per patch. Reproduce: "
          "`.bench-venv/bin/python bench/bench_encoder_runtimes.py`.", "",
          "| path | CPU ms/patch | wall ms/patch | vs ours (CPU) | largest difference from the image tower in torch |",
          "|---|---|---|---|---|"]
    for k, v in res.items():
        c, w = v["cpu_ms"], v["wall_ms"]
        md.append(f"| {k} | {statistics.median(c):.0f} ({min(c):.0f}-{max(c):.0f}) | {statistics.median(w):.0f} | "
                  f"**{base / statistics.median(c):.2f}x** | {f'{diffs[k]:.1e}' if k in diffs else 'reference'} |")
    if skipped:
        md += ["", f"Skipped: {', '.join(skipped)}."]
    save("encoder_runtimes", {"machine": m, "rounds": ROUNDS, "batch": BATCH, "speed": res, "max_abs_diff": diffs,
                              "skipped": skipped}, "\n".join(md))


if __name__ == "__main__":
    main()
