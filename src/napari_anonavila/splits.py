"""Which normal patches train the MLP and which give the centroids: the hold-out, its groups, and its record.

The paper and the authors take the centroids from normal images the MLP was not trained on (their validation
folder). Without a separate centroid set, a seeded part of the normal reference is held out, always in whole
groups (slides, folders, drawn regions, or tissue blocks), so that neighbouring patches of one region never
sit on both sides.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

__all__ = ["HOLDOUT", "describe_split", "holdout_split", "region_groups"]

HOLDOUT = 0.2  # part of the normal reference held out for the centroids when no centroid set is given
_BLOCKS = 4  # one region or slide alone: held out as whole blocks of a 4 x 4 division, spread over the tissue


def holdout_split(n: int, groups: Sequence | None, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """(training rows, centroid rows, record): whole groups held out, seeded.

    With fewer than two groups the rows are one group and nothing can be held out by group: then single rows are
    held out (and the record says so). Too few rows (fewer than 5) fall back to the training rows, with a warning.
    """
    rng = np.random.default_rng(seed)
    rows = np.arange(n)
    record = {"fraction": fraction, "seed": seed}
    names = list(dict.fromkeys(groups)) if groups is not None else []
    if len(names) >= 2:
        k = min(len(names) - 1, max(1, round(fraction * len(names))))
        held = sorted(rng.permutation(len(names))[:k].tolist())
        index = {g: i for i, g in enumerate(names)}
        mask = np.isin(np.asarray([index[g] for g in groups]), held)
        return rows[~mask], rows[mask], {**record, "kind": "held-out groups", "groups": len(names),
                                         "held_out": [str(names[i]) for i in held]}
    if n < 5:
        warnings.warn(f"only {n} normal patches: too few to hold any out, so the centroids come from the training "
                      "patches (give more normal tissue, or a separate centroid set)", UserWarning, stacklevel=3)
        return rows, rows, {**record, "kind": "training patches (too few to hold out)"}
    k = min(n - 2, max(1, round(fraction * n)))
    perm = rng.permutation(n)
    return np.sort(perm[k:]), np.sort(perm[:k]), {**record, "kind": "held-out patches"}


def region_groups(xy_l0: np.ndarray, patch_size_l0: int, polygons_xy_l0: Sequence[np.ndarray] | None = None,
                  *, prefix: str = "") -> list[str]:
    """A hold-out group for each patch of a slide: its drawn region when there are several, else its block of a
    ``_BLOCKS`` x ``_BLOCKS`` division of the tissue (rows of about equal patch counts, each cut into columns of
    about equal counts), so a held-out group is a contiguous piece of tissue and a held-out set of several blocks is
    spread over the slide (one band of rows covered one stretch of it only).

    ``xy_l0`` are the patches' top-left level-0 (x, y); ``polygons_xy_l0`` the regions as (N, 2) level-0 (x, y).
    """
    xy = np.asarray(xy_l0, dtype=np.float64).reshape(-1, 2)
    centres = xy + patch_size_l0 / 2
    if polygons_xy_l0 is not None and len(polygons_xy_l0) >= 2:
        from matplotlib.path import Path as MplPath

        region = np.full(len(xy), -1)
        for i, poly in enumerate(polygons_xy_l0):
            inside = MplPath(np.asarray(poly, dtype=np.float64)).contains_points(centres) & (region < 0)
            region[inside] = i
        if len(set(region.tolist()) - {-1}) >= 2:
            return [f"{prefix}region {r + 1}" if r >= 0 else f"{prefix}outside the regions" for r in region]
    n = len(xy)
    order = np.lexsort((xy[:, 0], xy[:, 1]))  # grid rows, top to bottom
    row = np.empty(n, dtype=np.int64)
    row[order] = np.arange(n) * _BLOCKS // max(1, n)
    col = np.zeros(n, dtype=np.int64)
    for r in range(_BLOCKS):
        members = np.nonzero(row == r)[0]
        by_x = members[np.lexsort((xy[members, 1], xy[members, 0]))]
        col[by_x] = np.arange(len(by_x)) * _BLOCKS // max(1, len(by_x))
    return [f"{prefix}block {r + 1}.{c + 1} of {_BLOCKS}x{_BLOCKS}" for r, c in zip(row, col, strict=True)]


def describe_split(split: dict | None) -> str:
    """One line for people: where the centroids came from and what was held out."""
    if not split:
        return "centroids: not recorded"
    kind = split.get("kind", "?")
    n = f" ({split['n_centroid']} patches; {split['n_train']} trained on)" if "n_centroid" in split else ""
    if kind == "held-out groups":
        held = split.get("held_out", [])
        shown = ", ".join(held[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
        return f"centroids from {len(held)} held-out group(s) of {split.get('groups', '?')}: {shown}{n}"
    return f"centroids from {kind}{n}"
