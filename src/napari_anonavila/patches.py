"""Patch folders (the authors' workflow): listing and reading image files, and parsing patch file names."""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .errors import InputFileError

logger = logging.getLogger(__name__)

__all__ = ["IMAGE_SUFFIXES", "PatchName", "iter_image_batches", "list_images", "parse_patch_name", "read_image"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
MAX_PATCH_PIXELS = 8192 * 8192  # checked from the header, before decoding: real patches are 224..2048 px
_NAME = re.compile(r"^(?P<slide>.+)_(?P<x>-?\d+)_(?P<y>-?\d+)_(?P<code>[^_]+)$")


@dataclass(frozen=True)
class PatchName:
    """``{slide_id}_{x}_{y}_{code}.png``: x, y are the patch's top-left level-0 pixel."""

    slide_id: str
    x: int
    y: int
    code: str


def parse_patch_name(name: str) -> PatchName:
    """Parse a patch file name from the end, so slide ids may hold underscores."""
    stem = Path(name).stem if Path(name).suffix.lower() in IMAGE_SUFFIXES else Path(name).name
    m = _NAME.match(stem)
    if not m:
        raise InputFileError(f"patch name {name!r} does not parse as '{{slide_id}}_{{x}}_{{y}}_{{code}}.png'")
    return PatchName(m["slide"], int(m["x"]), int(m["y"]), m["code"])


def list_images(folder: str | os.PathLike, *, recursive: bool = True, order: str = "sorted") -> list[Path]:
    """Image files under ``folder`` (png, jpg, tif); raise if the folder is missing or has none.

    ``order="sorted"`` sorts by path. ``order="walk"`` is the authors' training order: ``os.walk`` from the top,
    each folder's files as the file system lists them (the order their DataLoader shuffles, so that a seeded
    run on the same copy of the files draws their batches).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputFileError(f"{folder}: not a folder")
    if order == "walk":
        files = [Path(root) / f for root, _dirs, names in os.walk(folder) for f in names]
        if not recursive:
            files = [f for f in files if f.parent == folder]
    elif order == "sorted":
        files = sorted(folder.rglob("*") if recursive else folder.glob("*"))
    else:
        raise ValueError(f"unknown file order {order!r}; use 'sorted' or 'walk'")
    files = [p for p in files if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")]
    if not files:
        raise InputFileError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) found")
    return files


def read_image(path: Path) -> Image.Image | None:
    """The image as the authors' datasets open it (PIL, in the file's own mode: the model's transform resizes first
    and converts to RGB after, as theirs does), or None (logged) when the file is not a readable image or is too
    large for a patch; callers count and warn."""
    try:
        with warnings.catch_warnings():  # our own limit below decides, before any pixel is decoded
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)  # reads the header only
        with im:
            w, h = im.size
            if w * h > MAX_PATCH_PIXELS:
                logger.warning("%s: skipped, %d x %d px is too large for a patch (at most %d pixels); cut it into "
                               "patches first", path, w, h, MAX_PATCH_PIXELS)
                return None
            im.load()
            return im
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        logger.warning("%s: skipped, not a readable image (%s)", path, err)
        return None


def iter_image_batches(paths: Sequence[Path], batch_size: int
                       ) -> Iterator[tuple[list[Path], list[Image.Image], list[Path]]]:
    """Yield ``(read_paths, images, skipped_paths)`` per batch of up to ``batch_size`` files."""
    for s in range(0, len(paths), batch_size):
        ok, imgs, skipped = [], [], []
        for p in paths[s : s + batch_size]:
            im = read_image(p)
            if im is None:
                skipped.append(p)
            else:
                ok.append(p)
                imgs.append(im)
        yield ok, imgs, skipped
