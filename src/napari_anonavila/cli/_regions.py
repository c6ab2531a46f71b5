"""The command line's regions: ``--roi`` and ``--exclude`` files (QuPath GeoJSON, ASAP XML, masks; a folder holds one
file per slide, found by the slide's stem), ``--roi-class`` / ``--exclude-class`` and the area rule's fractions."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import existing_path

__all__ = ["add_normal_region_args", "add_region_args", "normal_regions_for", "regions_for"]


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"a fraction of a patch's area lies in (0, 1], got {text}")
    return v


def add_region_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("regions (QuPath GeoJSON, ASAP/Camelyon XML, or a TIFF/PNG mask; level-0 pixels)")
    g.add_argument("--roi", type=existing_path, action="append", default=[], metavar="FILE_OR_DIR",
                   help="score only inside these regions (repeatable; a folder: each slide's file by its stem)")
    g.add_argument("--roi-class", action="append", default=[], metavar="CLASS",
                   help="only the ROI regions of this class, e.g. Tumor or _0 (repeatable)")
    g.add_argument("--exclude", type=existing_path, action="append", default=[], metavar="FILE_OR_DIR",
                   help="leave out these regions: pen marks, folds, blur (repeatable; a folder: by slide stem)")
    g.add_argument("--exclude-class", action="append", default=[], metavar="CLASS",
                   help="only the exclusion regions of this class (repeatable)")
    g.add_argument("--roi-fraction", type=_fraction, default=0.25,
                   help="a patch is inside when at least this part of its area is (default 0.25, as for tissue)")
    g.add_argument("--exclude-fraction", type=_fraction, default=0.25,
                   help="a patch is left out when at least this part of its area is in an exclusion (default 0.25)")


def _file_for(source: Path, slide: Path) -> Path | None:
    """``source`` itself, or in a folder the annotation file whose stem is the slide's (None when there is none)."""
    from ..annotations import ANNOTATION_SUFFIXES
    from ..slide import slide_stem

    if source.is_file():
        return source
    stem = slide_stem(str(slide))
    found = [p for p in sorted(source.iterdir()) if p.is_file() and p.suffix.lower() in ANNOTATION_SUFFIXES
             and slide_stem(p.name.removesuffix(".xml").removesuffix(".geojson")) in (stem, f"{stem}_mask")]
    return found[0] if found else None


def regions_for(args: argparse.Namespace, slide_path: Path, dimensions_xy: tuple[int, int], *, boxes=None):
    """The ScoreRegions of one slide from the arguments (None when none are given)."""
    from ..annotations import ScoreRegions, merge, read_annotations, regions_of_polygons
    from ..errors import InputFileError
    from ..slide import slide_stem

    def read(sources: list[Path], classes: list[str], role: str, required: bool):
        sets = []
        for s in map(Path, sources):
            f = _file_for(s, slide_path)
            if f is None and required:  # never the whole slide in place of a missing ROI
                stem = slide_stem(str(slide_path))
                raise InputFileError(f"{s}: no {role} file for {slide_path.name} (looked for {stem}.geojson, "
                                     ".xml, .tif or .png)")
            if f is not None:
                sets.append(read_annotations(f, slide_dimensions_xy=dimensions_xy).select(classes or None))
        return sets

    roi_sets = read(args.roi, args.roi_class, "ROI", True)
    if boxes:
        roi_sets.append(regions_of_polygons(boxes, source="--roi-box", kind="boxes"))
    regions = ScoreRegions(merge(roi_sets), tuple(read(args.exclude, args.exclude_class, "exclusion", False)),
                           args.roi_fraction, args.exclude_fraction)
    return regions if regions else None


def add_normal_region_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--normal-regions", type=existing_path, action="append", default=[], metavar="FILE_OR_DIR",
                   help="on normal slides, only the tissue a pathologist marked as normal (QuPath GeoJSON, ASAP XML, "
                        "mask; a folder: each slide's file by its stem); each region is a hold-out group")
    p.add_argument("--normal-class", action="append", default=[], metavar="CLASS",
                   help="only the normal regions of this class (repeatable)")


def normal_regions_for(args: argparse.Namespace, slide_path: Path, dimensions_xy: tuple[int, int]):
    """The RegionSet of normal tissue on one slide (None without ``--normal-regions``)."""
    from ..annotations import merge, read_annotations
    from ..errors import InputFileError
    from ..slide import slide_stem

    sets = []
    for s in map(Path, getattr(args, "normal_regions", []) or []):
        f = _file_for(s, slide_path)
        if f is None:
            raise InputFileError(f"{s}: no normal-regions file for {slide_path.name} (looked for "
                                 f"{slide_stem(str(slide_path))}.geojson, .xml, .tif or .png)")
        sets.append(read_annotations(f, slide_dimensions_xy=dimensions_xy).select(args.normal_class or None))
    return merge(sets)

