"""The embedding cache: image embeddings of a slide's patch grid, in verified chunks committed as they are made.

Layout under a cache folder (a result folder, or a napari session folder)::

    embeddings/<key digest>/manifest.json     what the entry is for (slide content, grid, model) and, per chunk,
                                               its row count and SHA-256; replaced atomically after each chunk
    embeddings/<key digest>/chunk-00000.npy   float32 rows of the grid, in grid order
    grids/<grid key digest>/grid.json, .npz   the patch grid (with the digest of grid.npz)
    thumbnail.json, thumbnail.png             the thumbnail (with its digest)

A chunk is trusted only when its manifest entry, size, digest, shape and finiteness all check; otherwise it is
recomputed, with one warning. Chunks are committed one by one, so a run that is killed or cancelled resumes
where it stopped, and entries for other grids or models never overwrite each other.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path

import numpy as np

from ._atomic import atomic_path, atomic_write
from .grid import PatchGrid
from .slide import Slide

__all__ = ["CacheEntry", "CacheWarning", "EmbeddingCache", "key_digest"]

CHUNK_ROWS = 2048  # rows per committed chunk (rounded up to whole batches)
_MAX_CHUNK_ROWS = 1 << 20
_MANIFEST = "manifest.json"


class CacheWarning(UserWarning):
    """A cached file did not verify and is being recomputed."""


def key_digest(key: dict) -> str:
    """A short, stable name for a cache key (JSON with sorted keys, SHA-256)."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(8 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_json(path: Path) -> dict | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


class CacheEntry:
    """The cached embeddings of one (slide content, grid, model) key: ``n`` rows of ``dim`` floats, in chunks."""

    def __init__(self, folder: Path, key: dict, *, chunk_rows: int = CHUNK_ROWS) -> None:
        self.folder, self.key = folder, json.loads(json.dumps(key, default=str))  # as stored: tuples become lists
        self.n, self.dim = int(key["grid"]["n_cells"]), int(key["embed_dim"])
        manifest = _read_json(folder / _MANIFEST)
        self.chunk_rows, self._chunks = max(1, chunk_rows), {}
        self._warned = False
        if manifest is not None and manifest.get("key") == self.key and isinstance(manifest.get("chunks"), dict):
            stored = manifest.get("chunk_rows")
            if isinstance(stored, int) and not isinstance(stored, bool) and 1 <= stored <= _MAX_CHUNK_ROWS:
                self.chunk_rows, self._chunks = stored, manifest["chunks"]  # its layout, whatever the batch size
            else:
                self._warned = True
                warnings.warn(f"{folder}: cached embeddings do not verify (chunk_rows: the manifest's {stored!r} is "
                              f"not a whole number in 1..{_MAX_CHUNK_ROWS}); recomputing them", CacheWarning,
                              stacklevel=3)

    def ranges(self) -> list[tuple[int, int]]:
        """(start, stop) grid rows of each chunk."""
        return [(s, min(s + self.chunk_rows, self.n)) for s in range(0, self.n, self.chunk_rows)]

    @property
    def complete(self) -> bool:
        return all(self.has(i) for i in range(len(self.ranges())))

    def has(self, i: int) -> bool:
        """Whether chunk ``i`` is recorded (it is verified when read)."""
        return str(i) in self._chunks

    def _path(self, i: int) -> Path:
        return self.folder / f"chunk-{i:05d}.npy"

    def read(self, i: int) -> np.ndarray | None:
        """Chunk ``i`` (rows of the grid), verified; None when absent or when it does not verify (then dropped)."""
        rec = self._chunks.get(str(i))
        if rec is None:
            return None
        start, stop = self.ranges()[i]
        path = self._path(i)
        try:
            if _sha256(path) != rec.get("sha256"):
                raise ValueError("its content does not match the digest recorded when it was written")
            arr = np.load(path, allow_pickle=False)
            if arr.shape != (stop - start, self.dim) or arr.dtype != np.float32:
                raise ValueError(f"shape {arr.shape} {arr.dtype}, expected {(stop - start, self.dim)} float32")
            if not np.isfinite(arr).all():
                raise ValueError("it holds NaN or inf")
        except Exception as err:  # a damaged cache file fails in many ways; every one means: recompute
            self._drop(i, f"{type(err).__name__}: {err}" if not isinstance(err, ValueError) else str(err))
            return None
        return arr

    def rows(self, i: int) -> np.ndarray:
        """Chunk ``i`` as a read-only memory map, without verifying it again (call :meth:`read` first)."""
        return np.load(self._path(i), mmap_mode="r", allow_pickle=False)

    def _drop(self, i: int, why: str) -> None:
        if not self._warned:
            warnings.warn(f"{self.folder}: cached embeddings do not verify (chunk {i}: {why}); recomputing them",
                          CacheWarning, stacklevel=3)
            self._warned = True
        self._chunks.pop(str(i), None)

    def write(self, i: int, rows: np.ndarray) -> None:
        """Commit chunk ``i``: the array file first, then the manifest that records its digest."""
        start, stop = self.ranges()[i]
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        if rows.shape != (stop - start, self.dim):
            raise ValueError(f"chunk {i} has shape {rows.shape}, expected {(stop - start, self.dim)}")
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(self._path(i)) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, rows, allow_pickle=False)
            digest = _sha256(tmp)
        self._chunks[str(i)] = {"rows": stop - start, "sha256": digest}
        with atomic_write(self.folder / _MANIFEST) as fh:
            json.dump({"key": self.key, "n": self.n, "dim": self.dim, "chunk_rows": self.chunk_rows,
                       "chunks": self._chunks}, fh, indent=1)

    def load_all(self) -> np.ndarray | None:
        """All rows, when every chunk is present and verifies; else None."""
        if not self.n or not self.complete:
            return None
        parts = [self.read(i) for i in range(len(self.ranges()))]
        return None if any(p is None for p in parts) else np.concatenate(parts)


class EmbeddingCache:
    """The cache files in ``folder``."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.root = self.folder / "embeddings"

    def entry(self, key: dict, *, chunk_rows: int = CHUNK_ROWS) -> CacheEntry:
        return CacheEntry(self.root / key_digest(key), key, chunk_rows=chunk_rows)

    def load(self, key: dict) -> np.ndarray | None:
        """The complete, verified (N, D) embeddings for ``key``, or None."""
        return self.entry(key).load_all()

    def prune(self, keep: dict, keep_grid: dict | None = None) -> None:
        """Remove the entries of other keys than ``keep`` (and grids other than ``keep_grid``): a complete run
        replaced them."""
        for root, key in ((self.root, keep), (self.folder / "grids", keep_grid)):
            if key is None or not root.is_dir():
                continue
            for p in root.iterdir():
                if p.is_dir() and p.name != key_digest(key):
                    shutil.rmtree(p, ignore_errors=True)

    # -- the grid and thumbnail, so that a re-score reads no pixels at all ----------------------------
    def load_grid(self, key: dict) -> PatchGrid | None:
        """The patch grid stored for ``key`` (slide content and grid settings), if it verifies; else None."""
        folder = self.folder / "grids" / key_digest(key)
        meta = _read_json(folder / "grid.json")
        arr_path = folder / "grid.npz"
        if meta is None or meta.get("key") != json.loads(json.dumps(key, default=str)):
            return None
        try:
            if _sha256(arr_path) != meta.get("sha256"):
                raise ValueError("grid.npz does not match its digest")
            with np.load(arr_path, allow_pickle=False) as z:
                cells, tissue = z["cells_rc"], z["tissue"]
            return PatchGrid(int(meta["patch_size_l0"]), tuple(meta["shape_rc"]), cells, tissue,
                             tuple(meta["origin_xy_l0"]), meta["mpp"])
        except Exception as err:  # damaged: lay the grid again
            warnings.warn(f"{self.folder}: cached patch grid does not verify ({err}); laying it again", CacheWarning,
                          stacklevel=2)
            return None

    def save_grid(self, key: dict, grid: PatchGrid) -> None:
        folder = self.folder / "grids" / key_digest(key)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / "grid.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, cells_rc=grid.cells_rc, tissue=grid.tissue)
            digest = _sha256(tmp)
        meta = {"key": key, "sha256": digest, "patch_size_l0": grid.patch_size_l0, "shape_rc": list(grid.shape_rc),
                "origin_xy_l0": list(grid.origin_xy_l0), "mpp": grid.mpp}
        with atomic_write(folder / "grid.json") as fh:
            json.dump(meta, fh, indent=1, default=str)

    def thumbnail(self, slide: Slide, max_side: int = 1024) -> tuple[np.ndarray, float]:
        """The slide's thumbnail, read once and then kept (verified) beside the cache."""
        from PIL import Image

        img_path, meta_path = self.folder / "thumbnail.png", self.folder / "thumbnail.json"
        meta = _read_json(meta_path)
        if meta and meta.get("fingerprint") == slide.fingerprint() and meta.get("max_side") == max_side:
            try:
                if _sha256(img_path) != meta.get("sha256"):
                    raise ValueError("thumbnail.png does not match its digest")
                return np.asarray(Image.open(img_path).convert("RGB")), float(meta["downsample"])
            except Exception as err:  # damaged: read it again
                warnings.warn(f"{self.folder}: cached thumbnail does not verify ({err}); reading it again",
                              CacheWarning, stacklevel=2)
        img, ds = slide.thumbnail(max_side)
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(img_path) as tmp:
            Image.fromarray(img).save(tmp, format="PNG")
            digest = _sha256(tmp)
        with atomic_write(meta_path) as fh:
            json.dump({"fingerprint": slide.fingerprint(), "max_side": max_side, "downsample": ds, "sha256": digest},
                      fh)
        return img, ds
