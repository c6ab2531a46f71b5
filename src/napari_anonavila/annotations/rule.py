"""Where to score on a slide: an ROI (all tissue without one), exclusions, and the area rule a patch follows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import InputFileError
from .regions import LabelMask, RegionSet

__all__ = ["ScoreRegions", "merge"]


def merge(sets: Sequence[RegionSet]) -> RegionSet | None:
    """Several region sets (files, boxes, layers) as one; at most one of them may be a mask."""
    sets = [s for s in sets if s is not None]
    if not sets:
        return None
    if len(sets) == 1:
        return sets[0]
    masks = [s.mask for s in sets if s.mask is not None]
    if len(masks) > 1:
        raise InputFileError("give one mask per role (ROI or exclusion); join several masks into one image first")
    mask: LabelMask | None = masks[0] if masks else None
    return RegionSet(tuple(r for s in sets for r in s.regions), mask, " + ".join(s.source for s in sets),
                     "+".join(dict.fromkeys(s.kind for s in sets)), ";".join(s.sha256 or "-" for s in sets),
                     tuple(x for s in sets for x in s.repaired))


@dataclass(frozen=True)
class ScoreRegions:
    """An ROI (None: all tissue), exclusions, and the rule: a patch is kept when at least ``roi_fraction`` of its
    area lies in the ROI, and dropped when at least ``exclude_fraction`` lies in an exclusion (the tissue rule)."""

    roi: RegionSet | None = None
    exclude: tuple[RegionSet, ...] = ()
    roi_fraction: float = 0.25
    exclude_fraction: float = 0.25

    def __bool__(self) -> bool:
        return self.roi is not None or bool(self.exclude)

    def check(self, slide) -> None:
        """Refuse regions that cannot be this slide's: wholly outside it, or reaching far beyond its edges."""
        w, h = slide.dimensions_xy
        for role, regions in (("ROI", self.roi), *(("exclusion", e) for e in self.exclude)):
            box = regions.bounds_xy_l0() if regions is not None else None
            if box is None:
                continue
            x0, y0, x1, y1 = box
            if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
                raise InputFileError(f"{regions.source}: the {role} lies wholly outside {slide.path.name} "
                                     f"({w} x {h} px): regions of another slide?")
            if x1 > w * 1.05 or y1 > h * 1.05 or x0 < -0.05 * w or y0 < -0.05 * h:
                raise InputFileError(f"{regions.source}: the {role} reaches ({x1:.0f}, {y1:.0f}), beyond "
                                     f"{slide.path.name} ({w} x {h} px): regions of another slide?")

    def key(self) -> dict:
        """What the grid depends on (for the grid cache)."""
        return {"roi": self.roi.digest() if self.roi is not None else None,
                "exclude": [e.digest() for e in self.exclude], "roi_fraction": self.roi_fraction,
                "exclude_fraction": self.exclude_fraction}

    def describe(self, counts: dict | None = None) -> dict:
        """For provenance and summary.json: the files (with SHA-256), classes, rule and patch counts."""
        return {"roi": self.roi.describe() if self.roi is not None else None,
                "exclude": [e.describe() for e in self.exclude], "roi_fraction": self.roi_fraction,
                "exclude_fraction": self.exclude_fraction, **(counts or {})}

    @staticmethod
    def file_hashes(described: dict | None) -> set[str]:
        """The SHA-256 of every annotation file named in a :meth:`describe` record (a merged set's are joined by
        ';', a drawn layer or a typed box has none)."""
        sets = [(described or {}).get("roi"), *((described or {}).get("exclude") or ())]
        return {h for d in sets if d for h in str(d.get("sha256") or "").split(";") if h not in ("", "-")}
