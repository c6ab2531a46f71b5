"""The patch grid: square patches of a fixed level-0 size on a level-0 lattice, kept where there is tissue."""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import GridError
from ..slide import Slide
from .tissue import TissueMask, tissue_mask

if TYPE_CHECKING:
    from ..annotations import RegionSet

__all__ = ["DEFAULT_PATCH_PX", "DEFAULT_PATCH_UM", "FEW_PATCHES", "PatchGrid", "make_grid", "patch_size_l0",
           "small_grid_hint", "too_few_patches_message"]

DEFAULT_PATCH_UM = 128.0  # the paper's field: 256 px at 0.5 um/px, 512 px at 0.25 um/px
DEFAULT_PATCH_PX = 256  # used when the slide has no mpp


@dataclass(frozen=True, eq=False)
class PatchGrid:
    """Cells (row, col) of a lattice with ``patch_size_l0`` pixel squares starting at ``origin_xy_l0``.

    Cell (r, c) covers level-0 x in [x0 + c p, x0 + (c+1) p) and y in [y0 + r p, y0 + (r+1) p).
    ``cells_rc`` lists the kept cells in row-major order; ``tissue`` their tissue fractions.
    """

    patch_size_l0: int
    shape_rc: tuple[int, int]
    cells_rc: np.ndarray
    tissue: np.ndarray
    origin_xy_l0: tuple[int, int] = (0, 0)
    mpp: float | None = None

    def __len__(self) -> int:
        return int(self.cells_rc.shape[0])

    @property
    def patch_size_um(self) -> float | None:
        return self.patch_size_l0 * self.mpp if self.mpp else None

    def xy_l0(self) -> np.ndarray:
        """(N, 2) top-left level-0 (x, y) of every kept patch."""
        p = self.patch_size_l0
        x = self.origin_xy_l0[0] + self.cells_rc[:, 1] * p
        y = self.origin_xy_l0[1] + self.cells_rc[:, 0] * p
        return np.stack([x, y], axis=1).astype(np.int64)

    def key(self) -> dict:
        """What identifies this grid for caches and provenance."""
        digest = hashlib.sha256(np.ascontiguousarray(self.cells_rc, dtype=np.int64).tobytes()).hexdigest()
        return {"patch_size_l0": self.patch_size_l0, "origin_xy_l0": list(self.origin_xy_l0),
                "shape_rc": list(self.shape_rc), "n_cells": len(self), "cells_sha256": digest}


def patch_size_l0(slide: Slide, *, patch_um: float | None = None, patch_px: int | None = None) -> int:
    """Level-0 patch side: ``patch_px`` if given, else ``patch_um`` (default 128 um) over mpp, else 256 px."""
    if patch_px is not None and patch_um is not None:
        raise ValueError("give the patch size in microns or in level-0 pixels, not both")
    if patch_px is not None:
        if patch_px < 8:
            raise GridError(f"patch size {patch_px} px is too small (at least 8 level-0 pixels)")
        return int(patch_px)
    um = DEFAULT_PATCH_UM if patch_um is None else float(patch_um)
    if not (um > 0 and math.isfinite(um)):
        raise GridError(f"patch size must be a positive finite number of microns, got {um} um")
    if slide.mpp is None:
        if patch_um is not None:
            raise GridError(f"{slide.path.name}: has no mpp, so a size in microns cannot be used; pass the patch "
                            "size in pixels (--patch-px) or the slide's mpp (--mpp)")
        return DEFAULT_PATCH_PX
    px = round(um / slide.mpp)
    if px < 8:  # never silently larger than asked
        raise GridError(f"{slide.path.name}: {um:g} um is {um / slide.mpp:.3g} level-0 pixels at {slide.mpp:g} um/px; "
                        f"a patch needs at least 8 (at least {8 * slide.mpp:.3g} um)")
    return px


def make_grid(slide: Slide, *, patch_um: float | None = None, patch_px: int | None = None, min_tissue: float = 0.25,
              roi_polygons_xy_l0: Sequence[np.ndarray] | None = None, mask: TissueMask | None = None,
              roi: RegionSet | None = None, exclude: Sequence[RegionSet] = (), roi_fraction: float = 0.25,
              exclude_fraction: float = 0.25, counts: dict | None = None) -> PatchGrid:
    """Lay the grid over ``slide`` and keep the cells with at least ``min_tissue`` tissue (0 keeps all).

    Regions follow the tissue rule, by area: with ``roi`` (or ``roi_polygons_xy_l0``, each an (M, 2) array of
    level-0 x, y vertices) a cell is kept when at least ``roi_fraction`` of its area lies inside; a cell with at
    least ``exclude_fraction`` of its area in one of ``exclude`` is dropped. Only whole patches are used; a slide
    smaller than one patch raises GridError. ``counts`` (a dict) receives the tissue cells inside the ROI and the
    cells the exclusions took away.
    """
    if not 0 <= min_tissue <= 1:
        raise ValueError(f"min_tissue must be in [0, 1], got {min_tissue}")
    if not (0 < roi_fraction <= 1 and 0 < exclude_fraction <= 1):
        raise ValueError(f"region fractions must lie in (0, 1], got {roi_fraction} and {exclude_fraction}")
    p = patch_size_l0(slide, patch_um=patch_um, patch_px=patch_px)
    w0, h0 = slide.dimensions_xy
    if p > w0 or p > h0:
        raise GridError(f"{slide.path.name}: the patch ({p} px{_um(p, slide)}) is larger than the slide "
                        f"({w0}x{h0} px); choose a smaller patch size")
    rows, cols = h0 // p, w0 // p
    if roi_polygons_xy_l0 is not None:
        from ..annotations import regions_of_polygons

        roi = regions_of_polygons(roi_polygons_xy_l0, source="the regions given", kind="polygons")
    inside = _region_cells(roi, rows, cols, p, roi_fraction) if roi is not None else None
    if min_tissue > 0:
        if mask is None:
            # the whole slide's mask is cheap on a pyramid (and its thresholds see glass and tissue alike); on a
            # huge single-level slide, regions get the mask of their own box: a region costs the region
            small = inside is not None and inside.any() and not slide.cheap_thumbnail
            mask = tissue_mask(slide, box_xy_l0=_cells_box(inside, p) if small else None)
        frac = _cell_tissue_fraction(mask, p, rows, cols)
    else:
        frac = np.ones((rows, cols))
    keep = frac >= min_tissue if min_tissue > 0 else np.ones((rows, cols), bool)
    if inside is not None:
        keep &= inside
    n_before = int(keep.sum())
    for ex in exclude:
        keep &= ~_region_cells(ex, rows, cols, p, exclude_fraction, only=keep)
    if counts is not None:
        counts.update(n_inside=n_before, n_excluded=n_before - int(keep.sum()))
    cells = np.argwhere(keep)
    if cells.size == 0:
        warnings.warn(f"{slide.path.name}: no tissue patches found (min_tissue={min_tissue}); nothing to score",
                      UserWarning, stacklevel=2)
    return PatchGrid(p, (rows, cols), cells.astype(np.int64), frac[keep].astype(np.float32), (0, 0), slide.mpp)


def too_few_patches_message(slide: Slide, grid: PatchGrid, needed: int, *, what: str = "the regions",
                            roi_polygons_xy_l0: Sequence[np.ndarray] | None = None, min_tissue: float = 0.25,
                            mask: TissueMask | None = None, roi: RegionSet | None = None) -> str:
    """Say that ``grid`` has fewer than ``needed`` patches, and which smaller patch sizes would give enough.

    Tries halving the patch side (down to 8 level-0 pixels) and reports the first size that reaches ``needed``
    tissue patches in the same regions, e.g. '... use a smaller patch: 64 um gives 6 patches'.
    """
    p = grid.patch_size_l0
    size = (lambda q: f"{q * slide.mpp:g} um") if slide.mpp else (lambda q: f"{q} px")
    msg = f"{what} hold {len(grid)} tissue patch(es) of {size(p)}, and at least {needed} are needed"
    mask = mask or tissue_mask(slide)
    q, tried = p // 2, []
    while q >= 8:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            n = len(make_grid(slide, patch_px=q, min_tissue=min_tissue, roi_polygons_xy_l0=roi_polygons_xy_l0,
                              mask=mask, roi=roi))
        tried.append(f"{size(q)} gives {n}")
        if n >= needed:
            return f"{msg}: use a smaller patch ({', '.join(tried)}), or draw larger regions"
        q //= 2
    return f"{msg}: draw larger regions" + (f" (smaller patches do not help: {', '.join(tried)})" if tried else "")


FEW_PATCHES = 4  # a grid of fewer patches than this is a few squares, not a map


def small_grid_hint(slide: Slide, grid: PatchGrid) -> str | None:
    """A sentence when ``grid`` holds a handful of patches at most (a small slide, or a patch near its size): which
    patch size would give a map (the shorter side in eight patches); None otherwise."""
    if not 0 < len(grid) < FEW_PATCHES:
        return None
    side = max(8, min(slide.dimensions_xy) // 8)
    size = (lambda q: f"{q * slide.mpp:.0f} um (--patch-um)") if slide.mpp else (lambda q: f"{q} px (--patch-px)")
    return (f"{slide.path.name}: only {len(grid)} patch(es) of {size(grid.patch_size_l0).split(' (')[0]} fit this "
            f"slide: a few squares, not a map; choose a smaller patch, e.g. {size(side)}")


def _um(p: int, slide: Slide) -> str:
    return f" = {p * slide.mpp:.0f} um" if slide.mpp else ""


def _cells_box(inside: np.ndarray, p: int) -> tuple[int, int, int, int]:
    """The level-0 box (x0, y0, x1, y1) of the cells marked in ``inside``."""
    rr, cc = np.nonzero(inside)
    return int(cc.min()) * p, int(rr.min()) * p, (int(cc.max()) + 1) * p, (int(rr.max()) + 1) * p


def _cell_tissue_fraction(tm: TissueMask, p: int, rows: int, cols: int) -> np.ndarray:
    """Mean of the mask over each cell, sampling the mask at a regular sub-grid of each cell (cells outside a box
    mask sample its edge; they are outside the regions it was made for)."""
    n = max(2, min(8, math.ceil(p / tm.downsample)))
    offs = (np.arange(n) + 0.5) * p / n
    ys = ((np.arange(rows)[:, None] * p + offs[None, :]).ravel() - tm.origin_xy_l0[1]) / tm.downsample
    xs = ((np.arange(cols)[:, None] * p + offs[None, :]).ravel() - tm.origin_xy_l0[0]) / tm.downsample
    yi = np.clip(np.floor(ys).astype(int), 0, tm.mask.shape[0] - 1)
    xi = np.clip(np.floor(xs).astype(int), 0, tm.mask.shape[1] - 1)
    samples = tm.mask[np.ix_(yi, xi)].reshape(rows, n, cols, n)
    return samples.mean(axis=(1, 3))


def _region_cells(regions: RegionSet, rows: int, cols: int, p: int, fraction: float,
                  only: np.ndarray | None = None) -> np.ndarray:
    """(rows, cols) cells with at least ``fraction`` of their area inside ``regions``; with ``only``, the other cells
    are not looked at (False)."""
    out = np.zeros((rows, cols), bool)
    box = regions.bounds_xy_l0()
    if box is None:
        return out
    x0, y0, x1, y1 = box  # cells near the regions only: a 10^6-cell lattice is never made into boxes whole
    r0, r1 = max(0, int(y0 // p)), min(rows, int(np.ceil(y1 / p)))
    c0, c1 = max(0, int(x0 // p)), min(cols, int(np.ceil(x1 / p)))
    if r1 <= r0 or c1 <= c0:
        return out
    near = np.zeros((rows, cols), bool)
    near[r0:r1, c0:c1] = True
    if only is not None:
        near &= only
    cells = np.argwhere(near)
    frac = regions.fractions(np.stack([cells[:, 1] * p, cells[:, 0] * p], axis=1), p)
    out[cells[:, 0], cells[:, 1]] = frac >= fraction - 1e-12
    return out
