"""The command line's regions: ``--roi`` and ``--exclude`` files (QuPath GeoJSON, ASAP XML, masks; a folder holds one
file per slide, found by the slide's stem), ``--roi-class`` / ``--exclude-class`` and the area rule's fractions."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import existing_path, fraction

__all__ = ["add_normal_region_args", "add_region_args", "normal_regions_for", "region_sources", "regions_for"]


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
    g.add_argument("--roi-fraction", type=fraction, default=0.25,
                   help="a patch is inside when at least this part of its area is (default 0.25, as for tissue)")
    g.add_argument("--exclude-fraction", type=fraction, default=0.25,
                   help="a patch is left out when at least this part of its area is in an exclusion (default 0.25)")


def region_sources(args: argparse.Namespace):
    """The arguments as RegionSources (None when no region file is given)."""
    from ..annotations.sources import RegionSources

    sources = RegionSources(tuple(map(str, args.roi)), tuple(args.roi_class), tuple(map(str, args.exclude)),
                            tuple(args.exclude_class), args.roi_fraction, args.exclude_fraction)
    return sources or None


def regions_for(args: argparse.Namespace, slide_path: Path, dimensions_xy: tuple[int, int], *, boxes=None):
    """The ScoreRegions of one slide from the arguments (None when none are given)."""
    from ..annotations.sources import RegionSources, regions_for_slide

    return regions_for_slide(region_sources(args) or RegionSources(), slide_path, dimensions_xy, boxes=boxes)


def add_normal_region_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--normal-regions", type=existing_path, action="append", default=[], metavar="FILE_OR_DIR",
                   help="on normal slides, only the tissue a pathologist marked as normal (QuPath GeoJSON, ASAP XML, "
                        "mask; a folder: each slide's file by its stem); each region is a hold-out group")
    p.add_argument("--normal-class", action="append", default=[], metavar="CLASS",
                   help="only the normal regions of this class (repeatable)")


def normal_regions_for(args: argparse.Namespace, slide_path: Path, dimensions_xy: tuple[int, int]):
    """The RegionSet of normal tissue on one slide (None without ``--normal-regions``)."""
    from ..annotations.sources import normal_regions_for_slide

    return normal_regions_for_slide(getattr(args, "normal_regions", []) or [], args.normal_class, slide_path,
                                    dimensions_xy)
