"""CSV tables: the authors' ``{slide}_Ascores.csv`` layout plus our columns, and checked CSV reading."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from .._atomic import atomic_write, check_writable
from .._cells import safe_cell
from ..errors import InputFileError

__all__ = ["read_csv", "read_score_column", "safe_cell", "write_csv"]


def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence], *,
              overwrite: bool = False, text_columns: Sequence[int] | None = None) -> Path:
    """Write a CSV atomically; refuse an existing file unless ``overwrite``. Text cells are made safe for
    spreadsheets (:func:`safe_cell`): a term or slide name can never become a formula. ``text_columns``, when
    given, are the only columns that can hold free text (the others are numbers or fixed words): only those are
    checked, which keeps millions of rows fast."""
    path = check_writable(path, overwrite=overwrite)
    with atomic_write(path, newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow([safe_cell(h) for h in header])
        if text_columns is None:
            w.writerows([safe_cell(c) for c in row] for row in rows)
        else:
            cols = tuple(text_columns)
            for row in rows:
                row = list(row)
                for j in cols:
                    row[j] = safe_cell(row[j])
                w.writerow(row)
    return path


def read_csv(path: str | os.PathLike, required: Sequence[str]) -> list[dict[str, str]]:
    """Rows of a CSV with a header that holds ``required`` columns; InputFileError names what is wrong."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            missing = [c for c in required if c not in header]
            if missing:
                raise InputFileError(f"{path}: missing column(s) {missing}; found {header[:8]}")
            return list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InputFileError(f"{path}: cannot read as CSV ({err})") from err


def read_score_column(path: str | os.PathLike, key: str, score: str) -> list[tuple[str, float]]:
    """(key, score) pairs from a CSV; a non-numeric or NaN score is an error naming its row."""
    out = []
    for i, row in enumerate(read_csv(path, [key, score]), start=2):
        try:
            value = float(row[score])
        except (TypeError, ValueError):
            raise InputFileError(f"{path}: row {i}: {score}={row[score]!r} is not a number") from None
        if not math.isfinite(value):
            raise InputFileError(f"{path}: row {i}: {score} is {row[score].strip()}; scores must be finite numbers")
        out.append((row[key], value))
    return out
