"""Results -> napari layer data: the slide pyramid, the heatmap image, the top-k points.

World coordinates are level-0 pixels times the slide's scale (microns per pixel when known, else 1), in
napari's (row, col) order. A heatmap cell of p level-0 pixels gets scale p and translate (p - 1) / 2, so that
its centre sits on the centre of the patch's pixels (napari puts pixel centres at integer coordinates).
"""

from __future__ import annotations

import json

import numpy as np

from ..maps.overlay import contrast_limits
from ..slide import Slide

__all__ = ["HEATMAP_COLORMAP", "features_to_layer_data", "heatmap_layer_data", "slide_layer_data", "slide_scale",
           "topk_features", "topk_layer_data"]


def _heatmap_colormap():
    """Inferno whose opacity rises with the value; the lowest 0.5% (where NaN cells are put) is transparent."""
    from napari.utils.colormaps import Colormap
    from napari.utils.colormaps.colormap_utils import ensure_colormap

    base = ensure_colormap("inferno")
    xs = np.linspace(0, 1, 32)
    colors = base.map(xs)
    colors[:, 3] = 0.2 + 0.7 * xs
    controls = np.concatenate([[0.0, 0.005], 0.005 + xs[1:] * 0.995])
    colors = np.concatenate([[[0, 0, 0, 0], colors[0]], colors[1:]])
    return Colormap(colors=colors, controls=controls, name="anonavila-heat", display_name="anomaly (inferno)")


HEATMAP_COLORMAP = "anonavila-heat"


def slide_scale(slide: Slide) -> float:
    """World units per level-0 pixel: microns when the slide has mpp, else pixels."""
    return float(slide.mpp) if slide.mpp else 1.0


def slide_layer_data(slide: Slide) -> tuple:
    """(levels, kwargs, 'image') for a multiscale RGB image layer with physical scale when known."""
    s = slide_scale(slide)
    meta = {**slide.describe(), "anonavila_slide": slide}
    kwargs = {"name": slide.path.name, "multiscale": True, "rgb": True, "metadata": meta, "scale": (s, s),
              "units": _units(s), "contrast_limits": (0, 255)}
    return (slide.levels, kwargs, "image")


def heatmap_for_display(heat: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """NaN cells moved just below the contrast range, where the colormap is transparent."""
    lo, hi = contrast_limits(heat)
    shown = np.where(np.isnan(heat), lo - (hi - lo), heat).astype(np.float32)
    return shown, (lo - 0.004 * (hi - lo), hi)


def _units(scale: float) -> tuple[str, str]:
    return ("um", "um") if scale != 1.0 else ("pixel", "pixel")


def heatmap_layer_data(heat: np.ndarray, patch_size_l0: int, scale: float, origin_xy_l0=(0, 0), name="anomaly heatmap"
                       ) -> tuple:
    """(data, kwargs, 'image') for the heatmap aligned with the slide layer."""
    p = patch_size_l0
    shown, clim = heatmap_for_display(heat)
    kwargs = {"name": name, "scale": (p * scale, p * scale),
              "translate": ((origin_xy_l0[1] + (p - 1) / 2) * scale, (origin_xy_l0[0] + (p - 1) / 2) * scale),
              "colormap": _heatmap_colormap(), "contrast_limits": clim, "opacity": 0.8, "blending": "translucent",
              "interpolation2d": "nearest", "metadata": {"raw": heat, "patch_size_l0": p}, "units": _units(scale)}
    return (shown, kwargs, "image")


def topk_features(result, detector, k: int) -> dict[str, list]:
    """Rank, score, distances and the top normal/abnormal terms (with weights) of the k best patches."""
    idx = result.top_k(k)
    s = result.scores
    names_n, names_a = detector.term_names("normal"), detector.term_names("abnormal")

    def terms(i, kind):
        if kind == "n":
            return [(names_n[j], float(w)) for j, w in zip(s.top_normal_idx[i], s.top_normal_w[i], strict=True)]
        return [(names_a[j], float(w)) for j, w in zip(s.top_abnormal_idx[i], s.top_abnormal_w[i], strict=True)]

    return {"rank": list(range(1, len(idx) + 1)), "index": [int(i) for i in idx],
            "score": [float(s.score[i]) for i in idx], "d_normal": [float(s.d_normal[i]) for i in idx],
            "d_abnormal": [float(s.d_abnormal[i]) for i in idx],
            "top_normal": [terms(i, "n")[0][0] for i in idx], "top_abnormal": [terms(i, "a")[0][0] for i in idx],
            "normal_terms": ["; ".join(f"{t} ({w:.2f})" for t, w in terms(i, "n")) for i in idx],
            "abnormal_terms": ["; ".join(f"{t} ({w:.2f})" for t, w in terms(i, "a")) for i in idx]}


def topk_layer_data(result, detector, k: int, scale: float, name: str = "top-k patches") -> tuple:
    """(coords, kwargs, 'points'): one point at the centre of each top-k patch, with features and labels."""
    feats = topk_features(result, detector, k)
    p = result.grid.patch_size_l0
    xy = result.grid.xy_l0()[feats["index"]] if feats["index"] else np.zeros((0, 2))
    coords = np.stack([(xy[:, 1] + (p - 1) / 2) * scale, (xy[:, 0] + (p - 1) / 2) * scale], axis=1) \
        if len(xy) else np.zeros((0, 2))
    kwargs = {"name": name, "features": feats, "size": p * scale * 0.35, "units": _units(scale),
              "metadata": {"anonavila_l0_per_world": 1 / scale},
              "face_color": "transparent", "border_color": "cyan", "border_width": 0.12, "symbol": "ring",
              "text": {"string": "{rank}: {top_abnormal}", "color": "cyan", "size": 8,
                       "anchor": "upper_left", "translation": (-p * scale * 0.2, 0)}}
    return (coords, kwargs, "points")


def features_to_layer_data(features, scale: float, name: str = "QuPath") -> list[tuple]:
    """Imported QuPath features -> a Shapes layer per object type and a Points layer for point objects."""
    out = []
    by_type: dict[str, list] = {}
    points = [f for f in features if f.points_xy is not None]
    for f in features:
        if f.polygons_xy:
            by_type.setdefault(f.object_type, []).append(f)
    for otype, feats in sorted(by_type.items()):
        shapes, props = [], {"name": [], "classification": [], "object_type": [], "review": [], "measurements": [],
                             "metadata": []}
        colors = []
        for f in feats:
            for ring in f.polygons_xy:
                shapes.append(np.asarray(ring)[:, ::-1] * scale)  # level-0 (x, y) -> world (row, col)
                props["name"].append(f.name or "")
                props["classification"].append(f.classification or "")
                props["object_type"].append(otype)
                props["review"].append(f.metadata.get("review", ""))
                props["measurements"].append(json.dumps(f.measurements))
                props["metadata"].append(json.dumps(f.metadata))
                colors.append(np.array([*(f.color or [255, 255, 0])], float) / 255)
        out.append((shapes, {"name": f"{name} {otype}s", "shape_type": "polygon", "features": props,
                             "edge_color": np.array(colors), "face_color": "transparent", "edge_width": 2 * scale,
                             "units": _units(scale), "metadata": {"source": "qupath-geojson",
                                                                   "anonavila_l0_per_world": 1 / scale}}, "shapes"))
    if points:
        coords = np.concatenate([f.points_xy[:, ::-1] * scale for f in points])
        props = {"name": [f.name or "" for f in points for _ in f.points_xy],
                 "classification": [f.classification or "" for f in points for _ in f.points_xy]}
        out.append((coords, {"name": f"{name} points", "features": props, "units": _units(scale)}, "points"))
    return out
