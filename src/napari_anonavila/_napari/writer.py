"""npe2 writer contribution: Shapes and Points layers as QuPath GeoJSON annotations.

World coordinates are converted to level-0 pixels with the layer's ``anonavila_l0_per_world`` metadata when
present (set for layers this plugin creates), else with the inverse of the layer's scale when its units are
pixels. A layer in microns without that metadata cannot be converted and is refused with a clear message.
"""

from __future__ import annotations

import numpy as np

from ..export.geojson import region_feature, write_features

__all__ = ["write_points", "write_shapes"]


def _l0_per_data(attributes: dict) -> float:
    meta = attributes.get("metadata") or {}
    scale = float(np.asarray(attributes.get("scale", [1.0]))[-1])
    if "anonavila_l0_per_world" in meta:
        return float(meta["anonavila_l0_per_world"]) * scale
    units = [str(u) for u in attributes.get("units") or ()]
    if units and not all(u in ("pixel", "px") for u in units):
        raise ValueError(f"layer {attributes.get('name')!r} is in {units[-1]}; draw it over a slide opened with this "
                         "plugin, or export it from the QA widget, which knows the slide's microns per pixel")
    return 1.0


def write_shapes(path: str, data, attributes: dict) -> list[str]:
    """Each shape becomes an annotation polygon named after the layer."""
    k = _l0_per_data(attributes)
    name = attributes.get("name", "region")
    feats = [region_feature(np.asarray(d)[:, -2:][:, ::-1] * k, name) for d in data if len(d) >= 3]
    return [str(write_features(path, feats, overwrite=True))]


def write_points(path: str, data, attributes: dict) -> list[str]:
    """Each point becomes a Point annotation named after the layer."""
    import uuid

    k = _l0_per_data(attributes)
    name = attributes.get("name", "points")
    feats = [{"type": "Feature", "id": str(uuid.uuid4()),
              "geometry": {"type": "Point", "coordinates": [float(p[-1] * k), float(p[-2] * k)]},
              "properties": {"objectType": "annotation", "name": name,
                             "classification": {"name": name, "color": [0, 200, 200]}}} for p in np.asarray(data)]
    return [str(write_features(path, feats, overwrite=True))]
