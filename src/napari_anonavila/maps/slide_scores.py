"""Slide-level scores from a heatmap: max and top-1% mean, with and without the NaN-aware 3x3 erosion."""

from __future__ import annotations

import numpy as np

__all__ = ["SLIDE_SCORE_NAMES", "erode", "slide_scores", "top_percent_mean"]

SLIDE_SCORE_NAMES = ("max", "top1", "max_eroded", "top1_eroded")


def erode(heatmap: np.ndarray) -> np.ndarray:
    """3x3 NaN-aware minimum filter: NaN stays NaN; a cell becomes the minimum of its non-NaN 3x3 neighbours.

    Cells outside the grid count as NaN (they are ignored), so the erosion never raises a value.
    """
    from scipy import ndimage  # imported when used: the napari menus and readers do not wait for scipy

    h = np.asarray(heatmap, dtype=np.float64)
    if h.ndim != 2:
        raise ValueError(f"heatmap must be 2-D, got shape {h.shape}")
    nan = np.isnan(h)
    filled = np.where(nan, np.inf, h)
    out = ndimage.minimum_filter(filled, size=3, mode="constant", cval=np.inf)
    out[nan] = np.nan
    return out


def top_percent_mean(values: np.ndarray, percent: float = 1.0) -> float:
    """Mean of the largest ``max(1, floor(n * percent / 100))`` non-NaN values (NaN if there are none)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[~np.isnan(v)]
    if v.size == 0:
        return float("nan")
    k = max(1, int(np.floor(v.size * percent / 100.0)))
    return float(np.mean(np.partition(v, v.size - k)[v.size - k :]))


def slide_scores(heatmap: np.ndarray, patch_scores: np.ndarray | None = None) -> dict[str, float]:
    """``max`` and ``top1`` of the patch scores, ``max_eroded`` and ``top1_eroded`` of the eroded heatmap.

    As the authors' tester: the eroded scores come from the heatmap (NaN where there is no tissue, partial edge
    cells already dropped), the others from every patch score (``patch_scores``; default: the heatmap's cells).
    """
    h = np.asarray(heatmap, dtype=np.float64)
    raw = h if patch_scores is None else np.asarray(patch_scores, dtype=np.float64)
    e = erode(h)
    return {
        "max": _nanmax(raw),
        "top1": top_percent_mean(raw),
        "max_eroded": _nanmax(e),
        "top1_eroded": top_percent_mean(e),
    }


def _nanmax(values: np.ndarray) -> float:
    v = np.asarray(values, dtype=np.float64)
    return float("nan") if v.size == 0 or np.isnan(v).all() else float(np.nanmax(v))
