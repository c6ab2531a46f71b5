"""The QA widget: mark top-k findings, export to QuPath and other formats, import a reviewer's GeoJSON back."""

from __future__ import annotations

import warnings

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, Label, PushButton, Select, SpinBox
from napari.utils.notifications import show_error, show_info, show_warning

from ...backends import sha256_file
from ...errors import AnonavilaError
from ...export.bundle import FORMATS, check_provenance, export_all
from ...export.geojson import read_geojson, region_feature
from ...export.records import REVIEW_STATES, from_result
from ..layers import features_to_layer_data, slide_scale
from ..session import chosen_path, session_for, shapes_to_polygons_xy_l0

__all__ = ["ExportWidget"]

TOPK = "top-k patches"
REJECTED = "normal reference (rejected findings)"


class ExportWidget(Container):
    """Review state per top-k finding, export for QA, and import of QuPath GeoJSON."""

    def __init__(self, viewer) -> None:
        from napari.layers import Shapes

        self.viewer = viewer
        self.session = session_for(viewer)
        self.state = ComboBox(label="mark selected", choices=REVIEW_STATES[1:], value="confirmed")
        self.mark_button = PushButton(text="Mark selected top-k points")
        self.regions = Select(label="regions to export", choices=lambda *_: [ly.name for ly in viewer.layers
                                                                           if isinstance(ly, Shapes)])
        self.formats = Select(label="formats", choices=FORMATS, value=list(FORMATS))
        self.top_k = SpinBox(label="top-k", value=10, min=1, max=1000)
        self.folder = FileEdit(label="export to", mode="d")
        self.export_button = PushButton(text="Export")
        self.geojson = FileEdit(label="import", mode="r", filter="*.geojson *.json")
        self.import_button = PushButton(text="Import GeoJSON")
        self.rejected_button = PushButton(text="Add rejected findings to the normal reference")
        self.status = Label(value="")
        super().__init__(widgets=[self.state, self.mark_button, self.regions, self.formats, self.top_k, self.folder,
                                  self.export_button, self.geojson, self.import_button, self.rejected_button,
                                  self.status])
        self.mark_button.changed.connect(lambda *_: self.mark())
        self.export_button.changed.connect(lambda *_: self._guard(self.export))
        self.import_button.changed.connect(lambda *_: self._guard(self.import_geojson))
        self.rejected_button.changed.connect(lambda *_: self._guard(self.rejected_to_reference))
        viewer.layers.events.inserted.connect(lambda *_: self.reset_choices())
        viewer.layers.events.removed.connect(lambda *_: self.reset_choices())

    def _guard(self, fn):
        try:
            return fn()
        except (AnonavilaError, ValueError, OSError) as err:
            show_error(str(err))
            return None

    def _points(self):
        if TOPK not in self.viewer.layers:
            raise ValueError("no top-k points layer: score a slide first")
        layer = self.viewer.layers[TOPK]
        if "review" not in layer.features:
            layer.features["review"] = ["unreviewed"] * len(layer.data)
        return layer

    def mark(self, state: str | None = None, indices=None) -> None:
        """Set the review state of the selected (or given) top-k points."""
        try:
            layer = self._points()
        except ValueError as err:
            show_error(str(err))
            return
        sel = sorted(indices if indices is not None else layer.selected_data)
        if not sel:
            show_warning("select top-k points first (click them in the top-k patches layer)")
            return
        review = layer.features["review"].to_numpy(dtype=object)
        review[sel] = state or self.state.value
        layer.features["review"] = review
        colors = {"unreviewed": "cyan", "confirmed": "crimson", "rejected": "mediumseagreen", "unsure": "mediumpurple"}
        layer.border_color = [colors[s] for s in review]
        self.status.value = ", ".join(f"{s}: {int((review == s).sum())}" for s in REVIEW_STATES if (review == s).any())

    def review_state(self) -> dict[int, str]:
        """Patch index -> state, for the marked top-k points."""
        if TOPK not in self.viewer.layers or "review" not in self.viewer.layers[TOPK].features:
            return {}
        f = self.viewer.layers[TOPK].features
        return {int(i): s for i, s in zip(f["index"], f["review"], strict=True) if s != "unreviewed"}

    def export(self):
        res, det, slide = self.session.result, self.session.detector, self.session.slide
        if res is None or det is None or slide is None:
            raise ValueError("nothing to export: score a slide first")
        folder = chosen_path(self.folder)
        if folder is None:
            raise ValueError("choose a folder to export to")
        ck = self.session.checkpoint
        checkpoint = {"path": str(ck), "sha256": sha256_file(ck)} if ck and ck.is_file() else None
        table = from_result(res, det, fingerprint=slide.fingerprint(), checkpoint=checkpoint)
        table.review = self.review_state()
        scale = slide_scale(slide)
        regions = [region_feature(poly, name) for name in self.regions.value
                   for poly in shapes_to_polygons_xy_l0(self.viewer.layers[name], scale)]
        from ...export.slide_outputs import overlay_png

        written = export_all(folder, table, formats=list(self.formats.value), top_k=self.top_k.value,
                             regions=regions, slide=slide, overlay_png=overlay_png(res, slide),
                             overwrite=True)
        show_info(f"exported {', '.join(p.name for p in written.values())} to {folder}")
        return written

    def import_geojson(self, path=None):
        path = path or chosen_path(self.geojson)
        if path is None:
            raise ValueError("choose a GeoJSON file to import")
        slide = self.session.slide
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            feats = read_geojson(path)
            check_provenance(path, slide_fingerprint=slide.fingerprint() if slide else None,
                             backend_id=self.session.detector.backend_id if self.session.detector else None)
        for w in caught:
            show_warning(str(w.message))
        scale = slide_scale(slide) if slide else 1.0
        layers = []
        for data, kwargs, kind in features_to_layer_data(feats, scale, name=path.stem if hasattr(path, "stem")
                                                          else "QuPath"):
            layers.append(getattr(self.viewer, f"add_{kind}")(data, **kwargs))
        self.status.value = f"imported {len(feats)} objects from {getattr(path, 'name', path)}"
        return layers

    def rejected_to_reference(self):
        """Rejected findings (false positives) become squares in a Shapes layer for the Retrain widget."""
        res, slide = self.session.result, self.session.slide
        rejected = [i for i, s in self.review_state().items() if s == "rejected"]
        if res is None or slide is None or not rejected:
            raise ValueError("no rejected findings: mark top-k points as rejected first")
        p, scale = res.grid.patch_size_l0, slide_scale(slide)
        xy = res.grid.xy_l0()[rejected]
        squares = [np.array([[y, x], [y, x + p], [y + p, x + p], [y + p, x]], float) * scale for x, y in xy]
        if REJECTED in self.viewer.layers:
            self.viewer.layers[REJECTED].add_rectangles(squares)
        else:
            self.viewer.add_shapes(squares, shape_type="rectangle", name=REJECTED, edge_color="mediumseagreen",
                                   face_color="transparent", edge_width=2 * scale,
                                   units=("um", "um") if slide.mpp else ("pixel", "pixel"),
                                   metadata={"anonavila_l0_per_world": 1 / scale})
        show_info(f"{len(rejected)} rejected finding(s) added to '{REJECTED}': pick it in the Retrain widget")
