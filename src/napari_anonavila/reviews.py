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
        return sorted(self._marks.items())

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
        """(patch index -> state for marks on ``grid``'s patches, the marks that match none of them)."""
        if not self._marks:
            return {}, {}
        xy = grid.xy_l0()
        index = {(int(x), int(y)): i for i, (x, y) in enumerate(np.asarray(xy))}
        on, aside = {}, {}
        for key, state in self._marks.items():
            i = index.get((key.x_l0, key.y_l0)) if key.size_l0 == grid.patch_size_l0 else None
            if i is None:
                aside[key] = state
            else:
                on[i] = state
        return on, aside

    def counts(self) -> dict[str, int]:
        """How many patches carry each state."""
        out: dict[str, int] = {}
        for s in self._marks.values():
            out[s] = out.get(s, 0) + 1
        return out


def write_reviews(folder: str | os.PathLike, marks: ReviewMarks, *, slide_fingerprint: str | None) -> Path:
    """Save ``marks`` to ``folder/reviews.json`` in one step (a reader sees the old file or the new, never half)."""
    from ._atomic import atomic_write

    path = Path(folder) / REVIEWS_FILE
    doc = {"format": "napari-anonavila reviews 1", "slide_fingerprint_sha256": slide_fingerprint,
           "marks": [{"x_l0": k.x_l0, "y_l0": k.y_l0, "size_l0": k.size_l0, "review": st} for k, st in marks.items()]}
    with atomic_write(path, encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1)
    return path


def read_reviews(folder: str | os.PathLike, *, slide_fingerprint: str | None = None) -> ReviewMarks | None:
    """The marks saved in ``folder/reviews.json`` (None when there is no such file). A damaged file, or one made on
    another slide's content, is an error naming the file: marks are never put on the wrong tissue."""
    path = Path(folder) / REVIEWS_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        saved_on = doc.get("slide_fingerprint_sha256")
        keys = [(PatchKey(int(m["x_l0"]), int(m["y_l0"]), int(m["size_l0"])), str(m["review"])) for m in doc["marks"]]
        marks = ReviewMarks()
        for key, state in keys:
            marks.set([key], state)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as err:
        raise InputFileError(f"{path}: damaged review marks ({type(err).__name__}: {err})") from err
    if slide_fingerprint and saved_on and saved_on != slide_fingerprint:
        raise InputFileError(f"{path}: these marks were made on another version of the slide (content "
                             f"fingerprint {saved_on[:12]}..., the slide now {slide_fingerprint[:12]}...)")
    return marks
