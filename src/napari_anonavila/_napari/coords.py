"""The plugin's one coordinate service: napari world coordinates <-> the slide's level-0 pixels.

Spaces, by name:

- **level-0 pixels**, ``xy_l0``: (x, y) as in OpenSlide and QuPath, origin at the top-left pixel's corner.
- **level-0 pixel indices**, ``rc_l0``: the slide layer's data coordinates, (row, col), pixel centres at integers.
- **world**: napari's (row, col) in the layer units (microns when the slide has mpp), through each layer's
  own transform (scale, translate, rotate, shear, affine).

Every shape read goes layer data -> world (through that layer's transform) -> level-0 (through the slide
layer's inverse transform), so a Shapes layer made with napari's own button (which copies the slide's
scale) and one made at scale 1 both land on the right pixels. Every result layer gets its transform from the
slide layer's: a heatmap cell of ``p`` level-0 pixels is the slide's transform times ``p``, shifted to the
patch's centre pixel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["cells_layer_transform", "layer_to_slide_xy_l0", "slide_xy_l0_to_world", "world_affine",
           "world_to_slide_xy_l0"]


def world_affine(layer) -> tuple[np.ndarray, np.ndarray]:
    """(A, b) with world_rc = A @ data_rc + b for a layer's last two data dimensions (public napari API only)."""
    nd = layer.ndim
    base = np.zeros(nd)

    def fwd(rc) -> np.ndarray:
        p = base.copy()
        p[-2:] = rc
        return np.asarray(layer.data_to_world(p), float)[-2:]

    b = fwd((0.0, 0.0))
    a = np.stack([fwd((1.0, 0.0)) - b, fwd((0.0, 1.0)) - b], axis=1)
    return a, b


def world_to_slide_xy_l0(slide_layer, world_rc: np.ndarray) -> np.ndarray:
    """World (N, 2) (row, col) -> level-0 (x, y) of the slide layer (continuous; pixel centres at +0.5)."""
    a, b = world_affine(slide_layer)
    rc = np.linalg.solve(a, (np.asarray(world_rc, float).reshape(-1, 2) - b).T).T
    return rc[:, ::-1] + 0.5


def slide_xy_l0_to_world(slide_layer, xy_l0: np.ndarray) -> np.ndarray:
    """Level-0 (x, y) (N, 2) -> world (row, col) through the slide layer's transform."""
    a, b = world_affine(slide_layer)
    rc = np.asarray(xy_l0, float).reshape(-1, 2)[:, ::-1] - 0.5
    return rc @ a.T + b


def layer_to_slide_xy_l0(layer, slide_layer, data: np.ndarray) -> np.ndarray:
    """Vertices in ``layer``'s data coordinates (N, >=2) -> the slide's level-0 (x, y), via world coordinates."""
    a, b = world_affine(layer)
    world = np.asarray(data, float)[:, -2:] @ a.T + b
    return world_to_slide_xy_l0(slide_layer, world)


def cells_layer_transform(slide_layer, cell_l0: float = 1.0, origin_xy_l0: Sequence[float] = (0, 0)) -> dict:
    """Layer keywords that put data pixel (r, c) on the level-0 square of side ``cell_l0`` at cell (r, c).

    With ``cell_l0 = 1`` and origin 0 this is the slide layer's own transform (for points and shapes in level-0
    pixel indices). Diagonal transforms come out as scale and translate; rotated or sheared slide layers as an
    affine matrix. The units are the slide layer's.
    """
    a, b = world_affine(slide_layer)
    half = (cell_l0 - 1) / 2
    t = a @ np.array([origin_xy_l0[1] + half, origin_xy_l0[0] + half], float) + b
    lin = a * cell_l0
    kw: dict = {"units": tuple(slide_layer.units)[-2:]}
    if abs(lin[0, 1]) < 1e-12 and abs(lin[1, 0]) < 1e-12:
        kw.update(scale=(lin[0, 0], lin[1, 1]), translate=tuple(t), affine=np.eye(3))
    else:
        m = np.eye(3)
        m[:2, :2], m[:2, 2] = lin, t
        kw.update(scale=(1.0, 1.0), translate=(0.0, 0.0), affine=m)
    return kw
