"""Results on screen: the heatmap image layer (with its colour bar) and the review points layer.

Both are updated in place when they exist (the user's styling and layer order stay), and their transforms are
set on every update, so a new patch size, a new slide or another slide's mpp never leaves them off the tissue.
"""

from __future__ import annotations

import numpy as np

from .layers import heatmap_kwargs, review_points, significant_points
from .session import Session

__all__ = ["HEATMAP", "SIGNIFICANT", "TOPK", "clear_results", "draw_heatmap", "draw_points", "draw_significant",
           "layer_named"]

HEATMAP = "anomaly heatmap"
TOPK = "top-k patches"
SIGNIFICANT = "significant patches (FDR 5%)"
_TRANSFORM = ("units", "scale", "translate", "affine")


def layer_named(viewer, name: str):
    """The viewer's layer called ``name``, or None (napari's LayerList has no ``get``)."""
    return viewer.layers[name] if name in viewer.layers else None  # noqa: SIM401


def _set(layer, kwargs: dict, keys) -> None:
    """Set layer properties that differ (each set refreshes the layer, and a transform change the whole view)."""
    for k in keys:
        if k not in kwargs:
            continue
        now, new = getattr(layer, k), kwargs[k]
        if k == "units":
            same = tuple(str(u) for u in now) == tuple(str(u) for u in new)
        elif k == "affine":
            same = np.allclose(np.asarray(getattr(now, "affine_matrix", now))[-3:, -3:], np.asarray(new)[-3:, -3:])
        else:
            same = np.allclose(np.asarray(now, float), np.asarray(new, float))
        if not same:
            setattr(layer, k, new)


def draw_heatmap(viewer, slide_layer, heat: np.ndarray, patch_size_l0: int, origin_xy_l0=(0, 0),
                 *, label: str = "anomaly score", fixed: tuple[float, float] | None = None):
    """Show ``heat`` (NaN where unscored) over ``slide_layer``, on the ``fixed`` range (calibrated z) or the slide's
    own; return the layer."""
    data, kw = heatmap_kwargs(heat, slide_layer, patch_size_l0, origin_xy_l0, name=HEATMAP, label=label,
                              fixed=fixed)
    if HEATMAP in viewer.layers:
        layer = viewer.layers[HEATMAP]
        _set(layer, kw, _TRANSFORM)
        if not np.allclose(layer.contrast_limits, kw["contrast_limits"], rtol=0.02):
            layer.contrast_limits = kw["contrast_limits"]
        layer.data = data
        layer.metadata.update(kw["metadata"])
    else:
        layer = viewer.add_image(data, **kw)
        layer.colorbar.visible = True
    layer.colorbar.visible = layer.visible
    return layer


def draw_points(viewer, session: Session):
    """Show the top-k patches of the session's result plus every reviewed patch; return the layer (or None)."""
    res, det = session.result, session.detector
    if res is None or det is None or session.slide_layer is None:
        return None
    data, kw = review_points(res, det, session.top_k, session.marks(), session.slide_layer)
    if TOPK in viewer.layers:
        layer = viewer.layers[TOPK]
        _set(layer, kw, _TRANSFORM)
        layer.selected_data = set()
        layer.data = data
        layer.features = kw["features"]
        layer.size = kw["size"]
        layer.border_color = kw["border_color"] if len(data) else "cyan"
        layer.text = kw["text"]
        layer.metadata.update(kw["metadata"])
    else:
        layer = viewer.add_points(data, **kw)
    return layer


def draw_significant(viewer, session: Session):
    """Outline the patches significant at the calibrated false-discovery rate (an empty layer when none or when
    uncalibrated); return the layer."""
    res = session.result
    if res is None or session.slide_layer is None:
        return None
    data, kw = significant_points(res, session.slide_layer)
    if SIGNIFICANT in viewer.layers:
        layer = viewer.layers[SIGNIFICANT]
        _set(layer, kw, _TRANSFORM)
        layer.data = data
        layer.size = kw["size"]
        layer.features = kw["features"]
    elif len(data):
        layer = viewer.add_points(data, **kw)
    else:
        return None
    return layer


def clear_results(viewer) -> None:
    """A run starts: empty the points and the heatmap of the earlier result (they belong to another run).

    The layers stay (with the user's styling and place in the list); emptying them is cheaper than a new layer.
    """
    for name in (TOPK, SIGNIFICANT):
        if name in viewer.layers:
            layer = viewer.layers[name]
            layer.selected_data = set()
            layer.data = np.zeros((0, 2))
    if HEATMAP in viewer.layers:
        layer = viewer.layers[HEATMAP]
        layer.data = np.full(layer.data.shape, min(layer.contrast_limits) - 1, np.float32)  # all transparent
        layer.metadata["raw"] = np.full(layer.data.shape, np.nan)
