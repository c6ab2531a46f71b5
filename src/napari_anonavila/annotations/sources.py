"""Annotation files for a slide: a file given for it, or in a folder the file named after the slide (its stem), as a
cohort's annotations are kept; and the regions one slide is scored or trained with."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import InputFileError
from .read import ANNOTATION_SUFFIXES, read_annotations, regions_of_polygons
from .regions import RegionSet
from .rule import ScoreRegions, merge

__all__ = ["RegionSources", "file_for_slide", "regions_for_slide"]


def file_for_slide(source: str | Path, slide: str | Path) -> Path | None:
    """``source`` itself, or in a folder the annotation file whose stem is the slide's (``case7.geojson``,
    ``case7.xml``, ``case7_mask.png`` for ``case7.svs``); None when the folder has none."""
    from ..slide import slide_stem

    source = Path(source)
    if source.is_file():
        return source
    stem = slide_stem(str(slide))
    found = [p for p in sorted(source.iterdir()) if p.is_file() and p.suffix.lower() in ANNOTATION_SUFFIXES
             and slide_stem(p.name.removesuffix(".xml").removesuffix(".geojson")) in (stem, f"{stem}_mask")]
    return found[0] if found else None


def _read(sources: Sequence, classes: Sequence[str], slide: Path, dims, role: str, required: bool) -> list[RegionSet]:
    from ..slide import slide_stem

    sets = []
    for s in map(Path, sources):
        f = file_for_slide(s, slide)
        if f is None and required:  # never the whole slide in place of a missing file
            raise InputFileError(f"{s}: no {role} file for {slide.name} (looked for {slide_stem(str(slide))}"
                                 ".geojson, .xml, .tif or .png)")
        if f is not None:
            sets.append(read_annotations(f, slide_dimensions_xy=dims).select(list(classes) or None))
    return sets


@dataclass(frozen=True)
class RegionSources:
    """Where a run's regions come from, for every slide of it: files or per-slide folders, classes and the rule."""

    roi: tuple[str, ...] = ()
    roi_classes: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    exclude_classes: tuple[str, ...] = ()
    roi_fraction: float = 0.25
    exclude_fraction: float = 0.25

    def __bool__(self) -> bool:
        return bool(self.roi or self.exclude)

    def to_dict(self) -> dict:
        """As JSON keeps it (lists, not tuples): the form a batch's settings record and compare on resume."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> RegionSources:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def for_slide(self, slide: str | Path, dimensions_xy, boxes=None) -> ScoreRegions | None:
        """The ScoreRegions of one slide (None when there are none); ``boxes`` (level-0 polygons) join the ROI."""
        return regions_for_slide(self, Path(slide), dimensions_xy, boxes=boxes)


def regions_for_slide(sources: RegionSources, slide: Path, dimensions_xy, *, boxes=None) -> ScoreRegions | None:
    """Read the ROI files (each required: a folder without the slide's file is an error) and the exclusion files
    (optional per slide) of ``sources`` for ``slide``."""
    roi = _read(sources.roi, sources.roi_classes, slide, dimensions_xy, "ROI", True)
    if boxes:
        roi.append(regions_of_polygons(boxes, source="--roi-box", kind="boxes"))
    exclude = _read(sources.exclude, sources.exclude_classes, slide, dimensions_xy, "exclusion", False)
    regions = ScoreRegions(merge(roi), tuple(exclude), sources.roi_fraction, sources.exclude_fraction)
    return regions if regions else None


def normal_regions_for_slide(sources: Sequence, classes: Sequence[str], slide: Path, dimensions_xy
                             ) -> RegionSet | None:
    """The normal tissue marked on one slide (None without sources)."""
    return merge(_read(sources, classes, slide, dimensions_xy, "normal-regions", True))
