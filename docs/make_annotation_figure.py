"""docs/images/annotation-rule.png: the rule a patch follows with an ROI and an exclusion (run from the repo root:
``.venv/bin/python docs/make_annotation_figure.py``)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import shapely

from napari_anonavila.annotations import ScoreRegions, regions_of_polygons

OUT = Path(__file__).parent / "images" / "annotation-rule.png"
P = 100  # patch side, level-0 pixels

t = np.linspace(0, 2 * np.pi, 120, endpoint=False)
shell = np.stack([520 + 380 * np.cos(t) + 40 * np.sin(3 * t), 470 + 330 * np.sin(t)], axis=1)
roi = regions_of_polygons([shell], source="drawn ROI", cls="Tumor")
pen = regions_of_polygons([np.array([[600, 300], [980, 300], [980, 430], [600, 430]], float)], source="pen mark")
rule = ScoreRegions(roi, (pen,))
cells = np.array([(c * P, r * P) for r in range(10) for c in range(11)], float)
inside = roi.fractions(cells, P)
out = pen.fractions(cells, P)
fig, ax = plt.subplots(figsize=(7, 6.2), dpi=110)
for (x, y), f, e in zip(cells, inside, out, strict=True):
    kept = f >= rule.roi_fraction and e < rule.exclude_fraction
    ax.add_patch(plt.Rectangle((x, y), P, P, facecolor=plt.cm.Greens(0.15 + 0.7 * f), edgecolor="0.75", lw=0.5))
    if kept:
        ax.add_patch(plt.Rectangle((x + 3, y + 3), P - 6, P - 6, fill=False, edgecolor="black", lw=1.6))
    ax.text(x + P / 2, y + P / 2, f"{f:.2f}", ha="center", va="center", fontsize=6.5,
            color="crimson" if e >= rule.exclude_fraction else "black")
ax.plot(*np.vstack([shell, shell[:1]]).T, color="darkgreen", lw=2, label="ROI (class Tumor)")
px, py = shapely.get_coordinates(pen.regions[0].geometry.exterior).T
ax.fill(px, py, color="crimson", alpha=0.25, label="exclusion (pen mark)")
ax.set_xlim(0, 11 * P)
ax.set_ylim(10 * P, 0)
ax.set_aspect("equal")
ax.set_title("A patch is scored when at least 0.25 of its area lies in the ROI (numbers: that part)\n"
             "and less than 0.25 in an exclusion (red numbers: left out); black squares: scored", fontsize=9)
ax.legend(loc="lower right", fontsize=8)
ax.set_xlabel("level-0 x (pixels)")
ax.set_ylabel("level-0 y (pixels)")
fig.tight_layout()
fig.savefig(OUT)
print(OUT)
