"""Slides in one window: each slide with its result and annotation layers is one group that shows and hides
together; slides are shown one at a time (the default) or side by side, never stacked by accident, and the view is
fitted to the slide shown, not to every layer in the list."""

from __future__ import annotations

import os

import numpy as np

from .coords import cells_layer_transform
from .results import HEATMAP, result_layer
from .tags import link_of, saved_result_of, slide_of

__all__ = ["LAYOUTS", "ONE_AT_A_TIME", "SIDE_BY_SIDE", "arrange", "find_reopened", "fit_view", "group_of",
           "slide_layers"]

ONE_AT_A_TIME, SIDE_BY_SIDE = "one slide at a time", "side by side"
LAYOUTS = (ONE_AT_A_TIME, SIDE_BY_SIDE)
_GAP = 0.05  # side by side: the gap between slides, as a part of the wider slide's width


def slide_layers(viewer) -> list:
    """The slide layers of ``viewer`` (made by this plugin's reader), in layer order."""
    return [ly for ly in viewer.layers if slide_of(ly) is not None]


def group_of(viewer, slide_layer) -> list:
    """``slide_layer`` and every layer that belongs to it (its results, annotations opened onto it)."""
    link = link_of(slide_layer)
    return [slide_layer, *(ly for ly in viewer.layers if ly.metadata.get("anonavila_for") == link)]


def find_reopened(viewer, folder: str | os.PathLike):
    """The slide layer ``viewer`` already shows for the result folder ``folder``, or None."""
    want = os.path.realpath(folder)
    for ly in slide_layers(viewer):
        saved = saved_result_of(ly)
        if saved is not None and saved.folder is not None and os.path.realpath(saved.folder) == want:
            return ly
    return None


def arrange(viewer, current, layout: str = ONE_AT_A_TIME, *, fit: bool = True) -> None:
    """Show ``current`` (a slide layer) as ``layout`` says: alone (every other slide's group hidden, the view fitted
    to it), or every slide side by side in a row, left to right in layer order, each with its own layers. The
    current slide's heatmap shows its colour bar; ``fit`` fits the view."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    slides = slide_layers(viewer)
    if layout == ONE_AT_A_TIME:
        for s in slides:
            for ly in group_of(viewer, s):
                if ly.visible != (s is current):
                    ly.visible = s is current
    else:
        _side_by_side(viewer, slides)
    for s in slides:  # one colour bar: the current slide's heatmap's
        heat = result_layer(viewer, s, HEATMAP)
        if heat is not None:
            heat.colorbar.visible = s is current and heat.visible
    if current is not None and fit:
        fit_view(viewer, current if layout == ONE_AT_A_TIME else None)


def _side_by_side(viewer, slides: list) -> None:
    x = 0.0
    for s in slides:
        left, right = _world_box(s)[:, 1]
        width = right - left
        shift = x - (left - float(s.translate[-1]))
        if not np.isclose(float(s.translate[-1]), shift):
            s.translate = (*np.asarray(s.translate)[:-1], shift)
            _follow(viewer, s)
        for ly in group_of(viewer, s):
            ly.visible = True
        x += width * (1 + _GAP)


def _follow(viewer, slide_layer) -> None:
    """Give the layers of ``slide_layer``'s group the slide's new transform (results are placed through it)."""
    for ly in group_of(viewer, slide_layer)[1:]:
        p = ly.metadata.get("patch_size_l0")
        if p is None:
            continue
        origin = tuple(ly.metadata.get("origin_xy_l0", (0, 0))) if ly.metadata.get("anonavila_result") == HEATMAP \
            else (0, 0)
        tf = cells_layer_transform(slide_layer, p, origin) if ly.metadata.get("anonavila_result") == HEATMAP \
            else cells_layer_transform(slide_layer)
        for key in ("scale", "translate", "affine"):
            setattr(ly, key, tf[key])


def _world_box(layer) -> np.ndarray:
    """(2, 2) world (row, col) of the layer's top-left and bottom-right corners."""
    ext = np.asarray(layer.extent.world, float)[:, -2:]
    return np.stack([ext.min(axis=0), ext.max(axis=0)])


def fit_view(viewer, slide_layer=None) -> None:
    """Centre and zoom the view on ``slide_layer`` (default: every visible slide), not on hidden layers."""
    layers = [slide_layer] if slide_layer is not None else [s for s in slide_layers(viewer) if s.visible]
    if not layers:
        return
    boxes = np.stack([_world_box(ly) for ly in layers])
    lo, hi = boxes[:, 0].min(axis=0), boxes[:, 1].max(axis=0)
    size = np.maximum(hi - lo, 1e-9)
    canvas = np.asarray(getattr(getattr(viewer, "__wrapped__", viewer), "_canvas_size", None) or (800, 800), float)
    viewer.camera.center = tuple((lo + hi) / 2)
    viewer.camera.zoom = float(np.min(canvas[-2:] / size)) * 0.95

