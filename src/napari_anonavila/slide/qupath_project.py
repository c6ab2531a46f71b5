"""A QuPath project (``project.qpproj``) as a list of slides: each image entry's file, resolved as QuPath resolves
it: the absolute URI it recorded; when that file is gone (the project and its images moved or copied together), the
image's path relative to where the project was, taken from where the project is now."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath
from urllib.parse import unquote, urlparse

from ..errors import InputFileError

__all__ = ["ProjectImage", "is_qupath_project", "read_qupath_project"]

_MAX_BYTES = 64 << 20  # a project of 10^5 images is a few MB


@dataclass(frozen=True)
class ProjectImage:
    """One image entry: its name in the project and its file (None when neither way finds it)."""

    name: str
    path: Path | None
    uri: str


def is_qupath_project(path: str | os.PathLike) -> bool:
    """A ``.qpproj`` file, or a folder holding ``project.qpproj``."""
    p = Path(path)
    return (p.suffix.lower() == ".qpproj" and p.is_file()) or (p.is_dir() and (p / "project.qpproj").is_file())


def _file_of(uri: str) -> PurePath | None:
    """The file path of a ``file:`` URI (percent-decoded; ``file:/C:/x`` is a Windows path), else None."""
    u = urlparse(uri)
    if u.scheme.lower() != "file":
        return None
    path = unquote(u.path)
    if len(path) >= 3 and path[0] == "/" and path[2] == ":":  # /C:/slides/a.svs
        return PureWindowsPath(path[1:])
    if u.netloc and u.netloc not in ("", "localhost"):  # file://server/share/a.svs
        return PureWindowsPath(f"//{u.netloc}{path}")
    return PurePosixPath(path)


def _uris(builder) -> list[str]:
    """Every ``uri`` (and ``uris``) under a server builder, the nested builders of rotated or sparse images too."""
    out: list[str] = []
    if isinstance(builder, dict):
        for k, v in builder.items():
            if k == "uri" and isinstance(v, str):
                out.append(v)
            elif k == "uris" and isinstance(v, list):
                out += [x for x in v if isinstance(x, str)]
            elif isinstance(v, dict | list):
                out += _uris(v)
    elif isinstance(builder, list):
        for v in builder:
            out += _uris(v)
    return out


def _relative(image: PurePath, old_project_dir: PurePath) -> PurePosixPath | None:
    """``image`` relative to the project's old folder (``..`` where needed); None across path kinds or drives."""
    if type(image) is not type(old_project_dir) or image.drive.lower() != old_project_dir.drive.lower():
        return None
    fold = str.lower if isinstance(image, PureWindowsPath) else str
    a, b = image.parts, old_project_dir.parts
    n = 0
    while n < min(len(a), len(b)) and fold(a[n]) == fold(b[n]):
        n += 1
    return PurePosixPath(*[".."] * (len(b) - n), *a[n:])


def read_qupath_project(path: str | os.PathLike) -> list[ProjectImage]:
    """The image entries of a QuPath project (``.qpproj``, or the folder holding ``project.qpproj``), in its order."""
    p = Path(path)
    if p.is_dir():
        p = p / "project.qpproj"
    try:
        if p.stat().st_size > _MAX_BYTES:
            raise InputFileError(f"{p}: {p.stat().st_size / 2**20:.0f} MB is too large for a QuPath project")
        doc = json.loads(p.read_text(encoding="utf-8"))
    except OSError as err:
        raise InputFileError(f"{p}: cannot read the QuPath project ({err.strerror or err})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputFileError(f"{p}: not a QuPath project (not JSON: {err})") from None
    images = doc.get("images") if isinstance(doc, dict) else None
    if not isinstance(images, list):
        raise InputFileError(f"{p}: not a QuPath project (no 'images' list)")
    old = _file_of(doc.get("uri", "")) if isinstance(doc.get("uri"), str) else None
    here = p.resolve().parent
    out = []
    for i, entry in enumerate(images):
        if not isinstance(entry, dict):
            raise InputFileError(f"{p}: image entry {i + 1} is not an object")
        name = str(entry.get("imageName") or f"image {entry.get('entryID', i + 1)}")
        uris = _uris(entry.get("serverBuilder"))
        files = [f for f in map(_file_of, uris) if f is not None]
        if not files:
            raise InputFileError(f"{p}: image {name!r} has no file URI (found {uris[:2] or 'none'}); only local "
                                 "files can be scored")
        found = None
        for f in files[:1]:  # the image's own file (later URIs belong to the same image's other parts)
            if isinstance(f, PurePosixPath) and Path(f).is_file():
                found = Path(f)
            elif old is not None and (rel := _relative(f, old.parent)) is not None and (here / rel).is_file():
                found = (here / rel).resolve()  # the project moved with its images
        out.append(ProjectImage(name, found, uris[0]))
    return out
