"""The Term-pool editor: both pools side by side; edits re-encode only new prompts and re-score from the cache."""

from __future__ import annotations

import dataclasses
import warnings

import napari
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ...errors import AnonavilaError
from ...terms import TermPools, load_pool, save_pool, strip_template
from ..session import session_for
from ..workers import pools_worker
from . import tabify_when_docked, wrapping

__all__ = ["TermsWidget"]


def _display(prompt: str, template: str) -> str:
    """A prompt as a term for people: the template removed, surrounding spaces trimmed."""
    return (strip_template(prompt, template) or prompt).strip()


class _PoolList(QWidget):
    """One editable pool: a list of terms (double-click to edit) with add, remove, import and export."""

    def __init__(self, kind: str, owner: TermsWidget) -> None:
        super().__init__()
        self.kind, self.owner = kind, owner
        self.title = QLabel()
        self.list = QListWidget()
        self.list.setSelectionMode(QListWidget.SelectionMode.ExtendedSelection)
        buttons = QGridLayout()
        for i, (text, slot) in enumerate((("Add", self.add), ("Remove", self.remove), ("Import...", self.import_),
                                          ("Export...", self.export))):
            b = QPushButton(text)
            b.clicked.connect(slot)
            buttons.addWidget(b, i // 2, i % 2)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.list)
        layout.addLayout(buttons)
        self.list.itemChanged.connect(lambda _i: owner.mark_dirty())

    def set_prompts(self, prompts: list[str], template: str) -> None:
        """Show each prompt's term; the prompt itself rides along, so an untouched term stays byte for byte."""
        self.list.blockSignals(True)
        self.list.clear()
        for p in prompts:
            item = QListWidgetItem(_display(p, template))
            item.setData(Qt.ItemDataRole.UserRole, p)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
            self.list.addItem(item)
        self.list.blockSignals(False)
        self.title.setText(f"<b>{self.kind.capitalize()}</b> ({len(prompts)} terms)")

    def prompts(self, template: str) -> list[str]:
        """The pool's prompts: an item whose text was not edited gives its original prompt exactly; an edited or
        new one gives ``template`` around its text."""
        out = []
        for i in range(self.list.count()):
            item = self.list.item(i)
            text, original = item.text(), item.data(Qt.ItemDataRole.UserRole)
            if isinstance(original, str) and text == _display(original, template):
                out.append(original)
            elif text.strip():
                out.append(template.format(text.strip()))
        return out

    def add(self, *_, text: str = "new term") -> None:
        item = QListWidgetItem(text)
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
        self.list.addItem(item)
        self.list.setCurrentItem(item)
        self.list.editItem(item)
        self.owner.mark_dirty()

    def remove(self, *_) -> None:
        for item in self.list.selectedItems():
            self.list.takeItem(self.list.row(item))
        self.owner.mark_dirty()

    def import_(self, *_, path: str | None = None) -> None:
        path = path or QFileDialog.getOpenFileName(self, f"Import {self.kind} terms", "",
                                                   "Term pools (*.csv *.txt);;All files (*)")[0]
        if not path:
            return
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                prompts = load_pool(path, template=self.owner.template, kind=self.kind)
        except AnonavilaError as err:
            show_error(str(err))
            return
        for w in caught:
            show_warning(str(w.message))
        self.set_prompts(prompts, self.owner.template)
        self.owner.mark_dirty()

    def export(self, *_, path: str | None = None) -> None:
        path = path or QFileDialog.getSaveFileName(self, f"Export {self.kind} terms", f"{self.kind}_words.csv",
                                                   "Authors' CSV (*.csv);;Plain text (*.txt)")[0]
        if not path:
            return
        try:
            save_pool(self.owner.prompts(self.kind), path, kind=self.kind, template=self.owner.template,
                      overwrite=True)
            show_info(f"wrote {path}")
        except AnonavilaError as err:
            show_error(str(err))


class TermsWidget(QWidget):
    """Edit the detector's term pools; Apply re-encodes new prompts, refits centroids and re-scores from cache."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = viewer
        self.session = session_for(viewer)
        self.template = "an image showing {}"
        self.normal = _PoolList("normal", self)
        self.abnormal = _PoolList("abnormal", self)
        self.status = wrapping(QLabel(""))
        self.status.setWordWrap(True)
        apply_b, restore_b = QPushButton("Apply and re-score"), QPushButton("Restore defaults")
        apply_b.clicked.connect(self.apply)
        restore_b.clicked.connect(self.restore_defaults)
        pools = QHBoxLayout()
        pools.addWidget(self.normal)
        pools.addWidget(self.abnormal)
        row = QHBoxLayout()
        row.addWidget(restore_b)
        row.addWidget(apply_b)
        layout = QVBoxLayout(self)
        layout.addLayout(pools)
        layout.addLayout(row)
        layout.addWidget(self.status)
        self.worker = None
        self._applied = False
        self.session.detector_changed.connect(self.load_from_detector)
        self.load(self.session.detector.pools if self.session.detector is not None else TermPools.default())
        tabify_when_docked(self)

    def load(self, pools: TermPools) -> None:
        self.template = pools.template
        self.normal.set_prompts(list(pools.normal), pools.template)
        self.abnormal.set_prompts(list(pools.abnormal), pools.template)
        self.status.setText("")

    def load_from_detector(self, det) -> None:
        if det is not None:
            self.load(det.pools)

    def restore_defaults(self, *_) -> None:
        self.load(TermPools.default())
        self.mark_dirty()

    def mark_dirty(self) -> None:
        self.normal.title.setText(f"<b>Normal</b> ({self.normal.list.count()} terms)")
        self.abnormal.title.setText(f"<b>Abnormal</b> ({self.abnormal.list.count()} terms)")
        self.status.setText("Edited: press Apply to re-score.")

    def prompts(self, kind: str) -> list[str]:
        return (self.normal if kind == "normal" else self.abnormal).prompts(self.template)

    def pools(self) -> TermPools:
        """The pools as listed: the detector's own (or the shipped defaults) when no prompt changed, byte for byte
        and with their label; otherwise new pools, deduplicated with a notification naming the duplicates."""
        listed = (tuple(self.prompts("normal")), tuple(self.prompts("abnormal")))
        det = self.session.detector
        for known in ((det.pools,) if det is not None else ()) + (TermPools.default(),):
            if listed == (known.normal, known.abnormal) and self.template == known.template:
                return known
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                return TermPools.from_lists(self.prompts("normal"), self.prompts("abnormal"), template=self.template)
            finally:
                for w in caught:
                    show_warning(str(w.message))

    def apply(self, *_):
        """Give the detector the edited pools (in a worker: new prompts are encoded), then re-score from the cache.

        Returns the worker, or None when nothing could start (the reason is shown).
        """
        s = self.session
        if s.detector is None:
            show_error("no model yet: score a slide first (Score widget)")
            return None
        if s.busy:
            show_error(f"wait until {s.busy} has finished (or cancel it), then apply the term pools")
            return None
        try:
            pools = self.pools()
        except AnonavilaError as err:
            show_error(str(err))
            return None
        if pools is s.detector.pools:
            self.status.setText("No term changed: nothing to apply.")
            return None
        if pools != TermPools.default() and not pools.domain:
            domain = (s.detector.pools.domain or "custom").removesuffix(" (edited)")
            pools = dataclasses.replace(pools, domain=f"{domain} (edited)")
        self.status.setText("Encoding new terms and recomputing the centroids...")
        self.worker = pools_worker(s.detector, pools)
        s.busy = "encoding terms"
        self.worker.returned.connect(self._on_applied)
        self.worker.errored.connect(lambda err: (show_error(f"term pools not applied: {err}"),
                                                 self.status.setText(f"Not applied: {err}")))
        self.worker.finished.connect(self._on_finished)
        self.worker.start()
        return self.worker

    def _on_applied(self, det) -> None:
        self._applied = True
        self.session.detector_changed.emit(det)  # reloads the lists from the detector's pools
        self.status.setText("Applied. Centroids recomputed from the normal reference; the MLP was trained with the "
                            "old pools, so retraining is advisable (Retrain widget).")

    def _on_finished(self) -> None:
        self.worker = None
        self.session.busy = None
        if self._applied:  # the pools changed: show the new scores
            self._applied = False
            self.session.rescore_requested.emit()
