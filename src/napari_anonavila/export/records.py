"""The exportable form of one slide's result: per-patch rows plus slide geometry and provenance.

Built from a live result (:func:`from_result`) or read back from a ``score-slide`` output folder
(:func:`read_result_dir`), so exports work the same from the CLI, the API and napari.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputFileError
from ..maps.heatmap import MAX_CELLS
from ..reviews import REVIEW_STATES, read_reviews
from .tables import explain_columns, read_csv, write_csv

__all__ = ["PATCH_COLUMNS", "REVIEW_STATES", "PatchTable", "from_result", "read_result_dir", "write_patch_table"]

PATCH_COLUMNS = ["x_l0", "y_l0", "size_l0", "row", "col", "d_normal", "d_abnormal", "score", "rank", "top_normal",
                 "top_abnormal", "review", "z", "p_normal", "significant"]


@dataclass
class PatchTable:
    """Rows in grid order. ``x_l0, y_l0`` are top-left level-0 pixels; ``top_*`` are 'term:weight|...' strings."""

    x_l0: np.ndarray
    y_l0: np.ndarray
    size_l0: int
    row: np.ndarray
    col: np.ndarray
    d_normal: np.ndarray
    d_abnormal: np.ndarray
    score: np.ndarray
    top_normal: list[str]
    top_abnormal: list[str]
    shape_rc: tuple[int, int]
    slide: dict
    provenance: dict
    review: dict[int, str] = field(default_factory=dict)  # patch index -> review state
    z: np.ndarray | None = None  # calibrated columns (calibration.py); None when uncalibrated
    p_normal: np.ndarray | None = None
    significant: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.score.shape[0])

    @property
    def calibrated(self) -> bool:
        return self.z is not None

    @property
    def rank(self) -> np.ndarray:
        r = np.empty(len(self), np.int64)
        r[np.argsort(-self.score, kind="stable")] = np.arange(1, len(self) + 1)
        return r

    def top_k(self, k: int) -> np.ndarray:
        return np.argsort(-self.score, kind="stable")[:k]

    def heatmap(self) -> np.ndarray:
        h = np.full(self.shape_rc, np.nan)
        h[self.row, self.col] = self.score
        return h


def from_result(result, detector, *, fingerprint: str | None = None, checkpoint: dict | None = None) -> PatchTable:
    """A PatchTable from a SlideResult and the detector that produced it.

    ``fingerprint`` is the slide's (computed when missing); ``checkpoint`` ({path, sha256}) goes to provenance.
    """
    from .provenance import provenance

    s, g = result.scores, result.grid
    n = len(s)
    xy = g.xy_l0()[:n]
    names_n, names_a = detector.term_names("normal"), detector.term_names("abnormal")
    expl = [explain_columns(s, i, names_n, names_a) for i in range(n)]
    prov = provenance(result, detector, slide_fingerprint=fingerprint or _fingerprint(result.slide["path"]),
                      checkpoint=checkpoint)
    cal = result.calibration is not None
    return PatchTable(xy[:, 0].copy(), xy[:, 1].copy(), g.patch_size_l0, g.cells_rc[:n, 0].copy(),
                      g.cells_rc[:n, 1].copy(), np.asarray(s.d_normal, float), np.asarray(s.d_abnormal, float),
                      np.asarray(s.score, float), [e[0] for e in expl], [e[1] for e in expl], tuple(g.shape_rc),
                      dict(result.slide), prov, z=result.z if cal else None,
                      p_normal=result.p_normal if cal else None, significant=result.significant() if cal else None)


def _fingerprint(path: str) -> str | None:
    from ..slide import open_slide

    try:
        with open_slide(path) as s:
            return s.fingerprint()
    except Exception:  # a moved slide: provenance records None
        return None


def read_result_dir(folder: str | os.PathLike) -> PatchTable:
    """Read ``patches.csv`` and ``summary.json`` written by ``anonavila score-slide``; a damaged folder is one error."""
    folder = Path(folder)
    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise InputFileError(f"{folder}: not a score-slide result folder (summary.json: {err})") from err
    cols = ["x_l0", "y_l0", "size_l0", "row", "col", "d_normal", "d_abnormal", "score", "top_normal", "top_abnormal"]
    rows = read_csv(folder / "patches.csv", cols)
    try:
        num = {c: np.array([float(r[c]) for r in rows]) for c in cols[:8]}
        if rows and not all(np.isfinite(num[c]).all() for c in cols[:8]):
            raise ValueError("a numeric column holds NaN or inf")
        size = int(num["size_l0"][0]) if rows else int(summary["heatmap"]["cell_size_l0"])
        shape = tuple(int(v) for v in summary["heatmap"]["shape_rc"])
        if len(shape) == 2 and shape[0] * shape[1] > MAX_CELLS:
            raise ValueError(f"heatmap shape {shape} is beyond any slide ({MAX_CELLS:,} cells at most)")
        if len(shape) != 2 or min(shape) < 0 or (rows and (num["row"].max() >= shape[0] or num["col"].max() >= shape[1]
                                                          or min(num["row"].min(), num["col"].min()) < 0)):
            raise ValueError(f"patch cells do not fit the heatmap shape {shape}")
        prov = summary.get("provenance") or {}
        if not isinstance(prov, dict):
            raise ValueError("provenance is not an object")
    except (ValueError, KeyError, TypeError, IndexError, OverflowError) as err:
        raise InputFileError(f"{folder}: damaged score-slide result ({type(err).__name__}: {err})") from err
    review = {i: r["review"] for i, r in enumerate(rows) if r.get("review", "unreviewed") in REVIEW_STATES[1:]}
    cal = _calibrated_columns(folder, rows)
    slide = prov.get("slide", {}) if isinstance(prov.get("slide"), dict) else {}
    saved = read_reviews(folder, slide_fingerprint=slide.get("fingerprint_sha256"))
    if saved is not None:  # marks saved since (napari): they replace the column written with the result
        index = {(int(x), int(y)): i for i, (x, y) in enumerate(zip(num["x_l0"], num["y_l0"], strict=True))}
        review = {index[(k.x_l0, k.y_l0)]: st for k, st in saved.items()
                  if k.size_l0 == size and (k.x_l0, k.y_l0) in index}
    return PatchTable(num["x_l0"].astype(np.int64), num["y_l0"].astype(np.int64), size, num["row"].astype(np.int64),
                      num["col"].astype(np.int64), num["d_normal"], num["d_abnormal"], num["score"],
                      [r["top_normal"] for r in rows], [r["top_abnormal"] for r in rows], shape, slide, prov,
                      review, *cal)


def _calibrated_columns(folder: Path, rows: list[dict]) -> tuple:
    """z, p_normal and significant read back (None, None, None for an uncalibrated or older result)."""
    if not rows or not rows[0].get("z"):
        return None, None, None
    try:
        z = np.array([float(r["z"]) for r in rows])
        p = np.array([float(r["p_normal"]) for r in rows])
        sig = np.array([r["significant"] == "1" for r in rows])
        if not (np.isfinite(z).all() and ((p > 0) & (p <= 1)).all()):
            raise ValueError("z must be finite and p_normal in (0, 1]")
    except (KeyError, TypeError, ValueError) as err:
        raise InputFileError(f"{folder}: damaged score-slide result (calibrated columns of patches.csv: {err})") \
            from err
    return z, p, sig


def write_patch_table(path: str | os.PathLike, table: PatchTable, *, overwrite: bool = False) -> Path:
    """The patch table as CSV: level-0 position, grid cell, distances, score, rank, terms, review state, and the
    calibrated z, p_normal and significant (empty when uncalibrated)."""
    rank = table.rank

    def calibrated(i: int) -> list:
        if not table.calibrated:
            return ["", "", ""]
        return [f"{table.z[i]:.6g}", f"{table.p_normal[i]:.6g}", int(bool(table.significant[i]))]

    rows = ([int(table.x_l0[i]), int(table.y_l0[i]), table.size_l0, int(table.row[i]), int(table.col[i]),
             f"{table.d_normal[i]:.8g}", f"{table.d_abnormal[i]:.8g}", f"{table.score[i]:.8g}", int(rank[i]),
             table.top_normal[i], table.top_abnormal[i], table.review.get(i, "unreviewed"), *calibrated(i)]
            for i in range(len(table)))
    return write_csv(path, PATCH_COLUMNS, rows, overwrite=overwrite)
