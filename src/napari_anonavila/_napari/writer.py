"""npe2 writer contribution: Shapes and Points layers as QuPath GeoJSON annotations.

Vertices go layer data -> world (the layer's scale, translate, rotate, shear, affine) -> level-0 pixels of the
slide open in the viewer (through that slide layer's transform). Without a slide layer, a layer in pixel units
is taken as level-0 pixels; a layer in microns cannot be converted and is refused with a clear message.
"""

from __future__ import annotations

import uuid

import numpy as np

from ..export.geojson import region_feature, write_features
from .coords import layer_to_slide_xy_l0, world_affine

__all__ = ["write_points", "write_shapes"]


def _layer_like(attributes: dict):
    """A bare layer with the written layer's transform, for the coordinate service."""
    from napari.layers import Points

    keys = ("scale", "translate", "rotate", "shear", "affine", "units")
    return Points(ndim=2, **{k: attributes[k] for k in keys if attributes.get(k) is not None})


def _slide_layer(attributes: dict):
    import napari

    from .session import session_for
    from .tags import slide_of

    viewer = napari.current_viewer()
    if viewer is None:
        return None
    scored = session_for(viewer).slide_layer
    slides = [ly for ly in viewer.layers if slide_of(ly) is not None]
    if scored is not None and any(ly.name == scored.name for ly in slides):
        return scored
    return slides[-1] if slides else None


def to_xy_l0(data: np.ndarray, attributes: dict) -> np.ndarray:
    """A layer's vertices (N, >=2) as level-0 (x, y) of the slide in the viewer."""
    layer = _layer_like(attributes)
    slide = _slide_layer(attributes)
    if slide is not None:
        return layer_to_slide_xy_l0(layer, slide, np.asarray(data, float))
    units = [str(u) for u in attributes.get("units") or ()]
    if units and not all(u in ("pixel", "px") for u in units):
        raise ValueError(f"layer {attributes.get('name')!r} is in {units[-1]} and no slide is open to convert it to "
                         "pixels; open the slide with this plugin, or export from the QA widget")
    a, b = world_affine(layer)
    return (np.asarray(data, float)[:, -2:] @ a.T + b)[:, ::-1] + 0.5


def write_shapes(path: str, data, attributes: dict) -> list[str]:
    """Each polygon or rectangle becomes an annotation named after the layer."""
    name = attributes.get("name", "region")
    feats = [region_feature(to_xy_l0(d, attributes), name) for d in data if len(d) >= 3]
    return [str(write_features(path, feats, overwrite=True))]


def write_points(path: str, data, attributes: dict) -> list[str]:
    """Each point becomes a Point annotation named after the layer."""
    name = attributes.get("name", "points")
    xy = to_xy_l0(np.asarray(data, float).reshape(-1, np.asarray(data).shape[-1] if len(data) else 2), attributes)
    feats = [{"type": "Feature", "id": str(uuid.uuid4()),
              "geometry": {"type": "Point", "coordinates": [float(x), float(y)]},
              "properties": {"objectType": "annotation", "name": name,
                             "classification": {"name": name, "color": [0, 200, 200]}}} for x, y in xy]
    return [str(write_features(path, feats, overwrite=True))]
