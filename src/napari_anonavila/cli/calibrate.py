"""``anonavila calibrate``: give a checkpoint a normal reference, so that its scores come with z and p-values."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..calibration import NORMALISE
from ._common import add_backend_args, existing_path, model_path, positive_float, positive_int, progress_bar
from ._regions import add_normal_region_args, normal_regions_for

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="calibrate a checkpoint on normal tissue it never saw (z, p-values)")
    p.add_argument("--model", required=True, type=model_path, help="checkpoint: ours or the authors' .pth")
    p.add_argument("--normal", required=True, nargs="+", type=existing_path, metavar="DIR_OR_SLIDE",
                   help="normal slides and/or patch folders the model was neither trained on nor took its centroids "
                        "from; slides also give a slide-level reference")
    p.add_argument("--out", required=True, type=Path, help="the calibrated checkpoint to write (.safetensors)")
    p.add_argument("--patch-um", type=positive_float, help="patch field for slides in microns (default 128)")
    p.add_argument("--patch-px", type=positive_int, help="patch size for slides in level-0 pixels")
    p.add_argument("--mpp", type=positive_float, help="microns per level-0 pixel, for slides without it")
    p.add_argument("--normalise", choices=NORMALISE, default=NORMALISE[0],
                   help="'slide': every slide on its own scale (its scores standardised by its own median and robust "
                        "SD, as each reference slide's are), so that slide-wide differences of stain or scanner do "
                        "not change the false-alarm rate; blind to a change of the whole slide (docs/calibration.md)")
    add_normal_region_args(p)
    add_backend_args(p, default=None)
    p.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint")
    p.set_defaults(func=_calibrate)


def _calibrate(args: argparse.Namespace) -> int:
    import sys

    from .._atomic import check_writable
    from ..detector import Detector
    from ..grid import make_grid
    from ..maps import top_percent_mean
    from ..patches import list_images
    from ..pipeline import iter_slide_embeddings
    from ..progress import drain
    from ..slide import open_slide

    check_writable(args.out, overwrite=args.overwrite)
    det = Detector.load(args.model, backend=args.backend, device=args.device, precision=args.precision,
                        allow_download=args.allow_download)
    backend = det.require_backend()
    bars = progress_bar(args)
    patches, slides, owner = [], [], []
    for src in args.normal:
        if src.is_dir():
            _, embs = drain(det.iter_embed_files(list_images(src)), bars)
            patches.append(det.reference_scores(embs))
            owner.append(np.full(len(patches[-1]), -1))
            continue
        with open_slide(src, mpp=args.mpp) as slide:
            grid = make_grid(slide, patch_um=args.patch_um, patch_px=args.patch_px,
                             roi=normal_regions_for(args, src, slide.dimensions_xy))
            embs = drain(iter_slide_embeddings(slide, grid, backend, det.backend_id), bars)
        if not len(grid):
            continue
        table = det.reference_scores(embs)
        patches.append(table)
        owner.append(np.full(len(table), len(slides)))  # the slide is the unit of the reference
        slides.append([top_percent_mean(table[:, m]) for m in range(3)])  # size-free: the top-1% mean
    bars.close()
    table = np.concatenate(patches)
    det.calibrate(table, f"{len(table)} normal patches of {len(args.normal)} source(s) given to calibrate"
                  f"{f', {len(slides)} slides' if slides else ''}", np.asarray(slides) if slides else None,
                  np.concatenate(owner), "top1", args.normalise)  # validated: a bad reference never reaches the file
    det.info["calibrated_from"] = [str(s) for s in args.normal]
    det.save(args.out, overwrite=args.overwrite)
    med, scale = det.calibration.centre_scale(det.mode.value)
    print(f"{det.calibration.describe()}; {det.mode.value} scores: median {med:.4g}, robust sd {scale:.4g}; "
          f"wrote {args.out}")
    check = det.info.get("reference_check")
    if check:
        print(describe_check(check))
    for line in det.calibration.limits():
        print(f"warning: {line}", file=sys.stderr)
    return 0


def describe_check(check: dict) -> str:
    """The leave-one-slide-out check in a sentence."""
    parts = []
    for a in ("0.05", "0.01"):
        r = check[f"patch_rate_{a}"]
        parts.append(f"{r['rate']:.1%} of patches at p <= {a} (95% CI {r['ci95'][0]:.1%}-{r['ci95'][1]:.1%}; per "
                     f"slide {r['per_slide_min']:.1%}-{r['per_slide_max']:.1%})")
    slide = check.get("slide_rate_0.05")
    tail = f"; {slide:.1%} of slides at p_slide <= 0.05" if slide is not None else ""
    return (f"leave one slide out ({check['k_slides']} normal slides, each scored against the others): "
            f"{'; '.join(parts)}{tail}")
