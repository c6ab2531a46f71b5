"""The Review widget: the top-k table; selecting a row or clicking a point centres the viewer on the patch."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QAbstractItemView, QLabel, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

from ..session import session_for

__all__ = ["ReviewWidget"]

TOPK = "top-k patches"
_CANVAS_PX = 800
_COLUMNS = ("rank", "score", "top abnormal term", "top normal term")


class ReviewWidget(QWidget):
    """A table of the top-k patches and the full term explanation of the selected one."""

    def __init__(self, viewer) -> None:
        super().__init__()
        self.viewer = viewer
        self.session = session_for(viewer)
        self.table = QTableWidget(0, len(_COLUMNS))
        self.table.setHorizontalHeaderLabels(_COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.details = QLabel("Score a slide to list its most anomalous patches.")
        self.details.setWordWrap(True)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addWidget(self.details)
        self.table.itemSelectionChanged.connect(self._on_row)
        self.session.result_changed.connect(lambda _r: self.refresh())
        self._points = None

    def refresh(self) -> None:
        """Fill the table from the top-k points layer (whose features hold the explanation)."""
        if TOPK not in self.viewer.layers:
            return
        layer = self.viewer.layers[TOPK]
        f = layer.features
        self.table.setRowCount(len(f))
        for r in range(len(f)):
            values = (str(f["rank"][r]), f"{f['score'][r]:.4g}", f["top_abnormal"][r], f["top_normal"][r])
            for c, v in enumerate(values):
                self.table.setItem(r, c, QTableWidgetItem(v))
        self.table.resizeColumnsToContents()
        if self._points is not layer:
            self._points = layer
            layer.selected_data.events.items_changed.connect(self._on_point)

    def select(self, row: int) -> None:
        """Centre and zoom on top-k patch ``row`` (0-based) and show its terms."""
        layer = self.viewer.layers[TOPK]
        f = layer.features
        centre = np.asarray(layer.data[row])
        self.viewer.camera.center = tuple(centre)
        size = float(np.atleast_1d(layer.size)[row]) / 0.35  # the patch side in world units
        self.viewer.camera.zoom = _CANVAS_PX / (3 * size)  # the patch fills about a third of the view
        self.details.setText(
            f"<b>#{f['rank'][row]}</b> score {f['score'][row]:.4g} (D<sup>N</sup> {f['d_normal'][row]:.3g}, "
            f"D<sup>A</sup> {f['d_abnormal'][row]:.3g})<br><b>abnormal:</b> {f['abnormal_terms'][row]}"
            f"<br><b>normal:</b> {f['normal_terms'][row]}")

    def _on_row(self) -> None:
        rows = {i.row() for i in self.table.selectedItems()}
        if rows:
            self.select(min(rows))

    def _on_point(self, *_) -> None:
        sel = sorted(self._points.selected_data) if self._points is not None else []
        if sel and sel[0] < self.table.rowCount():
            self.table.selectRow(sel[0])
