"""Results -> napari layer data: the slide pyramid, the heatmap image, the review points, imported QuPath objects.

Layer data are in the slide's level-0 pixel indices (points, shapes) or in grid cells (the heatmap); each
layer's transform comes from the slide layer through :mod:`.coords`, so results sit on the tissue whatever the
slide's scale, translate or affine, and all plugin layers share the slide's units.
"""

from __future__ import annotations

import json

import numpy as np

from ..options import Z_RANGE
from ..reviews import ReviewMarks
from ..slide import Slide
from .coords import cells_layer_transform

__all__ = ["HEATMAP_COLORMAP", "REVIEW_COLORS", "Z_RANGE", "features_to_layer_data", "heatmap_for_display",
           "heatmap_kwargs", "review_points", "significant_points", "slide_layer_data", "slide_scale"]

HEATMAP_COLORMAP = "anonavila-heat"
REVIEW_COLORS = {"unreviewed": "cyan", "confirmed": "red", "rejected": "lime", "unsure": "magenta"}
_NAN_BAND = 0.02  # the lowest 2% of the colormap is transparent: only unscored cells (NaN) are put there


def _heatmap_colormap():
    """Inferno whose opacity rises with the value; below 2% (where only unscored cells sit) it is transparent."""
    from napari.utils.colormaps import Colormap
    from napari.utils.colormaps.colormap_utils import ensure_colormap

    base = ensure_colormap("inferno")
    xs = np.linspace(0, 1, 32)
    colors = base.map(xs)
    colors[:, 3] = 0.35 + 0.55 * xs  # the lowest scores stay visibly coloured
    controls = np.concatenate([[0.0, _NAN_BAND], _NAN_BAND + xs[1:] * (1 - _NAN_BAND)])
    colors = np.concatenate([[[0, 0, 0, 0], colors[0]], colors[1:]])
    return Colormap(colors=colors, controls=controls, name=HEATMAP_COLORMAP, display_name="anomaly score (inferno)")


def slide_scale(slide: Slide) -> float:
    """World units per level-0 pixel for a slide our reader opens: microns when the slide has mpp, else pixels."""
    return float(slide.mpp) if slide.mpp else 1.0


def slide_layer_data(slide: Slide) -> tuple:
    """(levels, kwargs, 'image') for a multiscale RGB image layer with physical scale when known.

    The levels are the slide's ``level_arrays``: each view napari asks for is one read through the reader's
    tile cache, with no dask graph per slice."""
    s = slide_scale(slide)
    meta = {**slide.describe(), "anonavila_slide": slide}
    kwargs = {"name": slide.path.name, "multiscale": True, "rgb": True, "metadata": meta, "scale": (s, s),
              "units": ("um", "um") if slide.mpp else ("pixel", "pixel"), "contrast_limits": (0, 255)}
    return (slide.level_arrays, kwargs, "image")


def heatmap_for_display(heat: np.ndarray, fixed: tuple[float, float] | None = None
                        ) -> tuple[np.ndarray, tuple[float, float]]:
    """(values to show, contrast limits): scored cells clipped into the range, NaN cells below it.

    The range is ``fixed`` (calibrated z) or the slide's own 2nd..99.5th percentile (raw scores). Every scored cell
    maps to at least ``_NAN_BAND`` of the colormap (visible); NaN cells map to 0 (transparent).
    """
    from ..maps.overlay import contrast_limits  # (maps imports scipy: not on the way to File > Open)

    lo, hi = fixed if fixed is not None else contrast_limits(heat)
    span = hi - lo
    clim_lo = lo - span * _NAN_BAND / (1 - 2 * _NAN_BAND)  # lo itself lands a little above the transparent band
    shown = np.where(np.isnan(heat), clim_lo - span, np.clip(heat, lo, None)).astype(np.float32)
    return shown, (clim_lo, hi)


def heatmap_kwargs(heat: np.ndarray, slide_layer, patch_size_l0: int, origin_xy_l0=(0, 0),
                   *, name: str = "anomaly heatmap", label: str = "anomaly score",
                   fixed: tuple[float, float] | None = None) -> tuple[np.ndarray, dict]:
    """(data, kwargs) of the heatmap image layer: one pixel per patch, placed through the slide layer's transform."""
    shown, clim = heatmap_for_display(heat, fixed)
    kwargs = {"name": name, "colormap": _heatmap_colormap(), "contrast_limits": clim, "opacity": 1.0,
              "blending": "translucent", "interpolation2d": "nearest",
              "metadata": {"raw": heat, "patch_size_l0": patch_size_l0, "origin_xy_l0": tuple(origin_xy_l0),
                           "label": label,
                           "scale": "fixed" if fixed is not None else "per slide"},
              **cells_layer_transform(slide_layer, patch_size_l0, origin_xy_l0)}
    return shown, kwargs


def review_points(result, k: int, marks: ReviewMarks, slide_layer) -> tuple[np.ndarray, dict]:
    """(data, kwargs) of the points layer of a :class:`~napari_anonavila.result.SlideResult`: the top-k patches plus
    every patch with a review mark in ``marks``.

    Points sit at patch centres in the slide's level-0 pixel indices (row, col); the square marker outlines the
    patch, its border colour is the review state, and its label is the rank (the terms are in the features).
    """
    rank = result.rank
    reviewed, _aside = marks.on_grid(result.grid)
    idx = sorted(set(result.top_k(k).tolist()) | set(reviewed), key=lambda i: rank[i])
    s = result
    p = result.patch_size_l0
    xy = result.xy_l0[idx] if idx else np.zeros((0, 2), np.int64)
    data = np.stack([xy[:, 1] + (p - 1) / 2, xy[:, 0] + (p - 1) / 2], axis=1) if idx else np.zeros((0, 2))
    expl = [result.explain(i) for i in idx]

    def pretty(cell: str) -> str:
        return "; ".join(f"{t.rsplit(':', 1)[0]} ({float(t.rsplit(':', 1)[1]):.2f})" for t in cell.split("|") if t)

    def best(cell: str) -> str:
        return cell.split("|", 1)[0].rsplit(":", 1)[0]

    states = [reviewed.get(i, "unreviewed") for i in idx]
    features = {"rank": [int(rank[i]) for i in idx], "index": [int(i) for i in idx],
                "x_l0": [int(v) for v in xy[:, 0]], "y_l0": [int(v) for v in xy[:, 1]],
                "score": [float(s.score[i]) for i in idx], "d_normal": [float(s.d_normal[i]) for i in idx],
                "d_abnormal": [float(s.d_abnormal[i]) for i in idx],
                "top_abnormal": [best(e[1]) for e in expl], "top_normal": [best(e[0]) for e in expl],
                "abnormal_terms": [pretty(e[1]) for e in expl], "normal_terms": [pretty(e[0]) for e in expl],
                "review": states,
                "z": [float(v) for v in result.z[idx]] if idx else [],
                "p_normal": [float(v) for v in result.p_normal[idx]] if idx else []}
    kwargs = {"name": "top-k patches", "features": features, "size": p, "symbol": "square",
              "face_color": "transparent", "border_color": [REVIEW_COLORS[st] for st in states],
              "border_width": 0.08, "border_width_is_relative": True,
              "text": {"string": "{rank}", "color": "black", "size": 11, "anchor": "center"},
              "metadata": {"patch_size_l0": p}, **cells_layer_transform(slide_layer)}
    return data, kwargs


def significant_points(result, slide_layer) -> tuple[np.ndarray, dict]:
    """(data, kwargs) of the outlines of the patches significant at the calibrated false-discovery rate."""
    out_of_domain = bool(result.calibrated_summary().get("out_of_domain"))
    sig = np.nonzero(result.significant())[0] if not out_of_domain else np.zeros(0, np.int64)  # never as findings
    p = result.patch_size_l0
    xy = result.xy_l0[sig] if sig.size else np.zeros((0, 2), np.int64)
    data = np.stack([xy[:, 1] + (p - 1) / 2, xy[:, 0] + (p - 1) / 2], axis=1) if sig.size else np.zeros((0, 2))
    kwargs = {"name": f"significant patches (FDR {result.fdr:.0%})", "size": p, "symbol": "square",
              "face_color": "transparent", "border_color": "white", "border_width": 0.06,
              "border_width_is_relative": True,
              "features": {"index": sig.astype(int).tolist()},
              "metadata": {"patch_size_l0": p, "not_shown": "out of the model's domain" if out_of_domain else ""},
              **cells_layer_transform(slide_layer)}
    return data, kwargs


_MAX_SHOWN_VERTICES = 20_000


def _simplified(ring: np.ndarray, tolerance: float) -> np.ndarray:
    """A ring with vertices closer than ``tolerance`` to its outline dropped (display only; shape kept)."""
    if tolerance <= 0 or len(ring) < 8:
        return ring
    import shapely

    simple = shapely.simplify(shapely.LinearRing(ring), tolerance)
    coords = np.asarray(simple.coords)[:, :2]
    return coords if len(coords) >= 4 else ring


def features_to_layer_data(features, slide_layer, name: str = "QuPath") -> list[tuple]:
    """Imported QuPath features -> a Shapes layer per object type and a Points layer for point objects.

    Vertices are level-0 (x, y); they become the slide's pixel indices (row, col) in layers with its transform.
    """
    tf = cells_layer_transform(slide_layer)

    def to_rc(xy: np.ndarray) -> np.ndarray:
        return np.asarray(xy, float)[:, ::-1] - 0.5  # level-0 (x, y), corner based -> pixel indices (row, col)

    out = []
    by_type: dict[str, list] = {}
    for f in features:
        if f.polygons_xy:
            by_type.setdefault(f.object_type, []).append(f)
    n_vertices = sum(len(r) for fs in by_type.values() for f in fs for r in f.polygons_xy)
    tolerance = 0.0
    if n_vertices > _MAX_SHOWN_VERTICES:  # napari's triangulation freezes the window on 10^4-10^5 vertices
        extent = max(float(np.ptp(np.concatenate([r for fs in by_type.values() for f in fs for r in f.polygons_xy]),
                                  axis=0).max()), 1.0)
        tolerance = extent / 4000  # about a screen pixel of the whole region set
    for otype, feats in sorted(by_type.items()):
        shapes, colors = [], []
        props: dict[str, list] = {k: [] for k in ("name", "classification", "object_type", "review", "measurements",
                                                  "metadata")}
        for f in feats:
            for ring in f.polygons_xy:
                shapes.append(to_rc(_simplified(ring, tolerance)))
                props["name"].append(f.name or "")
                props["classification"].append(f.classification or "")
                props["object_type"].append(otype)
                props["review"].append(f.metadata.get("review", ""))
                props["measurements"].append(json.dumps(f.measurements))
                props["metadata"].append(json.dumps(f.metadata))
                colors.append(np.array([*(f.color or [255, 255, 0])], float) / 255)
        sides = [float(np.ptp(s, axis=0).max()) for s in shapes]
        width = max(2.0, float(np.median(sides)) / 40)  # level-0 pixels: visible at the zoom the objects need
        out.append((shapes, {"name": f"{name} {otype}s", "shape_type": "polygon", "features": props,
                             "edge_color": np.array(colors), "face_color": "transparent", "edge_width": width,
                             "metadata": {"source": "qupath-geojson"}, **tf}, "shapes"))
    points = [f for f in features if f.points_xy is not None]
    if points:
        coords = np.concatenate([to_rc(f.points_xy) for f in points])
        props = {"name": [f.name or "" for f in points for _ in f.points_xy],
                 "classification": [f.classification or "" for f in points for _ in f.points_xy]}
        out.append((coords, {"name": f"{name} points", "features": props, **tf}, "points"))
    return out
