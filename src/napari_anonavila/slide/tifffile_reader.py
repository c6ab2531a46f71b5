"""tifffile reader: OME-TIFF and TIFFs OpenSlide cannot decode (e.g. QuPath's YCbCr-JPEG exports).

Levels are read through tifffile's zarr store (thread-safe, chunked on the file's tiles or strips); an
uncompressed, contiguous page is memory-mapped instead, so a huge single-level TIFF is never read whole.
"""

from __future__ import annotations

import math
import os
import re
import weakref

import dask.array as da
import numpy as np

from ..errors import SlideReadError
from .base import Slide, chunk_side, composite_on_white

__all__ = ["TifffileSlide"]

_UNIT_UM = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}


class TifffileSlide(Slide):
    """A slide read through tifffile (with imagecodecs for JPEG, JPEG 2000 and others)."""

    reader = "tifffile"

    def __init__(self, path: str | os.PathLike, *, mpp: float | None = None) -> None:
        import tifffile

        try:
            self._tif = tifffile.TiffFile(str(path))
        except (tifffile.TiffFileError, OSError, ValueError) as err:
            raise SlideReadError(f"{path}: not a readable TIFF ({err})") from err
        try:
            levels = [self._level_array(lvl) for lvl in self._tif.series[0].levels]
        except (tifffile.TiffFileError, OSError, ValueError, KeyError, IndexError) as err:
            self._tif.close()
            raise SlideReadError(f"{path}: not a readable TIFF ({err})") from err
        # close the file when the slide is garbage-collected (e.g. its napari layer was deleted)
        self._finalizer = weakref.finalize(self, self._tif.close)
        super().__init__(path, mpp=mpp, file_mpp=self._file_mpp())
        self.vendor = "ome-tiff" if self._tif.is_ome else "tiff"
        shape0 = levels[0].shape
        self.level_shapes = [(a.shape[0], a.shape[1]) for a in levels]
        self.level_downsamples = [float((shape0[0] / a.shape[0] + shape0[1] / a.shape[1]) / 2) for a in levels]
        self.levels = levels
        self.associated_images = [f"series{i}" for i in range(1, len(self._tif.series))]

    def _level_array(self, level) -> da.Array:
        import zarr

        page = level.pages[0] if hasattr(level, "pages") else level
        if page.photometric not in (1, 2, 6) or level.dtype != np.uint8:  # minisblack, rgb, ycbcr
            raise ValueError(f"unsupported image kind (photometric {page.photometric}, dtype {level.dtype})")
        if page.compression == 1 and page.is_contiguous and len(level.shape) == 3:
            arr = self._tif.filehandle
            data = np.memmap(self._tif.filehandle.path, dtype=level.dtype, mode="r",
                             offset=page.dataoffsets[0], shape=level.shape)
        else:
            data = zarr.open(level.aszarr(), mode="r")
        tile = page.tilelength or 0
        chunks = (chunk_side(tile or None), chunk_side(page.tilewidth or None), -1)
        arr = da.from_array(data, chunks=chunks[: data.ndim], lock=False, asarray=True,
                            name=f"tifffile-{id(self)}-{page.index}")
        return _to_rgb(arr)

    def _file_mpp(self) -> float | None:
        if self._tif.is_ome:
            m = re.search(r'PhysicalSizeX="([^"]+)"', self._tif.ome_metadata or "")
            u = re.search(r'PhysicalSizeXUnit="([^"]+)"', self._tif.ome_metadata or "")
            if m:
                return _sane(float(m.group(1)) * _UNIT_UM.get(u.group(1) if u else "µm", 1.0))
        tags = self._tif.pages[0].tags
        res, unit = tags.get("XResolution"), tags.get("ResolutionUnit")
        if res is None or unit is None or unit.value not in (2, 3):
            return None
        num, den = res.value
        if not num or not den:
            return None
        per_unit_um = 25_400.0 if unit.value == 2 else 10_000.0
        return _sane(per_unit_um * den / num)

    def _read(self, location_xy_l0, level, size_xy):
        ds = self.level_downsamples[level]
        x, y = round(location_xy_l0[0] / ds), round(location_xy_l0[1] / ds)
        w, h = size_xy
        rows, cols = self.level_shapes[level]
        out = np.full((h, w, 3), 255, np.uint8)
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, cols), min(y + h, rows)
        if x1 > x0 and y1 > y0:
            try:
                block = self.levels[level][y0:y1, x0:x1].compute(scheduler="synchronous")
            except Exception as err:  # codecs raise their own types for corrupt tiles
                raise SlideReadError(f"{self.path}: cannot decode region at {location_xy_l0} level {level} "
                                     f"({type(err).__name__}: {err})") from err
            out[y0 - y : y1 - y, x0 - x : x1 - x] = block
        return out

    def read_associated(self, name: str) -> np.ndarray:
        if name not in self.associated_images:
            return super().read_associated(name)
        arr = self._tif.series[int(name.removeprefix("series"))].asarray()
        return np.asarray(_to_rgb(da.from_array(arr)))

    def _close(self) -> None:
        self._finalizer()


def _to_rgb(arr: da.Array) -> da.Array:
    if arr.ndim == 2:
        return da.stack([arr] * 3, axis=-1)
    if arr.shape[-1] == 4:
        return arr.map_blocks(composite_on_white, chunks=(*arr.chunks[:2], (3,)), dtype=np.uint8)
    if arr.shape[-1] != 3:
        raise ValueError(f"expected RGB(A) samples, got {arr.shape[-1]} channels")
    return arr


def _sane(mpp: float) -> float | None:
    """A positive finite value, else no mpp (the plausible range is checked, with a warning, by Slide)."""
    return mpp if math.isfinite(mpp) and mpp > 0 else None
