"""Annotated regions as one type, whatever drew them: each a class name and an area in level-0 (x, y) pixels.

Areas are shapely geometries (polygons with holes, multipolygons), kept exact for selection and evaluation; a label
mask is kept as the raster it is. :meth:`RegionSet.fractions` gives, for each patch of a grid, the part of its area
that lies inside the chosen regions: the same rule as the tissue fraction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputFileError

__all__ = ["LabelMask", "Region", "RegionSet"]


@dataclass(frozen=True)
class Region:
    """One annotated object: its class (None: unclassified), name, QuPath object type, colour and area."""

    cls: str | None
    geometry: object  # shapely (Multi)Polygon, level-0 (x, y)
    name: str | None = None
    object_type: str = "annotation"
    color: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class LabelMask:
    """A label raster over the slide: ``labels[r, c]`` covers level-0 pixels (c, r) x ``downsample``; class names
    by label value (0 is background)."""

    labels: np.ndarray
    downsample: tuple[float, float]  # level-0 pixels per mask pixel, (x, y)
    names: dict[int, str]


@dataclass(frozen=True)
class RegionSet:
    """Regions read from one source (a file, a Shapes layer, rectangles typed on the command line)."""

    regions: tuple[Region, ...] = ()
    mask: LabelMask | None = None
    source: str = ""  # the file, or what drew them
    kind: str = ""  # "qupath-geojson", "asap-xml", "mask", "napari-shapes", "boxes"
    sha256: str | None = None
    repaired: tuple[str, ...] = field(default=())  # self-intersecting features made valid, named

    def __len__(self) -> int:
        return len(self.regions) + (int(np.any(self.mask.labels)) if self.mask is not None else 0)

    def classes(self) -> list[str]:
        """The class names present, in order of first appearance (masks: their label names)."""
        names = [r.cls or "(unclassified)" for r in self.regions]
        if self.mask is not None:
            present = set(np.unique(self.mask.labels).tolist()) - {0}
            names += [self.mask.names.get(v, f"label {v}") for v in sorted(present)]
        return list(dict.fromkeys(names))

    def select(self, classes: Sequence[str] | None) -> RegionSet:
        """Only the regions of ``classes`` (None: all); a class no region has is an error listing those there are."""
        if not classes:
            return self
        have = self.classes()
        missing = [c for c in classes if c not in have]
        if missing:
            raise InputFileError(f"{self.source}: no region of class {missing[0]!r}; the classes there are: "
                                 f"{', '.join(have) or 'none'}")
        keep = tuple(r for r in self.regions if (r.cls or "(unclassified)") in classes)
        mask = None
        if self.mask is not None:
            values = [v for v, n in self.mask.names.items() if n in classes]
            if values:
                mask = LabelMask(np.where(np.isin(self.mask.labels, values), self.mask.labels, 0),
                                 self.mask.downsample, self.mask.names)
        return RegionSet(keep, mask, self.source, self.kind, self.sha256, self.repaired)

    def area(self):
        """The union of the regions' areas (shapely), or None without polygon regions."""
        import shapely

        geoms = [r.geometry for r in self.regions]
        return shapely.union_all(geoms) if geoms else None

    def outlines(self) -> list[np.ndarray]:
        """Each region's outline, (N, 2) level-0 (x, y): its largest polygon's exterior (hold-out groups by region)."""
        import shapely

        out = []
        for r in self.regions:
            parts = sorted(shapely.get_parts(r.geometry), key=lambda g: -g.area)
            out.append(np.asarray(parts[0].exterior.coords)[:, :2])
        return out

    def bounds_xy_l0(self) -> tuple[float, float, float, float] | None:
        """(x0, y0, x1, y1) of everything annotated, level-0."""
        boxes = []
        if self.regions:
            boxes.append(np.asarray(self.area().bounds, float))
        if self.mask is not None and np.any(self.mask.labels):
            rr, cc = np.nonzero(self.mask.labels)
            dx, dy = self.mask.downsample
            boxes.append(np.array([cc.min() * dx, rr.min() * dy, (cc.max() + 1) * dx, (rr.max() + 1) * dy]))
        if not boxes:
            return None
        b = np.stack(boxes)
        return float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), float(b[:, 3].max())

    def fractions(self, xy_l0: np.ndarray, size_l0: float) -> np.ndarray:
        """For squares of side ``size_l0`` with top-left corners ``xy_l0`` (N, 2): the part of each one's area that
        lies inside the regions (exact for polygons; at the mask's own resolution for a mask)."""
        xy = np.asarray(xy_l0, float).reshape(-1, 2)
        out = np.zeros(len(xy))
        if self.regions and len(xy):
            out = np.maximum(out, _polygon_fractions(self.area(), xy, float(size_l0)))
        if self.mask is not None and len(xy):
            out = np.maximum(out, _mask_fractions(self.mask, xy, float(size_l0)))
        return np.clip(out, 0.0, 1.0)

    def describe(self) -> dict:
        """For provenance: where the regions came from, their classes and file hash."""
        return {"source": self.source, "kind": self.kind, "sha256": self.sha256, "classes": self.classes(),
                "n_regions": len(self.regions), "repaired": list(self.repaired)}

    def digest(self) -> str:
        """Identifies the regions' content (for caches): geometry as WKB and the mask's bytes."""
        import shapely

        h = hashlib.sha256()
        for r in self.regions:
            h.update(shapely.to_wkb(r.geometry))
        if self.mask is not None:
            h.update(np.ascontiguousarray(self.mask.labels).tobytes())
            h.update(repr(self.mask.downsample).encode())
        return h.hexdigest()


def _polygon_fractions(geom, xy: np.ndarray, p: float) -> np.ndarray:
    """Exact area fractions: squares wholly inside count 1, squares that meet the boundary get their intersection's
    area (GEOS), the rest 0."""
    import shapely

    boxes = shapely.box(xy[:, 0], xy[:, 1], xy[:, 0] + p, xy[:, 1] + p)
    shapely.prepare(geom)
    out = np.zeros(len(xy))
    touching = shapely.intersects(geom, boxes)
    inside = touching & shapely.contains(geom, boxes)
    out[inside] = 1.0
    edge = np.flatnonzero(touching & ~inside)
    if len(edge):
        out[edge] = _clipped_areas(geom, xy[edge], p) / (p * p)
    return out


def _clipped_areas(geom, xy: np.ndarray, p: float, leaf: int = 16) -> np.ndarray:
    """Area of ``geom`` inside each square (top-left ``xy``, side ``p``). Recursive bisection: the squares are split
    in two along their longer spread and ``geom`` is cut to each half's bounding box first, so each exact GEOS
    intersection works on the few vertices near its squares, not on the whole outline (10^5 vertices: seconds -> a
    fraction of one)."""
    import shapely

    if len(xy) <= leaf:
        return shapely.area(shapely.intersection(shapely.box(xy[:, 0], xy[:, 1], xy[:, 0] + p, xy[:, 1] + p), geom))
    axis = int(np.ptp(xy[:, 1]) > np.ptp(xy[:, 0]))
    order = np.argsort(xy[:, axis], kind="stable")
    out = np.empty(len(xy))
    for half in np.array_split(order, 2):
        part = xy[half]
        x0, y0 = part.min(0)
        x1, y1 = part.max(0) + p
        piece = shapely.intersection(geom, shapely.box(x0, y0, x1, y1))
        out[half] = 0.0 if piece.is_empty else _clipped_areas(piece, part, p, leaf)
    return out


def _mask_fractions(mask: LabelMask, xy: np.ndarray, p: float) -> np.ndarray:
    """Mean of the (non-zero) mask over each square, from a summed-area table of the raster (mask resolution)."""
    m = (np.asarray(mask.labels) > 0).astype(np.float64)
    sat = np.zeros((m.shape[0] + 1, m.shape[1] + 1))
    sat[1:, 1:] = m.cumsum(0).cumsum(1)
    dx, dy = mask.downsample
    x0 = np.clip(np.round(xy[:, 0] / dx).astype(int), 0, m.shape[1])
    x1 = np.clip(np.round((xy[:, 0] + p) / dx).astype(int), 0, m.shape[1])
    y0 = np.clip(np.round(xy[:, 1] / dy).astype(int), 0, m.shape[0])
    y1 = np.clip(np.round((xy[:, 1] + p) / dy).astype(int), 0, m.shape[0])
    area = np.maximum((x1 - x0) * (y1 - y0), 1)
    inside = sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]
    return np.where((x1 > x0) & (y1 > y0), inside / area, 0.0)

