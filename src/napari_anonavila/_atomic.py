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

__all__ = ["atomic_dir", "atomic_path", "atomic_write", "check_writable", "claimed_dir", "commit_dir",
           "exchange_dirs", "lock_path", "partial_prefix", "real_dir", "staging_dir", "sweep_partials"]

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


def staging_dir(target: Path) -> Path:
    """A new hidden folder beside ``target`` (same file system), with the permissions a new folder gets under the
    user's umask (``mkdtemp`` alone makes it 0700, and it becomes the result folder)."""
    tmp = Path(tempfile.mkdtemp(prefix=partial_prefix(target), suffix=".partial", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)
    return tmp


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden temporary folder beside ``path``; on success it takes the place of ``path`` (a folder) at once.

    With an existing ``path`` the two are exchanged in one step (:func:`exchange_dirs`) and the old one is removed;
    on any failure the temporary folder is removed and ``path`` is untouched.
    """
    path = real_dir(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = staging_dir(path)
    try:
        yield tmp
        if path.exists():
            exchange_dirs(path, tmp)  # tmp now holds the old folder
        else:
            _move(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _move(src: Path, dst: Path) -> None:
    """One rename (the seam the fault tests break)."""
    os.replace(src, dst)


def _renameat2_exchange(a: Path, b: Path) -> bool:
    """Exchange two paths in one system call (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    import ctypes
    import errno
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def exchange_dirs(a: Path, b: Path) -> None:
    """Swap two folders: atomically where the system can (then a reader sees one or the other, never a mix or a
    gap), else in three renames that are undone on failure."""
    if _renameat2_exchange(a, b):
        return
    aside = Path(tempfile.mkdtemp(prefix=partial_prefix(a), suffix=".partial", dir=a.parent)) / "aside"
    _move(a, aside)
    try:
        _move(b, a)
    except BaseException:
        _move(aside, a)
        raise
    _move(aside, b)
    shutil.rmtree(aside.parent, ignore_errors=True)


def commit_dir(target: Path, staged: Path, outputs: tuple[str, ...]) -> None:
    """Make the ``outputs`` written in ``staged`` the outputs of ``target`` in one step.

    Everything else in ``target`` (caches, files of the user) moves into ``staged`` first; then the two folders
    are exchanged, so ``target`` holds either all the old outputs or all the new ones, never a mix; the old ones
    are removed last. A failure before the exchange moves everything back and re-raises.
    """
    moved: list[str] = []
    try:
        for entry in sorted(target.iterdir()):
            if entry.name not in outputs:
                _move(entry, staged / entry.name)
                moved.append(entry.name)
        exchange_dirs(target, staged)
    except BaseException:
        for name in reversed(moved):
            with contextlib.suppress(OSError):
                _move(staged / name, target / name)
        raise
    shutil.rmtree(staged, ignore_errors=True)  # the old outputs


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary file for writing; it replaces ``path`` only if the block succeeds."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())


LOCK_SUFFIX = ".anonavila.lock"


def lock_path(folder: str | os.PathLike) -> Path:
    """The lock file of a result folder: beside it (``.<name>.anonavila.lock`` in its parent), never inside, so that
    exchanging the folder with a staged one never moves the lock a run holds."""
    folder = Path(folder)
    return folder.parent / f".{folder.name}{LOCK_SUFFIX}"


def real_dir(folder: str | os.PathLike) -> Path:
    """A result folder as the path it really is: a symbolic link is followed to its target (outputs are committed
    there, in the target's own file system), relative paths are made absolute."""
    return Path(os.path.realpath(folder))


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
    """Hold ``folder`` (a symbolic link: its target) for this process while writing into it; yield its real path.

    The lock is the kernel's: an exclusive ``flock`` on the folder's :func:`lock_path`, held for the whole block, so
    exactly one process can hold a folder, however many start at once, and a killed holder (a zombie included)
    releases it the moment it dies: there is nothing stale to take over. The lock file sits beside the folder and
    never moves while held (a folder exchange cannot take it away). A second run fails at once, naming the holder.
    Where ``fcntl`` is missing (Windows) a create-exclusive file with a liveness check stands in.
    """
    folder = real_dir(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = lock_path(folder)
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
        with contextlib.suppress(OSError):  # ours only (still held): a waiting process then finds a new file
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                lock.unlink()
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
