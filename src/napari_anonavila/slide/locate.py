"""Finding the slide a result was made on, wherever the result is opened from: by its recorded absolute path, then
by name beside the result folder or in folders the user names, and always by content (the fingerprint)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import AnonavilaError, InputFileError
from .base import Slide

__all__ = ["OtherSlideError", "find_slide", "result_neighbourhood"]


class OtherSlideError(InputFileError):
    """A file where a result's slide should be holds other content (the slide was edited or replaced since)."""


def result_neighbourhood(folder: str | os.PathLike) -> list[Path]:
    """Where a result's slide is looked for beside the result: the result folder, its parent and grandparent (a
    batch ``--out`` usually sits beside the slides, or inside their folder)."""
    folder = Path(os.path.abspath(folder))
    return [folder, *list(folder.parents)[:2]]


def _candidates(record_path: str, folders: Sequence[Path]) -> list[Path]:
    name = Path(record_path.replace("\\", "/")).name
    out = [Path(record_path)] if record_path else []
    for d in folders:
        d = Path(d)
        if d.is_file() and d.name == name:  # a slide file given directly
            out.append(d)
        elif d.is_dir() and name:
            out += [d / name, *(p / name for p in sorted(d.iterdir()) if p.is_dir())]
    seen, unique = set(), []
    for p in out:
        key = os.path.realpath(p)
        if key not in seen and p.is_file():
            seen.add(key)
            unique.append(p)
    return unique


def find_slide(record: dict, *, where: str, near: Sequence[Path] = (), search: Sequence[Path] = (),
               mpp: float | None = None) -> Slide:
    """Open the slide ``record`` (a result's ``provenance.slide``: path and ``fingerprint_sha256``) describes.

    Tried in order: the recorded path, then a file of the same name in ``near`` (see :func:`result_neighbourhood`)
    and ``search`` folders (and their sub-folders one level down). A candidate is taken only when its content
    fingerprint is the recorded one, so a result is never drawn on another slide's tissue: another file of that name
    is passed over; the recorded file itself with other content is :class:`OtherSlideError` (changed since). ``where``
    names the result in the error, which says where the slide was looked for.
    """
    from . import open_slide

    path = record.get("path")
    want = record.get("fingerprint_sha256")
    if not isinstance(path, str) or not path:
        raise InputFileError(f"{where}: it does not say which slide was scored (provenance.slide.path)")
    if not isinstance(want, str) or not want:
        raise InputFileError(f"{where}: provenance.slide.fingerprint_sha256 is missing: the result cannot be tied to "
                             "its slide's content")
    tried, other = [], []
    for cand in _candidates(path, [*near, *search]):
        tried.append(str(cand))
        try:
            slide = open_slide(cand, mpp=mpp)
        except AnonavilaError:
            continue
        if slide.fingerprint() == want:
            return slide
        if os.path.realpath(cand) == os.path.realpath(path):  # the recorded file itself, changed since
            other.append(str(cand))
        slide.close()
    looked = ", ".join(dict.fromkeys([path, *(str(d) for d in [*near, *search])]))
    if other:
        raise OtherSlideError(f"{where}: {', '.join(other)} is not the slide this result was made on (its content "
                             f"changed since: fingerprint differs); score it again, or give the original slide")
    raise InputFileError(f"{where}: its slide {Path(path).name} is not there (moved or renamed?); looked in {looked}. "
                         "Put the slide beside the result folder, or name its folder (CLI: --slides DIR)")
