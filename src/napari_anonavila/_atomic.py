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
    """Hold ``folder`` for this process while writing into it.

    The lock is the kernel's: an exclusive ``flock`` on ``.anonavila.lock``, held for the whole block, so exactly
    one process can hold a folder, however many start at once, and a killed holder (a zombie included) releases it
    the moment it dies: there is nothing stale to take over. A second run fails at once, naming the holder. Where
    ``fcntl`` is missing (Windows) a create-exclusive file with a liveness check stands in.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        with _claimed_by_file(folder, lock):
            yield folder
        return
    fd = _flock(folder, lock, fcntl)
    try:
        yield folder
    finally:
        lock.unlink(missing_ok=True)  # while still held: a waiting process then finds a new file, not this one
        os.close(fd)


def _holder_info() -> bytes:
    import datetime as _dt
    import json

    return json.dumps({"host": _HOST, "pid": os.getpid(),
                       "since": _dt.datetime.now().isoformat(timespec="seconds")}).encode()


def _holder_text(lock: Path) -> str:
    import json

    try:
        holder = json.loads(lock.read_text())
        return f"pid {int(holder['pid'])} on {holder['host']}, since {holder.get('since', '?')}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not yet said who it is"


def _flock(folder: Path, lock: Path, fcntl) -> int:
    """An fd holding the exclusive flock on ``lock`` (the file at that path now, not one just unlinked)."""
    for _ in range(50):
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputExistsError(f"{folder}: another anonavila run ({_holder_text(lock)}) is writing here; wait "
                                    "for it to finish") from None
        try:
            current = os.stat(lock).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:  # still the file at the path: ours
            os.ftruncate(fd, 0)
            os.write(fd, _holder_info())
            return fd
        os.close(fd)  # the holder released and unlinked it while we opened it: try the new one
    raise OutputExistsError(f"{folder}: could not claim the folder ({lock} keeps changing)")


@contextlib.contextmanager
def _claimed_by_file(folder: Path, lock: Path) -> Iterator[None]:  # pragma: no cover - Windows
    """Create-exclusive lock file; a lock whose process of this host is gone is taken over."""
    import json

    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = json.loads(lock.read_text())
                host, pid = str(holder["host"]), int(holder["pid"])
            except (OSError, ValueError, KeyError, TypeError):
                host, pid = _HOST, -1
            if host == _HOST and not _alive(pid):
                lock.unlink(missing_ok=True)
                continue
            raise OutputExistsError(f"{folder}: another anonavila run ({_holder_text(lock)}) is writing here; wait "
                                    f"for it to finish, or delete {lock} if that run is gone") from None
        os.write(fd, _holder_info())
        os.close(fd)
        break
    else:
        raise OutputExistsError(f"{folder}: could not claim the folder ({lock} keeps reappearing)")
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
