"""Whole-slide images of any size, streamed tile by tile: real-looking tissue on glass, planted anomalies with
their ground truth, a full pyramid of JPEG tiles, as an Aperio-style SVS (Aperio's page order) or a pyramidal
OME-TIFF (read by tifffile).

Nothing is held whole: a tile is composed from a bank of tissue textures (stroma with scattered nuclei; dense,
dark tumour nuclei for the anomalies) under low-resolution tissue and anomaly maps, then encoded. A 100,000 x
80,000 px slide takes minutes and a few hundred MiB of memory. Deterministic for a given seed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ._atomic import atomic_path
from .sample import _NUCLEUS, _STROMA, _TUMOUR, _nuclei, _smooth_noise

__all__ = ["SyntheticSlide", "write_wsi"]

_BANK = 8  # texture variants of each kind
_GLASS = 243  # the glass around the tissue
_MAP_PX = 128  # level-0 pixels per pixel of the tissue and anomaly maps


@dataclass(frozen=True)
class SyntheticSlide:
    """The written slide, its size, and the anomaly ground truth (``truth``: 1 px per ``truth_downsample``)."""

    path: Path
    size_xy: tuple[int, int]
    mpp: float
    truth: np.ndarray
    truth_downsample: int
    levels: int


def _maps(width: int, height: int, seed: int, n_anomalies: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tissue and anomaly fractions and stain strength, in [0, 1] at 1/_MAP_PX scale: a few tissue fragments,
    round anomalies, smooth staining variation."""
    rng = np.random.default_rng(seed)
    h, w = max(4, math.ceil(height / _MAP_PX)), max(4, math.ceil(width / _MAP_PX))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    field = _smooth_noise(rng, (h, w), max(h, w) / 8) * 0.15
    for _ in range(3):
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.25, 0.75) * w
        ry, rx = rng.uniform(0.18, 0.35) * h, rng.uniform(0.15, 0.3) * w
        field = np.maximum(field, 1 - ((yy - cy) / ry) ** 2 - ((xx - cx) / rx) ** 2)
    tissue = ndimage.gaussian_filter((field > 0.05).astype(np.float32), 1.0)
    shade = 0.5 + 0.5 * np.clip(_smooth_noise(rng, (h, w), max(h, w) / 20), -1, 1)  # stain strength, 0..1
    anomaly = np.zeros((h, w), np.float32)
    inside = np.argwhere(tissue > 0.9)
    for _ in range(n_anomalies if len(inside) else 0):
        cy, cx = inside[rng.integers(len(inside))]
        r = rng.uniform(0.015, 0.03) * max(h, w)
        anomaly = np.maximum(anomaly, ((yy - cy) ** 2 + (xx - cx) ** 2 < r**2).astype(np.float32))
    anomaly = ndimage.gaussian_filter(anomaly, 0.7) * tissue
    return tissue, anomaly, shade.astype(np.float32)


def _textures(tile: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(normal, tumour) banks of (_BANK, tile, tile, 3) uint8 RGB textures (no shading: it comes from a map)."""
    rng = np.random.default_rng(seed)
    normal, tumour = [], []
    for _ in range(_BANK):
        base = np.broadcast_to(_STROMA, (tile, tile, 3))
        nuc = _nuclei(rng, (tile, tile), np.full((tile, tile), 9.0, np.float32), 2.5)[..., None]
        normal.append(base * (1 - nuc) + _NUCLEUS * nuc)
        tum = _nuclei(rng, (tile, tile), np.full((tile, tile), 60.0, np.float32), 4.5)[..., None]
        tumour.append(base * (1 - tum) + _TUMOUR * tum)
    return (np.clip(np.stack(normal), 0, 255).astype(np.uint8), np.clip(np.stack(tumour), 0, 255).astype(np.uint8))


def _weights(n: int, start: float, scale: float, size: int) -> tuple[np.ndarray, int]:
    """Linear-interpolation weights (n x k) of ``n`` samples at ``(start + i + 0.5) * scale - 0.5`` over a map axis
    of ``size``; returns them with the first map index they use."""
    pos = np.clip((start + np.arange(n) + 0.5) * scale - 0.5, 0, size - 1)
    i0 = np.floor(pos).astype(int)
    lo = int(i0.min())
    k = int(i0.max()) - lo + 2
    w = np.zeros((n, k), np.float32)
    frac = (pos - i0).astype(np.float32)
    w[np.arange(n), i0 - lo] = 1 - frac
    w[np.arange(n), np.minimum(i0 - lo + 1, k - 1)] += frac
    return w, lo


class _Level:
    """Tiles of one pyramid level (downsample ``ds``), composed from the texture banks and the maps."""

    def __init__(self, maps, banks, noise, tile: int, ds: int, width: int, height: int, seed: int) -> None:
        from PIL import Image

        (self.tissue, self.anomaly, self.shade), self.noise = maps, noise
        self.tile, self.ds, self.seed = tile, ds, seed
        self.w, self.h = math.ceil(width / ds), math.ceil(height / ds)
        side = max(8, tile // ds)  # texture period at this level, in level pixels

        def shrink(bank: np.ndarray) -> np.ndarray:
            if side == tile:
                return bank
            return np.stack([np.asarray(Image.fromarray(t).resize((side, side), Image.Resampling.BOX)) for t in bank])

        self.normal, self.tumour, self.side = shrink(banks[0]), shrink(banks[1]), side

    def _map(self, m: np.ndarray, y: int, x: int) -> np.ndarray:
        """A map sampled bilinearly at this tile's pixel centres, as 0..256 integers."""
        scale = self.ds / _MAP_PX
        wy, y0 = _weights(self.tile, y, scale, m.shape[0])
        wx, x0 = _weights(self.tile, x, scale, m.shape[1])
        crop = m[y0 : y0 + wy.shape[1], x0 : x0 + wx.shape[1]]
        crop = np.pad(crop, ((0, wy.shape[1] - crop.shape[0]), (0, wx.shape[1] - crop.shape[1])), mode="edge")
        return np.rint(wy @ crop @ wx.T * 256).astype(np.uint16)[..., None]

    def _mosaic(self, bank: np.ndarray, pick: np.ndarray) -> np.ndarray:
        reps, side, t = pick.shape[0], self.side, self.tile
        return bank[pick].transpose(0, 2, 1, 3, 4).reshape(reps * side, reps * side, 3)[:t, :t]

    def tile_at(self, r: int, c: int) -> np.ndarray:
        t = self.tile
        y, x = r * t, c * t
        rng = np.random.default_rng((self.seed, self.ds, r, c))
        noise = self.noise[rng.integers(len(self.noise))]
        out = (_GLASS + noise).astype(np.uint8)
        tis = self._map(self.tissue, y, x)
        if tis.any():
            reps = max(1, t // self.side)
            pick = rng.integers(0, _BANK, (reps, reps))
            pick = pick if rng.random() < 0.5 else pick.T
            img = self._mosaic(self.normal, pick).astype(np.uint16)
            ano = self._map(self.anomaly, y, x)
            if ano.any():
                img = (img * (256 - ano) + self._mosaic(self.tumour, pick).astype(np.uint16) * ano) >> 8
            dark = 232 + (self._map(self.shade, y, x) * 24 >> 8)  # stain strength: 91%..100% brightness
            img = (img * dark) >> 8
            img = (img * tis + out.astype(np.uint16) * (256 - tis)) >> 8
            out = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)
        if y + t > self.h or x + t > self.w:  # beyond the slide edge: empty, as scanners write
            out[max(0, self.h - y) :, :] = _GLASS
            out[:, max(0, self.w - x) :] = _GLASS
        return out

    def tiles(self, threads: int = 0) -> Iterator[np.ndarray]:
        """Tiles in row-major order, made ``threads`` at a time (numpy releases the GIL), at most 32 ahead."""
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        cells = [(r, c) for r in range(math.ceil(self.h / self.tile)) for c in range(math.ceil(self.w / self.tile))]
        with ThreadPoolExecutor(max_workers=threads or min(4, os.cpu_count() or 1)) as pool:
            ahead: deque = deque()
            for cell in cells:
                ahead.append(pool.submit(self.tile_at, *cell))
                if len(ahead) >= 32:
                    yield ahead.popleft().result()
            while ahead:
                yield ahead.popleft().result()


def _thumbnail(level: _Level, max_side: int) -> np.ndarray:
    """The smallest level, read whole and subsampled to at most ``max_side`` pixels a side."""
    rows, cols = math.ceil(level.h / level.tile), math.ceil(level.w / level.tile)
    img = np.concatenate([np.concatenate([level.tile_at(r, c) for c in range(cols)], axis=1)
                          for r in range(rows)], axis=0)[: level.h, : level.w]
    step = max(1, math.ceil(max(level.h, level.w) / max_side))
    return np.ascontiguousarray(img[::step, ::step])


def write_wsi(path: str | os.PathLike, width: int, height: int, *, mpp: float = 0.25, layout: str = "svs",
              seed: int = 0, n_anomalies: int = 6, tile: int = 512, quality: int = 85) -> SyntheticSlide:
    """Write a pyramidal slide (levels halve down to ~1024 px) with JPEG tiles; return it with its ground truth.

    ``layout``: ``"svs"`` (Aperio-style: one tiled page per level, Aperio description with MPP and AppMag,
    read by OpenSlide) or ``"ome-tiff"`` (level 0 with the others as SubIFDs and OME-XML, as QuPath and
    bfconvert write, read by tifffile).
    """
    import tifffile

    if layout not in ("svs", "ome-tiff"):
        raise ValueError(f"unknown layout {layout!r}; use 'svs' or 'ome-tiff'")
    path = Path(path)
    maps = _maps(width, height, seed, n_anomalies)
    banks = _textures(tile, seed + 1)
    rng = np.random.default_rng(seed + 2)
    noise = np.clip(rng.normal(0, 3, (4, tile, tile, 3)), -12, 12).astype(np.int16)
    n_levels = 1 + max(0, math.ceil(math.log2(max(width, height) / 1024)))
    levels = [_Level(maps, banks, noise, tile, 2**k, width, height, seed) for k in range(n_levels)]
    opts = {"tile": (tile, tile), "photometric": "rgb", "compression": "jpeg",
            "compressionargs": {"level": quality}, "dtype": np.uint8}
    mag = 40 if mpp < 0.35 else 20
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=width * height * 3 > 2**31,
                                                         ome=layout == "ome-tiff") as tif:
        if layout == "svs":  # Aperio's page order: level 0, a stripped thumbnail, the other levels, a label
            for k, lv in enumerate(levels):
                desc = (f"Aperio Image Library v12.0.16\r\n{width}x{height} [0,0 {width}x{height}] ({tile}x{tile}) "
                        f"JPEG/RGB Q={quality}|AppMag = {mag}|MPP = {mpp}") if k == 0 else \
                       f"Aperio Image Library v12.0.16\r\n{width}x{height} -> {lv.w}x{lv.h} - ({tile}x{tile})"
                tif.write(lv.tiles(), shape=(lv.h, lv.w, 3), description=desc, metadata=None, **opts)
                if k == 0:
                    thumb = _thumbnail(levels[-1], 768)
                    tif.write(thumb, photometric="rgb", compression="jpeg", rowsperstrip=16, metadata=None,
                              description=f"Aperio Image Library v12.0.16\r\n{width}x{height} -> "
                                          f"{thumb.shape[1]}x{thumb.shape[0]} - ")
            label = np.full((256, 256, 3), 250, np.uint8)
            label[96:160, 32:224] = 30  # a dark bar, like a barcode
            tif.write(label, photometric="rgb", compression="lzw", rowsperstrip=64, subfiletype=1, metadata=None,
                      description="Aperio Image Library v12.0.16\r\nlabel 256x256")
        else:
            res = (1e4 / mpp, 1e4 / mpp)
            meta = {"axes": "YXS", "PhysicalSizeX": mpp, "PhysicalSizeY": mpp, "PhysicalSizeXUnit": "µm",
                    "PhysicalSizeYUnit": "µm", "Name": path.name}
            tif.write(levels[0].tiles(), shape=(levels[0].h, levels[0].w, 3), subifds=n_levels - 1,
                      resolution=res, resolutionunit="CENTIMETER", metadata=meta, **opts)
            for lv in levels[1:]:
                tif.write(lv.tiles(), shape=(lv.h, lv.w, 3), subfiletype=1, resolution=(res[0] / lv.ds, res[1] /
                          lv.ds), resolutionunit="CENTIMETER", metadata=None, **opts)
    return SyntheticSlide(path, (width, height), mpp, maps[1] > 0.5, _MAP_PX, n_levels)
