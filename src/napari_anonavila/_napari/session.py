"""Per-viewer state shared by the widgets: the detector, the slide being scored, the latest result, review marks.

Widgets receive the viewer from napari (a public-only proxy, a new one per widget); the session is keyed by the
viewer underneath, so every widget of one window shares one session.
"""

from __future__ import annotations

import weakref
from pathlib import Path

import numpy as np
from psygnal import Signal

from ..reviews import ReviewMarks
from ..slide import Slide
from .coords import layer_to_slide_xy_l0
from .preferences import prefer_this_reader
from .slides import ONE_AT_A_TIME, arrange
from .tags import saved_result_of, slide_of, unwrap

__all__ = ["Session", "chosen_path", "session_for", "shapes_to_polygons_xy_l0"]


class Session:
    """What the score, review, term, retrain and QA widgets of one viewer share."""

    result_changed = Signal(object)  # the new SlideResult (None when a run starts: results are being replaced)
    detector_changed = Signal(object)  # the new or edited Detector
    rescore_requested = Signal()  # terms or MLP changed: score the last grid again, from the cache
    reviews_changed = Signal()  # review marks were set
    slide_changed = Signal(object)  # the widgets now show another slide layer (result_changed follows)

    def __init__(self) -> None:
        self.detector = None
        self.slide_layer = None  # the slide the widgets show (its layer, unwrapped)
        self._results: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # slide layer -> its SlideResult
        self._made_with: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # slide layer -> model version
        self.model_version = 0  # counts changes of the detector (loaded, retrained, terms edited, calibrated)
        self.detector_changed.connect(self._model_changed)
        self.checkpoint: Path | None = None
        self.busy: str | None = None  # what a worker is doing with the detector now (None: nothing)
        self.top_k = 10  # how many top patches the points layer and the review table list
        self._marks: dict[str, ReviewMarks] = {}
        self.reviews_changed.connect(self._save_marks_or_say)
        self.layout = ONE_AT_A_TIME  # how the window shows its slides (slides.LAYOUTS)
        self._viewer = None

    def follow(self, viewer) -> None:
        """Show the slide of the layer selected in ``viewer``: a slide, or one of its result layers."""
        self._viewer = weakref.ref(viewer)

        def on_active(_event=None) -> None:
            from .results import slide_of_result

            layer = viewer.layers.selection.active
            if layer is None or self.busy:
                return
            slide_layer = layer if slide_of(layer) is not None else slide_of_result(viewer, layer)
            if slide_layer is not None and unwrap(slide_layer) is not self.slide_layer:
                self.select(slide_layer)
            elif slide_layer is not None:
                self.show(fit=False)  # a result layer of the shown slide arrived (a reopened result's): its colour bar

        viewer.layers.selection.events.active.connect(on_active)
        on_active()  # the slide selected when the first widget opens

    def select(self, slide_layer) -> None:
        """Make ``slide_layer`` the slide the widgets show, with its own result (switching never re-scores), and show
        it as the layout says (alone, the view fitted to it; or among the others, side by side)."""
        self.slide_layer = unwrap(slide_layer)
        self.show()
        self.slide_changed.emit(self.slide_layer)
        self.result_changed.emit(self.result)

    def show(self, layout: str | None = None, *, fit: bool = True) -> None:
        """Arrange the window's slides around the current one (``layout``: keep it, or change it); ``fit`` the view
        to it."""
        self.layout = layout or self.layout
        viewer = self._viewer() if self._viewer is not None else None
        if viewer is not None and self.slide_layer is not None and self.slide_layer in viewer.layers:
            arrange(viewer, self.slide_layer, self.layout, fit=fit)

    def _save_marks_or_say(self) -> None:
        try:
            self.save_marks()
        except OSError as err:
            from napari.utils.notifications import show_error

            show_error(f"review marks not saved to the result folder: {err}")

    def _model_changed(self, _det=None) -> None:
        self.model_version += 1

    def result_is_current(self) -> bool:
        """Whether the shown slide's result was made by the detector as it is now (a reopened result is a record of
        its own model: it is shown as it was saved, never re-scored on its own)."""
        res = self.result
        return res is not None and (self.is_reopened(res)
                                    or self._made_with.get(self.slide_layer) == self.model_version)

    def is_reopened(self, result) -> bool:
        """Whether ``result`` is the one the shown slide was opened with from its result folder (not scored here)."""
        return result is not None and result is saved_result_of(self.slide_layer)

    @property
    def result(self):
        """The result of the slide the widgets show (each slide keeps its own; switching never re-scores): the last
        one scored here, else the one a result folder was opened with."""
        return self.result_of(self.slide_layer) if self.slide_layer is not None else None

    @result.setter
    def result(self, value) -> None:
        if self.slide_layer is None:
            return
        if value is None:  # a run replaces the result (a reopened folder's too: its layers are emptied)
            self._results[self.slide_layer] = None
        else:
            self._results[self.slide_layer] = value
            self._made_with[self.slide_layer] = self.model_version

    def result_of(self, slide_layer):
        """The result of any slide layer of this viewer, or None."""
        layer = unwrap(slide_layer)
        return self._results[layer] if layer in self._results else saved_result_of(layer)

    @property
    def slide(self) -> Slide | None:
        return slide_of(self.slide_layer) if self.slide_layer is not None else None

    def marks(self, slide: Slide | None = None) -> ReviewMarks:
        """The review marks of ``slide`` (default: the scored slide); they outlive results and re-scores. A slide
        opened from a result folder starts with the marks saved there."""
        slide = slide or self.slide
        key = str(slide.path.resolve()) if slide is not None else ""
        if key not in self._marks:
            saved = saved_result_of(self.slide_layer) if slide is self.slide else None
            self._marks[key] = saved.marks if saved is not None else ReviewMarks()
        return self._marks[key]

    def save_marks(self) -> Path | None:
        """Save the shown slide's marks to the result folder it was opened from (if any); return the file."""
        saved = saved_result_of(self.slide_layer)
        if saved is None:
            return None
        from ..reviews import write_reviews

        return write_reviews(saved.folder, self.marks(), slide_fingerprint=saved.slide_fingerprint)


_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def session_for(viewer) -> Session:
    """The session of a viewer, created on first use."""
    real = unwrap(viewer)
    if real not in _SESSIONS:
        prefer_this_reader()  # from now on File > Open takes slides with this plugin without asking
        _SESSIONS[real] = Session()
        _SESSIONS[real].follow(real)
    return _SESSIONS[real]


def shapes_to_polygons_xy_l0(shapes_layer, slide_layer) -> list[np.ndarray]:
    """A Shapes layer's polygons and rectangles as level-0 (x, y) polygons of the slide, through both transforms."""
    out = []
    for data, kind in zip(shapes_layer.data, shapes_layer.shape_type, strict=True):
        data = np.asarray(data, float)[:, -2:]
        if kind == "ellipse":  # napari stores an ellipse as the 4 corners of its bounding box
            m, u, v = data.mean(0), (data[1] - data[0]) / 2, (data[3] - data[0]) / 2
            t = np.linspace(0, 2 * np.pi, 48, endpoint=False)[:, None]
            data = m + np.cos(t) * u + np.sin(t) * v
        if len(data) >= 3 and kind not in ("line", "path"):
            out.append(layer_to_slide_xy_l0(shapes_layer, slide_layer, data))
    return out


def chosen_path(file_edit) -> Path | None:
    """The path in a magicgui FileEdit, or None when it is empty (FileEdit shows an empty field as '.' or cwd)."""
    value = file_edit.value
    if value is None or str(value).strip() in ("", "."):
        return None
    p = Path(value)
    return None if p.resolve() == Path.cwd().resolve() else p
