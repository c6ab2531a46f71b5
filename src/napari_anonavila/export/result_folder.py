"""A result's persisted form: the folder ``score-slide`` and ``batch`` write, and :func:`open_result` reads back.

Files: ``patches.npz`` (every column exactly, numbers as computed: what a reopened result is read from),
``patches.csv`` (the same rows for people and spreadsheets), ``heatmap.npy``, ``overlay.png`` and ``summary.json``
(slide scores, calibrated numbers, the top-k, provenance, and the size and SHA-256 of every other output). They are
written into a hidden folder beside the result folder and take the place of the old ones in one step, so a reader
finds either the old set or the new one, never a mix; ``summary.json`` marks a complete result.

Folders written before ``patches.npz`` existed are read from ``patches.csv``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
import uuid
from itertools import repeat
from pathlib import Path

import numpy as np

from .._atomic import check_writable, commit_dir, real_dir, staging_dir
from ..calibration import FDR
from ..errors import InputFileError
from ..grid import PatchGrid
from ..maps.heatmap import MAX_CELLS
from ..result import PatchTerms, SlideResult
from ..reviews import REVIEW_STATES, PatchKey, ReviewMarks, read_reviews
from .overlay import overlay_png
from .tables import write_csv

__all__ = ["COLUMNS_FILE", "OUTPUT_FILES", "PATCH_COLUMNS", "open_result", "summary_of", "write_patch_csv",
           "write_result_folder"]

COLUMNS_FILE = "patches.npz"
REGIONS_FILE = "regions.geojson"  # the ROI and exclusions a result was scored with, to draw them when it reopens
OUTPUT_FILES = ("patches.csv", COLUMNS_FILE, "heatmap.npy", "overlay.png", REGIONS_FILE, "summary.json")
RESULT_FORMAT = "napari-anonavila result 2"
PATCH_COLUMNS = ["x_l0", "y_l0", "size_l0", "row", "col", "d_normal", "d_abnormal", "score", "rank", "top_normal",
                 "top_abnormal", "review", "z", "p_normal", "significant"]
_MAX_SIZE_L0 = 1 << 20  # a patch side in level-0 pixels: no slide is larger than this
_MAX_ORIGIN = 1 << 31


# -- writing -----------------------------------------------------------------------------------------------
def write_patch_csv(path: str | os.PathLike, result: SlideResult, *, overwrite: bool = False) -> Path:
    """The patch rows as CSV: level-0 position, grid cell, distances, score, rank, terms, review state, and the
    calibrated z, p_normal and significant (empty when uncalibrated)."""
    return write_csv(path, PATCH_COLUMNS, _patch_rows(result), overwrite=overwrite, text_columns=(9, 10))


def _patch_rows(result: SlideResult, chunk: int = 1 << 16):
    """The rows of ``patches.csv``, made a chunk at a time from Python numbers (not NumPy scalars): 2 x 10^6 rows
    in seconds, with memory bounded by the chunk."""
    n, p, t, rank = len(result), result.patch_size_l0, result.terms, result.rank
    review = result.review_states()
    sig = result.significant() if result.calibrated else None

    def f64(v, a: int, b: int) -> list[float]:
        return np.asarray(v[a:b], np.float64).tolist()

    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        normal, abnormal = t.columns(a, b)
        if sig is not None:
            calibrated = ((f"{z:.6g}", f"{q:.6g}", int(s)) for z, q, s in
                          zip(f64(result.z, a, b), f64(result.p_normal, a, b), sig[a:b].tolist(), strict=True))
        else:
            calibrated = repeat(("", "", ""), b - a)
        for i, (x, y), (r, c), dn, da, sc, k, tn, ta, cal in zip(
                range(a, b), result.xy_l0[a:b].tolist(), result.grid.cells_rc[a:b].tolist(), f64(result.d_normal, a, b),
                f64(result.d_abnormal, a, b), f64(result.score, a, b), rank[a:b].tolist(), normal, abnormal,
                calibrated, strict=True):
            yield (int(x), int(y), p, int(r), int(c), f"{dn:.8g}", f"{da:.8g}", f"{sc:.8g}", k, tn, ta,
                   review.get(i, "unreviewed"), *cal)


def _write_columns(path: Path, result: SlideResult) -> None:
    t = result.terms
    cols = {"row": result.grid.cells_rc[:, 0], "col": result.grid.cells_rc[:, 1], "tissue": result.grid.tissue,
            "d_normal": result.d_normal, "d_abnormal": result.d_abnormal, "score": result.score,
            "normal_idx": t.normal_idx, "normal_w": t.normal_w, "abnormal_idx": t.abnormal_idx,
            "abnormal_w": t.abnormal_w, "normal_names": np.array(t.normal_names, dtype=str),
            "abnormal_names": np.array(t.abnormal_names, dtype=str)}
    if result.calibrated:
        cols.update(z=result.z, p_normal=result.p_normal)
    with open(path, "wb") as fh:
        np.savez(fh, **{k: np.ascontiguousarray(v) for k, v in cols.items()})


def summary_of(result: SlideResult, *, top_k: int = 10, extra: dict | None = None) -> dict:
    """What ``summary.json`` says of a result (without the outputs' record, which the writer adds)."""
    g = result.geometry
    xy, normal_abnormal = result.xy_l0, [result.explain(int(i)) for i in result.top_k(top_k)]
    return {
        "format": RESULT_FORMAT,
        "slide_scores": result.slide_scores(),
        "calibrated": result.calibrated_summary(),
        "fdr": result.fdr,
        "n_patches": len(result),
        "heatmap": {"file": "heatmap.npy", "shape_rc": list(result.grid.shape_rc), "cell_size_l0": g.patch_size_l0,
                    "origin_xy_l0": list(g.origin_xy_l0), "napari_scale": list(g.napari_scale),
                    "napari_translate": list(g.napari_translate)},
        "top_k": [{"rank": r + 1, "x_l0": int(xy[i, 0]), "y_l0": int(xy[i, 1]), "score": float(result.score[i]),
                   "top_normal": terms[0], "top_abnormal": terms[1],
                   **({"z": float(result.z[i]), "p_normal": float(result.p_normal[i])} if result.calibrated else {})}
                  for r, (i, terms) in enumerate(zip(result.top_k(top_k), normal_abnormal, strict=True))],
        "timings_s": result.timings,
        "from_embedding_cache": result.from_cache,
        "n_from_embedding_cache": result.n_from_cache,
        "provenance": {**result.provenance, "slide": result.slide},
        **(extra or {}),
    }


def write_result_folder(out_dir: str | os.PathLike, result: SlideResult, slide, *, thumbnail=None,
                        overwrite: bool = False, top_k: int = 10, extra: dict | None = None, regions=None) -> dict:
    """Write ``result`` into ``out_dir`` as one set (``OUTPUT_FILES``); return the summary. ``slide`` (open) gives
    the overlay's thumbnail (or ``thumbnail``: (image, downsample)); ``regions`` (ScoreRegions), the ROI and
    exclusions it was scored with, go to ``regions.geojson``. Refuses a complete result unless ``overwrite``.
    The result then knows its folder."""
    out = real_dir(out_dir)  # a symbolic link: its target, where the outputs are committed
    check_writable(out / "summary.json", overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    summary = summary_of(result, top_k=top_k, extra=extra)
    picture = overlay_png(result, slide, thumbnail, top_k)
    staged = staging_dir(out)
    try:
        write_patch_csv(staged / "patches.csv", result, overwrite=True)
        _write_columns(staged / COLUMNS_FILE, result)
        with open(staged / "heatmap.npy", "wb") as fh:
            np.save(fh, result.heatmap().astype(np.float32))
        (staged / "overlay.png").write_bytes(picture)
        if regions:
            write_regions(staged / REGIONS_FILE, regions)
        summary["outputs"] = {name: _file_record(staged / name) for name in OUTPUT_FILES[:-1]
                              if (staged / name).is_file()}
        with open(staged / "summary.json", "w", encoding="utf-8") as fh:
            json.dump(_finite_or_none(summary), fh, indent=1, default=_json_default, allow_nan=False)
        for name in OUTPUT_FILES:
            if (staged / name).is_file():
                _fsync(staged / name)
        commit_dir(out, staged, OUTPUT_FILES)  # all at once: the old set or the new, never a mix
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    result.folder = out
    return summary


def write_regions(path: Path, regions) -> None:
    """The ROI and exclusions as QuPath annotations (classified ``ROI: <class>`` / ``Exclusion: <class>``), exact."""
    import shapely

    from .geojson import write_features

    colours = {"ROI": [0, 200, 0], "Exclusion": [230, 60, 60]}

    def features():
        for role, sets in (("ROI", [regions.roi] if regions.roi is not None else []), ("Exclusion", regions.exclude)):
            for rs in sets:
                for r in rs.regions:
                    name = f"{role}: {r.cls}" if r.cls else role
                    yield {"type": "Feature", "id": str(uuid.uuid4()), "geometry": shapely.geometry.mapping(r.geometry),
                           "properties": {"objectType": "annotation", "name": name,
                                          "classification": {"name": name, "color": colours[role]},
                                          "metadata": {"source": rs.source}}}

    write_features(path, features(), overwrite=True)


def _file_record(path: Path) -> dict:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return {"bytes": path.stat().st_size, "sha256": h.hexdigest()}


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _finite_or_none(obj):
    """NaN and infinities become null, so the summary is strict JSON (an empty slide has NaN scores)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_none(v) for v in obj]
    return obj


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


# -- reading -----------------------------------------------------------------------------------------------
def open_result(folder: str | os.PathLike, *, verify: bool = False) -> SlideResult:
    """Read a result folder back as the :class:`~napari_anonavila.result.SlideResult` it was written from (no model,
    no torch). The folder is checked whole first; anything wrong is one :class:`InputFileError` naming the file and
    the field. Every output must be there at its recorded size; ``verify`` also checks each one's SHA-256."""
    folder = Path(folder)
    summary = _read_summary(folder)
    _check_outputs(folder, summary, hashes=verify)
    head = _header(folder, summary)
    cols = (_read_columns(folder, summary) if (folder / COLUMNS_FILE).is_file()
            else _read_csv_columns(folder / "patches.csv", head["size"], bool(head["cal"].get("calibrated"))))
    try:
        cells = np.stack([cols["row"], cols["col"]], axis=1).astype(np.int64)
        if len(cells) and (cells.min() < 0 or (cells >= np.array(head["shape"])).any()):
            raise ValueError(f"patch cells fall outside the heatmap shape {list(head['shape'])}")
        grid = PatchGrid(head["size"], head["shape"], cells, cols["tissue"], head["origin"], head["mpp"])
        nan = np.full(len(cells), np.nan)
        result = SlideResult(head["slide"], grid, cols["d_normal"], cols["d_abnormal"], cols["score"], cols["terms"],
                             head["mode"], cols.get("z", nan), cols.get("p_normal", nan), head["cal"], head["prov"],
                             head["fdr"], timings=summary.get("timings_s") or {},
                             from_cache=bool(summary.get("from_embedding_cache")),
                             n_from_cache=int(summary.get("n_from_embedding_cache") or 0), folder=folder)
        result.heatmap()  # two patches in one cell is an error here
    except (KeyError, TypeError, ValueError) as err:
        raise InputFileError(f"{folder}: damaged score-slide result ({err})") from err
    _check_agrees(folder, result, summary)
    marks = read_reviews(folder, slide_fingerprint=result.slide_fingerprint)
    result.marks = marks if marks is not None else cols.get("marks", ReviewMarks())
    return result


def _header(folder: Path, summary: dict) -> dict:
    """What ``summary.json`` says of the grid, the slide and the calibration, every field checked."""
    try:
        prov = summary.get("provenance") or {}
        if not isinstance(prov, dict):
            raise ValueError("provenance is not an object")
        slide = prov.get("slide")
        if not isinstance(slide, dict):
            raise ValueError("provenance.slide is not an object")
        if not isinstance(slide.get("path"), str) or not slide["path"].strip():
            raise ValueError(f"provenance.slide.path {slide.get('path')!r} is not a file path")
        if not isinstance(slide.get("fingerprint_sha256", ""), str):
            raise ValueError("provenance.slide.fingerprint_sha256 is not text")
        heat = summary["heatmap"]
        shape = tuple(_int(v, "heatmap.shape_rc", 0, MAX_CELLS) for v in heat["shape_rc"])
        if len(shape) != 2 or shape[0] * shape[1] > MAX_CELLS:
            raise ValueError(f"heatmap.shape_rc {list(shape)} is beyond any slide ({MAX_CELLS:,} cells at most)")
        origin = tuple(_int(v, "heatmap.origin_xy_l0", -_MAX_ORIGIN, _MAX_ORIGIN)
                       for v in heat.get("origin_xy_l0", (0, 0)))
        if len(origin) != 2:
            raise ValueError("heatmap.origin_xy_l0 is not (x, y)")
        grid_info = prov.get("grid") or {}
        if not isinstance(grid_info, dict):
            raise ValueError("provenance.grid is not an object")
        mpp = grid_info.get("mpp")
        if mpp is not None and not (isinstance(mpp, (int, float)) and math.isfinite(mpp) and mpp > 0):
            raise ValueError(f"provenance.grid.mpp {mpp!r} is not a positive number")
        cal = summary.get("calibrated") or {"calibrated": False}
        if not isinstance(cal, dict):
            raise ValueError("calibrated is not an object")
        return {"prov": prov, "slide": slide, "size": _int(heat["cell_size_l0"], "heatmap.cell_size_l0", 1,
                                                              _MAX_SIZE_L0),
                "shape": shape, "origin": origin, "mpp": float(mpp) if mpp else None, "cal": cal,
                "mode": str(prov.get("scoring_mode") or "sum"),
                "fdr": float(summary.get("fdr") or cal.get("fdr") or FDR)}
    except (KeyError, TypeError, ValueError, OverflowError) as err:
        raise InputFileError(f"{folder / 'summary.json'}: damaged score-slide result ({type(err).__name__}: {err})"
                             ) from err


def _check_outputs(folder: Path, summary: dict, *, hashes: bool) -> None:
    """The outputs ``summary.json`` records are all there, as big as they were written (and with ``hashes``, byte
    for byte the same); a folder written before the record is taken as it is."""
    record = summary.get("outputs")
    if record is None:
        return
    if not isinstance(record, dict):
        raise InputFileError(f"{folder / 'summary.json'}: damaged score-slide result (outputs is not an object)")
    for name, want in record.items():
        path = folder / str(name)
        if str(name) not in OUTPUT_FILES or not isinstance(want, dict):
            raise InputFileError(f"{folder / 'summary.json'}: damaged score-slide result (outputs.{name})")
        if not path.is_file():
            raise InputFileError(f"{path}: missing; the result is incomplete: score the slide again")
        if path.stat().st_size != want.get("bytes") or (hashes and _file_record(path)["sha256"] != want.get("sha256")):
            raise InputFileError(f"{path}: changed since the result was written (its size or SHA-256 differs from "
                                 "summary.json): score the slide again")


def _read_summary(folder: Path) -> dict:
    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"),
                             parse_constant=_no_constant)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise InputFileError(f"{folder}: not a score-slide result folder (summary.json: {err})") from err
    if not isinstance(summary, dict):
        raise InputFileError(f"{folder}/summary.json: not a JSON object")
    return summary


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _int(value, field: str, lo: int, hi: int) -> int:
    """An integer in [lo, hi) from JSON, or ValueError naming the field (1e400, 1e300, 'x', true are refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{field} {value!r} is not a number")
    if not math.isfinite(value) or value != int(value) or not lo <= value < hi:
        raise ValueError(f"{field} {value!r} is not an integer in {lo}..{hi - 1}")
    return int(value)


def _read_columns(folder: Path, summary: dict) -> dict:
    """The exact columns of ``patches.npz``, checked against the record of it in ``summary.json``."""
    path = folder / COLUMNS_FILE
    record = (summary.get("outputs") or {}).get(COLUMNS_FILE) if isinstance(summary.get("outputs"), dict) else None
    if isinstance(record, dict) and record.get("sha256") and _file_record(path)["sha256"] != record["sha256"]:
        raise InputFileError(f"{path}: changed since the result was written (SHA-256 differs from summary.json)")
    try:
        with np.load(path, allow_pickle=False) as z:
            cols = {k: z[k] for k in z.files}
        n = len(cols["score"])
        for k in ("row", "col", "tissue", "d_normal", "d_abnormal", "score", "z", "p_normal"):
            if k in cols and cols[k].shape != (n,):
                raise ValueError(f"column {k} has shape {cols[k].shape}, expected ({n},)")
        for k in ("d_normal", "d_abnormal", "score", "z", "p_normal"):
            if k in cols and not np.isfinite(cols[k]).all():
                raise ValueError(f"column {k} holds NaN or infinite values")
        if "p_normal" in cols and not ((cols["p_normal"] > 0) & (cols["p_normal"] <= 1)).all():
            raise ValueError("p_normal must lie in (0, 1]")
        cols["terms"] = PatchTerms(tuple(str(s) for s in cols.pop("normal_names")),
                                   tuple(str(s) for s in cols.pop("abnormal_names")), cols.pop("normal_idx"),
                                   cols.pop("normal_w"), cols.pop("abnormal_idx"), cols.pop("abnormal_w"))
    except InputFileError:
        raise
    except (OSError, KeyError, ValueError, TypeError, EOFError) as err:
        raise InputFileError(f"{path}: damaged result columns ({type(err).__name__}: {err})") from err
    return cols


def _read_csv_columns(path: Path, size_l0: int, calibrated: bool) -> dict:
    """The columns of ``patches.csv`` (a result written before ``patches.npz``), read column by column."""
    numeric = ["x_l0", "y_l0", "size_l0", "row", "col", "d_normal", "d_abnormal", "score"]
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, [])
            missing = [c for c in [*numeric, "top_normal", "top_abnormal"] if c not in header]
            if missing:
                raise InputFileError(f"{path}: missing column(s) {missing}; found {header[:8]}")
            at = {c: i for i, c in enumerate(header)}
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InputFileError(f"{path}: cannot read as CSV ({err})") from err
    try:
        if any(len(r) != len(header) for r in rows):
            raise ValueError("a row has another number of cells than the header")
        cols = {c: np.array([r[at[c]] for r in rows], dtype=np.float64) for c in numeric}
        if not all(np.isfinite(v).all() for v in cols.values()):
            raise ValueError("a numeric column holds NaN or inf")
        if rows and not (cols["size_l0"] == size_l0).all():
            raise ValueError(f"size_l0 differs from the heatmap's cell size {size_l0}")
        out = {k: cols[k] for k in ("d_normal", "d_abnormal", "score")}
        out.update(row=cols["row"].astype(np.int64), col=cols["col"].astype(np.int64), tissue=np.ones(len(rows)))
        out["terms"] = PatchTerms.from_strings([r[at["top_normal"]] for r in rows],
                                               [r[at["top_abnormal"]] for r in rows])
        if calibrated and rows:
            out["z"] = np.array([r[at["z"]] for r in rows], dtype=np.float64)
            out["p_normal"] = np.array([r[at["p_normal"]] for r in rows], dtype=np.float64)
            if not (np.isfinite(out["z"]).all() and ((out["p_normal"] > 0) & (out["p_normal"] <= 1)).all()):
                raise ValueError("z must be finite and p_normal in (0, 1]")
        if "review" in at:  # review marks of the oldest folders, before reviews.json
            marks = ReviewMarks()
            for r, x, y in zip(rows, cols["x_l0"], cols["y_l0"], strict=True):
                if r[at["review"]] in REVIEW_STATES[1:]:
                    marks.set([PatchKey(int(x), int(y), size_l0)], r[at["review"]])
            out["marks"] = marks
    except (KeyError, ValueError, TypeError, IndexError, OverflowError) as err:
        raise InputFileError(f"{path}: damaged score-slide result ({type(err).__name__}: {err})") from err
    return out


def _check_agrees(folder: Path, result: SlideResult, summary: dict) -> None:
    """The slide scores ``summary.json`` states are the ones its patches give (else one of the two was changed)."""
    stated = summary.get("slide_scores") or {}
    now = result.slide_scores()
    for k, v in now.items():
        s = stated.get(k)
        same = (s is None and not math.isfinite(v)) or (isinstance(s, (int, float)) and math.isclose(
            s, v, rel_tol=1e-6, abs_tol=1e-12))
        if not same:
            raise InputFileError(f"{folder}: summary.json says slide score {k} = {s!r}, but its patches give {v:.8g}: "
                                 "the folder was changed after it was written; score the slide again")
    if not result.slide_fingerprint:
        raise InputFileError(f"{folder / 'summary.json'}: provenance.slide.fingerprint_sha256 is missing or empty: "
                             "the result cannot be tied to its slide's content")
