"""Export one slide's result in every format, with a provenance sidecar; check a sidecar on re-import."""

from __future__ import annotations

import datetime as _dt
import json
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

from .._atomic import atomic_dir, atomic_write, check_writable, sweep_partials
from ..errors import InputFileError
from ..provenance import package_versions
from ..result import SlideResult
from ..slide import slide_stem
from .geojson import write_geojson
from .ome_tiff import cell_upsampling, write_heatmap_ome_tiff
from .report import write_report
from .result_folder import write_patch_csv

__all__ = ["FORMATS", "check_provenance", "export_all", "export_targets"]

FORMATS = ("geojson", "csv", "ome-tiff", "html")


def export_targets(out_dir: str | os.PathLike, slide: dict, formats: Sequence[str] = FORMATS) -> dict[str, Path]:
    """Where an export of ``slide`` (its description) goes: ``out_dir/<slide>/``; format -> file path.

    ``"folder"`` maps to that folder; ``<slide>`` is the slide's file name without its slide suffix.
    """
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown export format(s) {sorted(unknown)}; choose from {', '.join(FORMATS)}")
    stem = slide_stem(str(slide.get("path") or "slide"))
    folder = Path(out_dir) / stem
    names = {"geojson": f"{stem}.geojson", "csv": f"{stem}_patches.csv", "ome-tiff": f"{stem}_heatmap.ome.tif",
             "html": f"{stem}_report.html"}
    files = {f: folder / names[f] for f in formats}
    return {"folder": folder, **files, "provenance": folder / f"{stem}.provenance.json"}


def export_all(out_dir: str | os.PathLike, result: SlideResult, *, formats: Sequence[str] = FORMATS, top_k: int = 10,
               regions: Iterable[dict] = (), slide=None, overlay_png: bytes | None = None,
               overwrite: bool = False) -> dict[str, Path]:
    """Write the chosen formats and ``<slide>.provenance.json`` into ``out_dir/<slide>/``; return the paths.

    All or nothing: the set is written into a hidden temporary folder and moved into place in one step, so a
    failure (a missing overlay, a full disk, a kill) leaves no partial export and the earlier one untouched.
    """
    if "html" in formats and overlay_png is None:
        raise ValueError("the HTML report needs the overlay picture (overlay.png of the result)")
    final = export_targets(out_dir, result.slide, formats)
    target = final["folder"]
    check_writable(target, overwrite=overwrite)  # refuse before writing anything
    if target.parent.is_dir():
        sweep_partials(target.parent)  # folders left by killed exports
    with atomic_dir(target) as tmp:
        paths = {k: tmp / v.name for k, v in final.items() if k != "folder"}
        details: dict = {}
        if "geojson" in formats:
            details["geojson"] = write_geojson(paths["geojson"], result, top_k=top_k, regions=regions)
        if "csv" in formats:
            write_patch_csv(paths["csv"], result)
        if "ome-tiff" in formats:
            mpp = result.grid.mpp or result.slide.get("mpp")
            write_heatmap_ome_tiff(paths["ome-tiff"], result.heatmap(), result.patch_size_l0, mpp)
            details["ome-tiff"] = {"pixels_per_cell": cell_upsampling(result.grid.shape_rc), "mpp": mpp}
        if "html" in formats:
            write_report(paths["html"], result, overlay_png=overlay_png, slide=slide, top_k=top_k)
        record = {"exported": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                  "files": {k: final[k].name for k in formats}, "export_settings": details,
                  "review_state": {str(k): v for k, v in sorted(result.review_states().items())},
                  "export_versions": package_versions(), **result.provenance}
        with atomic_write(paths["provenance"], encoding="utf-8") as fh:
            json.dump(record, fh, indent=1, default=str)
    return final


def check_provenance(geojson_path: str | os.PathLike, *, slide_fingerprint: str | None = None,
                     backend_id: str | None = None) -> dict | None:
    """Read the sidecar beside an exported GeoJSON and warn when the slide or the model differ."""
    p = Path(geojson_path)
    sidecar = p.with_name(p.name.removesuffix(".geojson") + ".provenance.json")
    if not sidecar.is_file():
        warnings.warn(f"{p.name}: no provenance sidecar ({sidecar.name}); cannot check slide and model",
                      UserWarning, stacklevel=2)
        return None
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise InputFileError(f"{sidecar}: unreadable provenance sidecar ({err})") from err
    theirs = (record.get("slide") or {}).get("fingerprint_sha256")
    if slide_fingerprint and theirs and theirs != slide_fingerprint:
        warnings.warn(f"{p.name} was exported from another slide ({Path(str(record['slide'].get('path'))).name}, "
                      "different content) than the one open", UserWarning, stacklevel=2)
    model = (record.get("backend") or {}).get("id")
    if backend_id and model and model != backend_id:
        warnings.warn(f"{p.name} was produced by another model ({model}) than the current one ({backend_id})",
                      UserWarning, stacklevel=2)
    return record
