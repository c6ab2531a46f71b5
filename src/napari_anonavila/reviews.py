"""QA review marks that belong to patches, not to rows: keyed by level-0 location and patch size.

A re-score (new mode, terms, MLP, patch size) reorders or replaces the rows of a result; the marks stay with
the tissue they were made on. Marks whose patch is not in the current grid are kept aside, not dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

__all__ = ["REVIEW_STATES", "PatchKey", "ReviewMarks"]

REVIEW_STATES = ("unreviewed", "confirmed", "rejected", "unsure")


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
