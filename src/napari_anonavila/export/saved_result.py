"""A ``score-slide`` or ``batch`` output folder read back as a result: what napari shows and reviews without the model.

:class:`SavedResult` answers the questions the widgets ask of a live :class:`~napari_anonavila.pipeline.SlideResult`
(the grid, scores, z and p-values, significant patches, slide scores, top-k, the terms that explain each patch)
from ``patches.csv`` and ``summary.json`` alone, so a result reopens without scoring again and without torch. Its
review marks come from ``reviews.json`` (saved as they are made) or, for older folders, the ``review`` column.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputFileError
from ..grid import PatchGrid
from ..maps import cells_to_heatmap, erode
from ..reviews import PatchKey, ReviewMarks, read_reviews
from .records import PatchTable, read_result_dir

__all__ = ["SavedResult", "open_result_dir"]


@dataclass(frozen=True)
class _SavedScores:
    """The score columns of a saved result (the terms are saved as text: :meth:`SavedResult.explain`)."""

    score: np.ndarray
    d_normal: np.ndarray
    d_abnormal: np.ndarray

    def __len__(self) -> int:
        return int(self.score.shape[0])


@dataclass
class SavedResult:
    """One slide's result as saved in ``folder``: rows in grid order, like a live SlideResult's."""

    folder: Path
    table: PatchTable
    summary: dict
    grid: PatchGrid
    mode: str
    marks: ReviewMarks = field(default_factory=ReviewMarks)
    calibration = None  # the reference itself is not saved; its z and p-values are, per patch
    saved = True

    @property
    def slide(self) -> dict:
        return self.table.slide

    @property
    def slide_fingerprint(self) -> str | None:
        return self.table.slide.get("fingerprint_sha256")

    @property
    def scores(self) -> _SavedScores:
        t = self.table
        return _SavedScores(t.score, t.d_normal, t.d_abnormal)

    @property
    def calibrated(self) -> bool:
        return self.table.calibrated

    @property
    def z(self) -> np.ndarray:
        return self.table.z if self.calibrated else np.full(len(self.table), np.nan)

    @property
    def p_normal(self) -> np.ndarray:
        return self.table.p_normal if self.calibrated else np.full(len(self.table), np.nan)

    def significant(self, fdr: float | None = None) -> np.ndarray:
        """The significant patches as saved (at the FDR of the run that wrote them)."""
        return self.table.significant.copy() if self.calibrated else np.zeros(len(self.table), bool)

    def heatmap(self, *, eroded: bool = False, values: str = "score") -> np.ndarray:
        v = getattr(self, values) if values in ("z", "p_normal") else getattr(self.table, values)
        h = cells_to_heatmap(self.table.row, self.table.col, v, self.grid.shape_rc)
        return erode(h) if eroded else h

    def slide_scores(self) -> dict:
        return dict(self.summary.get("slide_scores") or {})

    def calibrated_summary(self) -> dict:
        return dict(self.summary.get("calibrated") or {"calibrated": False})

    def top_k(self, k: int = 10) -> np.ndarray:
        return self.table.top_k(k)

    def explain(self, i: int) -> tuple[str, str]:
        """Patch ``i``'s best normal and abnormal terms as saved: 'term:weight|term:weight' strings."""
        return self.table.top_normal[i], self.table.top_abnormal[i]

    def describe(self) -> str:
        prov = self.table.provenance
        model = prov.get("model") or "an unknown model"
        return f"saved result in {self.folder} ({self.mode}; {model}; made {prov.get('created', '?')})"


def open_result_dir(folder: str | os.PathLike) -> SavedResult:
    """Read a result folder (``patches.csv``, ``summary.json`` and any ``reviews.json``); one error names what is
    wrong with it."""
    folder = Path(folder)
    table = read_result_dir(folder)
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))  # read_result_dir checked it
    try:
        heat = summary["heatmap"]
        origin = tuple(int(v) for v in heat.get("origin_xy_l0", (0, 0)))
        grid_info = table.provenance.get("grid") or {}
        mpp = grid_info.get("mpp")
        cells = np.stack([table.row, table.col], axis=1).astype(np.int64) if len(table) else np.zeros((0, 2), np.int64)
        grid = PatchGrid(int(table.size_l0), tuple(table.shape_rc), cells, np.ones(len(table)), origin,
                         float(mpp) if mpp else None)
        mode = str(table.provenance.get("scoring_mode") or "sum")
    except (KeyError, TypeError, ValueError) as err:
        raise InputFileError(f"{folder}: damaged score-slide result ({type(err).__name__}: {err})") from err
    marks = read_reviews(folder, slide_fingerprint=table.slide.get("fingerprint_sha256"))
    if marks is None:  # an older folder: the review column of patches.csv
        marks = ReviewMarks()
        for i, state in table.review.items():
            marks.set([PatchKey(int(table.x_l0[i]), int(table.y_l0[i]), int(table.size_l0))], state)
    return SavedResult(folder, table, summary, grid, mode, marks)
