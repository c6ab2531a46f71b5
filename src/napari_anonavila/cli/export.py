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
    p.add_argument("--slides", type=existing_path, action="append", default=[], metavar="DIR",
                   help="a folder to look for moved slides in (repeatable); found by content, not by path")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from ..errors import InputFileError
    from ..export.bundle import export_all, export_targets
    from ..export.result_folder import open_result

    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    results = {folder: open_result(folder) for folder in args.results}  # every folder checked before writing
    seen: dict[str, Path] = {}
    for folder, result in results.items():
        name = export_targets(args.out, result.slide, formats)["folder"].name
        if name in seen:
            raise InputFileError(f"{seen[name]} and {folder} hold results of slides both named {name!r}; their exports "
                                 "would overwrite each other: export them to separate --out folders")
        seen[name] = folder
    for folder, result in results.items():
        slide = _slide_for(folder, result, args)
        try:
            overlay = (folder / "overlay.png").read_bytes() if (folder / "overlay.png").is_file() else None
            written = export_all(args.out, result, formats=formats, top_k=args.top_k, slide=slide,
                                 overlay_png=overlay, overwrite=args.overwrite)
        finally:
            if slide is not None:
                slide.close()
        print(f"{folder.name}: {written['folder']} (" + ", ".join(p.name for k, p in written.items()
                                                               if k != "folder") + ")")
    return 0


def _slide_for(folder: Path, result, args):
    """The result's slide, found by content (``--slide``, its recorded path, beside the folder, ``--slides``), or
    None with a warning: the report is then written without the patch pictures, and says so here."""
    import sys

    from ..errors import InputFileError
    from ..slide import open_slide
    from ..slide.locate import OtherSlideError, find_slide, result_neighbourhood

    if args.slide is not None:
        slide = open_slide(args.slide)
        if slide.fingerprint() != result.slide_fingerprint:
            slide.close()
            raise InputFileError(f"{args.slide}: its content differs from the slide {folder} was scored on "
                                 f"(fingerprint {result.slide_fingerprint[:12]}...); it was edited or replaced since: "
                                 "score it again, or pass the original with --slide")
        return slide
    try:
        return find_slide(result.slide, where=str(folder), near=result_neighbourhood(folder), search=args.slides)
    except OtherSlideError:
        raise  # a slide edited or replaced since: its pictures would show other tissue
    except InputFileError as err:
        print(f"warning: {err}; the HTML report has no patch pictures", file=sys.stderr)
        return None
