"""The heatmap as a tiled, pyramidal OME-TIFF in slide geometry, with physical pixel size, for QuPath and napari.

Each grid cell becomes ``k x k`` pixels (k chosen so that the base level stays near 4096 px a side), so the
image's pixel (0, 0) is the slide's level-0 origin and one pixel covers ``patch_size_l0 / k`` level-0 pixels.
NaN (no tissue) stays NaN in float32.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._atomic import atomic_path, check_writable

__all__ = ["cell_upsampling", "write_heatmap_ome_tiff"]


def cell_upsampling(shape_rc: tuple[int, int], target: int = 4096) -> int:
    """Pixels per cell side: at least 1, at most 64, so the base level is about ``target`` px on its long side."""
    return int(np.clip(target // max(1, max(shape_rc)), 1, 64))


def write_heatmap_ome_tiff(path: str | os.PathLike, heat: np.ndarray, patch_size_l0: int, mpp: float | None, *,
                           origin_xy_l0=(0, 0), overwrite: bool = False) -> Path:
    """Write ``heat`` (rows, cols; NaN = no tissue) as a float32 pyramidal OME-TIFF aligned with the slide."""
    import tifffile

    path = check_writable(path, overwrite=overwrite)
    if origin_xy_l0 != (0, 0) and tuple(origin_xy_l0) != (0, 0):
        raise ValueError("heatmaps with a grid origin other than (0, 0) are not supported in OME-TIFF export")
    k = cell_upsampling(heat.shape)
    base = np.repeat(np.repeat(heat.astype(np.float32), k, axis=0), k, axis=1)
    levels = [base]
    while max(levels[-1].shape) > 512:
        levels.append(levels[-1][::2, ::2])
    px_l0 = patch_size_l0 / k  # level-0 pixels per heatmap pixel
    meta = {"axes": "YX", "Name": "anomaly heatmap"}
    if mpp:
        meta.update(PhysicalSizeX=mpp * px_l0, PhysicalSizeY=mpp * px_l0, PhysicalSizeXUnit="µm",
                    PhysicalSizeYUnit="µm")
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, ome=True, bigtiff=base.nbytes > 2**31) as tif:
        tif.write(levels[0], subifds=len(levels) - 1, tile=(256, 256), compression="zlib", metadata=meta)
        for lvl in levels[1:]:
            tif.write(lvl, subfiletype=1, tile=(256, 256), compression="zlib")
    return path
