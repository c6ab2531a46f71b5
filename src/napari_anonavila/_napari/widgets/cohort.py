"""The cohort browser: a batch run's slides as a ranked table; a row opens that slide with its saved results.

A click on a column header sorts by that column (numbers as numbers; slides without a result last); Page Down /
Page Up (in the canvas or the table) go to the next / previous slide in the order shown. Opened slides stay in the
layer list, hidden while another slide is shown, so going back is instant.
"""

from __future__ import annotations

import os
from pathlib import Path

import napari
from magicgui.widgets import Container, FileEdit, Label
from napari.utils.notifications import show_error
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import QTableWidget, QTableWidgetItem

from ...batch.cohort import CohortEntry, read_cohort
from ...errors import AnonavilaError
from ...slide.qupath_project import is_qupath_project
from ..session import chosen_path, session_for
from ..slides import find_reopened
from . import plain_tooltip, row_table, tabify_when_docked, wrapping

__all__ = ["CohortWidget"]

PLUGIN = "napari-anonavila"
NEXT_KEY, PREVIOUS_KEY = "PageDown", "PageUp"
_COLUMNS = ("#", "slide", "significant", "max z", "p slide", "max eroded", "status")


def _fmt(v, spec: str) -> str:
    return "" if v is None else format(v, spec)


class _Item(QTableWidgetItem):
    """A cell that sorts by its value (a number or a name), not by its text; empty values come last either way."""

    def __init__(self, text: str, key) -> None:
        super().__init__(text)
        self.key = key

    def __lt__(self, other) -> bool:
        a, b = self.key, getattr(other, "key", None)
        if a is None or b is None:  # Qt sorts descending by swapping the operands: keep the empty ones last
            table = self.tableWidget()
            descending = table is not None and \
                table.horizontalHeader().sortIndicatorOrder() == Qt.SortOrder.DescendingOrder
            return (a is None and b is not None) if descending else (a is not None and b is None)
        return a < b


class _Table(QTableWidget):
    """The cohort table; Page Down / Page Up step through the slides that have a result (not a page of rows)."""

    def __init__(self, *args, step) -> None:
        super().__init__(*args)
        self._step = step

    def keyPressEvent(self, event) -> None:
        by = {Qt.Key.Key_PageDown: 1, Qt.Key.Key_PageUp: -1}.get(event.key())
        if by is None:
            super().keyPressEvent(event)
        else:
            self._step(by)
            event.accept()


class CohortWidget(Container):
    """Open ``cohort.csv`` (or a batch output folder); click a slide to open it with its results."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.session = session_for(viewer)  # the other widgets follow the slide shown here
        self.source = FileEdit(label="cohort", mode="r", filter="cohort.csv *.csv *.qpproj",
                               tooltip="the cohort.csv that 'anonavila batch' wrote (File > Open on the batch output "
                                       "folder does the same), or a QuPath project.qpproj (its images, to score one "
                                       "by one)")
        self.info = Label(value="Open a cohort: the cohort.csv of an 'anonavila batch' run, or a QuPath project.")
        super().__init__(widgets=[self.source, self.info])
        wrapping(self.info)
        self.table = row_table(_Table(0, len(_COLUMNS), step=self.step), _COLUMNS)
        self.table.horizontalHeader().setSortIndicatorShown(True)
        self.table.horizontalHeader().setToolTip("click a column to sort by it; click again to reverse")
        self.table.setMinimumHeight(220)
        self.native.layout().addWidget(self.table, 1)
        self.entries: list[CohortEntry] = []
        self.current: int | None = None
        self.source.changed.connect(self._on_source)
        self.table.itemSelectionChanged.connect(self._on_row)
        for key, step in ((NEXT_KEY, 1), (PREVIOUS_KEY, -1)):
            viewer.bind_key(key, lambda _v, s=step: self.step(s), overwrite=True)
        tabify_when_docked(self.native)

    def _on_source(self, *_) -> None:
        path = chosen_path(self.source)
        if path is not None:
            try:
                self.load(path)
            except (AnonavilaError, OSError) as err:
                show_error(str(err))

    def load(self, path: str | Path) -> None:
        """List the cohort of ``path`` (cohort.csv or the folder holding it), most anomalous first."""
        self.entries, by = read_cohort(path)
        project = is_qupath_project(path)
        table = Path(path) / ("project.qpproj" if project else "cohort.csv") if Path(path).is_dir() else Path(path)
        if chosen_path(self.source) != table:
            with self.source.changed.blocked():
                self.source.value = table
        failed = sum(not e.can_open for e in self.entries)
        why = "not found" if project else "without a result (failed)"
        self.info.value = (f"{len(self.entries)} slides, {'in' if project else 'ranked by'} {by}"
                           f"{f'; {failed} {why}, listed last' if failed else ''}. "
                           f"{NEXT_KEY} / {PREVIOUS_KEY}: next / previous slide.")
        self.table.blockSignals(True)
        self.table.setSortingEnabled(False)  # rows stay where they are put while the table fills
        self.table.setRowCount(len(self.entries))
        for r, e in enumerate(self.entries):
            n = e.numbers
            status = e.status if not e.error else f"{e.status}: {e.error}"
            cells = ((str(r + 1) if e.can_open else "-", r), (Path(e.slide).name, Path(e.slide).name.lower()),
                     (_fmt(n["n_significant"], ".0f"), n["n_significant"]), (_fmt(n["max_z"], ".3g"), n["max_z"]),
                     (_fmt(n["p_slide"], ".3g"), n["p_slide"]), (_fmt(n["max_eroded"], ".3g"), n["max_eroded"]),
                     (status, status))
            for c, (text, key) in enumerate(cells):
                item = _Item(text, key if e.has_result or c in (0, 1) else None)
                item.setToolTip(plain_tooltip(e.error or e.slide))
                if not e.can_open:
                    item.setForeground(QColor("#ff6060"))
                if c == 0:
                    item.setData(Qt.ItemDataRole.UserRole, r)  # the entry, wherever sorting moves its row
                self.table.setItem(r, c, item)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)  # the cohort's own ranking first
        self.table.resizeColumnsToContents()
        self.table.blockSignals(False)
        self.current = None

    def _opened_slide(self, path: str):
        """The slide layer of ``path`` opened earlier (from here or File > Open), else None."""
        from ..slides import slide_layers
        from ..tags import slide_of

        want = os.path.realpath(path)
        return next((ly for ly in slide_layers(self.viewer) if os.path.realpath(slide_of(ly).path) == want), None)

    def entry_at(self, row: int) -> int:
        """The index in ``entries`` of the slide shown in table row ``row`` (rows move when the table is sorted)."""
        return int(self.table.item(row, 0).data(Qt.ItemDataRole.UserRole))

    def row_of(self, entry: int) -> int:
        """The table row that shows ``entries[entry]``."""
        return next(r for r in range(self.table.rowCount()) if self.entry_at(r) == entry)

    def _on_row(self) -> None:
        rows = sorted({i.row() for i in self.table.selectedItems()})
        if rows and self.entry_at(rows[0]) != self.current:
            self.open_entry(self.entry_at(rows[0]))

    def step(self, by: int) -> None:
        """Show the next (``by`` = 1) or previous (-1) slide that can be shown (a result, or a project's image), in
        the order the table shows."""
        order = [i for i in map(self.entry_at, range(self.table.rowCount())) if self.entries[i].can_open]
        if not order:
            return
        here = order.index(self.current) if self.current in order else -1 if by > 0 else len(order)
        self.table.selectRow(self.row_of(order[max(0, min(len(order) - 1, here + by))]))

    def open_entry(self, index: int):
        """Open (once) and show ``entries[index]`` with its saved results; the cohort's other slides are hidden."""
        e = self.entries[index]
        self.current = index
        if not e.can_open:
            self.info.value = f"{Path(e.slide).name}: no result ({e.status}{f': {e.error}' if e.error else ''})"
            return None
        key = str(e.result_dir) if e.has_result else e.slide  # a project's image: the slide itself, to score
        layer = find_reopened(self.viewer, key) if e.has_result else self._opened_slide(key)  # never twice
        if layer is None:
            try:
                layers = self.viewer.open(key, plugin=PLUGIN)
            except (AnonavilaError, OSError, ValueError) as err:
                show_error(f"{Path(e.slide).name}: {err}")
                return None
            layer = layers[0] if layers else find_reopened(self.viewer, key)
        self.viewer.layers.selection.active = layer  # the session follows: shown alone (or side by side), fitted
        if self.session.slide_layer is not getattr(layer, "__wrapped__", layer):
            self.session.select(layer)
        else:
            self.session.show()
        return layer
