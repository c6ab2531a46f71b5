"""Export one slide's result in every format, with a provenance sidecar; check a sidecar on re-import."""

from __future__ import annotations

import datetime as _dt
import json
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

from .._atomic import atomic_write, check_writable
from ..errors import InputFileError
from ..slide import slide_stem
from .geojson import write_geojson
from .ome_tiff import cell_upsampling, write_heatmap_ome_tiff
from .provenance import package_versions
from .records import PatchTable, write_patch_table
from .report import write_report

__all__ = ["FORMATS", "check_provenance", "export_all", "export_targets"]

FORMATS = ("geojson", "csv", "ome-tiff", "html")


def export_targets(out_dir: str | os.PathLike, slide: dict, formats: Sequence[str] = FORMATS) -> dict[str, Path]:
    """The files an export of ``slide`` (its description) writes into ``out_dir``: format -> path."""
    out, stem = Path(out_dir), slide_stem(str(slide.get("path") or "slide"))
    names = {"geojson": f"{stem}.geojson", "csv": f"{stem}_patches.csv", "ome-tiff": f"{stem}_heatmap.ome.tif",
             "html": f"{stem}_report.html"}
    return {**{f: out / names[f] for f in formats}, "provenance": out / f"{stem}.provenance.json"}


def export_all(out_dir: str | os.PathLike, table: PatchTable, *, formats: Sequence[str] = FORMATS, top_k: int = 10,
               regions: Iterable[dict] = (), slide=None, overlay_png: bytes | None = None,
               overwrite: bool = False) -> dict[str, Path]:
    """Write the chosen formats and ``<stem>.provenance.json`` into ``out_dir``; return the paths written."""
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown export format(s) {sorted(unknown)}; choose from {', '.join(FORMATS)}")
    out = Path(out_dir)
    targets = export_targets(out, table.slide, formats)
    sidecar = targets["provenance"]
    for f in [*formats, "provenance"]:  # refuse before writing anything
        check_writable(targets[f], overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    details: dict = {}
    if "geojson" in formats:
        details["geojson"] = write_geojson(targets["geojson"], table, top_k=top_k, regions=regions, overwrite=True)
        written["geojson"] = targets["geojson"]
    if "csv" in formats:
        written["csv"] = write_patch_table(targets["csv"], table, overwrite=True)
    if "ome-tiff" in formats:
        mpp = (table.provenance.get("grid") or {}).get("mpp") or table.slide.get("mpp")
        written["ome-tiff"] = write_heatmap_ome_tiff(targets["ome-tiff"], table.heatmap(), table.size_l0, mpp,
                                                     overwrite=True)
        details["ome-tiff"] = {"pixels_per_cell": cell_upsampling(table.shape_rc), "mpp": mpp}
    if "html" in formats:
        if overlay_png is None:
            raise ValueError("the HTML report needs the overlay picture (overlay.png of the result)")
        written["html"] = write_report(targets["html"], table, overlay_png=overlay_png, slide=slide, top_k=top_k,
                                       overwrite=True)
    record = {"exported": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "files": {k: v.name for k, v in written.items()}, "export_settings": details,
              "review_state": {str(k): v for k, v in sorted(table.review.items())},
              "export_versions": package_versions(), **table.provenance}
    with atomic_write(sidecar, encoding="utf-8") as fh:
        json.dump(record, fh, indent=1, default=str)
    written["provenance"] = sidecar
    return written


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
