"""Results on screen: the heatmap image layer (with its colour bar) and the review points layer.

Both are updated in place when they exist (the user's styling and layer order stay), and their transforms are
set on every update, so a new patch size, a new slide or another slide's mpp never leaves them off the tissue.
"""

from __future__ import annotations

import numpy as np

from .layers import heatmap_kwargs, review_points
from .session import Session

__all__ = ["HEATMAP", "TOPK", "draw_heatmap", "draw_points", "layer_named", "remove_points"]

HEATMAP = "anomaly heatmap"
TOPK = "top-k patches"
_TRANSFORM = ("units", "scale", "translate", "affine")


def layer_named(viewer, name: str):
    """The viewer's layer called ``name``, or None (napari's LayerList has no ``get``)."""
    return viewer.layers[name] if name in viewer.layers else None  # noqa: SIM401


def _set(layer, kwargs: dict, keys) -> None:
    for k in keys:
        if k in kwargs:
            setattr(layer, k, kwargs[k])


def draw_heatmap(viewer, slide_layer, heat: np.ndarray, patch_size_l0: int, origin_xy_l0=(0, 0),
                 *, label: str = "anomaly score"):
    """Show ``heat`` (NaN where unscored) over ``slide_layer``; return the layer."""
    data, kw = heatmap_kwargs(heat, slide_layer, patch_size_l0, origin_xy_l0, name=HEATMAP, label=label)
    if HEATMAP in viewer.layers:
        layer = viewer.layers[HEATMAP]
        _set(layer, kw, _TRANSFORM)
        layer.data = data
        layer.contrast_limits = kw["contrast_limits"]
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


def remove_points(viewer) -> None:
    """Take the points of an earlier result off screen (they would point at patches of another run)."""
    if TOPK in viewer.layers:
        viewer.layers.remove(TOPK)
