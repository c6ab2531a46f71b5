"""QuPath GeoJSON: export (tiles with measurements, top-k annotations, user regions) and import back.

Follows shared/docs/CONVENTIONS.md: ``objectType`` inside ``properties``; classification always
``{"name", "color": [r, g, b]}``; measurements as a map; ``isLocked`` only when true; metadata as strings;
coordinates are level-0 [x, y] with closed rings; one polygon is a ``Polygon``. Export streams feature by
feature, so 10^5 tiles never sit in memory as one document.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from .._atomic import atomic_write, check_writable
from ..annotations.geojson import Feature
from ..result import SlideResult
from ..reviews import REVIEW_STATES

__all__ = ["BAND_NAMES", "feature_to_geojson", "region_feature", "score_bands", "write_features", "write_geojson"]

logger = logging.getLogger(__name__)

BAND_NAMES = ("Anomaly low", "Anomaly medium", "Anomaly high", "Anomaly very high")
_BAND_COLORS = ([40, 11, 84], [136, 34, 106], [228, 90, 49], [252, 255, 164])  # inferno
_REVIEW_COLORS = {"unreviewed": [255, 200, 0], "confirmed": [220, 20, 60], "rejected": [60, 179, 113],
                  "unsure": [147, 112, 219]}


Z_BANDS = (2.0, 4.0, 8.0)  # calibrated bands: the same meaning on every slide


def score_bands(scores: np.ndarray) -> list[float]:
    """Band thresholds of an uncalibrated result: the 50th, 90th and 99th percentiles of the slide's own scores
    (recorded in provenance; they differ from slide to slide)."""
    s = np.asarray(scores, float)
    return [float(v) for v in np.percentile(s, [50, 90, 99])] if s.size else [0.0, 0.0, 0.0]


def _measures(t: SlideResult, sig: np.ndarray, i: int, rank: int) -> dict:
    m = {"anomaly_score": _num(t.score[i]), "d_normal": _num(t.d_normal[i]), "d_abnormal": _num(t.d_abnormal[i]),
         "rank": rank}
    if t.calibrated:
        m.update(z=_num(t.z[i]), p_normal=_num(t.p_normal[i]), significant=int(bool(sig[i])))
    return m


def _square(x: float, y: float, p: float) -> dict:
    return {"type": "Polygon", "coordinates": [[[x, y], [x + p, y], [x + p, y + p], [x, y + p], [x, y]]]}


def _num(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def review_class(state: str) -> dict:
    if state not in REVIEW_STATES:
        raise ValueError(f"unknown review state {state!r}; use one of {REVIEW_STATES}")
    return {"name": f"Anomaly {state}", "color": _REVIEW_COLORS[state]}


def _tile_features(t: SlideResult, bands: list[float]) -> Iterator[dict]:
    rank, xy, sig = t.rank, t.xy_l0, t.significant()
    band = np.searchsorted(bands, t.z if t.calibrated else t.score, side="right")
    for i in range(len(t)):
        geom = _square(int(xy[i, 0]), int(xy[i, 1]), t.patch_size_l0)
        yield {"type": "Feature", "id": str(uuid.uuid4()), "geometry": geom,
               "properties": {"objectType": "tile",
                              "classification": {"name": BAND_NAMES[band[i]], "color": _BAND_COLORS[band[i]]},
                              "measurements": _measures(t, sig, i, int(rank[i]))}}


def _topk_features(t: SlideResult, k: int) -> Iterator[dict]:
    xy, sig, review = t.xy_l0, t.significant(), t.review_states()
    for r, i in enumerate(t.top_k(k), start=1):
        state = review.get(int(i), "unreviewed")
        geom = _square(int(xy[i, 0]), int(xy[i, 1]), t.patch_size_l0)
        normal, abnormal = t.explain(int(i))
        yield {"type": "Feature", "id": str(uuid.uuid4()), "geometry": geom,
               "properties": {"objectType": "annotation", "name": f"#{r} anomaly", "isLocked": True,
                              "classification": review_class(state),
                              "measurements": _measures(t, sig, i, r),
                              "metadata": {"rank": str(r), "review": state, "patch_index": str(int(i)),
                                           "top_abnormal_terms": abnormal, "top_normal_terms": normal}}}


def region_feature(polygon_xy_l0: np.ndarray, name: str, *, color=(0, 200, 0), metadata: dict | None = None) -> dict:
    """A user-drawn region (level-0 x, y vertices) as a QuPath annotation; the ring is closed here."""
    ring = [[float(x), float(y)] for x, y in np.asarray(polygon_xy_l0, float)]
    if ring and ring[0] != ring[-1]:
        ring.append(ring[0])
    props = {"objectType": "annotation", "name": name, "classification": {"name": name, "color": list(color)}}
    if metadata:
        props["metadata"] = {str(k): str(v) for k, v in metadata.items()}
    return {"type": "Feature", "id": str(uuid.uuid4()), "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": props}


def write_geojson(path: str | os.PathLike, result: SlideResult, *, top_k: int = 10, tiles: bool = True,
                  regions: Iterable[dict] = (), overwrite: bool = False) -> dict:
    """Stream a FeatureCollection: every patch as a tile, the top-k as annotations, then ``regions``.

    Returns the thresholds used for the score bands.
    """
    bands = list(Z_BANDS) if result.calibrated else score_bands(result.score)
    parts: list[Iterable[dict]] = [_tile_features(result, bands)] if tiles else []
    write_features(path, itertools.chain(*parts, _topk_features(result, top_k), regions), overwrite=overwrite)
    return {"band_thresholds": dict(zip(BAND_NAMES[1:], bands, strict=True)),
            "bands_of": "z (calibrated, the same on every slide)" if result.calibrated else
            "the slide's own score percentiles (uncalibrated)", "top_k": top_k}


def feature_to_geojson(f: Feature) -> dict:
    """An imported Feature back to a QuPath GeoJSON feature (new id), for edits made in napari or round trips."""
    if f.geometry_type in ("Point", "MultiPoint"):
        pts = [[float(x), float(y)] for x, y in f.points_xy]
        geom = {"type": "Point", "coordinates": pts[0]} if len(pts) == 1 else {"type": "MultiPoint", "coordinates": pts}
    else:
        def ring(r) -> list:
            return [[float(x), float(y)] for x, y in r]

        holes = f.holes_xy or [[] for _ in f.polygons_xy]
        polys = [[ring(p), *(ring(h) for h in hs)] for p, hs in zip(f.polygons_xy, holes, strict=True)]
        geom = {"type": "Polygon", "coordinates": polys[0]} if len(polys) == 1 else \
            {"type": "MultiPolygon", "coordinates": polys}
    props: dict = {"objectType": f.object_type, **f.extra}
    if f.name is not None:
        props["name"] = f.name
    if f.classification is not None:
        props["classification"] = {"name": f.classification, "color": f.color or [128, 128, 128]}
    if f.measurements:
        props["measurements"] = {k: _num(v) for k, v in f.measurements.items()}
    if f.metadata:
        props["metadata"] = dict(f.metadata)
    if f.locked:
        props["isLocked"] = True
    return {"type": "Feature", "id": str(uuid.uuid4()), "geometry": geom, "properties": props}


def write_features(path: str | os.PathLike, features: Iterable[dict], *, overwrite: bool = False) -> Path:
    """Stream ready-made GeoJSON features into a FeatureCollection, atomically."""
    path = check_writable(path, overwrite=overwrite)
    with atomic_write(path, encoding="utf-8") as fh:
        fh.write('{"type": "FeatureCollection", "features": [\n')
        for i, feat in enumerate(features):
            fh.write(("" if i == 0 else ",\n") + json.dumps(feat, separators=(",", ":"), allow_nan=False))
        fh.write("\n]}\n")
    return path
