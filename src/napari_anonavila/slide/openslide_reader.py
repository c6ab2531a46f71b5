"""OpenSlide reader: ndpi, mrxs, scn, bif, vms (and svs or TIFFs tifffile cannot order). RGBA composited on white."""

from __future__ import annotations

import ctypes
import math
import os
import sys
from pathlib import Path

import numpy as np

from ..errors import SlideReadError
from .base import Slide
from .pixels import composite_on_white, tile_chunks

__all__ = ["OpenSlideSlide"]

try:  # OpenSlide's C call, to read into a numpy buffer (openslide-python >= 1.2); else the public API
    import openslide.lowlevel as _lowlevel

    _FAST = sys.byteorder == "little" and hasattr(_lowlevel, "_read_region") and hasattr(_lowlevel, "_OpenSlide")
except ImportError:  # pragma: no cover - openslide is a dependency
    _FAST = False


class OpenSlideSlide(Slide):
    """A slide read through OpenSlide (its handles are thread-safe)."""

    reader = "openslide"

    def __init__(self, path: str | os.PathLike, *, mpp: float | None = None) -> None:
        import openslide

        try:
            self._osr = openslide.OpenSlide(str(path))
        except (openslide.OpenSlideError, OSError) as err:
            raise SlideReadError(f"{path}: OpenSlide cannot open it ({err})") from err
        props = self._osr.properties
        file_mpp = _positive(props.get(openslide.PROPERTY_NAME_MPP_X))
        super().__init__(path, mpp=mpp, file_mpp=file_mpp)
        self.vendor = props.get(openslide.PROPERTY_NAME_VENDOR)
        self.objective_power = _positive(props.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER))
        self.associated_images = sorted(self._osr.associated_images)
        self.level_shapes = [(h, w) for w, h in self._osr.level_dimensions]
        self.level_downsamples = [float(d) for d in self._osr.level_downsamples]
        self._set_levels([tile_chunks((_positive(props.get(f"openslide.level[{i}].tile-height")),
                                       _positive(props.get(f"openslide.level[{i}].tile-width"))))
                          for i in range(self._osr.level_count)])

    def files(self) -> list[Path]:
        """The slide file plus its companions: an MRXS data folder, the image files a VMS/VMU names."""
        suffix = self.path.suffix.lower()
        if suffix == ".mrxs":
            folder = self.path.with_suffix("")
            return [self.path, *sorted(p for p in folder.iterdir() if p.is_file())] if folder.is_dir() else [self.path]
        if suffix in (".vms", ".vmu"):
            named = []
            for line in self.path.read_text(errors="replace").splitlines():
                key, _, value = line.partition("=")
                if key.strip().startswith(("ImageFile", "MapFile", "OptimisationFile")) and value.strip():
                    p = self.path.parent / value.strip()
                    if p.is_file():
                        named.append(p)
            return [self.path, *sorted(set(named))]
        return [self.path]

    def _read(self, location_xy_l0, level, size_xy):
        import openslide

        try:
            if _FAST:
                return self._read_premultiplied(location_xy_l0, level, size_xy)
            return composite_on_white(np.asarray(self._osr.read_region(location_xy_l0, level, size_xy)))
        except openslide.OpenSlideError as err:
            raise SlideReadError(f"{self.path}: cannot decode region at {location_xy_l0}, level {level} ({err})") \
                from err

    def _read_premultiplied(self, location_xy_l0, level, size_xy) -> np.ndarray:
        """OpenSlide's own premultiplied ARGB straight into numpy, composited on white in integers.

        Skips the PIL image and the un-premultiply pass of ``OpenSlide.read_region``. Over white, a premultiplied
        colour ``c`` with alpha ``a`` is exactly ``c + 255 - a`` (opaque pixels are unchanged).
        """
        (x, y), (w, h) = location_xy_l0, size_xy
        if w <= 0 or h <= 0:
            return np.full((max(h, 0), max(w, 0), 3), 255, np.uint8)
        argb = np.empty((h, w), np.uint32)
        _lowlevel._read_region(self._osr._osr, argb.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32)),
                               int(x), int(y), int(level), int(w), int(h))
        bgra = argb.view(np.uint8).reshape(h, w, 4)  # little-endian 0xAARRGGBB: bytes B, G, R, A
        rgb = np.empty((h, w, 3), np.uint8)
        for c in range(3):  # three plane copies: twice as fast as one reversed-stride copy
            rgb[..., c] = bgra[..., 2 - c]
        if (argb < 0xFF000000).any():  # some alpha below 255
            a = bgra[..., 3]
            clear = a < 255
            rgb[clear] += (255 - a[clear])[:, None]
        return rgb

    def _read_level(self, level, y, x, h, w):
        ds = self.level_downsamples[level]
        return self._read((round(x * ds), round(y * ds)), level, (w, h))

    def read_associated(self, name: str) -> np.ndarray:
        if name not in self.associated_images:
            return super().read_associated(name)
        return composite_on_white(np.asarray(self._osr.associated_images[name].convert("RGBA")))

    def _close(self) -> None:
        self._osr.close()


def _positive(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if v > 0 and math.isfinite(v) else None
