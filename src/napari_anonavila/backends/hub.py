"""Weights from the local Hugging Face cache, offline: nothing here reaches the network unless asked to.

The cache is where ``huggingface_hub`` puts downloads: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
``~/.cache/huggingface/hub``, laid out as ``models--ORG--NAME/snapshots/<revision>/<file>`` with
``refs/main`` naming the revision. A missing file is one line that says what to download and where it goes;
a download happens only with ``allow_download=True`` (CLI: ``--allow-download``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import BackendUnavailableError

__all__ = ["hub_cache_dir", "hub_file", "hub_snapshot", "offline"]


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache folder, read from the environment now (not when a library was imported)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface"
    return Path(home).expanduser() / "hub"


def hub_file(repo_id: str, filenames: str | tuple[str, ...], *, allow_download: bool = False, what: str = "",
             hint: str = "") -> Path:
    """The first of ``filenames`` found for ``repo_id`` in the local cache (downloaded only if allowed)."""
    from huggingface_hub import try_to_load_from_cache

    names = (filenames,) if isinstance(filenames, str) else tuple(filenames)
    cache = hub_cache_dir()
    for name in names:
        found = try_to_load_from_cache(repo_id, name, cache_dir=str(cache))
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    if allow_download:
        from huggingface_hub import hf_hub_download

        try:
            return Path(hf_hub_download(repo_id, names[0], cache_dir=str(cache)))
        except Exception as err:  # network, authentication (gated repos), missing file: many types
            raise BackendUnavailableError(f"{what or repo_id}: downloading {repo_id}/{names[0]} failed "
                                          f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
                                          f"{'; ' + hint if hint else ''}") from err
    raise BackendUnavailableError(
        f"{what or repo_id}: {' or '.join(names)} of {repo_id} is not in the local Hugging Face cache ({cache}); "
        f"download it once with: huggingface-cli download {repo_id} {names[0]} (it goes into that cache), or "
        f"allow this run to download it (--allow-download){'; ' + hint if hint else ''}")


def hub_snapshot(repo_id: str, needed: tuple[str | tuple[str, ...], ...], *, allow_download: bool = False,
                 what: str = "") -> Path:
    """The cached snapshot folder of ``repo_id`` holding every ``needed`` file (a tuple: any one of them).

    Downloads the whole repository first when ``allow_download``; otherwise a missing file is one line.
    """
    if allow_download:
        from huggingface_hub import snapshot_download

        try:
            snapshot_download(repo_id, cache_dir=str(hub_cache_dir()))
        except Exception as err:  # network, authentication (gated repos): many types
            raise BackendUnavailableError(f"{what or repo_id}: downloading {repo_id} failed ({type(err).__name__}: "
                                          f"{str(err).splitlines()[0] if str(err) else ''})") from err
    found = [hub_file(repo_id, n, what=what) for n in needed]
    folders = {p.parent for p in found}
    if len(folders) != 1:
        raise BackendUnavailableError(f"{what or repo_id}: the cached files of {repo_id} belong to different "
                                      f"revisions ({', '.join(sorted(f.name for f in folders))}); download it again")
    return folders.pop()


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """Hugging Face libraries work from the local cache only while inside (transformers, open_clip's hub code)."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(dict.fromkeys(keys, "1"))
    consts, before = None, None
    try:
        from huggingface_hub import constants as consts

        before, consts.HF_HUB_OFFLINE = consts.HF_HUB_OFFLINE, True
    except (ImportError, AttributeError):
        consts = None
    try:
        yield
    finally:
        if consts is not None:
            consts.HF_HUB_OFFLINE = before
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
