"""The Slide interface: level geometry, physical size, lazy dask levels, and region reads in level-0 pixels.

Coordinates: ``location_xy_l0`` is (x, y) of the top-left pixel in level-0 pixels (OpenSlide and QuPath
order); ``size_xy`` is (width, height) at the read level; arrays come back as (rows, cols, 3) uint8.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
import warnings
from pathlib import Path

import dask.array as da
import numpy as np

from ..errors import MissingMppWarning, SlideReadError

__all__ = ["Slide", "composite_on_white"]


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) straight-alpha uint8 -> (H, W, 3) uint8 over white; opaque pixels are unchanged."""
    rgb = rgba[..., :3].astype(np.uint16)
    a = rgba[..., 3:4].astype(np.uint16)
    return ((rgb * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


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
        One lazy (rows, cols, 3) uint8 array per level, chunked on the file's tiles.
    """

    reader = "base"

    def __init__(self, path: str | os.PathLike, *, mpp: float | None, file_mpp: float | None) -> None:
        self.path = Path(path)
        self.vendor: str | None = None
        self.objective_power: float | None = None
        self.associated_images: list[str] = []
        self.level_shapes: list[tuple[int, int]] = []
        self.level_downsamples: list[float] = []
        self.levels: list[da.Array] = []
        self.reads = 0  # region reads served, for tests and benchmarks
        self.closed = False
        self._fingerprint: str | None = None
        self._lock = threading.Lock()
        if mpp is not None and not (mpp > 0 and math.isfinite(mpp)):
            raise ValueError(f"mpp must be a positive number of microns per pixel, got {mpp}")
        self.mpp = mpp if mpp is not None else file_mpp
        self.mpp_source = "user" if mpp is not None else ("file" if file_mpp is not None else None)
        if self.mpp is None:
            warnings.warn(f"{self.path.name}: no microns-per-pixel in the file; sizes are in pixels. Pass mpp= "
                          "(CLI: --mpp) to work in microns", MissingMppWarning, stacklevel=4)

    # -- to implement ------------------------------------------------------------------------------
    def _read(self, location_xy_l0: tuple[int, int], level: int, size_xy: tuple[int, int]) -> np.ndarray:
        raise NotImplementedError

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

    def best_level(self, downsample: float) -> int:
        """The smallest level whose downsample is at most ``downsample`` (so reading then shrinking, never growing)."""
        ok = [i for i, d in enumerate(self.level_downsamples) if d <= downsample * (1 + 1e-6)]
        return max(ok, key=lambda i: self.level_downsamples[i]) if ok else 0

    def thumbnail(self, max_side: int = 1024) -> tuple[np.ndarray, float]:
        """A whole-slide RGB image of at most ``max_side`` pixels, and its level-0 pixels per pixel."""
        from PIL import Image

        w0, h0 = self.dimensions_xy
        scale = max(w0, h0) / max_side
        level = self.best_level(max(scale, 1.0))
        img = np.asarray(self.levels[level].compute(scheduler="threads"))
        new = (max(1, round(w0 / max(scale, 1.0))), max(1, round(h0 / max(scale, 1.0))))
        if (img.shape[1], img.shape[0]) != new:
            img = np.asarray(Image.fromarray(img).resize(new, Image.Resampling.BOX))
        return img, w0 / new[0]

    def fingerprint(self) -> str:
        """SHA-256 over the file size and its first and last 4 MiB: cheap, and changes with the content."""
        if self._fingerprint is None:
            self._fingerprint = self._hash_file()
        return self._fingerprint

    def _hash_file(self) -> str:
        h = hashlib.sha256()
        size = self.path.stat().st_size
        h.update(str(size).encode())
        with open(self.path, "rb") as fh:
            h.update(fh.read(4 << 20))
            if size > 8 << 20:
                fh.seek(size - (4 << 20))
                h.update(fh.read())
        return h.hexdigest()

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
                f"{len(self.levels)} level(s), mpp={self.mpp}>")


def chunk_side(native: int | None, default: int = 512) -> int:
    """Chunk side on the native tile size, clamped to 256..4096 by whole tiles."""
    t = int(native) if native else default
    if t < 256:
        t *= math.ceil(256 / t)
    return min(t, 4096)
