"""Draw docs/images/calibrated-scale.png: a normal and an abnormal slide, raw (stretched per slide) and in z on
the fixed scale every slide shares.

Runs the main job's steps (synthetic slides, demo model, calibration on a second normal slide), then scores a
third normal slide the model never saw and the slide with planted anomalies:
    .venv/bin/python docs/make_calibration_figure.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from napari_anonavila.demo import PATCH_UM, run_demo
from napari_anonavila.detector import Detector
from napari_anonavila.maps.overlay import Z_RANGE, contrast_limits
from napari_anonavila.sample import make_tissue, write_pyramid_tiff
from napari_anonavila.slide import open_slide

OUT = Path(__file__).parent / "images" / "calibrated-scale.png"


def panel(ax, thumb, tds, heat, patch, limits, title, label, outline=None):
    cell = patch / tds
    ax.imshow(thumb)
    norm = matplotlib.colors.Normalize(*limits, clip=True)
    rgba = matplotlib.colormaps["inferno"](norm(np.nan_to_num(heat, nan=limits[0])))
    rgba[..., 3] = np.where(np.isnan(heat), 0, 0.12 + 0.75 * norm(np.nan_to_num(heat, nan=limits[0])))
    ax.imshow(rgba, extent=(0, heat.shape[1] * cell, heat.shape[0] * cell, 0), interpolation="nearest")
    for r, c in outline if outline is not None else []:
        ax.add_patch(matplotlib.patches.Rectangle((c * cell, r * cell), cell, cell, fill=False, ec="white", lw=0.7))
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    cb = plt.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap="inferno"), ax=ax, fraction=0.046, pad=0.02)
    cb.set_label(label, fontsize=8)
    cb.ax.tick_params(labelsize=7)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run_demo(tmp / "demo", size=4096)
        det = Detector.load(tmp / "demo" / "model.safetensors")
        unseen = write_pyramid_tiff(tmp / "unseen_normal.tif", make_tissue(4096, 40)[0], 0.5)
        anomalous = tmp / "demo" / "slides" / "anomalous.tif"
        slides = [("normal slide (never seen)", unseen), ("planted anomalies", anomalous)]
        fig, axes = plt.subplots(2, 2, figsize=(11, 10.5), dpi=110)
        for col, (name, path) in enumerate(slides):
            res = det.score_slide(path, patch_um=PATCH_UM)
            cal = res.calibrated_summary()
            with open_slide(path) as s:
                thumb, tds = s.thumbnail(800)
            p = res.grid.patch_size_l0
            raw = res.heatmap()
            panel(axes[0, col], thumb, tds, raw, p, contrast_limits(raw),
                  f"{name}: raw score, stretched per slide\nmax {np.nanmax(raw):.2g}", "raw distance (D^N + D^A)")
            sig = res.grid.cells_rc[res.significant()]
            panel(axes[1, col], thumb, tds, res.heatmap(values="z"), p, Z_RANGE,
                  f"{name}: z on the fixed scale\n{cal['n_significant']} patches significant (FDR 5%), "
                  f"max z {cal['max_z']:.1f}", "z: robust SD above normal tissue", sig)
        fig.suptitle("Raw scores make every slide look hot; calibrated z gives one colour one meaning", fontsize=11)
        fig.tight_layout()
        fig.savefig(OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
