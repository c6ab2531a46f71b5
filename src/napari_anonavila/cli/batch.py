"""``anonavila batch``: score a cohort on a dask cluster (local by default), resumable, failure-isolated."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..options import PRECISIONS
from ._common import existing_path, model_path, positive_int
from ._regions import add_region_args, region_sources
from .slides import _grid_args

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("batch", help="score many slides on a dask cluster; resumable; writes cohort.csv")
    p.add_argument("slides", nargs="+", metavar="SLIDE_OR_GLOB_OR_LIST",
                   help="slide paths, glob patterns ('data/**/*.svs'), or list files (.txt/.csv, one path a line)")
    p.add_argument("--model", required=True, type=model_path,
                   help="checkpoint: ours (.safetensors) or the authors' (.pth)")
    p.add_argument("--precision", default="float32", choices=("auto", *PRECISIONS),
                   help="encoder precision (default: float32; auto: by the hardware)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--scheduler", metavar="ADDRESS", help="an existing dask scheduler (default: a local cluster)")
    p.add_argument("--n-workers", type=positive_int,
                   help="local dask worker processes (default: one per GPU, else half the cores)")
    p.add_argument("--retries", type=int, default=2, help="retries of a slide after a transient failure")
    p.add_argument("--labels", type=existing_path, help="CSV slide_id,label: runs the paper's slide-level evaluation")
    p.add_argument("--mode", choices=["sum", "max", "l2", "zero_shot"], default=None)
    p.add_argument("--overwrite", action="store_true",
                   help="replace a complete result in --out that belongs to another slide of the same name")
    _grid_args(p)
    add_region_args(p)
    p.set_defaults(func=_batch)


def _batch(args: argparse.Namespace) -> int:
    import sys

    from tqdm import tqdm

    from ..batch import BatchSettings, expand_inputs, run_batch
    from ..export.tables import read_csv
    from .evaluate import parse_label

    if args.roi_box:
        raise ValueError("--roi-box applies to one slide; it is not available in batch runs")
    slides = expand_inputs(args.slides)
    labels = None
    if args.labels:
        labels = {r["slide_id"]: parse_label(r["label"], f"{args.labels}: {r['slide_id']}")
                  for r in read_csv(args.labels, ["slide_id", "label"])}
    sources = region_sources(args)
    settings = BatchSettings(patch_um=args.patch_um, patch_px=args.patch_px, min_tissue=args.min_tissue,
                             mode=args.mode, batch_size=args.batch_size, mpp=args.mpp, precision=args.precision,
                             regions=sources.to_dict() if sources else None)
    bar = tqdm(total=len(slides), desc="cohort", unit="slide", file=sys.stderr,
               disable=args.quiet or not sys.stderr.isatty())
    report = run_batch(slides, args.model, args.out, settings=settings, scheduler=args.scheduler,
                       overwrite=args.overwrite,
                       n_workers=args.n_workers, retries=args.retries, labels=labels,
                       on_result=lambda row: (bar.update(1), bar.set_postfix_str(f"{Path(row['slide']).name}: "
                                                                                 f"{row['status']}")), log=print)
    bar.close()
    print(f"{report['ok']} scored, {report['skipped']} already finished, {report['failed']} failed "
          f"-> {args.out / 'cohort.csv'}")
    return 2 if report["failed"] else 0
