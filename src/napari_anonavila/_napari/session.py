"""Per-viewer state shared by the widgets: the detector, the slide being scored and the latest result."""

from __future__ import annotations

import weakref
from pathlib import Path

import numpy as np
from psygnal import Signal

from ..backends.demo import cache_dir
from ..embcache import EmbeddingCache
from ..slide import Slide

__all__ = ["Session", "session_for", "slide_of"]


class Session:
    """What the score, review, term and retrain widgets of one viewer share."""

    result_changed = Signal(object)  # the new SlideResult
    detector_changed = Signal(object)  # the new or edited Detector
    rescore_requested = Signal()  # terms or MLP changed: score the last grid again, from the cache

    def __init__(self) -> None:
        self.detector = None
        self.result = None
        self.slide_layer = None
        self.checkpoint: Path | None = None
        self.reference_xy: np.ndarray | None = None

    @property
    def slide(self) -> Slide | None:
        return slide_of(self.slide_layer) if self.slide_layer is not None else None

    def cache(self, slide: Slide) -> EmbeddingCache:
        """The embedding cache of a slide for interactive sessions (in the user cache folder)."""
        return EmbeddingCache(cache_dir() / "napari-sessions" / slide.fingerprint()[:20])


_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def session_for(viewer) -> Session:
    """The session of a viewer, created on first use."""
    if viewer not in _SESSIONS:
        _SESSIONS[viewer] = Session()
    return _SESSIONS[viewer]


def slide_of(layer) -> Slide | None:
    """The open Slide behind an image layer made by our reader, else None."""
    s = layer.metadata.get("anonavila_slide") if hasattr(layer, "metadata") else None
    return s if isinstance(s, Slide) else None


def shapes_to_polygons_xy_l0(shapes_layer, scale: float) -> list[np.ndarray]:
    """A Shapes layer's shapes (world (row, col)) as level-0 (x, y) polygons."""
    return [np.asarray(d)[:, -2:][:, ::-1] / scale for d in shapes_layer.data if len(d) >= 3]


def chosen_path(file_edit) -> Path | None:
    """The path in a magicgui FileEdit, or None when it is empty (FileEdit shows an empty field as '.' or cwd)."""
    value = file_edit.value
    if value is None or str(value).strip() in ("", "."):
        return None
    p = Path(value)
    return None if p.resolve() == Path.cwd().resolve() else p
