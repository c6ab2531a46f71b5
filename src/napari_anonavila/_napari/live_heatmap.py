"""The heatmap of a run as its batches arrive, and of a finished or reopened result: one layer per slide, redrawn at
most a few times a second, on the fixed z scale when the model is calibrated."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from .layers import Z_RANGE
from .results import HEATMAP, draw_heatmap, result_layer

if TYPE_CHECKING:
    import napari

    from .session import Session

__all__ = ["HEATMAP_VALUES", "LiveHeatmap"]

HEATMAP_VALUES = ("z vs normal (fixed scale)", "raw score (per slide)")
_REFRESH_S = 0.3  # at most ~3 heatmap redraws a second while batches arrive


class LiveHeatmap:
    """The scores of the session's slide so far (a run streaming in) or of its result, and their heatmap layer."""

    def __init__(self, viewer: napari.viewer.Viewer, session: Session) -> None:
        self.viewer, self.session = viewer, session
        self.grid = None
        self.heat: np.ndarray | None = None
        self.scored = 0
        self._last_refresh = 0.0

    def clear(self) -> None:
        self.grid, self.heat, self.scored = None, None, 0

    def show_result(self, result) -> None:
        """Hold a finished or reopened result's scores (drawn by the next :meth:`refresh`)."""
        self.grid, self.heat, self.scored = result.grid, result.heatmap(), len(result)

    def start(self, grid) -> None:
        """A run's grid: every cell empty until its batch arrives."""
        self.grid, self.heat = grid, np.full(grid.shape_rc, np.nan)
        self._last_refresh = time.perf_counter()

    def add(self, start: int, scores, done: int) -> bool:
        """Patches ``start:start+len(scores)`` scored; True when it is time to redraw (coalesced batches: each redraw
        costs the window a frame)."""
        cells = self.grid.cells_rc[start : start + len(scores)]
        self.heat[cells[:, 0], cells[:, 1]] = scores.score
        self.scored = done
        now = time.perf_counter()
        if now - self._last_refresh < _REFRESH_S:
            return False
        self._last_refresh = now
        return True

    def refresh(self, *, values: str, eroded: bool, mode: str) -> str | None:
        """Draw the heatmap layer of the session's slide; returns its label (None when nothing was drawn).

        ``values`` is one of :data:`HEATMAP_VALUES`; ``mode`` the score mode of a run still streaming in."""
        s = self.session
        if self.heat is None or s.slide_layer is None:
            return None
        from ..maps import erode  # (scipy: imported at the first heatmap, not with the Plugins menu)

        res = s.result  # None while a run streams in: the partial heatmap, z from the model's reference
        saved = s.is_reopened(res)
        if saved and result_layer(self.viewer, s.slide_layer, HEATMAP) is None:
            return None  # a result folder being opened: its reader adds the heatmap layer next (never a second one)
        mode = res.mode if res is not None else mode
        how = f"{mode}{', 3x3 eroded' if eroded else ''}{'; saved' if saved else ''}"
        cal = None if res is not None or s.detector is None else s.detector.calibration
        calibrated = res.calibrated if res is not None else cal is not None
        want_z = values == HEATMAP_VALUES[0] and calibrated
        if res is not None:
            heat = res.heatmap(values="z" if want_z else "score", eroded=eroded)
        else:
            heat = erode(self.heat) if eroded else self.heat
            if want_z:  # a slide-normalised model: the slide's own scale once enough of it is in
                heat = cal.z(heat, mode) if cal.unusable_for(heat) is None else cal.reference_z(heat, mode)
        if want_z:
            fixed = Z_RANGE
            label = f"anomaly z: robust SD above normal tissue ({how}; fixed scale)"
        else:
            fixed = None
            label = f"raw anomaly score ({how}; stretched per slide{'' if calibrated else ', uncalibrated model'})"
        draw_heatmap(self.viewer, s.slide_layer, heat, self.grid.patch_size_l0, self.grid.origin_xy_l0, label=label,
                     fixed=fixed)
        return label
