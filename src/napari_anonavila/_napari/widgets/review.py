"""The Review widget: the top-k (and reviewed) patches; selecting a row or clicking a point centres the viewer."""

from __future__ import annotations

import html

import napari
import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QHBoxLayout, QLabel, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

from ...reviews import PatchKey
from ..coords import slide_xy_l0_to_world
from ..layers import review_points
from ..results import TOPK, result_layer
from ..session import session_for
from ..tags import unwrap
from . import row_table, tabify_when_docked

__all__ = ["ReviewWidget"]

def _fmt(v: float, spec: str) -> str:
    """A calibrated number, or 'n/a' when the model is uncalibrated (NaN)."""
    return "n/a" if not np.isfinite(v) else format(v, spec)


_COLUMNS = ("rank", "z", "p", "score", "review", "lesion", "top abnormal term", "top normal term")
ORDERS = ("by rank", "misses first", "hits first")  # against the lesions opened onto the slide
_VISIBLE_ROWS = 8
_EMPTY = "Score a slide to list its most anomalous patches."


class ReviewWidget(QWidget):
    """A table of the top-k and reviewed patches, and the full term explanation of the selected one."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = viewer
        self.session = session_for(viewer)
        self.table = row_table(QTableWidget(0, len(_COLUMNS)), _COLUMNS)
        row_h = self.table.verticalHeader().defaultSectionSize()
        self.table.setMinimumHeight(row_h * (_VISIBLE_ROWS + 1) + 6)
        self.details = QLabel(_EMPTY)
        self.details.setWordWrap(True)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.details.setAlignment(Qt.AlignmentFlag.AlignTop)
        self.order = QComboBox()
        self.order.addItems(ORDERS)
        self.order.setToolTip("list the top-k by rank, or the patches outside the lesions opened onto the slide (File "
                              "> Open of a GeoJSON or XML) first, or those inside them first; by rank within each")
        bar = QHBoxLayout()
        bar.addWidget(QLabel("order"))
        bar.addWidget(self.order, stretch=1)
        layout = QVBoxLayout(self)
        layout.addLayout(bar)
        layout.addWidget(self.table, stretch=1)
        layout.addWidget(self.details)
        self.rows: dict = {}
        self._order: list[int] = []  # table row -> index into self.rows (the points layer's order)
        self._selected: PatchKey | None = None
        self._points = None
        self.table.itemSelectionChanged.connect(self._on_row)
        self.order.currentIndexChanged.connect(lambda _i: self.refresh())
        self.session.result_changed.connect(lambda _r: self.refresh())
        self.session.reviews_changed.connect(self.refresh)
        self.refresh()
        tabify_when_docked(self)

    def refresh(self) -> None:
        """Fill the table from the session's result; keep the selected patch selected (with its new score)."""
        s = self.session
        if s.result is None or s.slide_layer is None:
            self.rows, self._order = {}, []
            self.table.setRowCount(0)
            self.details.setText(_EMPTY)
            return
        _data, kw = review_points(s.result, s.top_k, s.marks(), s.slide_layer)
        f = self.rows = kw["features"]
        lesion = self._lesion_column(f)
        first = {"misses first": "miss", "hits first": "hit"}.get(self.order.currentText())
        self._order = sorted(range(len(f["rank"])), key=lambda i: lesion[i] != first) if first else \
            list(range(len(f["rank"])))  # stable: by rank within each group
        self.table.blockSignals(True)
        self.table.setRowCount(len(f["rank"]))
        for t, r in enumerate(self._order):
            values = (str(f["rank"][r]), _fmt(f["z"][r], ".1f"), _fmt(f["p_normal"][r], ".2g"),
                      f"{f['score'][r]:.4g}", f["review"][r], lesion[r], f["top_abnormal"][r], f["top_normal"][r])
            for c, v in enumerate(values):
                self.table.setItem(t, c, QTableWidgetItem(v))
        self.table.resizeColumnsToContents()
        self.table.blockSignals(False)
        keys = self._keys()
        if self._selected in keys:
            self.table.selectRow(self._order.index(keys.index(self._selected)))
            self._show(keys.index(self._selected))
        else:
            self._selected = None
            self.details.setText("Select a row, or click a patch in the 'top-k patches' layer.")
        self._watch_points()

    def _lesion_column(self, f: dict) -> list[str]:
        """'hit' or 'miss' per listed patch against the lesion annotations opened onto the slide (File > Open of a
        GeoJSON or XML: half its area in a lesion is a hit, as in localise), else empty."""
        from ...annotations import merge
        from ...localisation import LESION_FRACTION
        from ..annotation_layers import REGIONS_KEY
        from ..slides import group_of

        sets = [ly.metadata[REGIONS_KEY] for ly in group_of(self.viewer, self.session.slide_layer)
                if REGIONS_KEY in ly.metadata and not ly.name.startswith("scored with")]
        if not sets or not f["x_l0"]:
            return [""] * len(f["rank"])
        xy = np.stack([f["x_l0"], f["y_l0"]], axis=1)
        frac = merge(sets).fractions(xy, self.session.result.patch_size_l0)
        return ["hit" if v >= LESION_FRACTION else "miss" for v in frac]

    def _keys(self) -> list[PatchKey]:
        f = self.rows
        p = self.session.result.grid.patch_size_l0
        return [PatchKey(x, y, p) for x, y in zip(f.get("x_l0", []), f.get("y_l0", []), strict=True)]

    def _watch_points(self) -> None:
        layer = result_layer(self.viewer, self.session.slide_layer, TOPK)
        if layer is not None and unwrap(layer) is not self._points:
            self._points = unwrap(layer)
            layer.selected_data.events.items_changed.connect(self._on_point)

    def select(self, row: int) -> None:
        """Centre and zoom on the patch in table row ``row`` (0-based, in the order shown) and show its terms."""
        row = self._order[row]
        f = self.rows
        p = self.session.result.grid.patch_size_l0
        x, y = f["x_l0"][row], f["y_l0"][row]
        centre = slide_xy_l0_to_world(self.session.slide_layer, np.array([[x + p / 2, y + p / 2]]))[0]
        corner = slide_xy_l0_to_world(self.session.slide_layer, np.array([[x, y], [x + p, y + p]]))
        side = float(np.abs(corner[1] - corner[0]).max())
        self.viewer.camera.center = tuple(centre)
        canvas = min(getattr(unwrap(self.viewer), "_canvas_size", None) or (800, 800))
        self.viewer.camera.zoom = canvas / (3 * side)  # the patch fills about a third of the view
        self._selected = self._keys()[row]
        self._show(row)

    def _show(self, row: int) -> None:
        f = {k: [html.escape(str(v)) if isinstance(v, str) else v for v in vs] for k, vs in self.rows.items()}
        self.details.setText(  # rich text: every string from the result escaped
            f"<b>#{f['rank'][row]}</b> z {_fmt(f['z'][row], '.2f')}, p {_fmt(f['p_normal'][row], '.3g')}; "
            f"score {f['score'][row]:.4g} (D<sup>N</sup> {f['d_normal'][row]:.3g}, "
            f"D<sup>A</sup> {f['d_abnormal'][row]:.3g}); review: {f['review'][row]}; level-0 (x, y) "
            f"({f['x_l0'][row]}, {f['y_l0'][row]})<br><b>abnormal:</b> {f['abnormal_terms'][row]}"
            f"<br><b>normal:</b> {f['normal_terms'][row]}")

    def _on_row(self) -> None:
        rows = {i.row() for i in self.table.selectedItems()}
        if rows:
            self.select(min(rows))

    def _on_point(self, *_) -> None:
        layer = result_layer(self.viewer, self.session.slide_layer, TOPK)
        sel = sorted(layer.selected_data) if layer is not None else []
        if sel and sel[0] < len(self._order):
            self.table.selectRow(self._order.index(sel[0]))
