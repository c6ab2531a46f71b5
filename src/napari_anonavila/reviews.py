"""QA review marks that belong to patches, not to rows: keyed by level-0 location and patch size.

A re-score (new mode, terms, MLP, patch size) reorders or replaces the rows of a result; the marks stay with
the tissue they were made on. Marks whose patch is not in the current grid are kept aside, not dropped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputFileError

__all__ = ["REVIEWS_FILE", "REVIEW_STATES", "PatchKey", "ReviewMarks", "read_reviews", "write_reviews"]

REVIEW_STATES = ("unreviewed", "confirmed", "rejected", "unsure")
REVIEWS_FILE = "reviews.json"  # review marks saved beside a result (napari saves them as they are made)


@dataclass(frozen=True, order=True)
class PatchKey:
    """A patch: its top-left level-0 pixel (x, y) and its side in level-0 pixels."""

    x_l0: int
    y_l0: int
    size_l0: int


class ReviewMarks:
    """Review states of one slide's patches. ``unreviewed`` is the absence of a mark."""

    def __init__(self, marks: dict[PatchKey, str] | None = None) -> None:
        self._marks: dict[PatchKey, str] = {}
        for key, state in (marks or {}).items():
            self.set([key], state)

    def __len__(self) -> int:
        return len(self._marks)

    def __bool__(self) -> bool:
        return bool(self._marks)

    def items(self) -> list[tuple[PatchKey, str]]:
        """(key, state) pairs in patch order (x, then y, then size)."""
        return sorted(self._marks.items(), key=lambda kv: (kv[0].x_l0, kv[0].y_l0, kv[0].size_l0))

    def get(self, key: PatchKey) -> str:
        return self._marks.get(key, "unreviewed")

    def set(self, keys: Iterable[PatchKey], state: str) -> None:
        """Mark patches; ``unreviewed`` clears their marks."""
        if state not in REVIEW_STATES:
            raise ValueError(f"unknown review state {state!r}; use one of {', '.join(REVIEW_STATES)}")
        for k in keys:
            if state == "unreviewed":
                self._marks.pop(k, None)
            else:
                self._marks[k] = state

    @staticmethod
    def keys_of(grid, indices: Iterable[int]) -> list[PatchKey]:
        """The keys of grid patches by their index in the grid."""
        xy = grid.xy_l0()
        return [PatchKey(int(xy[i, 0]), int(xy[i, 1]), int(grid.patch_size_l0)) for i in indices]

    def on_grid(self, grid) -> tuple[dict[int, str], dict[PatchKey, str]]:
        """(patch index -> state for marks on ``grid``'s patches, the marks that match none of them); vectorised over
        the grid (a 10^6-patch grid costs milliseconds)."""
        if not self._marks:
            return {}, {}
        keys = list(self._marks)
        p = int(grid.patch_size_l0)
        (x0, y0), (rows, cols) = grid.origin_xy_l0, grid.shape_rc
        k = np.array([(m.x_l0, m.y_l0, m.size_l0) for m in keys], np.int64).reshape(-1, 3)
        dx, dy = k[:, 0] - x0, k[:, 1] - y0
        ok = (k[:, 2] == p) & (dx >= 0) & (dy >= 0) & (dx % p == 0) & (dy % p == 0) & (dx // p < cols) & \
             (dy // p < rows)
        flat = np.where(ok, (dy // p) * cols + dx // p, -1)
        cells = np.asarray(grid.cells_rc, np.int64).reshape(-1, 2)
        ids = cells[:, 0] * cols + cells[:, 1]
        order = np.argsort(ids, kind="stable")
        at = np.clip(np.searchsorted(ids[order], flat), 0, max(len(ids) - 1, 0))
        found = ok & (len(ids) > 0) & (ids[order][at] == flat) if len(ids) else np.zeros(len(keys), bool)
        on, aside = {}, {}
        for key, hit, j in zip(keys, found, at, strict=True):
            if hit:
                on[int(order[j])] = self._marks[key]
            else:
                aside[key] = self._marks[key]
        return on, aside

    def counts(self) -> dict[str, int]:
        """How many patches carry each state."""
        out: dict[str, int] = {}
        for s in self._marks.values():
            out[s] = out.get(s, 0) + 1
        return out


def write_reviews(folder: str | os.PathLike, marks: ReviewMarks, *, slide_fingerprint: str | None) -> Path:
    """Save ``marks`` to ``folder/reviews.json`` in one step (a reader sees the old file or the new, never half), in
    columns (10^6 marks take about a second)."""
    from ._atomic import atomic_write

    path = Path(folder) / REVIEWS_FILE
    items = marks.items()
    doc = {"format": "napari-anonavila reviews 2", "slide_fingerprint_sha256": slide_fingerprint,
           "columns": {"x_l0": [k.x_l0 for k, _ in items], "y_l0": [k.y_l0 for k, _ in items],
                       "size_l0": [k.size_l0 for k, _ in items], "review": [st for _, st in items]}}
    with atomic_write(path, encoding="utf-8") as fh:
        json.dump(doc, fh, separators=(",", ":"))
    return path


def _mark_rows(doc: dict) -> list[tuple[PatchKey, str]]:
    """(key, state) rows of either layout: ``columns`` (version 2) or a ``marks`` list (version 1)."""
    if "columns" in doc:
        c = doc["columns"]
        cols = [c["x_l0"], c["y_l0"], c["size_l0"], c["review"]]
        if len({len(v) for v in cols}) != 1 or not all(isinstance(v, list) for v in cols):
            raise ValueError("the columns differ in length")
        rows = zip(*cols, strict=True)
    else:
        rows = ((m["x_l0"], m["y_l0"], m["size_l0"], m["review"]) for m in doc["marks"])
    out = []
    for x, y, size, state in rows:
        if isinstance(x, bool) or isinstance(y, bool) or isinstance(size, bool) or int(size) < 1:
            raise ValueError(f"patch ({x!r}, {y!r}, {size!r}) is not a patch")
        out.append((PatchKey(int(x), int(y), int(size)), str(state)))
    return out


def read_reviews(folder: str | os.PathLike, *, slide_fingerprint: str | None = None) -> ReviewMarks | None:
    """The marks saved in ``folder/reviews.json`` (None when there is no such file). A damaged file, or one made on
    another slide's content, is an error naming the file: marks are never put on the wrong tissue."""
    path = Path(folder) / REVIEWS_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        saved_on = doc.get("slide_fingerprint_sha256")
        rows = _mark_rows(doc)
        bad = {st for _, st in rows} - set(REVIEW_STATES)
        if bad:
            raise ValueError(f"unknown review state {sorted(bad)[0]!r}")
        marks = ReviewMarks()
        marks._marks = {k: st for k, st in rows if st != "unreviewed"}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError, RecursionError,
            OverflowError) as err:
        raise InputFileError(f"{path}: damaged review marks ({type(err).__name__}: {err})") from err
    if slide_fingerprint and saved_on and saved_on != slide_fingerprint:
        raise InputFileError(f"{path}: these marks were made on another version of the slide (content "
                             f"fingerprint {saved_on[:12]}..., the slide now {slide_fingerprint[:12]}...)")
    return marks
