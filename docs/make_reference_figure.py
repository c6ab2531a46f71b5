"""docs/images/reference-check.png and the numbers of docs/calibration.md: a reference of 20 synthetic normal slides
(stain and outline varied) and a real one, each slide scored against the others (leave one slide out).
Run from the repo root: ``.venv/bin/python docs/make_reference_figure.py`` (demo model; about 5 minutes)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from napari_anonavila.detector import Detector
from napari_anonavila.grid import make_grid
from napari_anonavila.maps import top_percent_mean
from napari_anonavila.pipeline import iter_slide_embeddings
from napari_anonavila.progress import drain
from napari_anonavila.sample import make_tissue, write_pyramid_tiff
from napari_anonavila.slide import open_slide
from napari_anonavila.training import TrainConfig

OUT = Path(__file__).parent / "images" / "reference-check.png"
REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "slides" / "cmu-1-small-region.svs"


def embed(det, path):
    with open_slide(path) as s:
        grid = make_grid(s, patch_px=64)
        return drain(iter_slide_embeddings(s, grid, det.backend, det.backend_id))


def reference_tables() -> tuple[Detector, list[np.ndarray]]:
    """The demo model fitted on one synthetic slide, and the reference scores (n, 4) of each of 20 synthetic normal
    slides (stain and outline varied) and of CMU-1 (when ../shared is there)."""
    tmp = Path(tempfile.mkdtemp())
    det = Detector.create("demo", device="cpu")
    train = write_pyramid_tiff(tmp / "train.tif", make_tissue(1536, 1, variation=1.0)[0], 0.5)
    det.fit(embed(det, train), config=TrainConfig(epochs=10, batch_size=32, accumulate=1))
    paths = [write_pyramid_tiff(tmp / f"n{i}.tif", make_tissue(768, 100 + i, variation=1.0)[0], 0.5)
             for i in range(20)] + ([REAL] if REAL.is_file() else [])
    return det, [det.reference_scores(embed(det, p)) for p in paths]


def main() -> None:
    det, tables = reference_tables()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), dpi=110, gridspec_kw={"width_ratios": [20, 21]})
    for ax, n, title in ((axes[0], 20, "20 normal slides of one source"),
                         (axes[1], len(tables), "the same, and a slide from another lab (CMU-1)")):
        det.calibrate(np.concatenate(tables[:n]), "figure",
                      np.array([[top_percent_mean(t[:, m]) for m in range(3)] for t in tables[:n]]),
                      np.concatenate([np.full(len(t), i) for i, t in enumerate(tables[:n])]))
        check = det.calibration.check("sum")
        print(title, json.dumps(check["patch_rate_0.05"]), check["slide_rate_0.05"])
        col, owner = det.calibration.patch_scores[:, 0], det.calibration.patch_slides
        per = []
        for i in range(n):
            own, others = col[owner == i], np.sort(col[owner != i])
            p = (1 + others.size - np.searchsorted(others, own, side="left")) / (others.size + 1)
            per.append((p <= 0.05).mean())
        colours = ["tab:blue"] * 20 + ["tab:orange"] * (n - 20)
        ax.bar(range(n), np.array(per) * 100, color=colours)
        r = check["patch_rate_0.05"]
        ax.axhline(5, color="black", ls=":", lw=1, label="nominal 5%")
        ax.axhline(r["rate"] * 100, color="crimson", lw=1.2,
                   label=f"pooled {r['rate']:.1%} (95% CI {r['ci95'][0]:.1%}-{r['ci95'][1]:.1%})")
        ax.set_xticks(range(n), [f"n{i}" for i in range(20)] + ["CMU-1"] * (n - 20), rotation=70, fontsize=6)
        ax.set_ylabel("% of the slide's patches at p <= 0.05", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle("The lab's own check: each normal slide scored against the other slides (leave one slide out)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(OUT)
    print(OUT)


if __name__ == "__main__":
    main()
