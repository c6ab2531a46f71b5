"""Files on this machine: the user cache folder, and file hashes (light: no torch, no napari)."""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

__all__ = ["cache_dir", "sha256_file"]


def cache_dir() -> Path:
    """Where generated files live: ``$ANONAVILA_CACHE`` or ``~/.cache/napari-anonavila``."""
    env = os.environ.get("ANONAVILA_CACHE")
    path = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "napari-anonavila"
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 of a file, cached per (path, size, mtime) for the life of the process."""
    st = os.stat(path)
    return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
