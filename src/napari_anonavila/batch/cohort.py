"""Cohort bookkeeping: which slides, where their outputs go, which are already finished, and the cohort table."""

from __future__ import annotations

import glob
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import InputFileError
from ..maps import SLIDE_SCORE_NAMES

__all__ = ["CALIBRATED_COLUMNS", "COHORT_COLUMNS", "BatchSettings", "CohortEntry", "cohort_row", "expand_inputs",
           "finished", "read_cohort", "slide_out_dirs"]

CALIBRATED_COLUMNS = ["n_significant", "area_significant_mm2", "max_z", "p_slide"]
COHORT_COLUMNS = ["slide", "status", "error", "n_patches", *SLIDE_SCORE_NAMES, *CALIBRATED_COLUMNS, "seconds",
                  "out_dir"]


@dataclass(frozen=True)
class BatchSettings:
    """What determines a slide's result besides the slide and the model; part of the resume check."""

    patch_um: float | None = None
    patch_px: int | None = None
    min_tissue: float = 0.25
    mode: str | None = None
    batch_size: int = 32
    mpp: float | None = None
    precision: str = "float32"

    def to_dict(self) -> dict:
        return asdict(self)


def expand_inputs(items: list[str]) -> list[Path]:
    """Slides from paths, glob patterns, and list files (``.txt``/``.csv``: one path a line, or a ``slide`` column)."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.suffix.lower() in (".txt", ".csv", ".lst") and p.is_file():
            out += _read_list(p)
        elif any(c in item for c in "*?["):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise InputFileError(f"{item}: the pattern matches no file")
            out += [Path(m) for m in matches]
        else:
            out.append(p)
    seen, unique = set(), []
    for p in out:
        key = os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    if not unique:
        raise InputFileError("no slides given")
    return unique


def _read_list(path: Path) -> list[Path]:
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8-sig").splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if path.suffix.lower() == ".csv" and lines and "," in lines[0]:
        header = [h.strip() for h in lines[0].split(",")]
        if "slide" not in header:
            raise InputFileError(f"{path}: a CSV list needs a 'slide' column; found {header}")
        col = header.index("slide")
        lines = [ln.split(",")[col].strip() for ln in lines[1:]]
    elif lines and lines[0].lower() == "slide":
        lines = lines[1:]
    base = path.parent
    return [Path(ln) if Path(ln).is_absolute() else base / ln for ln in lines]


def slide_out_dirs(out: Path, slides: list[Path]) -> dict[Path, Path]:
    """Each slide's result folder ``out/<slide name without its suffix>``; colliding names are an error."""
    from ..slide import unique_stems

    stems = unique_stems(slides)
    if "cohort" in stems:  # would sit beside cohort.csv: still unambiguous, but confusing
        raise InputFileError(f"{stems['cohort']}: a slide named 'cohort' clashes with the cohort table; rename it")
    return {p: out / s for s, p in stems.items()}


def finished(out_dir: Path, *, slide_fingerprint: str, checkpoint_sha: str, settings: BatchSettings) -> bool:
    """True when ``out_dir`` holds a complete result for this slide content, model and settings."""
    try:
        summary = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    prov = summary.get("provenance") or {}
    return ((prov.get("slide") or {}).get("fingerprint_sha256") == slide_fingerprint
            and (prov.get("checkpoint") or {}).get("sha256") == checkpoint_sha
            and summary.get("batch_settings") == settings.to_dict())


def cohort_row(slide: Path, status: str, *, error: str = "", summary: dict | None = None, seconds: float = 0.0,
               out_dir: Path | None = None) -> dict:
    scores = (summary or {}).get("slide_scores") or {}
    cal = (summary or {}).get("calibrated") or {}
    return {"slide": str(slide), "status": status, "error": error.replace("\n", " ")[:500],
            "n_patches": (summary or {}).get("n_patches", ""),
            **{k: "" if scores.get(k) is None else scores[k] for k in SLIDE_SCORE_NAMES},
            **{k: "" if cal.get(k) is None else cal[k] for k in CALIBRATED_COLUMNS},
            "seconds": round(seconds, 2), "out_dir": str(out_dir or "")}


@dataclass(frozen=True)
class CohortEntry:
    """One slide of a cohort table, as the cohort browser lists it."""

    slide: str
    status: str  # ok, skipped (an earlier run's result), failed
    error: str
    result_dir: Path | None  # the slide's result folder (beside cohort.csv), None when it holds no result
    numbers: dict  # n_patches, slide scores and calibrated columns; None where empty

    @property
    def has_result(self) -> bool:
        return self.result_dir is not None


def _number(text: str):
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None
    return v if v == v else None  # NaN counts as empty


def _desc(v: float | None) -> float:
    """Sort key: larger first, empty last."""
    return float("inf") if v is None else -v


def read_cohort(path: str | os.PathLike) -> tuple[list[CohortEntry], str]:
    """The slides of ``cohort.csv`` (or of the batch folder holding it), most anomalous first, failures last; and
    what they are ranked by: significant patches then max z (a calibrated model), else the eroded maximum.

    Result folders are looked up beside the table, so a cohort folder that was moved or copied still opens.
    """
    from ..export.tables import read_csv

    path = Path(path)
    table = path / "cohort.csv" if path.is_dir() else path
    rows = read_csv(table, ["slide", "status", "out_dir"])
    numeric = ["n_patches", *SLIDE_SCORE_NAMES, *CALIBRATED_COLUMNS]
    entries = []
    for r in rows:
        result = table.parent / Path(r["out_dir"]).name if r.get("out_dir") else None
        has = result is not None and r["status"] in ("ok", "skipped") and (result / "summary.json").is_file()
        entries.append(CohortEntry(r["slide"], r["status"], r.get("error", ""), result if has else None,
                                   {k: _number(r.get(k, "")) for k in numeric}))
    calibrated = any(e.numbers["max_z"] is not None for e in entries)
    if calibrated:
        by = "significant patches (FDR 5%), then max z"

        def key(e):
            return (_desc(e.numbers["n_significant"]), _desc(e.numbers["max_z"]))
    else:
        by = "eroded maximum score (uncalibrated model)"

        def key(e):
            return (_desc(e.numbers["max_eroded"]),)
    ranked = sorted((e for e in entries if e.has_result), key=key)
    return ranked + [e for e in entries if not e.has_result], by
