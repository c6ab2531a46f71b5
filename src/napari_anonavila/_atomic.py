"""Atomic file output: write to a temporary file beside the target, then rename over it."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .errors import OutputExistsError

__all__ = ["atomic_dir", "atomic_path", "atomic_write", "check_writable", "claimed_dir", "partial_prefix",
           "sweep_partials"]

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


def sweep_partials(folder: str | os.PathLike, *, recursive: bool = False) -> int:
    """Remove temporary files left in ``folder`` (and its sub-folders, with ``recursive``) by killed processes of
    this host; return how many."""
    removed = 0
    pattern = f".*.{_HOST}.*.partial"
    for p in list(Path(folder).rglob(pattern) if recursive else Path(folder).glob(pattern)):
        try:
            pid = int(p.name.split(f".{_HOST}.", 1)[1].split(".", 1)[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
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
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden temporary folder beside ``path``; on success it replaces ``path`` (a folder) in one rename.

    An existing ``path`` is first moved aside and removed after the new one is in place; on failure the
    temporary folder is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=partial_prefix(path), suffix=".partial", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        yield tmp
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=partial_prefix(path), suffix=".partial", dir=path.parent))
            os.replace(path, old / "replaced")
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary file for writing; it replaces ``path`` only if the block succeeds."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())


LOCK_NAME = ".anonavila.lock"


def _alive(pid: int) -> bool:
    """True while ``pid`` runs. A killed process not yet reaped by its parent (a zombie) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # Linux: the state letter follows the ")" that closes the command name
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True  # no /proc (macOS) or gone since: os.kill's answer stands


@contextlib.contextmanager
def claimed_dir(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold ``folder`` for this process while writing into it (a create-exclusive lock file).

    A second run into the same folder fails at once, naming the holder, instead of both writing and one
    silently replacing the other. A lock left by a killed process of this host is taken over.
    """
    import datetime as _dt
    import json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = json.loads(lock.read_text())
                host, pid, since = str(holder["host"]), int(holder["pid"]), str(holder.get("since", "?"))
            except (OSError, ValueError, KeyError, TypeError):
                host, pid, since = _HOST, -1, "?"  # unreadable: written by a process killed mid-write
            if host == _HOST and not _alive(pid):
                lock.unlink(missing_ok=True)  # stale: its process is gone
                continue
            raise OutputExistsError(f"{folder}: another anonavila run (pid {pid} on {host}, since {since}) is writing "
                                    f"here; wait for it to finish, or delete {lock} if that run is gone") from None
        with os.fdopen(fd, "w") as fh:
            json.dump({"host": _HOST, "pid": os.getpid(),
                       "since": _dt.datetime.now().isoformat(timespec="seconds")}, fh)
        break
    else:
        raise OutputExistsError(f"{folder}: could not claim the folder ({lock} keeps reappearing)")
    try:
        yield folder
    finally:
        lock.unlink(missing_ok=True)
