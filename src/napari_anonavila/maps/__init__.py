"""Scores -> pictures and numbers: heatmap grids, their napari geometry, and slide-level scores."""

from .heatmap import MAX_CELLS, HeatmapGeometry, cells_to_heatmap, heatmaps_from_patch_names
from .slide_scores import SLIDE_SCORE_NAMES, erode, slide_scores, top_percent_mean

__all__ = [
    "MAX_CELLS",
    "SLIDE_SCORE_NAMES",
    "HeatmapGeometry",
    "cells_to_heatmap",
    "erode",
    "heatmaps_from_patch_names",
    "slide_scores",
    "top_percent_mean",
]
