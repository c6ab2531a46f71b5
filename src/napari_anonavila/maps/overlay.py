"""A rendered picture of the heatmap over the slide thumbnail, with a colour bar (matplotlib, headless)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .._atomic import atomic_path
from ..options import Z_RANGE

__all__ = ["Z_RANGE", "contrast_limits", "render_overlay"]


def contrast_limits(values: np.ndarray) -> tuple[float, float]:
    """Display range from the score distribution (2nd..99.5th percentile); scores are tiny, never assume 0..1."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return (0.0, 1.0)
    lo, hi = np.percentile(v, [2, 99.5])
    if hi <= lo:
        hi = lo + max(abs(lo) * 1e-3, 1e-12)
    return float(lo), float(hi)


def render_overlay(path: str | os.PathLike | BinaryIO, thumbnail: np.ndarray, thumb_downsample: float,
                   heatmap: np.ndarray, patch_size_l0: int, *, title: str = "", label: str = "anomaly score",
                   points_xy_l0=None, alpha: float = 0.55, limits: tuple[float, float] | None = None,
                   outline_cells=None) -> Path | BinaryIO:
    """Write a PNG: thumbnail, heatmap cells in their level-0 place, optional top-k markers, and a colour bar.

    Cell opacity rises with the score, so low-scoring tissue stays visible underneath. ``limits`` fixes the colour
    range (calibrated z: the same on every slide); by default it is the slide's own. ``outline_cells`` (row, col)
    are drawn as white squares (significant patches).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    h, w = thumbnail.shape[:2]
    lo, hi = limits if limits is not None else contrast_limits(heatmap)
    cell = patch_size_l0 / thumb_downsample
    extent = (0, heatmap.shape[1] * cell, heatmap.shape[0] * cell, 0)  # cell edges in thumbnail pixels
    fig, ax = plt.subplots(figsize=(8, 8 * h / w + 0.6), dpi=120)
    ax.imshow(thumbnail, interpolation="lanczos")
    norm = matplotlib.colors.Normalize(vmin=lo, vmax=hi, clip=True)
    cmap = matplotlib.colormaps["inferno"]
    rgba = cmap(norm(np.nan_to_num(heatmap, nan=lo)))
    rgba[..., 3] = np.where(np.isnan(heatmap), 0.0, 0.12 + (alpha + 0.2) * norm(np.nan_to_num(heatmap, nan=lo)))
    ax.imshow(rgba, extent=extent, interpolation="nearest")
    im = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
    for r, c in np.asarray(outline_cells if outline_cells is not None else np.zeros((0, 2)), float).reshape(-1, 2):
        ax.add_patch(matplotlib.patches.Rectangle((c * cell, r * cell), cell, cell, fill=False, edgecolor="white",
                                                  linewidth=0.8))
    if points_xy_l0 is not None and len(points_xy_l0):
        pts = (np.asarray(points_xy_l0, float) + patch_size_l0 / 2) / thumb_downsample
        ax.scatter(pts[:, 0], pts[:, 1], s=60, facecolors="none", edgecolors="cyan", linewidths=1.5)
        for i, (x, y) in enumerate(pts[:10], start=1):
            ax.annotate(str(i), (x, y), color="cyan", fontsize=8, xytext=(4, -4), textcoords="offset points")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_axis_off()
    ax.set_title(title, fontsize=10)
    cb = fig.colorbar(im, ax=ax, fraction=0.035, pad=0.02)
    cb.set_label(label)
    cb.formatter.set_powerlimits((-2, 3))
    fig.tight_layout()
    if hasattr(path, "write"):  # a binary buffer
        fig.savefig(path, format="png")
    else:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
