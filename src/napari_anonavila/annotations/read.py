"""One annotation reader for the formats the tools write: QuPath GeoJSON, ASAP / Camelyon XML, and binary or label
masks (TIFF, PNG) at any downsample of the slide. Coordinates are level-0 pixels, (x, y), as QuPath and ASAP write
them. Nothing is expanded, executed or fetched: an XML with a DOCTYPE or entity declaration is refused unread."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import InputFileError
from ..userfiles import sha256_file
from .regions import LabelMask, Region, RegionSet

__all__ = ["ANNOTATION_SUFFIXES", "read_annotations", "regions_of_polygons"]

ANNOTATION_SUFFIXES = (".geojson", ".json", ".xml", ".tif", ".tiff", ".png")
_MASK_SUFFIXES = (".tif", ".tiff", ".png")
_MAX_XML_BYTES = 1 << 30


def _polygon(shell: np.ndarray, holes: Sequence[np.ndarray], where: str, repaired: list[str]):
    """A shapely polygon from rings; a self-intersecting one is made valid (and named in ``repaired``)."""
    import shapely

    poly = shapely.Polygon(shell, [h for h in holes if len(h) >= 3])
    if not poly.is_valid:
        poly = shapely.make_valid(poly)
        poly = shapely.union_all([g for g in shapely.get_parts(poly) if g.geom_type in ("Polygon", "MultiPolygon")])
        repaired.append(where)
    return poly


def _region(polys: list, cls, name, where: str, **kw) -> Region:
    import shapely

    geom = shapely.union_all(polys) if len(polys) > 1 else polys[0]
    if geom.is_empty or geom.area <= 0:
        raise InputFileError(f"{where}: the region has no area")
    return Region(cls, geom, name, **kw)


def regions_of_polygons(polygons_xy_l0: Sequence[np.ndarray], *, source: str, kind: str = "polygons",
                        cls: str | None = None) -> RegionSet:
    """Polygons (each (M, 2) level-0 x, y) as regions of one class: napari shapes, typed boxes."""
    repaired: list[str] = []
    regions = []
    for i, poly in enumerate(polygons_xy_l0):
        ring = np.asarray(poly, float)
        if ring.ndim != 2 or ring.shape[1] != 2 or len(ring) < 3 or not np.isfinite(ring).all():
            raise InputFileError(f"{source}: region {i} needs at least 3 finite (x, y) vertices, got shape "
                                 f"{ring.shape}")
        regions.append(_region([_polygon(ring, [], f"region {i}", repaired)], cls, None, f"{source}: region {i}"))
    return RegionSet(tuple(regions), None, source, kind, None, tuple(repaired))


def read_annotations(path: str | os.PathLike, *, slide_dimensions_xy: tuple[int, int] | None = None) -> RegionSet:
    """Read regions from a QuPath GeoJSON (FeatureCollection, Feature or a bare feature list), an ASAP / Camelyon XML,
    or a mask image (then ``slide_dimensions_xy`` gives the scale, read from the size ratio). Told apart by content.
    Anything unusable is one InputFileError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such annotation file")
    with open(path, "rb") as fh:
        head = fh.read(512).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head[:1] in (b"{", b"["):
        out = _read_geojson(path)
    elif head[:1] == b"<":
        out = _read_asap(path)
    elif path.suffix.lower() in _MASK_SUFFIXES:
        if slide_dimensions_xy is None:
            raise InputFileError(f"{path}: a mask needs its slide (its scale is the ratio of their sizes)")
        out = _read_mask(path, slide_dimensions_xy)
    else:
        raise InputFileError(f"{path}: not an annotation file this tool reads (QuPath GeoJSON, ASAP/Camelyon XML, or "
                             "a TIFF/PNG mask)")
    if out.repaired:
        warnings.warn(f"{path.name}: {len(out.repaired)} self-intersecting region(s) repaired (made valid): "
                      f"{', '.join(out.repaired[:3])}", UserWarning, stacklevel=2)
    return out


def _read_geojson(path: Path) -> RegionSet:
    from .geojson import read_geojson

    regions, repaired, points = [], [], 0
    for i, f in enumerate(read_geojson(path)):
        if not f.polygons_xy:
            points += 1
            continue
        where = f"{path.name}: feature {i}" + (f" ({f.name})" if f.name else "")
        holes = f.holes_xy or [[] for _ in f.polygons_xy]
        polys = [_polygon(p, hs, where, repaired) for p, hs in zip(f.polygons_xy, holes, strict=True)]
        regions.append(_region(polys, f.classification, f.name, where, object_type=f.object_type,
                               color=tuple(f.color[:3]) if f.color else None))
    if not regions:
        raise InputFileError(f"{path}: no region with an area (polygons); {points} point object(s) only")
    return RegionSet(tuple(regions), None, str(path), "qupath-geojson", sha256_file(path), tuple(repaired))


def _read_asap(path: Path) -> RegionSet:
    """ASAP XML: ``Annotations/Annotation`` (``Name``, ``Type``, ``PartOfGroup``) with ``Coordinates/Coordinate``
    (``Order``, ``X``, ``Y``); the group is the class. Dots and point sets have no area and are skipped."""
    import xml.etree.ElementTree as ET

    if path.stat().st_size > _MAX_XML_BYTES:
        raise InputFileError(f"{path}: larger than any annotation file ({path.stat().st_size:,} bytes)")

    data = path.read_bytes()
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:  # refused before parsing: nothing is ever expanded
        raise InputFileError(f"{path}: the XML declares a DOCTYPE or entities; annotation files have none, and they "
                             "are not expanded: refused")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as err:
        raise InputFileError(f"{path}: not well-formed XML ({err})") from err
    colors = {g.get("Name"): g.get("Color") for g in root.iter("Group")}
    regions, repaired, skipped = [], [], 0
    for i, ann in enumerate(root.iter("Annotation")):
        kind = ann.get("Type", "Polygon")
        name, group = ann.get("Name"), ann.get("PartOfGroup")
        where = f"{path.name}: annotation {i}" + (f" ({name})" if name else "")
        if kind in ("Dot", "PointSet"):
            skipped += 1
            continue
        coords = sorted(ann.iter("Coordinate"), key=lambda c: _number(c.get("Order", "0"), where))
        ring = np.array([[_number(c.get("X"), where), _number(c.get("Y"), where)] for c in coords], float)
        if len(ring) < 3 or not np.isfinite(ring).all():
            raise InputFileError(f"{where}: a region needs at least 3 finite vertices, got {len(ring)}")
        cls = None if group in (None, "", "None") else group
        regions.append(_region([_polygon(ring, [], where, repaired)], cls, name, where,
                               color=_hex(colors.get(group) or ann.get("Color"))))
    if not regions:
        raise InputFileError(f"{path}: no ASAP annotation with an area (Annotations/Annotation with Coordinates)"
                             + (f"; {skipped} dot(s) only" if skipped else ""))
    return RegionSet(tuple(regions), None, str(path), "asap-xml", sha256_file(path), tuple(repaired))


def _number(text, where: str) -> float:
    """A coordinate as ASAP writes it (a decimal comma too); NaN, infinities and text are refused."""
    try:
        value = float(str(text).replace(",", "."))
    except (TypeError, ValueError):
        raise InputFileError(f"{where}: coordinate {text!r} is not a number") from None
    if not np.isfinite(value):
        raise InputFileError(f"{where}: coordinate {text!r} is not finite")
    return value


def _hex(color) -> tuple[int, int, int] | None:
    if isinstance(color, str) and color.startswith("#") and len(color) == 7:
        try:
            return tuple(int(color[i : i + 2], 16) for i in (1, 3, 5))
        except ValueError:
            return None
    return None


def _read_mask(path: Path, slide_dimensions_xy: tuple[int, int]) -> RegionSet:
    """A binary or label mask at any downsample of the slide; its scale is the ratio of the two sizes."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            labels = tifffile.imread(path)
        else:
            from PIL import Image

            with Image.open(path) as im:
                labels = np.asarray(im)
    except Exception as err:  # decoders raise many types
        raise InputFileError(f"{path}: cannot read the mask image ({type(err).__name__}: {err})") from err
    if labels.ndim == 3:  # colour or RGBA: any non-black pixel is inside
        labels = (labels[..., :3].max(axis=-1) > 0).astype(np.uint8)
    if labels.ndim != 2 or not labels.size:
        raise InputFileError(f"{path}: a mask is a 2-D image, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) and not np.issubdtype(labels.dtype, np.bool_):
        labels = np.round(labels).astype(np.int64)
    w, h = slide_dimensions_xy
    dx, dy = w / labels.shape[1], h / labels.shape[0]
    if abs(dx / dy - 1) > 0.02:
        raise InputFileError(f"{path}: the mask is {labels.shape[1]} x {labels.shape[0]} px, not the shape of the "
                             f"slide ({w} x {h}): a mask of another slide?")
    labels = labels.astype(np.int64)
    names = {int(v): f"label {int(v)}" for v in np.unique(labels) if v != 0}
    if len(names) == 1:
        names = {next(iter(names)): "mask"}
    return RegionSet((), LabelMask(labels, (dx, dy), names), str(path), "mask", sha256_file(path))
