"""One slide's result: its patch grid with each patch's scores, best terms, calibrated z and p, and review marks.

There is one result type, whether the slide was just scored (:func:`napari_anonavila.pipeline.iter_score_slide`
builds it with :meth:`SlideResult.from_run`) or read back from its folder (:func:`napari_anonavila.open_result`);
the folder is its persisted form (:mod:`napari_anonavila.export.result_folder`). Every derived view is computed
here and only here: heatmaps of any column (eroded or not), the significant set, slide scores, top-k and ranks, a
patch's terms and the review states on the grid. What differs between a live and a reopened result is data: a live
one also holds the detector's calibration and its timings; a reopened one knows its folder.

Imports neither torch nor napari: a result reopens without a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .calibration import FDR, benjamini_hochberg, slide_calibration
from .grid import PatchGrid
from .maps import HeatmapGeometry, cells_to_heatmap, erode, slide_scores
from .reviews import ReviewMarks

if TYPE_CHECKING:
    from .calibration import Calibration

__all__ = ["HEATMAP_VALUES", "PatchTerms", "SlideResult"]

HEATMAP_VALUES = ("score", "d_normal", "d_abnormal", "z", "p_normal")  # the columns a heatmap can show


def _joined(names: Sequence[str], idx: np.ndarray, w: np.ndarray) -> list[str]:
    """'term:weight|term:weight' for each row of (n, k) ``idx`` and ``w`` (index -1 skipped). Python numbers, not
    NumPy scalars, in the loop: 2 x 10^6 rows in seconds, not a minute."""
    pre = [f"{n}:" for n in names]
    return ["|".join(pre[j] + f"{wt:.4f}" for j, wt in zip(ji, wi, strict=True) if j >= 0)
            for ji, wi in zip(np.asarray(idx).tolist(), np.asarray(w, np.float64).tolist(), strict=True)]


@dataclass(frozen=True, eq=False)
class PatchTerms:
    """Each patch's best terms of both pools: indices into the pools' names, best first, with their softmax weights.

    Row i is patch i; an index of -1 pads a row with fewer terms (a pool smaller than the top-k).
    """

    normal_names: tuple[str, ...]
    abnormal_names: tuple[str, ...]
    normal_idx: np.ndarray  # (n, k) int
    normal_w: np.ndarray  # (n, k) float32
    abnormal_idx: np.ndarray
    abnormal_w: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.normal_idx)
        for name, names in (("normal", self.normal_names), ("abnormal", self.abnormal_names)):
            idx, w = getattr(self, f"{name}_idx"), getattr(self, f"{name}_w")
            if idx.ndim != 2 or idx.shape != w.shape or len(idx) != n:
                raise ValueError(f"{name} term columns have shapes {idx.shape} and {w.shape} for {n} patches")
            if idx.size and (idx.max() >= len(names) or idx.min() < -1):
                raise ValueError(f"{name} term indices fall outside the {len(names)} terms of the pool")

    def __len__(self) -> int:
        return int(self.normal_idx.shape[0])

    def explain(self, i: int) -> tuple[str, str]:
        """Patch ``i``'s best normal and abnormal terms as 'term:weight|term:weight' strings."""
        i = int(i)
        return (_joined(self.normal_names, self.normal_idx[i:i + 1], self.normal_w[i:i + 1])[0],
                _joined(self.abnormal_names, self.abnormal_idx[i:i + 1], self.abnormal_w[i:i + 1])[0])

    def columns(self, start: int = 0, stop: int | None = None) -> tuple[list[str], list[str]]:
        """The :meth:`explain` strings of patches ``start:stop`` (all by default), as two columns."""
        rows = slice(start, stop)
        return (_joined(self.normal_names, self.normal_idx[rows], self.normal_w[rows]),
                _joined(self.abnormal_names, self.abnormal_idx[rows], self.abnormal_w[rows]))

    @classmethod
    def of_scores(cls, scores, normal_names: Sequence[str], abnormal_names: Sequence[str]) -> PatchTerms:
        """The terms of :class:`~napari_anonavila.scoring.PatchScores` with the pools' term names."""
        return cls(tuple(normal_names), tuple(abnormal_names), np.asarray(scores.top_normal_idx, np.int32),
                   np.asarray(scores.top_normal_w, np.float32), np.asarray(scores.top_abnormal_idx, np.int32),
                   np.asarray(scores.top_abnormal_w, np.float32))

    @classmethod
    def from_strings(cls, normal: Sequence[str], abnormal: Sequence[str]) -> PatchTerms:
        """Read 'term:weight|term:weight' columns back (a result folder written before ``patches.npz``)."""
        parts = {}
        for kind, cells in (("normal", normal), ("abnormal", abnormal)):
            vocab: dict[str, int] = {}
            rows = [[t.rsplit(":", 1) for t in cell.split("|") if t] for cell in cells]
            k = max((len(r) for r in rows), default=0)
            idx = np.full((len(rows), k), -1, np.int32)
            w = np.zeros((len(rows), k), np.float32)
            for i, row in enumerate(rows):
                for j, (name, weight) in enumerate(row):
                    idx[i, j] = vocab.setdefault(name, len(vocab))
                    w[i, j] = float(weight)
            parts[kind] = (tuple(vocab), idx, w)
        (nn, ni, nw), (an, ai, aw) = parts["normal"], parts["abnormal"]
        return cls(nn, an, ni, nw, ai, aw)


@dataclass(eq=False)
class SlideResult:
    """One slide's scores, in grid order: row i is patch i of ``grid``.

    ``slide`` describes the slide (its absolute path and content fingerprint among it); ``provenance`` records the
    model, terms, settings and software that made the result. ``z`` and ``p_normal`` are NaN when the model was
    uncalibrated. ``calibration_summary`` holds the slide's calibrated numbers (significant patches at ``fdr``, max
    z, the slide p-value; ``{"calibrated": False, ...}`` without a reference). ``marks`` are the review marks of the
    slide's patches.
    """

    slide: dict
    grid: PatchGrid
    d_normal: np.ndarray
    d_abnormal: np.ndarray
    score: np.ndarray
    terms: PatchTerms
    mode: str
    z: np.ndarray
    p_normal: np.ndarray
    calibration_summary: dict
    provenance: dict = field(default_factory=dict)
    fdr: float = FDR
    marks: ReviewMarks = field(default_factory=ReviewMarks)
    calibration: Calibration | None = None  # a live result: the detector's normal reference at scoring time
    timings: dict = field(default_factory=dict)
    from_cache: bool = False  # every embedding came from the embedding cache
    n_from_cache: int = 0  # patches whose embeddings came from the cache (a resumed run: some, not all)
    folder: Path | None = None  # the result folder it was written to or read from

    def __post_init__(self) -> None:
        n = len(self.grid)
        for name in ("d_normal", "d_abnormal", "score", "z", "p_normal"):
            v = np.asarray(getattr(self, name), np.float64)
            if v.shape != (n,):
                raise ValueError(f"{name} has shape {v.shape}; the grid has {n} patches")
            setattr(self, name, v)
        if len(self.terms) != n:
            raise ValueError(f"the term columns have {len(self.terms)} rows; the grid has {n} patches")

    @classmethod
    def from_run(cls, slide: dict, grid: PatchGrid, scores, normal_names: Sequence[str],
                 abnormal_names: Sequence[str], mode: str, calibration: Calibration | None, *,
                 provenance: dict | None = None, fdr: float = FDR, **run) -> SlideResult:
        """A result from a scoring run: ``scores`` (a :class:`~napari_anonavila.scoring.PatchScores`) in grid order,
        the pools' term names, and the detector's ``calibration`` (z, p-values and the slide's calibrated numbers are
        computed against it here). ``run`` holds timings, from_cache and n_from_cache."""
        s = np.asarray(scores.score, np.float64)
        terms = PatchTerms.of_scores(scores, normal_names, abnormal_names)
        nan = np.full(s.shape, np.nan)
        usable = calibration is not None and calibration.unusable_for(s) is None  # (the summary says why not)
        z = calibration.z(s, mode) if usable else nan
        p = calibration.p(s, mode) if usable else nan
        result = cls(slide, grid, scores.d_normal, scores.d_abnormal, s, terms, mode, z, p, {}, provenance or {},
                     fdr, calibration=calibration, **run)
        um = grid.patch_size_um
        result.calibration_summary = slide_calibration(
            s, result.slide_scores(), mode, calibration,
            patch_area_mm2=None if um is None else (um / 1000.0) ** 2, fdr=fdr, z=z, p=p)
        return result

    # -- what it is --------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.score.shape[0])

    @property
    def calibrated(self) -> bool:
        """Whether z and p-values were computed against a normal reference."""
        return bool(self.calibration_summary.get("calibrated"))

    @property
    def slide_fingerprint(self) -> str | None:
        return self.slide.get("fingerprint_sha256")

    @property
    def patch_size_l0(self) -> int:
        return int(self.grid.patch_size_l0)

    @property
    def geometry(self) -> HeatmapGeometry:
        """Where the heatmap's cells lie in level-0 pixels, and its napari scale and translate."""
        return HeatmapGeometry(self.patch_size_l0, tuple(self.grid.origin_xy_l0))

    @cached_property
    def xy_l0(self) -> np.ndarray:
        """(N, 2) top-left level-0 (x, y) of every patch."""
        return self.grid.xy_l0()

    def describe(self) -> str:
        """One line for people: where the result lives, its mode, model and date."""
        model = self.provenance.get("model") or "an unknown model"
        where = f"result in {self.folder}" if self.folder is not None else "result"
        return f"{where} ({self.mode}; {model}; made {self.provenance.get('created', '?')})"

    # -- derived views: each computed here only ----------------------------------------------------------
    def column(self, values: str) -> np.ndarray:
        """A per-patch column by name (``HEATMAP_VALUES``)."""
        if values not in HEATMAP_VALUES:
            raise ValueError(f"unknown column {values!r}; choose from {', '.join(HEATMAP_VALUES)}")
        return getattr(self, values)

    def heatmap(self, *, eroded: bool = False, values: str = "score") -> np.ndarray:
        """(rows, cols) grid of a column (``HEATMAP_VALUES``), NaN where no patch was scored; ``eroded``: the
        NaN-aware 3x3 minimum of it."""
        cells = self.grid.cells_rc
        h = cells_to_heatmap(cells[:, 0], cells[:, 1], self.column(values), self.grid.shape_rc)
        return erode(h) if eroded else h

    def significant(self, fdr: float | None = None) -> np.ndarray:
        """Patches significant at false-discovery rate ``fdr`` (default: the run's), Benjamini-Hochberg on
        ``p_normal``; none when uncalibrated."""
        if not self.calibrated:
            return np.zeros(len(self), bool)
        return benjamini_hochberg(self.p_normal, self.fdr if fdr is None else fdr)

    def slide_scores(self) -> dict[str, float]:
        """Max and top-1% mean of the patch scores, and of the 3x3-eroded heatmap."""
        return slide_scores(self.heatmap(), self.score)

    def calibrated_summary(self) -> dict:
        """The slide's calibrated numbers (a copy of ``calibration_summary``)."""
        return dict(self.calibration_summary)

    @property
    def rank(self) -> np.ndarray:
        """Each patch's rank by score, 1 for the highest (ties: grid order)."""
        r = np.empty(len(self), np.int64)
        r[self.top_k(len(self))] = np.arange(1, len(self) + 1)
        return r

    def top_k(self, k: int = 10) -> np.ndarray:
        """Indices of the ``k`` highest-scoring patches, best first (ties: grid order)."""
        return np.argsort(-self.score, kind="stable")[:k]

    def explain(self, i: int) -> tuple[str, str]:
        """Patch ``i``'s best normal and abnormal terms as 'term:weight|term:weight' strings."""
        return self.terms.explain(i)

    def review_states(self) -> dict[int, str]:
        """Patch index -> review state, for every marked patch of this grid."""
        return self.marks.on_grid(self.grid)[0]
