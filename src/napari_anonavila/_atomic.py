"""Atomic file output: write to a temporary file beside the target, then rename over it."""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .errors import OutputExistsError

__all__ = ["atomic_path", "atomic_write", "check_writable", "partial_prefix", "sweep_partials"]

_UMASK = os.umask(0o022)
os.umask(_UMASK)


def check_writable(path: str | os.PathLike, *, overwrite: bool) -> Path:
    """Refuse an existing output unless ``overwrite``; return the path."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: output exists; pass overwrite=True (CLI: --overwrite) to replace it")
    return path


_HOST = socket.gethostname().replace(".", "_")


def partial_prefix(path: Path) -> str:
    """Temporary files are ``.<name>.<host>.<pid>.<random>.partial``: hidden, and traceable to their writer."""
    return f".{path.name}.{_HOST}.{os.getpid()}."


def sweep_partials(folder: str | os.PathLike) -> int:
    """Remove temporary files left in ``folder`` by killed processes of this host; return how many."""
    removed = 0
    for p in Path(folder).glob(f".*.{_HOST}.*.partial"):
        try:
            pid = int(p.name.split(f".{_HOST}.", 1)[1].split(".", 1)[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            p.unlink(missing_ok=True)
            removed += 1
        except (ValueError, IndexError, PermissionError):
            continue
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=partial_prefix(path), suffix=".partial", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the permissions open() would
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary file for writing; it replaces ``path`` only if the block succeeds."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())
