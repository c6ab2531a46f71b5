"""QuPath GeoJSON read as QuPath writes it: a FeatureCollection, one Feature, or the bare feature list of QuPath
0.2-0.3; Polygon (with holes), MultiPolygon, Point and MultiPoint; both measurement layouts; string, object and
derived (``names``) classifications; the legacy ``object_type`` key (with a warning). Coordinates are level-0
[x, y]. Unknown properties are kept in ``Feature.extra``."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputFileError

__all__ = ["Feature", "read_geojson"]

_OBJECT_TYPES = ("annotation", "detection", "tile", "cell", "tmaCore")


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
    holes_xy: list[list[np.ndarray]] = field(default_factory=list)  # per polygon, its holes' rings


def _classification(value, where: str) -> tuple[str | None, list[int] | None]:
    if value is None:
        return None, None
    if isinstance(value, str):
        return value, None
    if isinstance(value, dict):
        if not value.get("name") and isinstance(value.get("names"), list):  # a derived class: Tumor: Positive
            value = {**value, "name": ": ".join(str(n) for n in value["names"])}
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


def _geometry(geom, where: str) -> tuple[str, list[np.ndarray], np.ndarray | None, list[list[np.ndarray]]]:
    """(type, exterior rings, points, holes per exterior ring)."""
    if not isinstance(geom, dict) or "type" not in geom:
        raise InputFileError(f"{where}: feature without a geometry")
    kind, coords = geom["type"], geom.get("coordinates")
    try:
        if kind in ("Polygon", "MultiPolygon"):
            polys = [coords] if kind == "Polygon" else coords
            out = kind, [_ring(p[0]) for p in polys], None, [[_ring(h) for h in p[1:]] for p in polys]
        elif kind == "Point":
            out = kind, [], _points([coords]), []
        elif kind == "MultiPoint":
            out = kind, [], _points(coords), []
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
    gtype, polys, pts, holes = _geometry(obj.get("geometry"), where)
    cls, color = _classification(props.get("classification"), where)
    known = {"objectType", "object_type", "classification", "measurements", "metadata", "name", "isLocked"}
    meta = props.get("metadata") or {}
    return Feature(otype, gtype, polys, pts, props.get("name"), cls, color,
                   _measurements(props.get("measurements"), where),
                   {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {},
                   bool(props.get("isLocked", False)), {k: v for k, v in props.items() if k not in known}, holes)


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
