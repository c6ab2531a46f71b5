"""npe2 reader contribution: whole-slide files as lazy multiscale RGB image layers, and result folders (written by
``anonavila score-slide`` or ``batch``) as their slide with its heatmap, significant patches and top-k, ready to
review without scoring again."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np

from ..errors import AnonavilaError, SlideReadError
from ..slide import SLIDE_SUFFIXES, open_slide
from .layers import Z_RANGE, heatmap_kwargs, review_points, significant_points, slide_layer_data
from .results import HEATMAP, SIGNIFICANT, TOPK
from .tags import tag

__all__ = ["get_reader", "is_cohort_folder", "is_result_folder", "read_cohort_folder", "read_results", "read_slide"]

TOP_K = 10  # top-k patches shown for a reopened result (the Score widget's top-k changes it)
ANNOTATION_FILES = (".geojson", ".xml")  # QuPath GeoJSON, ASAP / Camelyon XML: drawn onto their slide


def is_result_folder(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "summary.json").is_file() and (p / "patches.csv").is_file()


def is_cohort_folder(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "cohort.csv").is_file()


def get_reader(path: str | os.PathLike | list):
    """Return a reader for one slide file, one result folder or one batch output folder, else None (napari then
    tries other readers)."""
    if isinstance(path, list):
        return None
    if is_result_folder(path):
        return read_results
    if is_cohort_folder(path) or str(path).lower().endswith(".qpproj"):
        return read_cohort_folder  # a batch output folder, or a QuPath project: the cohort browser
    if str(path).lower().endswith(ANNOTATION_FILES):
        return read_annotation_file
    if not str(path).lower().endswith(SLIDE_SUFFIXES):
        return None
    return read_slide


def _shown(err: Exception) -> Exception:
    from napari.utils.notifications import show_error

    show_error(str(err))
    return err


def _window():
    """The current viewer, its slides now shown as the session says (one at a time by default), or None."""
    import napari

    from .session import session_for

    viewer = napari.current_viewer()
    if viewer is not None:
        session_for(viewer)  # follows the selection: a slide opened next is shown on its own, not stacked
    return viewer


def read_slide(path: str | os.PathLike) -> list[tuple]:
    """Open the slide lazily; the layer metadata carries the path, mpp, vendor and the open slide."""
    _window()
    try:
        slide = open_slide(path)
    except SlideReadError as err:
        raise _shown(err) from None
    _warn_if_not_brightfield(slide)
    return [slide_layer_data(slide)]


def _warn_if_not_brightfield(slide) -> None:
    from napari.utils.notifications import show_warning

    from ..slide.brightfield import brightfield_warning

    if (note := brightfield_warning(slide)) is not None:
        show_warning(note)


def read_cohort_folder(path: str | os.PathLike) -> list[tuple]:
    """A batch output folder opens the cohort browser on its cohort.csv, a QuPath project on its images (no layer
    yet: a row opens its slide)."""
    import napari

    viewer = napari.current_viewer()
    if viewer is None:
        return [(None,)]
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-anonavila", "Cohort browser")
    try:
        widget.load(path)
    except AnonavilaError as err:
        raise _shown(err) from None
    return [(None,)]  # napari's "opened, no layers" answer


def _slide_for_annotation(viewer, path: Path):
    """The slide layer an annotation file is drawn onto: the open slide of the same name, else the one shown."""
    from ..slide import slide_stem
    from .session import session_for
    from .slides import slide_layers
    from .tags import slide_of

    stem = slide_stem(path.name.removesuffix(".xml").removesuffix(".geojson"))
    named = [ly for ly in slide_layers(viewer) if slide_stem(slide_of(ly).path.name) == stem]
    return named[0] if named else session_for(viewer).slide_layer


def read_annotation_file(path: str | os.PathLike) -> list[tuple]:
    """A QuPath GeoJSON or ASAP XML drawn onto its slide (the open slide of the same name, else the one shown): one
    Shapes layer per class, in the slide's place, shown and hidden with it; the exact regions in the layer's metadata
    for scoring and training."""
    from ..annotations import ScoreRegions, read_annotations
    from .annotation_layers import region_layer_data
    from .tags import slide_of

    path = Path(path)
    viewer = _window()
    slide_layer = _slide_for_annotation(viewer, path) if viewer is not None else None
    try:
        if slide_layer is None:
            raise SlideReadError(f"{path.name}: open its slide first (File > Open); the regions are drawn onto it")
        slide = slide_of(slide_layer)
        regions = read_annotations(path, slide_dimensions_xy=slide.dimensions_xy)
        ScoreRegions(regions).check(slide)
    except AnonavilaError as err:
        raise _shown(err) from None
    return region_layer_data(regions, slide_layer, slide.dimensions_xy, prefix=f"{path.stem}: ")


class _Placement:
    """The slide layer's transform before napari has made the layer (scale only, as :func:`slide_layer_data` sets
    it): what the result layers' transforms are computed from."""

    ndim = 2

    def __init__(self, kwargs: dict) -> None:
        self.scale = np.asarray(kwargs["scale"], float)
        self.units = kwargs["units"]

    def data_to_world(self, p):
        return np.asarray(p, float) * self.scale


def read_results(path: str | os.PathLike) -> list[tuple]:
    """A result folder as layers: its slide (checked to be the very content that was scored), the heatmap (z on the
    fixed scale when calibrated), the significant patches and the top-k with their terms and review marks.

    Review marks made in napari on this slide are saved back to ``reviews.json`` in the folder.
    """
    from ..export.result_folder import open_result
    from .slides import find_reopened

    folder = Path(path)
    viewer = _window()
    shown = find_reopened(viewer, folder) if viewer is not None else None
    if shown is not None:  # open already: shown again, never a second copy of its layers
        viewer.layers.selection.active = shown
        return [(None,)]
    try:
        saved = open_result(folder)
        slide = _slide_of(saved)
    except AnonavilaError as err:
        raise _shown(err) from None
    if viewer is not None:  # its legend: what the colours mean, the model, the slide scores (once per window)
        viewer.window.add_plugin_dock_widget("napari-anonavila", "Heatmap legend")
    data, kwargs, kind = slide_layer_data(slide)
    link = f"results:{uuid.uuid4().hex}"
    kwargs["metadata"].update(anonavila_link=link, anonavila_saved=saved)
    name, where = kwargs["name"], _Placement(kwargs)
    p, origin = saved.grid.patch_size_l0, saved.grid.origin_xy_l0
    if saved.calibrated:
        heat, fixed, label = saved.heatmap(values="z"), Z_RANGE, f"anomaly z ({saved.mode}; fixed scale; saved)"
    else:
        heat, fixed, label = saved.heatmap(), None, f"raw anomaly score ({saved.mode}; uncalibrated; saved)"
    hdata, hkw = heatmap_kwargs(heat, where, p, origin, label=label, fixed=fixed)
    sdata, skw = significant_points(saved, where)
    tdata, tkw = review_points(saved, TOP_K, saved.marks, where)
    return [(data, kwargs, kind),
            (hdata, tag(hkw, name, link, HEATMAP), "image"),
            (sdata, tag(skw, name, link, SIGNIFICANT), "points"),
            (tdata, tag(tkw, name, link, TOPK), "points"),
            *_scored_regions(folder, where, slide, link)]


def _scored_regions(folder: Path, where, slide, link: str) -> list[tuple]:
    """The ROI and exclusions a result was scored with (its regions.geojson), drawn again in the slide's place."""
    from ..annotations import read_annotations
    from ..export.result_folder import REGIONS_FILE
    from .annotation_layers import region_layer_data

    if not (folder / REGIONS_FILE).is_file():
        return []
    regions = read_annotations(folder / REGIONS_FILE, slide_dimensions_xy=slide.dimensions_xy)
    return region_layer_data(regions, where, slide.dimensions_xy, prefix="scored with ", link=link)


def _slide_of(saved):
    """Open the slide a saved result was made on, found by content: at its recorded path, beside the result folder,
    or beside a slide already open in the viewer; another file's or changed content is refused (the heatmap would be
    drawn on the wrong tissue)."""
    import napari

    from ..slide.locate import find_slide, result_neighbourhood
    from .tags import slide_of

    viewer = napari.current_viewer()
    open_dirs = [] if viewer is None else list(dict.fromkeys(
        s.path.resolve().parent for ly in viewer.layers if (s := slide_of(ly)) is not None))
    given = saved.slide.get("mpp") if saved.slide.get("mpp_source") not in (None, "file") else None
    return find_slide(saved.slide, where=str(saved.folder), near=result_neighbourhood(saved.folder),
                      search=open_dirs, mpp=given if isinstance(given, (int, float)) else None)
