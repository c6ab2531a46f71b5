"""``anonavila export``: score-slide results -> QuPath GeoJSON, CSV, OME-TIFF heatmap, HTML report, provenance."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import existing_path, positive_int

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export score-slide results for QA: QuPath GeoJSON, CSV, OME-TIFF, HTML")
    p.add_argument("results", nargs="+", type=existing_path, metavar="RESULT_DIR",
                   help="folder(s) written by score-slide (patches.csv, summary.json)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--formats", default="geojson,csv,ome-tiff,html",
                   help="comma-separated: geojson, csv, ome-tiff, html (default: all)")
    p.add_argument("--top-k", type=positive_int, default=10, help="top-k patches as QuPath annotations")
    p.add_argument("--slide", type=existing_path, help="the slide, if it moved (for the report's patch pictures)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from ..errors import InputFileError
    from ..export.bundle import export_all, export_targets
    from ..export.records import read_result_dir
    from ..slide import open_slide

    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    tables = {folder: read_result_dir(folder) for folder in args.results}  # every folder checked before writing
    seen: dict[str, Path] = {}
    for folder, table in tables.items():
        name = export_targets(args.out, table.slide, formats)["folder"].name
        if name in seen:
            raise InputFileError(f"{seen[name]} and {folder} hold results of slides both named {name!r}; their exports "
                                 "would overwrite each other: export them to separate --out folders")
        seen[name] = folder
    for folder, table in tables.items():
        slide_path = args.slide or Path(str(table.slide.get("path", "")))
        slide = open_slide(slide_path) if slide_path.is_file() else None
        try:
            _check_same_slide(folder, table, slide)
            overlay = (folder / "overlay.png").read_bytes() if (folder / "overlay.png").is_file() else None
            written = export_all(args.out, table, formats=formats, top_k=args.top_k, slide=slide,
                                 overlay_png=overlay, overwrite=args.overwrite)
        finally:
            if slide is not None:
                slide.close()
        print(f"{folder.name}: {written['folder']} (" + ", ".join(p.name for k, p in written.items()
                                                               if k != "folder") + ")")
    return 0


def _check_same_slide(folder: Path, table, slide) -> None:
    """Refuse to draw a result's pictures from a slide whose pixels are not the ones it scored."""
    from ..errors import InputFileError

    if slide is None:
        return
    scored = ((table.provenance or {}).get("slide") or {}).get("fingerprint_sha256")
    if scored and slide.fingerprint() != scored:
        raise InputFileError(f"{slide.path}: its content differs from the slide {folder} was scored on (fingerprint "
                             f"{scored[:12]}...); it was edited or replaced since: score it again, or pass the "
                             "original with --slide")
