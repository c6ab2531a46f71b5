"""Annotations in the window: regions drawn as napari Shapes in their slide's place, one layer per class with the
class's colour. What napari draws is an outline simplified to the resolution of the screen (a 10^5-vertex QuPath
outline or 10^4 detections open in seconds); the exact regions travel in the layer's metadata and are what scoring,
training and evaluation use."""

from __future__ import annotations

import numpy as np

from ..annotations import RegionSet, regions_of_polygons
from .coords import cells_layer_transform
from .session import shapes_to_polygons_xy_l0
from .tags import link_of

__all__ = ["REGIONS_KEY", "region_layer_data", "regions_of_layer", "view_regions"]

REGIONS_KEY = "anonavila_regions"  # layer metadata: the exact RegionSet behind a Shapes layer of ours
_SCREEN_PX = 4000  # outlines are simplified to a tolerance of the slide's longer side over this


def _outlines(geom, tolerance: float) -> list[np.ndarray]:
    """Closed (x, y) rings of a geometry (exteriors and holes), simplified to ``tolerance`` level-0 pixels."""
    import shapely

    simple = shapely.simplify(geom, tolerance, preserve_topology=True)
    rings = []
    for part in shapely.get_parts(simple):
        if part.geom_type != "Polygon" or part.is_empty:
            continue
        rings.append(np.asarray(part.exterior.coords)[:, :2])
        rings += [np.asarray(h.coords)[:, :2] for h in part.interiors]
    return rings


def region_layer_data(regions: RegionSet, slide_layer, dimensions_xy: tuple[int, int], *, prefix: str = "",
                      role: str | None = None, link: str | None = None) -> list[tuple]:
    """(data, kwargs, 'shapes') per class of ``regions``: simplified outlines (closed paths in the slide's level-0
    pixel indices, through the slide layer's transform), the exact regions of that class in the metadata, and the
    link that makes the layer part of the slide's group (shown and hidden with it)."""
    import shapely

    tolerance = max(dimensions_xy) / _SCREEN_PX
    out = []
    for cls in regions.classes():
        subset = regions.select([cls])
        if not subset.regions:
            continue
        geom = shapely.union_all([r.geometry for r in subset.regions])
        paths = [ring[:, ::-1] - 0.5 for ring in _outlines(geom, tolerance)]  # (x, y) corners -> (row, col) centres
        color = next((r.color for r in subset.regions if r.color), None) or (255, 255, 0)
        label = f"{role}: {cls}" if role else cls
        meta = {REGIONS_KEY: subset, "anonavila_for": link or link_of(slide_layer), "source": regions.source,
                "classes": [cls], "vertices_exact": int(shapely.get_num_coordinates(geom)),
                "vertices_shown": int(sum(len(p) for p in paths))}
        out.append((paths, {"name": f"{prefix}{label}", "shape_type": "path", "edge_color": np.array(color) / 255,
                            "edge_width": max(2.0, tolerance * 2), "face_color": "transparent", "metadata": meta,
                            **cells_layer_transform(slide_layer)}, "shapes"))
    return out


def regions_of_layer(shapes_layer, slide_layer, *, cls: str | None = None) -> RegionSet:
    """The regions a Shapes layer stands for: the exact ones it was opened from, else what is drawn in it (polygons,
    rectangles, ellipses, through both layers' transforms). A layer with none is an error, never 'everywhere'."""
    exact = shapes_layer.metadata.get(REGIONS_KEY)
    if isinstance(exact, RegionSet):
        regions = exact
    else:
        polys = shapes_to_polygons_xy_l0(shapes_layer, slide_layer)
        regions = regions_of_polygons(polys, source=f"Shapes layer {shapes_layer.name!r}", kind="napari-shapes",
                                      cls=cls or shapes_layer.name)
    if not len(regions):
        raise ValueError(f"Shapes layer {shapes_layer.name!r} has no polygon, rectangle or ellipse")
    return regions


def view_regions(slide_layer) -> RegionSet:
    """The part of the slide the canvas shows now, as a level-0 rectangle (from the shown level's corner pixels)."""
    corners = np.asarray(slide_layer.corner_pixels, float)[:, -2:]  # data (row, col) of the shown level
    ds = np.asarray(slide_layer.downsample_factors[slide_layer.data_level], float)[-2:]
    (r0, c0), (r1, c1) = corners * ds  # level-0 pixel indices
    box = np.array([[c0, r0], [c1 + 1, r0], [c1 + 1, r1 + 1], [c0, r1 + 1]], float)
    return regions_of_polygons([box], source="the current view", kind="view")
