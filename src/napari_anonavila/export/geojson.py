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
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._atomic import atomic_write, check_writable
from ..errors import InputFileError
from ..result import SlideResult
from ..reviews import REVIEW_STATES

__all__ = ["BAND_NAMES", "Feature", "feature_to_geojson", "read_geojson", "region_feature", "score_bands",
           "write_features", "write_geojson"]

logger = logging.getLogger(__name__)

BAND_NAMES = ("Anomaly low", "Anomaly medium", "Anomaly high", "Anomaly very high")
_BAND_COLORS = ([40, 11, 84], [136, 34, 106], [228, 90, 49], [252, 255, 164])  # inferno
_REVIEW_COLORS = {"unreviewed": [255, 200, 0], "confirmed": [220, 20, 60], "rejected": [60, 179, 113],
                  "unsure": [147, 112, 219]}
_OBJECT_TYPES = ("annotation", "detection", "tile", "cell", "tmaCore")


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


# -- import ------------------------------------------------------------------------------------------
@dataclass
class Feature:
    """One imported object: level-0 (x, y) rings (polygons) or points, and its QuPath properties."""

    object_type: str
    geometry_type: str
    polygons_xy: list[np.ndarray]
    points_xy: np.ndarray | None
    name: str | None
    classification: str | None
    color: list[int] | None
    measurements: dict[str, float]
    metadata: dict[str, str]
    locked: bool = False
    extra: dict = field(default_factory=dict)


def _classification(value, where: str) -> tuple[str | None, list[int] | None]:
    if value is None:
        return None, None
    if isinstance(value, str):
        return value, None
    if isinstance(value, dict):
        color = value.get("color") or value.get("colorRGB")
        if isinstance(color, int):  # packed ARGB integer, as older QuPath wrote
            color = [(color >> 16) & 255, (color >> 8) & 255, color & 255]
        return value.get("name"), list(color) if isinstance(color, list) else None
    warnings.warn(f"{where}: classification {value!r} ignored (not a string or an object)", UserWarning, stacklevel=4)
    return None, None


def _measurements(value, where: str) -> dict[str, float]:
    if value is None:
        return {}
    items = value.items() if isinstance(value, dict) else ((m.get("name"), m.get("value")) for m in value
                                                           if isinstance(m, dict)) if isinstance(value, list) else ()
    out = {}
    for k, v in items:
        try:
            out[str(k)] = float("nan") if v is None else float(v)
        except (TypeError, ValueError):
            warnings.warn(f"{where}: measurement {k!r}={v!r} is not a number; ignored", UserWarning, stacklevel=4)
    return out


def _geometry(geom, where: str) -> tuple[str, list[np.ndarray], np.ndarray | None]:
    if not isinstance(geom, dict) or "type" not in geom:
        raise InputFileError(f"{where}: feature without a geometry")
    kind, coords = geom["type"], geom.get("coordinates")
    try:
        if kind == "Polygon":
            out = kind, [_ring(coords[0])], None
        elif kind == "MultiPolygon":
            out = kind, [_ring(poly[0]) for poly in coords], None
        elif kind == "Point":
            out = kind, [], _points([coords])
        elif kind == "MultiPoint":
            out = kind, [], _points(coords)
        else:
            raise InputFileError(f"{where}: unsupported geometry type {kind!r}")
    except (TypeError, IndexError, KeyError, ValueError) as err:
        raise InputFileError(f"{where}: malformed {kind} coordinates ({type(err).__name__}: {err})") from err
    if not out[1] and (out[2] is None or not len(out[2])):
        raise InputFileError(f"{where}: empty {kind} geometry")
    return out


def _numbers(coords) -> None:
    """Coordinates are numbers: JSON's true/false would pass as 1/0."""
    stack = [coords]
    while stack:
        v = stack.pop()
        if isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"coordinates must be numbers, got {json.dumps(v)[:20]}")


def _ring(coords) -> np.ndarray:
    _numbers(coords)
    ring = np.asarray(coords, float)
    if ring.ndim != 2 or ring.shape[1] < 2 or len(ring) < 3 or not np.isfinite(ring).all():
        raise ValueError(f"a ring needs at least 3 finite (x, y) vertices, got shape {ring.shape}")
    return ring[:, :2]


def _points(coords) -> np.ndarray:
    _numbers(coords)
    pts = np.asarray(coords, float)
    if pts.ndim != 2 or pts.shape[1] < 2 or not np.isfinite(pts).all():
        raise ValueError(f"points need finite (x, y) coordinates, got shape {pts.shape}")
    return pts[:, :2]


def _feature(obj: dict, where: str) -> Feature | None:
    props = obj.get("properties")
    props = {} if props is None else props
    if not isinstance(props, dict):
        raise InputFileError(f"{where}: 'properties' is not an object")
    otype = props.get("objectType")
    if otype is None and "object_type" in props:
        warnings.warn(f"{where}: legacy key 'object_type' read as 'objectType'", UserWarning, stacklevel=3)
        otype = props["object_type"]
    otype = otype or "annotation"
    if otype not in _OBJECT_TYPES:
        warnings.warn(f"{where}: unknown objectType {otype!r}, read as an annotation", UserWarning, stacklevel=3)
        otype = "annotation"
    gtype, polys, pts = _geometry(obj.get("geometry"), where)
    cls, color = _classification(props.get("classification"), where)
    known = {"objectType", "object_type", "classification", "measurements", "metadata", "name", "isLocked"}
    meta = props.get("metadata") or {}
    return Feature(otype, gtype, polys, pts, props.get("name"), cls, color,
                   _measurements(props.get("measurements"), where),
                   {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {},
                   bool(props.get("isLocked", False)), {k: v for k, v in props.items() if k not in known})


def read_geojson(path: str | os.PathLike) -> list[Feature]:
    """Read QuPath GeoJSON (a FeatureCollection, a list of features, or one feature).

    Accepts both measurement layouts, string or object classifications, a missing classification,
    Polygon, MultiPolygon and Point geometries, and the legacy ``object_type`` key (with a warning).
    Unknown properties are kept in ``Feature.extra``.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as err:
        raise InputFileError(f"{path}: cannot read ({err})") from err
    except json.JSONDecodeError as err:
        raise InputFileError(f"{path}: not JSON ({err.msg} at line {err.lineno})") from err
    except (RecursionError, ValueError) as err:  # nesting too deep; integers past Python's digit limit
        raise InputFileError(f"{path}: not usable JSON ({type(err).__name__}: nesting too deep or numbers too long)"
                             ) from err
    if isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        items = doc.get("features")
    elif isinstance(doc, dict) and doc.get("type") == "Feature":
        items = [doc]
    elif isinstance(doc, list):
        items = doc
    else:
        raise InputFileError(f"{path}: not a GeoJSON FeatureCollection, feature list or Feature")
    if not isinstance(items, list):
        raise InputFileError(f"{path}: 'features' is not a list")
    out = []
    for i, obj in enumerate(items):
        if not isinstance(obj, dict):
            raise InputFileError(f"{path}: feature {i} is not an object")
        try:
            out.append(_feature(obj, f"{path.name}: feature {i}"))
        except (OverflowError, RecursionError) as err:  # e.g. a 400-digit coordinate
            raise InputFileError(f"{path}: feature {i} has a number or nesting out of range ({err})") from err
    return out


def feature_to_geojson(f: Feature) -> dict:
    """An imported Feature back to a QuPath GeoJSON feature (new id), for edits made in napari or round trips."""
    if f.geometry_type in ("Point", "MultiPoint"):
        pts = [[float(x), float(y)] for x, y in f.points_xy]
        geom = {"type": "Point", "coordinates": pts[0]} if len(pts) == 1 else {"type": "MultiPoint", "coordinates": pts}
    else:
        rings = [[[float(x), float(y)] for x, y in p] for p in f.polygons_xy]
        geom = {"type": "Polygon", "coordinates": [rings[0]]} if len(rings) == 1 else \
            {"type": "MultiPolygon", "coordinates": [[r] for r in rings]}
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
