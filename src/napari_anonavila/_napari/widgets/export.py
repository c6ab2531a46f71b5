"""The QA widget: mark findings, export to QuPath and other formats, import a reviewer's GeoJSON back.

Review marks belong to patches (level-0 location and patch size), so they survive re-scores; marks whose patch
is not in the current grid are kept aside and counted in the status line.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, PushButton, Select, SpinBox
from napari.utils.notifications import show_error, show_info, show_warning

from ...annotations.geojson import read_geojson
from ...errors import AnonavilaError
from ...export.bundle import FORMATS, check_provenance, export_targets
from ...export.geojson import region_feature
from ...reviews import REVIEW_STATES, PatchKey
from ..coords import cells_layer_transform
from ..layers import features_to_layer_data
from ..results import TOPK, result_layer
from ..session import chosen_path, session_for, shapes_to_polygons_xy_l0
from ..workers import export_worker
from . import follow_layers, scroll_form, tabify_when_docked, wrapping

__all__ = ["REJECTED", "ExportWidget"]

REJECTED = "normal reference (rejected findings)"


class ExportWidget(Container):
    """Review state per finding, export for QA, and import of QuPath GeoJSON."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        from napari.layers import Shapes

        self.viewer = viewer
        self.session = session_for(viewer)
        self.state = ComboBox(label="mark selected", choices=REVIEW_STATES, value="confirmed")
        self.mark_button = PushButton(text="Mark selected points")
        self.regions = Select(label="regions to export", choices=lambda *_: [ly.name for ly in viewer.layers
                                                                           if isinstance(ly, Shapes)])
        self.formats = Select(label="formats", choices=FORMATS, value=list(FORMATS))
        self.top_k = SpinBox(label="top-k", value=10, min=1, max=1000)
        self.folder = FileEdit(label="export to", mode="d")
        self.replace = CheckBox(label="replace earlier export files", value=False)
        self.export_button = PushButton(text="Export")
        self.geojson = FileEdit(label="import", mode="r", filter="*.geojson *.json")
        self.import_button = PushButton(text="Import GeoJSON")
        self.rejected_button = PushButton(text="Add rejected findings to the normal reference")
        self.status = Label(value="")
        wrapping(self.status)
        super().__init__()
        self.form = scroll_form(self, [self.state, self.mark_button, self.regions, self.formats, self.top_k,
                                       self.folder, self.replace, self.export_button, self.geojson,
                                       self.import_button, self.rejected_button, self.status])
        tabify_when_docked(self.native)
        self.regions.native.setMaximumHeight(90)
        self.formats.native.setMaximumHeight(90)
        self.worker = None
        self.mark_button.changed.connect(lambda *_: self._guard(self.mark))
        self.export_button.changed.connect(lambda *_: self._guard(self.export))
        self.import_button.changed.connect(lambda *_: self._guard(self.import_geojson))
        self.rejected_button.changed.connect(lambda *_: self._guard(self.rejected_to_reference))
        self.session.reviews_changed.connect(self._show_counts)
        self.session.result_changed.connect(lambda _r: self._show_counts())
        follow_layers(viewer, self.reset_choices)
        self._show_counts()

    def reset_choices(self, *_):
        self.form.reset_choices()

    def _guard(self, fn):
        try:
            return fn()
        except (AnonavilaError, ValueError, OSError, RecursionError) as err:
            show_error(str(err))
            return None

    # -- review marks ------------------------------------------------------------------------------
    def mark(self, state: str | None = None, rows=None) -> None:
        """Set the review state of the selected (or given) rows of the top-k points layer."""
        res = self.session.result
        layer = result_layer(self.viewer, self.session.slide_layer, TOPK)
        if res is None or layer is None:
            raise ValueError("no top-k points layer: score a slide first")
        sel = sorted(rows if rows is not None else layer.selected_data)
        if not sel:
            show_warning("select points first (in the 'top-k patches' layer, or rows of the Review table)")
            return
        f, p = layer.features, res.grid.patch_size_l0
        keys = [PatchKey(int(f["x_l0"][i]), int(f["y_l0"][i]), p) for i in sel]
        self.session.marks().set(keys, state or self.state.value)
        self.session.reviews_changed.emit()

    def review_state(self) -> dict[int, str]:
        """Patch index of the current result -> state, for every marked patch of the current grid."""
        res = self.session.result
        return self.session.marks().on_grid(res.grid)[0] if res is not None else {}

    def _show_counts(self) -> None:
        res, marks = self.session.result, self.session.marks()
        if not marks:
            self.status.value = "No review marks yet: select points and press Mark."
            return
        counts = ", ".join(f"{s} {n}" for s, n in sorted(marks.counts().items()))
        aside = len(marks.on_grid(res.grid)[1]) if res is not None else 0
        self.status.value = f"marked: {counts}" + (f"; {aside} on patches of another grid (kept aside)"
                                                    if aside else "")

    # -- export and import -------------------------------------------------------------------------
    def export(self):
        """Export the current result in a worker; refuses to replace earlier files unless asked."""
        s = self.session
        res, slide = s.result, s.slide
        if res is None or slide is None:
            raise ValueError("nothing to export: score a slide first")
        folder = chosen_path(self.folder)
        if folder is None:
            raise ValueError("choose a folder to export to")
        formats = list(self.formats.value)
        target = export_targets(folder, res.slide, formats)["folder"]
        if target.exists() and not self.replace.value:
            raise ValueError(f"{target} already holds an export of this slide; choose another folder, or tick "
                             "'replace earlier export files'")
        result = dataclasses.replace(res, marks=s.marks())  # the marks as they are now
        regions = [region_feature(poly, name) for name in self.regions.value
                   for poly in shapes_to_polygons_xy_l0(self.viewer.layers[name], s.slide_layer)]
        self.worker = export_worker(folder, result, formats=formats, top_k=self.top_k.value, regions=regions,
                                    slide=slide)
        self.export_button.enabled = False
        self.status.value = "exporting..."
        self.worker.returned.connect(self._on_exported)
        self.worker.errored.connect(lambda err: show_error(f"export failed: {err}"))
        self.worker.finished.connect(self._on_export_finished)
        self.worker.start()
        return self.worker

    def _on_exported(self, written) -> None:
        self.written = written
        show_info(f"exported {', '.join(p.name for p in written.values())} to {next(iter(written.values())).parent}")

    def _on_export_finished(self) -> None:
        self.worker = None
        self.export_button.enabled = True
        self._show_counts()

    def import_geojson(self, path=None):
        """Read a QuPath GeoJSON into Shapes and Points layers on the scored slide."""
        path = Path(path) if path else chosen_path(self.geojson)
        if path is None:
            raise ValueError("choose a GeoJSON file to import")
        s = self.session
        if s.slide_layer is None:
            raise ValueError("score or open a slide first: the objects are placed on its pixels")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            feats = read_geojson(path)
            check_provenance(path, slide_fingerprint=s.slide.fingerprint() if s.slide else None,
                             backend_id=s.detector.backend_id if s.detector else None)
        for w in caught:
            show_warning(str(w.message))
        layers = [getattr(self.viewer, f"add_{kind}")(data, **kwargs)
                  for data, kwargs, kind in features_to_layer_data(feats, s.slide_layer, name=path.stem)]
        self.status.value = f"imported {len(feats)} objects from {path.name}"
        return layers

    def rejected_to_reference(self):
        """Rejected findings (false positives) become squares in a Shapes layer for the Retrain widget."""
        res, layer = self.session.result, self.session.slide_layer
        rejected = [i for i, st in self.review_state().items() if st == "rejected"]
        if res is None or layer is None or not rejected:
            raise ValueError("no rejected findings: mark top-k points as rejected first")
        p = res.grid.patch_size_l0
        xy = res.grid.xy_l0()[rejected]
        squares = [np.array([[y, x], [y, x + p], [y + p, x + p], [y + p, x]], float) - 0.5 for x, y in xy]
        if REJECTED in self.viewer.layers:
            self.viewer.layers[REJECTED].add_rectangles(squares)
        else:
            self.viewer.add_shapes(squares, shape_type="rectangle", name=REJECTED, edge_color="lime",
                                   face_color="transparent", edge_width=max(2.0, p / 20),
                                   **cells_layer_transform(layer))
        show_info(f"{len(rejected)} rejected finding(s) added to '{REJECTED}': pick it in the Retrain widget")
