"""Patch scores -> a 2-D heatmap grid (one cell per patch, NaN without tissue) and its level-0 geometry."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputFileError

__all__ = ["MAX_CELLS", "HeatmapGeometry", "cells_to_heatmap", "heatmaps_from_patch_names"]

MAX_CELLS = 1 << 26  # 67 M cells; a 200,000 px square slide at 32 px patches has 39 M


@dataclass(frozen=True)
class HeatmapGeometry:
    """Cell (row, col) covers level-0 pixels x in [x0 + col*p, x0 + (col+1)*p), y likewise with row.

    ``napari_scale`` and ``napari_translate`` place the (rows, cols) array over a level-0 image in napari,
    whose pixel centres sit at integer coordinates: a cell's centre is at ``origin + (i + 0.5) p - 0.5``.
    """

    patch_size_l0: int
    origin_xy_l0: tuple[int, int] = (0, 0)

    @property
    def napari_scale(self) -> tuple[float, float]:
        return (float(self.patch_size_l0), float(self.patch_size_l0))

    @property
    def napari_translate(self) -> tuple[float, float]:
        half = (self.patch_size_l0 - 1) / 2
        return (self.origin_xy_l0[1] + half, self.origin_xy_l0[0] + half)

    def cell_of(self, x_l0: int, y_l0: int) -> tuple[int, int]:
        """(row, col) of the cell holding level-0 pixel (x, y)."""
        p = self.patch_size_l0
        return ((y_l0 - self.origin_xy_l0[1]) // p, (x_l0 - self.origin_xy_l0[0]) // p)


def cells_to_heatmap(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, shape_rc: tuple[int, int]
                     ) -> np.ndarray:
    """A float heatmap of ``shape_rc``, NaN everywhere except the given cells; duplicate cells are an error."""
    rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
    if rows.size and (rows.min() < 0 or cols.min() < 0 or rows.max() >= shape_rc[0] or cols.max() >= shape_rc[1]):
        raise ValueError(f"cells fall outside the heatmap of shape {shape_rc}")
    flat = rows * shape_rc[1] + cols
    taken = np.zeros(shape_rc[0] * shape_rc[1], bool)  # the heatmap's own size / 8: no sort, no hash
    taken[flat] = True
    if np.count_nonzero(taken) != flat.size:
        raise ValueError("two patches map to the same heatmap cell (patch size or coordinates are off)")
    out = np.full(shape_rc, np.nan, dtype=np.float64)
    out[rows, cols] = np.asarray(values, dtype=np.float64)
    return out


def heatmaps_from_patch_names(pairs: list[tuple[str, float]], patch_size_l0: int,
                              sizes_xy: dict[str, tuple[int, int]] | None = None) -> dict[str, np.ndarray]:
    """Per-slide heatmaps from (``{slide_id}_{x}_{y}_{code}.png``, score) pairs; cell = (y // p, x // p).

    With ``sizes_xy`` (slide id -> level-0 (width, height)) the grid is the authors' tester's: ``height // p`` by
    ``width // p`` cells, and patches in a partial edge column or row (cell at or beyond ``width // p``) are
    dropped before anything else, as they do. Without it, the grid reaches the last patch and keeps them.
    """
    from ..patches import parse_patch_name

    if patch_size_l0 < 1:
        raise ValueError(f"patch size must be a positive number of level-0 pixels, got {patch_size_l0}")
    by_slide: dict[str, list[tuple[int, int, float]]] = {}
    for name, value in pairs:
        pn = parse_patch_name(name)
        if pn.x < 0 or pn.y < 0:
            raise InputFileError(f"patch {name!r} has negative coordinates")
        by_slide.setdefault(pn.slide_id, []).append((pn.y // patch_size_l0, pn.x // patch_size_l0, value))
    out = {}
    for slide_id, cells in by_slide.items():
        r, c, v = (np.array(a) for a in zip(*cells, strict=False))
        if sizes_xy is not None:
            if slide_id not in sizes_xy:
                raise InputFileError(f"slide {slide_id!r}: no slide size given (--slides or --sizes)")
            w, h = sizes_xy[slide_id]
            shape = (int(h) // patch_size_l0, int(w) // patch_size_l0)
            inside = (r < shape[0]) & (c < shape[1])
            r, c, v = r[inside], c[inside], v[inside]
        else:
            shape = (int(r.max()) + 1, int(c.max()) + 1)
        n_cells = shape[0] * shape[1]
        if n_cells > MAX_CELLS:
            far = int(np.argmax(np.maximum(r, c))) if len(r) else 0
            raise InputFileError(f"slide {slide_id!r}: a patch at level-0 ({int(c[far]) * patch_size_l0}, "
                                 f"{int(r[far]) * patch_size_l0}) makes a {shape[0]} x {shape[1]} grid of "
                                 f"{patch_size_l0}-px cells ({n_cells:,}, more than {MAX_CELLS:,}); check the patch "
                                 "names and --patch-size")
        try:
            out[slide_id] = cells_to_heatmap(r, c, v, shape)
        except ValueError as err:
            raise InputFileError(f"slide {slide_id!r}: {err}") from err
    return out
