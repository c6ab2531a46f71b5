"""tifffile reader: Aperio SVS, OME-TIFF, SubIFD and multi-page pyramids, plain tiled or striped TIFFs, QuPath
exports.

Levels come from tifffile's own series structure (``series.levels``), so every pyramid layout keeps all its
levels. A read fetches only the tiles (or strips) a window touches, with ``os.pread`` (thread-safe, no shared
file position), and decodes them with the page's own codec (imagecodecs: JPEG, JPEG 2000, deflate, LZW...),
both outside the GIL, a window's tiles side by side in a small shared thread pool. An uncompressed, contiguous
page is memory-mapped, so a huge single-level TIFF is never read whole.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import threading
import weakref
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import SlideReadError
from .base import Slide
from .pixels import composite_on_white, tile_chunks

__all__ = ["TifffileSlide"]

_UNIT_UM = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}


class _TileCache:
    """Decoded tiles, least recently used out first, within a byte budget (as OpenSlide caches its tiles), kept
    only while reads reuse tiles.

    Neighbouring patches read in grid order share tiles; without the cache each would decode them again. Reads in
    random order rarely meet a tile twice, and keeping every decoded tile then only costs memory traffic (20-60% of
    the CPU in issue 24's measurements). So the cache watches the last ``window`` lookups: a lookup counts as reuse
    when it hits, or when it misses a tile decoded recently but not kept (the keys of those, without pixels, are
    remembered, as many as the budget would hold tiles). Tiles are kept while at least ``min_reuse`` of the lookups
    are reuse.
    """

    def __init__(self, budget: int = 96 << 20, *, window: int = 256, min_reuse: float = 0.1) -> None:
        self.budget, self.size = budget, 0
        self._tiles: OrderedDict = OrderedDict()
        self._ghosts: OrderedDict = OrderedDict()  # keys of tiles decoded but not (or no longer) kept
        self._max_ghosts = 64  # then as many as the budget holds tiles of the size last seen
        self._recent: deque[bool] = deque(maxlen=window)
        self._reused = 0  # how many of _recent are True
        self._min_reuse = min_reuse
        self._lock = threading.Lock()

    @property
    def keeping(self) -> bool:
        """Whether decoded tiles are kept now: always until ``window // 8`` lookups are seen, then while reads reuse."""
        n = len(self._recent)
        return n < self._recent.maxlen // 8 or self._reused >= self._min_reuse * n

    def get(self, key):
        with self._lock:
            tile = self._tiles.get(key)
            if tile is not None:
                self._tiles.move_to_end(key)
            reused = tile is not None or key in self._ghosts
            if len(self._recent) == self._recent.maxlen:
                self._reused -= self._recent[0]  # the lookup the append below pushes out
            self._recent.append(reused)
            self._reused += reused
            return tile

    def put(self, key, tile: np.ndarray) -> None:
        with self._lock:
            if key in self._tiles:
                return
            self._max_ghosts = max(64, self.budget // max(1, tile.nbytes))
            if not self.keeping:
                self._ghost(key)
                return
            self._ghosts.pop(key, None)
            self._tiles[key] = tile
            self.size += tile.nbytes
            while self.size > self.budget and self._tiles:
                old, arr = self._tiles.popitem(last=False)
                self.size -= arr.nbytes
                self._ghost(old)

    def _ghost(self, key) -> None:
        self._ghosts[key] = None
        self._ghosts.move_to_end(key)
        if len(self._ghosts) > self._max_ghosts:
            self._ghosts.popitem(last=False)


def _decode_pool() -> ThreadPoolExecutor:
    """Threads that decode a window's tiles side by side (the codecs release the GIL), shared by every slide."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=max(2, _CORES),
                                       thread_name_prefix="anonavila-decode")
        return _POOL


def _forget_pool() -> None:
    """In a forked child the pool's threads do not exist: start a new pool there (else reads would wait forever)."""
    global _POOL, _POOL_LOCK
    _POOL, _POOL_LOCK = None, threading.Lock()


_CORES = max(1, min(8, os.cpu_count() or 1))
_WILLNEED = getattr(os, "POSIX_FADV_WILLNEED", None)  # not on macOS or Windows
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()
os.register_at_fork(after_in_child=_forget_pool)


class _TiffLevel:
    """One pyramid level: tile geometry, byte ranges and the codec of its page."""

    def __init__(self, series_level, fd: int, path: str, cache: _TileCache, level: int) -> None:
        page = series_level.keyframe
        if page.photometric not in (1, 2, 6) or page.dtype != np.uint8:  # minisblack, rgb, ycbcr
            raise ValueError(f"unsupported image kind (photometric {page.photometric}, dtype {page.dtype})")
        extra = {a: n for a, n in zip(series_level.axes, series_level.shape, strict=True) if a not in "YXS" and n > 1}
        if extra:
            raise ValueError(f"a stack of images per level ({extra}); expected one RGB or grey image")
        if page.planarconfig != 1 and page.samplesperpixel > 1:
            raise ValueError("planar (separate-plane) RGB is not supported; save the TIFF as contiguous RGB")
        self.page, self.fd, self.cache, self.level = page, fd, cache, level
        self.rows, self.cols = page.imagelength, page.imagewidth
        self.spp = page.samplesperpixel
        if self.spp not in (1, 3, 4):
            raise ValueError(f"expected 1, 3 or 4 samples per pixel, got {self.spp}")
        self.tiled = bool(page.tilelength)
        self.th = page.tilelength if self.tiled else min(page.rowsperstrip or self.rows, self.rows)
        self.tw = page.tilewidth if self.tiled else self.cols
        self.across = math.ceil(self.cols / self.tw)
        self.offsets, self.counts = page.dataoffsets, page.databytecounts
        self.decode = page.decode
        self.jpegtables = page.jpegtables
        self.mmap = None
        if page.compression == 1 and page.is_contiguous and not self.tiled:  # row-major bytes: map them
            self.mmap = np.memmap(path, dtype=np.uint8, mode="r", offset=page.dataoffsets[0],
                                  shape=(self.rows, self.cols, self.spp))

    @property
    def chunks(self) -> tuple[int, int]:
        return tile_chunks((self.th, self.tw) if self.tiled else (None, None))

    def _index(self, rc: tuple[int, int]) -> int:
        """The page's segment number of tile (or strip) ``rc``."""
        return rc[0] * self.across + rc[1]

    def _decode(self, rc: tuple[int, int]) -> np.ndarray:
        """Read and decode one tile (or strip); both outside the GIL."""
        index = self._index(rc)
        count = int(self.counts[index])
        if count == 0:  # a sparse (unwritten) tile: nothing was scanned there
            return np.full((self.th, self.tw, self.spp), 255, np.uint8)
        data = os.pread(self.fd, count, int(self.offsets[index]))
        seg = self.decode(data, index, jpegtables=self.jpegtables)[0]
        return seg.reshape(seg.shape[-3:])

    def _segments(self, wanted: list[tuple[int, int]]) -> list[np.ndarray]:
        """The decoded tiles ``wanted``: from the cache, the rest decoded side by side (this thread takes part)."""
        segs = [self.cache.get((self.level, r, c)) for r, c in wanted]
        todo = [i for i, seg in enumerate(segs) if seg is None]
        if not todo:
            return segs
        if _WILLNEED is not None and len(todo) > 1:  # ask for every tile's bytes at once: cold reads overlap
            for index in map(self._index, (wanted[i] for i in todo)):
                if self.counts[index]:
                    os.posix_fadvise(self.fd, int(self.offsets[index]), int(self.counts[index]), _WILLNEED)
        queue = deque(todo)

        def drain() -> None:  # take tiles until none is left (deque.popleft is atomic)
            while True:
                try:
                    i = queue.popleft()
                except IndexError:
                    return
                segs[i] = self._decode(wanted[i])

        # helpers and this thread pull from one queue: a helper the scheduler starts late (a loaded machine) finds
        # nothing left, or is cancelled before it starts, so a window never waits for a thread that is not running
        helpers = [_decode_pool().submit(drain) for _ in range(min(len(todo), _CORES) - 1)]
        try:
            drain()
        finally:
            queue.clear()  # after an error here, helpers stop at their current tile
            for f in helpers:
                if not f.cancel():
                    f.result()
        for i in todo:
            self.cache.put((self.level, *wanted[i]), segs[i])
        return segs

    def read(self, y: int, x: int, h: int, w: int) -> np.ndarray:
        """(h, w, spp) uint8 at level pixel (y, x); the window lies inside the level."""
        if self.mmap is not None:
            return np.array(self.mmap[y : y + h, x : x + w])
        out = np.empty((h, w, self.spp), np.uint8)
        wanted = [(r, c) for r in range(y // self.th, (y + h - 1) // self.th + 1)
                  for c in range(x // self.tw, (x + w - 1) // self.tw + 1)]
        for (r, c), seg in zip(wanted, self._segments(wanted), strict=True):
            ty, tx = r * self.th, c * self.tw
            y0, y1 = max(y, ty), min(y + h, ty + self.th, self.rows)
            x0, x1 = max(x, tx), min(x + w, tx + self.tw, self.cols)
            out[y0 - y : y1 - y, x0 - x : x1 - x] = seg[y0 - ty : y1 - ty, x0 - tx : x1 - tx]
        return out


class TifffileSlide(Slide):
    """A slide read through tifffile (with imagecodecs for JPEG, JPEG 2000 and others)."""

    reader = "tifffile"

    def __init__(self, path: str | os.PathLike, *, mpp: float | None = None) -> None:
        import tifffile

        try:
            self._tif = tifffile.TiffFile(str(path))
        except (tifffile.TiffFileError, OSError, ValueError) as err:
            raise SlideReadError(f"{path}: not a readable TIFF ({err})") from err
        self._fd = os.open(str(path), os.O_RDONLY)
        try:
            series = self._tif.series[0]
            if self._tif.is_svs and sum(p.is_tiled for p in self._tif.pages) > len(series.levels):
                raise ValueError("its Aperio levels are not in Aperio's page order (OpenSlide reads them)")
            cache = _TileCache()
            self._levels = [_TiffLevel(lvl, self._fd, str(path), cache, i) for i, lvl in enumerate(series.levels)]
            cache.budget = _cache_budget(self._levels)
        except (tifffile.TiffFileError, OSError, ValueError, KeyError, IndexError, AttributeError) as err:
            self._release()
            raise SlideReadError(f"{path}: not a readable TIFF slide ({err})") from err
        # close the file when the slide is garbage-collected (e.g. its napari layer was deleted)
        self._finalizer = weakref.finalize(self, _release, self._tif, self._fd)
        super().__init__(path, mpp=mpp, file_mpp=self._file_mpp())
        self.vendor = "aperio" if self._tif.is_svs else "ome-tiff" if self._tif.is_ome else f"tiff ({series.kind})"
        if self._tif.is_svs:
            mag = re.search(r"AppMag\s*=\s*([0-9.eE+-]+)", self._tif.pages[0].description or "")
            self.objective_power = _positive(float(mag.group(1))) if mag else None
        shape0 = (self._levels[0].rows, self._levels[0].cols)
        self.level_shapes = [(lv.rows, lv.cols) for lv in self._levels]
        self.level_downsamples = [float((shape0[0] / r + shape0[1] / c) / 2) for r, c in self.level_shapes]
        self._set_levels([lv.chunks for lv in self._levels])
        self._associated = {(sr.name.lower() if self._tif.is_svs else f"series{i}"): i
                            for i, sr in enumerate(self._tif.series) if i > 0}
        self.associated_images = sorted(self._associated)

    def _release(self) -> None:
        _release(self._tif, self._fd)

    def _file_mpp(self) -> float | None:
        if self._tif.is_svs:  # Aperio: "|MPP = 0.2527|" in the first page's description
            m = re.search(r"\|\s*MPP\s*=\s*([0-9.eE+-]+)", self._tif.pages[0].description or "")
            try:
                return _positive(float(m.group(1))) if m else None
            except ValueError:
                return None
        if self._tif.is_ome:
            m = re.search(r'PhysicalSizeX="([^"]+)"', self._tif.ome_metadata or "")
            u = re.search(r'PhysicalSizeXUnit="([^"]+)"', self._tif.ome_metadata or "")
            if m:
                try:
                    return _positive(float(m.group(1)) * _UNIT_UM.get(u.group(1) if u else "µm", 1.0))
                except ValueError:
                    return None
        tags = self._tif.pages[0].tags
        res, unit = tags.get("XResolution"), tags.get("ResolutionUnit")
        if res is None or unit is None or unit.value not in (2, 3):
            return None
        num, den = res.value
        if not num or not den:
            return None
        per_unit_um = 25_400.0 if unit.value == 2 else 10_000.0
        return _positive(per_unit_um * den / num)

    def _read_level(self, level, y, x, h, w):
        try:
            block = self._levels[level].read(y, x, h, w)
        except Exception as err:  # codecs raise their own types for corrupt tiles
            raise SlideReadError(f"{self.path}: cannot decode level {level} at ({x}, {y}) "
                                 f"({type(err).__name__}: {err})") from err
        if block.shape[-1] == 1:
            return np.repeat(block, 3, axis=-1)
        return composite_on_white(block) if block.shape[-1] == 4 else block

    def read_associated(self, name: str) -> np.ndarray:
        if name not in self.associated_images:
            return super().read_associated(name)
        arr = np.asarray(self._tif.series[self._associated[name]].asarray())
        if arr.ndim == 2:
            return np.repeat(arr[..., None], 3, axis=-1)
        return composite_on_white(arr) if arr.shape[-1] == 4 else arr[..., :3]

    def _close(self) -> None:
        self._finalizer()


def _cache_budget(levels: list[_TiffLevel]) -> int:
    """The tile cache's byte budget for a slide: four rows of tiles (or strips) of its widest level, as reads in
    grid order reuse them (a patch row spans up to three tile rows), within 32-96 MiB. A small slide's reads never
    need the 96 MiB that a 100,000-px-wide one can use, so memory does not grow to the cap on every slide."""
    row = max(lv.across * lv.th * lv.tw * lv.spp for lv in levels)
    return int(min(max(4 * row, 32 << 20), 96 << 20))


def _release(tif, fd: int) -> None:
    tif.close()
    with contextlib.suppress(OSError):
        os.close(fd)


def _positive(mpp: float) -> float | None:
    """A positive finite value, else no mpp (the plausible range is checked, with a warning, by Slide)."""
    return mpp if math.isfinite(mpp) and mpp > 0 else None
