"""Results on screen: the heatmap image layer (with its colour bar) and the review points layer.

Each slide has its own result layers, named after it and kept directly above it: scoring another slide makes that
slide's layers and leaves these as they are. They are updated in place when they exist (the user's styling and
layer order stay), and their transforms are set on every update, so a new patch size or mpp never leaves them off
the tissue.
"""

from __future__ import annotations

import numpy as np
from napari.layers import Image, Points

from .layers import heatmap_kwargs, review_points, significant_points
from .tags import link_of, tag

__all__ = ["HEATMAP", "SIGNIFICANT", "TOPK", "clear_results", "draw_heatmap", "draw_points", "draw_significant",
           "layer_named", "result_layer", "result_layers", "slide_of_result"]

HEATMAP = "anomaly heatmap"
TOPK = "top-k patches"
SIGNIFICANT = "significant patches (FDR 5%)"
_KINDS = (HEATMAP, SIGNIFICANT, TOPK)  # their order directly above their slide, bottom to top
_TRANSFORM = ("units", "scale", "translate", "affine")


def layer_named(viewer, name: str):
    """The viewer's layer called ``name``, or None (napari's LayerList has no ``get``)."""
    return viewer.layers[name] if name in viewer.layers else None  # noqa: SIM401


def result_layer(viewer, slide_layer, kind: str):
    """The ``kind`` layer (HEATMAP, SIGNIFICANT or TOPK) of ``slide_layer``'s result, or None."""
    if slide_layer is None:
        return None
    link = link_of(slide_layer)
    for layer in viewer.layers:
        meta = layer.metadata
        if meta.get("anonavila_result") == kind and meta.get("anonavila_for") == link:
            return layer
    return None


def result_layers(viewer, slide_layer) -> list:
    """All result layers of ``slide_layer``, bottom to top."""
    return [ly for ly in (result_layer(viewer, slide_layer, k) for k in _KINDS) if ly is not None]


def slide_of_result(viewer, layer):
    """The slide layer a result layer belongs to (None for other layers)."""
    link = layer.metadata.get("anonavila_for")
    if link is None:
        return None
    for candidate in viewer.layers:
        if link_of(candidate) == link:
            return candidate
    return None


def _tag(kwargs: dict, slide_layer, kind: str) -> dict:
    return tag(kwargs, slide_layer.name, link_of(slide_layer), kind)


def _add_above(viewer, layer, slide_layer):
    """Insert a new result layer (tagged with its kind) directly above its slide, among the slide's result layers in
    their order, leaving the user's layer selection as it is.

    napari selects every layer it inserts, and showing a new layer's controls lays them out and repaints the canvas
    at once (~0.1 s here, on top of adding the layer). A run's layers arrive one by one while the user may be working
    in another layer; the run makes its slide current once, at its end. LayerList has no public way to insert
    without selecting: the flag is napari's own (``SelectableEventedList._activate_on_insert``); without it the
    layer is merely selected.
    """
    ahead = {ly.metadata["anonavila_result"] for ly in result_layers(viewer, slide_layer)}
    below = sum(k in ahead for k in _KINDS[: _KINDS.index(layer.metadata["anonavila_result"])])
    layers = viewer.layers
    activate = getattr(layers, "_activate_on_insert", True)
    layers._activate_on_insert = False
    try:
        layers.insert(layers.index(slide_layer) + 1 + below, layer)
    finally:
        layers._activate_on_insert = activate
    return layer


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
    """Show ``heat`` (NaN where unscored) over ``slide_layer`` in that slide's own heatmap layer, on the ``fixed``
    range (calibrated z) or the slide's own; return the layer.

    The colour bar appears from the layer's second update on (a run updates it as batches arrive and at its end):
    napari takes 0.1-0.2 s to build a bar and as long to add a layer, and each alone is one pause of the window.
    """
    data, kw = heatmap_kwargs(heat, slide_layer, patch_size_l0, origin_xy_l0, name=HEATMAP, label=label,
                              fixed=fixed)
    kw = _tag(kw, slide_layer, HEATMAP)
    layer = result_layer(viewer, slide_layer, HEATMAP)
    new = layer is None
    if not new:
        _set(layer, kw, _TRANSFORM)
        if not np.allclose(layer.contrast_limits, kw["contrast_limits"], rtol=0.02):
            layer.contrast_limits = kw["contrast_limits"]
        layer.data = data
        layer.metadata.update(kw["metadata"])
    else:
        layer = _add_above(viewer, Image(data, **kw), slide_layer)
    for other in viewer.layers:  # one colour bar: the current slide's
        if other.metadata.get("anonavila_result") == HEATMAP:
            other.colorbar.visible = other is layer and layer.visible and not new
    return layer


def draw_points(viewer, slide_layer, result, top_k: int, marks):
    """Show the ``top_k`` patches of ``result`` plus every patch marked in ``marks``, in ``slide_layer``'s own points
    layer; return the layer (or None without a result)."""
    res = result
    if res is None or slide_layer is None:
        return None
    data, kw = review_points(res, top_k, marks, slide_layer)
    kw = _tag(kw, slide_layer, TOPK)
    layer = result_layer(viewer, slide_layer, TOPK)
    if layer is not None:
        _set(layer, kw, _TRANSFORM)
        layer.selected_data = set()
        layer.data = data
        layer.features = kw["features"]
        layer.size = kw["size"]
        layer.border_color = kw["border_color"] if len(data) else "cyan"
        layer.text = kw["text"]
        layer.metadata.update(kw["metadata"])
    else:
        layer = _add_above(viewer, Points(data, **kw), slide_layer)
    return layer


def draw_significant(viewer, slide_layer, result):
    """Outline the patches of ``result`` significant at its false-discovery rate in ``slide_layer``'s own layer (empty
    when there are none, or the model is uncalibrated); return the layer."""
    res = result
    if res is None or slide_layer is None:
        return None
    data, kw = significant_points(res, slide_layer)
    kw = _tag(kw, slide_layer, SIGNIFICANT)
    layer = result_layer(viewer, slide_layer, SIGNIFICANT)
    if layer is not None:
        _set(layer, kw, _TRANSFORM)
        layer.data = data
        layer.size = kw["size"]
        layer.features = kw["features"]
    else:  # made even when empty: every scored slide has the same three result layers
        layer = _add_above(viewer, Points(data, **kw), slide_layer)
    return layer


def clear_results(viewer, slide_layer) -> None:
    """A run on ``slide_layer`` starts: empty its points and heatmap (they belong to another run). Other slides'
    results stay as they are.

    The layers stay (with the user's styling and place in the list); emptying them is cheaper than a new layer.
    """
    for kind in (TOPK, SIGNIFICANT):
        layer = result_layer(viewer, slide_layer, kind)
        if layer is not None:
            layer.selected_data = set()
            layer.data = np.zeros((0, 2))
    layer = result_layer(viewer, slide_layer, HEATMAP)
    if layer is not None:
        layer.data = np.full(layer.data.shape, min(layer.contrast_limits) - 1, np.float32)  # all transparent
        layer.metadata["raw"] = np.full(layer.data.shape, np.nan)
