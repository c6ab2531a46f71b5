"""Cohort bookkeeping: which slides, where their outputs go, which are already finished, and the cohort table."""

from __future__ import annotations

import glob
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import InputFileError
from ..maps import SLIDE_SCORE_NAMES

__all__ = ["CALIBRATED_COLUMNS", "COHORT_COLUMNS", "BatchSettings", "CohortEntry", "cohort_row", "expand_inputs",
           "finished", "merge_cohort", "read_cohort", "slide_out_dirs"]

CALIBRATED_COLUMNS = ["n_significant", "area_significant_mm2", "max_z", "p_slide"]
COHORT_COLUMNS = ["slide", "status", "error", "n_patches", *SLIDE_SCORE_NAMES, *CALIBRATED_COLUMNS, "seconds",
                  "out_dir", "fingerprint_sha256"]


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
    regions: dict | None = None  # RegionSources as a dict: ROI and exclusion files or per-slide folders, classes, rule

    def to_dict(self) -> dict:
        return asdict(self)

    def slide_regions(self, slide: Path, dimensions_xy):
        """The ScoreRegions of ``slide`` (None without regions)."""
        if not self.regions:
            return None
        from ..annotations.sources import RegionSources

        return RegionSources.from_dict(self.regions).for_slide(slide, dimensions_xy)


def expand_inputs(items: list[str]) -> list[Path]:
    """Slides from paths, glob patterns, list files (``.txt``/``.csv``: one path a line, or a ``slide`` column) and
    QuPath projects (``project.qpproj`` or its folder: its images, found as QuPath finds them)."""
    out: list[Path] = []
    from ..slide.qupath_project import is_qupath_project, read_qupath_project

    for item in items:
        p = Path(item)
        if is_qupath_project(p):
            out += _project_slides(p, read_qupath_project(p))
        elif p.suffix.lower() in (".txt", ".csv", ".lst") and p.is_file():
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


def _project_slides(path: Path, images) -> list[Path]:
    """The files of a QuPath project's images; a project with images that cannot be found is refused, naming them."""
    missing = [im for im in images if im.path is None]
    if missing:
        named = "; ".join(f"{im.name} ({im.uri})" for im in missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise InputFileError(f"{path}: {len(missing)} of {len(images)} project images not found, at the recorded "
                             f"place or relative to the project: {named}. Open the project in QuPath to update "
                             "the image paths, or move the images back")
    return [im.path for im in images]


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


def finished(out_dir: Path, *, slide_fingerprint: str, checkpoint_sha: str, settings: BatchSettings):
    """The complete result in ``out_dir`` for this slide content, model and settings, every output verified against
    the record in its ``summary.json``; else None (nothing there, another slide, model or settings, or a damaged or
    partly deleted folder: scored again)."""
    from ..errors import InputFileError
    from ..export.result_folder import open_result

    if not (out_dir / "summary.json").is_file():
        return None
    try:
        result = open_result(out_dir, verify=True)
    except InputFileError:
        return None
    prov = result.provenance
    same = (result.slide_fingerprint == slide_fingerprint and (prov.get("checkpoint") or {}).get("sha256") ==
            checkpoint_sha and prov.get("batch_settings") == settings.to_dict())
    if same and settings.regions:  # the annotation files' content, not only their names
        from ..annotations import ScoreRegions
        from ..annotations.sources import file_for_slide
        from ..userfiles import sha256_file

        recorded = ScoreRegions.file_hashes(prov.get("regions"))
        slide = Path((result.slide or {}).get("path", ""))
        found = {sha256_file(f) for src in (*settings.regions.get("roi", ()), *settings.regions.get("exclude", ()))
                 if (f := file_for_slide(src, slide)) is not None}
        same = found == recorded  # a file edited, added or removed since: score again
    return result if same else None


def cohort_row(slide: Path, status: str, *, error: str = "", result=None, seconds: float = 0.0,
               out_dir: Path | None = None, fingerprint: str = "") -> dict:
    """A row of ``cohort.csv``: the slide (absolute path), what became of it, and its numbers from ``result``
    (a :class:`~napari_anonavila.result.SlideResult`)."""
    scores = result.slide_scores() if result is not None else {}
    cal = result.calibrated_summary() if result is not None else {}

    def cell(v):
        return "" if v is None or (isinstance(v, float) and v != v) else v

    return {"slide": os.path.abspath(slide), "status": status, "error": error.replace("\n", " ")[:500],
            "n_patches": len(result) if result is not None else "",
            **{k: cell(scores.get(k)) for k in SLIDE_SCORE_NAMES},
            **{k: cell(cal.get(k)) for k in CALIBRATED_COLUMNS},
            "seconds": round(seconds, 2), "out_dir": os.path.abspath(out_dir) if out_dir else "",
            "fingerprint_sha256": (result.slide_fingerprint if result is not None else fingerprint) or ""}


def merge_cohort(previous: list[dict], rows: list[dict]) -> list[dict]:
    """Rows of an earlier run into the same folder, followed by this run's: a slide of this run (by content
    fingerprint, else by path) replaces its earlier row; earlier rows of other slides stay unless their result
    folder is gone."""
    def key(r: dict) -> str:
        return r.get("fingerprint_sha256") or os.path.realpath(r["slide"])

    now = {key(r) for r in rows}
    kept = [r for r in previous if key(r) not in now and (r.get("status") == "failed" or (
        r.get("out_dir") and (Path(r["out_dir"]) / "summary.json").is_file()))]
    return [{c: r.get(c, "") for c in COHORT_COLUMNS} for r in kept] + rows


NOT_SCORED = "not scored"  # the status of a QuPath project's image that has no result yet


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

    @property
    def can_open(self) -> bool:
        """A result to show, or (a QuPath project's image, not scored yet) the slide itself."""
        return self.has_result or self.status == NOT_SCORED


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
    what they are ranked by: significant patches then max z (a calibrated model), else the eroded maximum. A QuPath
    project lists its images in the project's order, not scored yet (those not found last, with the reason).

    Result folders are looked up beside the table, so a cohort folder that was moved or copied still opens.
    """
    from ..export.tables import read_csv
    from ..slide.qupath_project import is_qupath_project, read_qupath_project

    path = Path(path)
    if is_qupath_project(path):
        images = read_qupath_project(path)
        empty = dict.fromkeys(["n_patches", *SLIDE_SCORE_NAMES, *CALIBRATED_COLUMNS])
        found = [CohortEntry(str(im.path), NOT_SCORED, "", None, dict(empty)) for im in images if im.path]
        lost = [CohortEntry(im.name, "not found", f"not at {im.uri} nor beside the project", None, dict(empty))
                for im in images if im.path is None]
        return found + lost, "the QuPath project's order (not scored yet)"
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
