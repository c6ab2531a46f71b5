"""What a pathologist drew (QuPath, ASAP, napari, a mask): regions that decide where to score, what is normal and
what to leave out. ``read_annotations`` reads every format into one :class:`RegionSet`; a grid keeps a patch when
enough of its area lies inside (the tissue rule) and drops it when enough lies in an exclusion."""

from .read import ANNOTATION_SUFFIXES, read_annotations, regions_of_polygons
from .regions import LabelMask, Region, RegionSet
from .rule import ScoreRegions, merge

__all__ = ["ANNOTATION_SUFFIXES", "LabelMask", "Region", "RegionSet", "ScoreRegions", "merge", "read_annotations",
           "regions_of_polygons"]
