"""The embedding cache: image embeddings of one slide's patch grid, keyed by slide content, backend and grid.

Files ``embeddings.npy`` (float32, one row per grid cell in grid order) and ``embeddings.json`` (the key),
plus the patch grid (``grid.npz``/``grid.json``) and the thumbnail, so that a re-score reads no pixels.
Rows are streamed to a temporary file and renamed into place only when complete, so an interrupted run
never leaves a cache that looks valid. A key mismatch is detected and the cache rebuilt, never reused.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from ._atomic import atomic_path, atomic_write, partial_prefix
from .grid import PatchGrid
from .slide import Slide

__all__ = ["EmbeddingCache", "EmbeddingWriter"]

logger = logging.getLogger(__name__)


class EmbeddingCache:
    """The cache files in ``folder``."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.array_path = self.folder / "embeddings.npy"
        self.key_path = self.folder / "embeddings.json"

    def load(self, key: dict) -> np.ndarray | None:
        """The cached (N, D) embeddings (a read-only memmap) if the stored key equals ``key``, else None.

        Why a cache is not used goes to the log.
        """
        if not (self.array_path.is_file() and self.key_path.is_file()):
            return None
        try:
            stored = json.loads(self.key_path.read_text())
            arr = np.load(self.array_path, mmap_mode="r")
        except (OSError, ValueError) as err:
            logger.warning("%s: unreadable embedding cache (%s); rebuilding", self.folder, err)
            return None
        wanted = json.loads(json.dumps(key))  # as stored: tuples become lists
        if stored != wanted:
            diff = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
            logger.warning("%s: embedding cache is for another %s; rebuilding", self.folder, ", ".join(diff))
            return None
        if arr.shape != (key["grid"]["n_cells"], key["embed_dim"]):
            logger.warning("%s: embedding cache has shape %s, expected %s; rebuilding", self.folder, arr.shape,
                           (key["grid"]["n_cells"], key["embed_dim"]))
            return None
        return arr  # read-only memory map: rows are paged in as they are scored

    def writer(self, key: dict) -> EmbeddingWriter:
        return EmbeddingWriter(self, key)

    # -- the grid and thumbnail, so that a re-score reads no pixels at all ----------------------------
    def load_grid(self, key: dict) -> PatchGrid | None:
        """The patch grid stored for ``key`` (slide fingerprint and grid settings), or None."""
        meta_path, arr_path = self.folder / "grid.json", self.folder / "grid.npz"
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("key") != json.loads(json.dumps(key)):
                return None
            with np.load(arr_path) as z:
                cells, tissue = z["cells_rc"], z["tissue"]
        except (OSError, ValueError, KeyError):
            return None
        return PatchGrid(meta["patch_size_l0"], tuple(meta["shape_rc"]), cells, tissue, tuple(meta["origin_xy_l0"]),
                         meta["mpp"])

    def save_grid(self, key: dict, grid: PatchGrid) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.folder / "grid.npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, cells_rc=grid.cells_rc, tissue=grid.tissue)
        meta = {"key": key, "patch_size_l0": grid.patch_size_l0, "shape_rc": list(grid.shape_rc),
                "origin_xy_l0": list(grid.origin_xy_l0), "mpp": grid.mpp}
        with atomic_write(self.folder / "grid.json") as fh:
            json.dump(meta, fh, indent=1)

    def thumbnail(self, slide: Slide, max_side: int = 1024) -> tuple[np.ndarray, float]:
        """The slide's thumbnail, read once and then kept beside the cache."""
        from PIL import Image

        img_path, meta_path = self.folder / "thumbnail.png", self.folder / "thumbnail.json"
        try:
            meta = json.loads(meta_path.read_text())
            if meta["fingerprint"] == slide.fingerprint() and meta["max_side"] == max_side:
                return np.asarray(Image.open(img_path).convert("RGB")), float(meta["downsample"])
        except (OSError, ValueError, KeyError):
            pass
        img, ds = slide.thumbnail(max_side)
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(img_path) as tmp:
            Image.fromarray(img).save(tmp, format="PNG")
        with atomic_write(meta_path) as fh:
            json.dump({"fingerprint": slide.fingerprint(), "max_side": max_side, "downsample": ds}, fh)
        return img, ds


class EmbeddingWriter:
    """Streams rows to a temporary ``.npy``; :meth:`commit` renames it (and writes the key) when all rows are in."""

    def __init__(self, cache: EmbeddingCache, key: dict) -> None:
        self.cache, self.key = cache, key
        self.n, self.dim = key["grid"]["n_cells"], key["embed_dim"]
        self.rows = 0
        self.committed = False
        cache.folder.mkdir(parents=True, exist_ok=True)
        self._tmp = cache.folder / f"{partial_prefix(cache.array_path)}{id(self)}.partial"
        self._fh = open(self._tmp, "wb")  # noqa: SIM115 (closed by commit or abort)
        header = {"descr": "<f4", "fortran_order": False, "shape": (self.n, self.dim)}
        np.lib.format.write_array_header_1_0(self._fh, header)

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype="<f4")
        if rows.ndim != 2 or rows.shape[1] != self.dim or self.rows + len(rows) > self.n:
            raise ValueError(f"embedding rows of shape {rows.shape} do not fit the cache ({self.rows}/{self.n})")
        self._fh.write(rows.tobytes())
        self.rows += len(rows)

    def commit(self) -> None:
        """Move the complete array into place, then write its key (a crash in between leaves no valid key)."""
        if self.rows != self.n:
            raise ValueError(f"embedding cache incomplete: {self.rows} of {self.n} rows")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        self.cache.key_path.unlink(missing_ok=True)
        os.replace(self._tmp, self.cache.array_path)
        with atomic_write(self.cache.key_path) as fh:
            json.dump(self.key, fh, indent=1)
        self.committed = True

    def abort(self) -> None:
        """Drop the partial file; an existing cache is left as it was."""
        with contextlib.suppress(OSError):  # flushing may fail again on a full disk; the file goes anyway
            self._fh.close()
        self._tmp.unlink(missing_ok=True)
