"""The heatmap legend panel: the current slide's heatmap explained in words, next to napari's own colour bar."""

from __future__ import annotations

import napari
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget

from ..legend import legend_text
from ..session import session_for
from . import wrapping

__all__ = ["LegendWidget"]


class LegendWidget(QWidget):
    """Follows the slide the session shows; opened by itself when a result folder is reopened."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = viewer
        self.session = session_for(viewer)
        self.text = wrapping(QLabel())
        QVBoxLayout(self).addWidget(self.text)
        self.session.slide_changed.connect(lambda _s: self.refresh())
        self.session.result_changed.connect(lambda _r: self.refresh())
        viewer.layers.events.inserted.connect(lambda _e: self.refresh())  # a reopened result's heatmap arrives
        self.refresh()

    def refresh(self) -> None:
        s = self.session
        det = s.detector.describe() if s.detector is not None else None
        self.text.setText(legend_text(self.viewer, s.slide_layer, s.result, det))
