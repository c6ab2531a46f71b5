"""The Slide interface: level geometry, physical size, lazy levels, and region reads in level-0 pixels.

Coordinates: ``location_xy_l0`` is (x, y) of the top-left pixel in level-0 pixels (OpenSlide and QuPath
order); ``size_xy`` is (width, height) at the read level; arrays come back as (rows, cols, 3) uint8.

Each reader implements one primitive, :meth:`Slide._read_level` (a window of one level, in that level's
pixels). :class:`LevelArray` exposes it as a numpy-like array that reads only the tiles a slice touches
(napari displays these directly); :attr:`Slide.levels` wraps the same arrays in dask, chunked on the tiles.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from pathlib import Path

import numpy as np

from ..errors import MissingMppWarning, SlideReadError
from .fingerprint import content_digest
from .pixels import LevelArray, block_mean

__all__ = ["MPP_RANGE", "Slide", "check_user_mpp"]


MPP_RANGE = (0.01, 100.0)  # microns per pixel any slide scanner or microscope gives


def check_user_mpp(mpp: float | None) -> None:
    """Refuse a given mpp outside the plausible range (from the CLI, the API or a widget)."""
    if mpp is not None and not (math.isfinite(mpp) and MPP_RANGE[0] <= mpp <= MPP_RANGE[1]):
        raise ValueError(f"mpp {mpp:g} is not a plausible number of microns per pixel (give {MPP_RANGE[0]:g}.."
                         f"{MPP_RANGE[1]:g}; for example 0.25 at 40x, 0.5 at 20x)")


class Slide:
    """A whole-slide image opened for lazy reading. Use as a context manager, or call :meth:`close`.

    Attributes
    ----------
    path : Path
    reader : str
        ``"openslide"`` or ``"tifffile"``.
    vendor : str or None
    level_shapes : list of (rows, cols)
        Level sizes in (row, col) order, largest first.
    level_downsamples : list of float
        Level-0 pixels per level pixel; floats, not always integers.
    mpp : float or None
        Microns per level-0 pixel (x), from the file or the caller.
    objective_power : float or None
    associated_images : list of str
        Names accepted by :meth:`read_associated`.
    levels : list of dask.array.Array
        One lazy (rows, cols, 3) uint8 array per level, chunked on the file's tiles (built on ``level_arrays``).
    level_arrays : list of LevelArray
        The same levels without dask: what napari displays, read straight through the reader.
    """

    reader = "base"

    def __init__(self, path: str | os.PathLike, *, mpp: float | None, file_mpp: float | None) -> None:
        self.path = Path(path)
        self.vendor: str | None = None
        self.objective_power: float | None = None
        self.associated_images: list[str] = []
        self.level_shapes: list[tuple[int, int]] = []
        self.level_downsamples: list[float] = []
        self._dask_levels: list | None = None
        self.level_arrays: list[LevelArray] = []
        self.reads = 0  # region reads served, for tests and benchmarks
        self.closed = False
        self._fingerprint: str | None = None
        self._lock = threading.Lock()
        check_user_mpp(mpp)
        if file_mpp is not None and not MPP_RANGE[0] <= file_mpp <= MPP_RANGE[1]:
            if mpp is None:
                warnings.warn(f"{self.path.name}: the file says {file_mpp:g} microns per pixel, outside the plausible "
                              f"{MPP_RANGE[0]:g}..{MPP_RANGE[1]:g}; it is ignored and sizes are in pixels. Give the "
                              "right mpp (napari: Score's 'slide mpp'; CLI: --mpp) to work in microns",
                              MissingMppWarning, stacklevel=4)
            file_mpp = None
        elif mpp is None and file_mpp is None:
            warnings.warn(f"{self.path.name}: no microns-per-pixel in the file; sizes are in pixels. Give the mpp "
                          "(napari: Score's 'slide mpp'; CLI: --mpp) to work in microns", MissingMppWarning,
                          stacklevel=4)
        self.mpp = mpp if mpp is not None else file_mpp
        self.mpp_source = "user" if mpp is not None else ("file" if file_mpp is not None else None)

    # -- to implement ------------------------------------------------------------------------------
    def _read_level(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        """(h, w, 3) uint8 of ``level`` at level pixel (y, x); the window lies inside the level."""
        raise NotImplementedError

    def _read(self, location_xy_l0: tuple[int, int], level: int, size_xy: tuple[int, int]) -> np.ndarray:
        """A region at ``level`` from a level-0 location; outside the level is white. Readers may override."""
        ds = self.level_downsamples[level]
        x, y = round(location_xy_l0[0] / ds), round(location_xy_l0[1] / ds)
        w, h = size_xy
        rows, cols = self.level_shapes[level]
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, cols), min(y + h, rows)
        if x0 == x and y0 == y and x1 == x + w and y1 == y + h:
            return self._read_level(level, y, x, h, w)
        out = np.full((h, w, 3), 255, np.uint8)
        if x1 > x0 and y1 > y0:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = self._read_level(level, y0, x0, y1 - y0, x1 - x0)
        return out

    def _set_levels(self, chunks: list[tuple[int, int]]) -> None:
        """Build ``level_arrays`` once the level geometry is known (the dask ``levels`` on first use)."""
        self.level_arrays = [LevelArray(self, i, c) for i, c in enumerate(chunks)]
        self._dask_levels = None

    @property
    def levels(self) -> list:
        """One lazy dask array per level, chunked on the tiles (dask is imported here, not when a slide opens:
        napari shows ``level_arrays`` and must not wait for dask)."""
        if self._dask_levels is None:
            import dask.array as da

            self._dask_levels = [da.from_array(a, chunks=(*a.chunks, 3), asarray=False, fancy=False, lock=False,
                                               meta=np.empty((0, 0, 0), np.uint8),
                                               name=f"{self.reader}-{id(self)}-{i}")
                                 for i, a in enumerate(self.level_arrays)]
        return self._dask_levels

    def read_associated(self, name: str) -> np.ndarray:
        raise KeyError(f"{self.path.name}: no associated image {name!r}; available: {self.associated_images}")

    def _close(self) -> None:
        """Release the reader's file handle."""

    def close(self) -> None:
        """Release the file handle; later reads raise SlideReadError."""
        if not self.closed:
            self.closed = True
            self._close()

    # -- public ------------------------------------------------------------------------------------
    @property
    def dimensions_xy(self) -> tuple[int, int]:
        """Level-0 (width, height) in pixels."""
        return (self.level_shapes[0][1], self.level_shapes[0][0])

    def read_region(self, location_xy_l0: tuple[int, int], level: int, size_xy: tuple[int, int]) -> np.ndarray:
        """RGB (rows, cols, 3) uint8 of ``size_xy`` pixels at ``level``; outside the slide is white. Thread-safe."""
        if not 0 <= level < len(self.level_shapes):
            raise ValueError(f"{self.path.name}: level {level} out of range 0..{len(self.level_shapes) - 1}")
        if self.closed:
            raise SlideReadError(f"{self.path}: the slide is closed")
        if size_xy[0] < 1 or size_xy[1] < 1:
            raise ValueError(f"region size must be positive, got {size_xy}")
        with self._lock:
            self.reads += 1
        return self._read((int(location_xy_l0[0]), int(location_xy_l0[1])), level, (int(size_xy[0]), int(size_xy[1])))

    def read_level(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        """(h, w, 3) uint8 of ``level`` at level pixel (y, x), inside the level. Thread-safe."""
        if self.closed:
            raise SlideReadError(f"{self.path}: the slide is closed")
        with self._lock:
            self.reads += 1
        return self._read_level(level, y, x, h, w)

    def best_level(self, downsample: float) -> int:
        """The smallest level whose downsample is at most ``downsample`` (so reading then shrinking, never growing)."""
        ok = [i for i, d in enumerate(self.level_downsamples) if d <= downsample * (1 + 1e-6)]
        return max(ok, key=lambda i: self.level_downsamples[i]) if ok else 0

    def region_thumbnail(self, box_xy_l0: tuple[int, int, int, int], max_side: int = 2048
                         ) -> tuple[np.ndarray, float]:
        """An RGB image of the level-0 box ``(x0, y0, x1, y1)`` with a long side between ``max_side / 2`` and
        ``max_side``, read from the smallest level that is large enough (whole blocks averaged, never resampled),
        and its level-0 pixels per pixel. Only the tiles under the box are decoded."""
        x0, y0, x1, y1 = (int(v) for v in box_xy_l0)
        long_side = max(x1 - x0, y1 - y0, 1)
        level = self.best_level(2 * long_side / max_side)
        d = self.level_downsamples[level]
        f = max(1, math.ceil(long_side / d / max_side))
        w, h = max(1, math.ceil((x1 - x0) / d)), max(1, math.ceil((y1 - y0) / d))
        band = f * max(1, (_THUMB_BAND_BYTES // (3 * w)) // f)  # rows read at once: memory stays bounded
        parts = [block_mean(self.read_region((x0, round(y0 + y * d)), level, (w, min(band, h - y))), f)
                 for y in range(0, h, band)]
        return (np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]), d * f

    @property
    def cheap_thumbnail(self) -> bool:
        """Whether the smallest level is small enough for a whole-slide thumbnail (at most 64 M pixels): a huge
        single-level TIFF is not, and then only boxes of it are read."""
        h, w = self.level_shapes[-1]
        return h * w <= _CHEAP_THUMB_PX

    def thumbnail(self, max_side: int = 1024, *, exact: bool = True) -> tuple[np.ndarray, float]:
        """A whole-slide RGB image of at most ``max_side`` pixels, and its level-0 pixels per pixel.

        Reads the smallest level that is still at least as large, in bands of rows that are averaged down
        as they arrive, so memory stays bounded even for a huge single-level TIFF. ``exact=False`` gives whole
        blocks of the smallest level with at least ``max_side / 2`` pixels a side, never resampled (a long side
        between ``max_side / 2`` and ``max_side``): fewer pixels decoded, and what the tissue mask uses.
        """
        from PIL import Image

        w0, h0 = self.dimensions_xy
        if exact:
            scale = max(max(w0, h0) / max_side, 1.0)
            new = (max(1, round(w0 / scale)), max(1, round(h0 / scale)))
            level = self.best_level(scale)
            h, w = self.level_shapes[level]
            f = max(1, int(min(h / new[1], w / new[0])))  # whole pixels of this level per thumbnail pixel
        else:  # the smallest level with a long side of at least max_side / 2: fewest pixels decoded
            level = self.best_level(2 * max(w0, h0) / max_side)
            h, w = self.level_shapes[level]
            f = math.ceil(max(h, w) / max_side)
        arr = self.level_arrays[level]
        band = f * max(1, (_THUMB_BAND_BYTES // (3 * w)) // f)
        parts = [block_mean(arr[y : y + band], f) for y in range(0, h, band)]
        img = np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
        if not exact:
            return img, self.level_downsamples[level] * f
        if (img.shape[1], img.shape[0]) != new:
            img = np.asarray(Image.fromarray(img).resize(new, Image.Resampling.BOX))
        return img, w0 / new[0]

    def fingerprint(self) -> str:
        """The slide's content identity: SHA-256 over every byte of its files (see :func:`content_digest`).

        Every cache and result records it and is reused only when it matches, so a slide re-encoded in place,
        even at the same size, is scored afresh. Computed once per opened slide (about 1 s per GB here).
        """
        if self._fingerprint is None:
            self._fingerprint = content_digest(self.files())
        return self._fingerprint

    def files(self) -> list[Path]:
        """The files whose bytes make up the slide (one for most formats; MRXS and VMS have companions)."""
        return [self.path]

    def describe(self) -> dict:
        """Metadata for provenance and napari layers."""
        return {"path": str(self.path), "reader": self.reader, "vendor": self.vendor,
                "dimensions_xy": list(self.dimensions_xy), "level_downsamples": self.level_downsamples,
                "mpp": self.mpp, "mpp_source": self.mpp_source, "objective_power": self.objective_power}

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.path.name}: {self.dimensions_xy[0]}x{self.dimensions_xy[1]} px, "
                f"{len(self.level_arrays)} level(s), mpp={self.mpp}>")


_THUMB_BAND_BYTES = 48 << 20  # rows of a level read at once for a thumbnail
_CHEAP_THUMB_PX = 64 << 20  # a smallest level beyond this is read only in boxes
