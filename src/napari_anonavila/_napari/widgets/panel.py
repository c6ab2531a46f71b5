"""All panels in one tabbed dock: Score, Review, Terms, Retrain and QA, sharing the viewer's session.

Opening every panel as its own dock stacks them down the right edge; this one dock fits a 1920 x 1080 screen.
"""

from __future__ import annotations

import napari
from qtpy.QtWidgets import QTabWidget

from .export import ExportWidget
from .retrain import RetrainWidget
from .review import ReviewWidget
from .score import ScoreWidget
from .terms import TermsWidget

__all__ = ["PanelWidget"]


class PanelWidget(QTabWidget):
    """One dock with a tab per panel."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.score = ScoreWidget(viewer)
        self.review = ReviewWidget(viewer)
        self.terms = TermsWidget(viewer)
        self.retrain = RetrainWidget(viewer)
        self.qa = ExportWidget(viewer)
        for widget, title in ((self.score.native, "Score"), (self.review, "Review"), (self.terms, "Terms"),
                              (self.retrain.native, "Retrain"), (self.qa.native, "QA")):
            self.addTab(widget, title)
        self.setMinimumWidth(380)
