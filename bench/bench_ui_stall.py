"""The UI thread's longest stall while the Score widget scores a slide (target: under 50 ms).

A 5 ms QTimer on the UI thread records when it fires; the longest gap between firings during the run is
the longest time the UI could not respond. Run under a display or Xvfb:
xvfb-run -a .venv/bin/python bench/bench_ui_stall.py
"""

from __future__ import annotations

import itertools
import statistics
import time

import napari
from _common import machine, save
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication

from napari_anonavila._napari.layers import slide_layer_data
from napari_anonavila._napari.sample_data import sample_folder
from napari_anonavila._napari.widgets.score import ScoreWidget
from napari_anonavila.detector import Detector
from napari_anonavila.slide import open_slide
from napari_anonavila.training import TrainConfig


def main() -> None:
    folder = sample_folder()
    det = Detector.create("demo")
    import torch

    det.fit(torch.nn.functional.normalize(torch.randn(64, det.embed_dim), dim=1), config=TrainConfig(batch_size=16))
    model = det.save(folder / "bench-model.safetensors", overwrite=True)
    app = QApplication.instance() or QApplication([])
    rows = []
    for run in range(3):
        v = napari.Viewer()
        data, kwargs, _ = slide_layer_data(open_slide(folder / "anomalous.tif"))
        v.add_image(data, **kwargs)
        w = ScoreWidget(v)
        v.window.add_dock_widget(w)
        w.model.value = model
        w.patch_um.value = 32.0  # 64 px patches: ~3,000 patches, many heatmap updates
        w.batch_size.value = 64
        w.session.cache(open_slide(folder / "anomalous.tif")).array_path.unlink(missing_ok=True)
        ticks: list[float] = []
        timer = QTimer()
        timer.setInterval(5)
        timer.timeout.connect(lambda ticks=ticks: ticks.append(time.perf_counter()))
        for _ in range(20):
            app.processEvents()
        timer.start()
        t0 = time.perf_counter()
        w.start()
        while w.worker is not None:
            app.processEvents()
            time.sleep(0.001)
        timer.stop()
        gaps = [b - a for a, b in itertools.pairwise(ticks)]
        rows.append({"run": run, "patches": len(w.session.result.scores), "seconds": time.perf_counter() - t0,
                     "longest_stall_ms": max(gaps) * 1e3, "p99_gap_ms": sorted(gaps)[int(0.99 * len(gaps))] * 1e3,
                     "ticks": len(ticks)})
        print(rows[-1], flush=True)
        v.close()
    med = statistics.median(r["longest_stall_ms"] for r in rows)
    m = machine()
    md = ["## napari: longest UI-thread stall while scoring", "",
          f"{m['date']}, {m['cpu']}, {m['cores']} cores, Xvfb with Mesa software OpenGL. The Score widget scores the "
          "sample slide (64 px patches, batch 64, demo backend, cold cache) while a 5 ms QTimer on the UI thread "
          "records its firings; a stall is the longest gap. Reproduce: "
          "`xvfb-run -a .venv/bin/python bench/bench_ui_stall.py`.", "",
          "| run | patches | time | longest stall | 99th percentile gap |", "|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['run']} | {r['patches']:,} | {r['seconds']:.1f} s | {r['longest_stall_ms']:.1f} ms | "
                  f"{r['p99_gap_ms']:.1f} ms |")
    md += ["", f"Median longest stall: **{med:.1f} ms** (target: under 50 ms: **missed** where above).", "",
           "Where the time goes (probed by timing the widget's handlers): batches are coalesced into at most ~3 "
           "heatmap redraws a second, and the worker leaves one core to the UI thread, so the steady-state gaps "
           "stay near the timer period (99th percentile in the table). The longest stalls are one-off: creating "
           "the heatmap layer when the grid is known (~80 ms in the handler) and the top-k points layer with its "
           "text when the result arrives, each followed by a frame rendered by Mesa's software OpenGL under Xvfb. "
           "On a desktop with a GPU the rendering part is much shorter; it was not measured here."]
    save("ui_stall", {"machine": m, "results": rows, "median_longest_stall_ms": med}, "\n".join(md))


if __name__ == "__main__":
    main()
