"""``anonavila score-slide`` and ``anonavila demo``: whole slides end to end."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ._common import add_backend_args, existing_path, model_path, positive_float, positive_int, progress_bar
from ._regions import add_region_args, regions_for

__all__ = ["add_commands"]


def _box(text: str) -> np.ndarray:
    try:
        x, y, w, h = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected X,Y,W,H in level-0 pixels") from None
    if not all(np.isfinite((x, y, w, h))):
        raise argparse.ArgumentTypeError(f"{text!r}: X,Y,W,H must be finite numbers of level-0 pixels")
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: width and height must be positive")
    return np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]])


def _demo_size(text: str) -> int:
    value = positive_int(text)
    if not 1024 <= value <= 16384:
        raise argparse.ArgumentTypeError(f"the demo's slides are 1024..16384 px square (each is held in memory while "
                                         f"it is written), got {value}")
    return value


def _grid_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--patch-um", type=positive_float, help="patch field in microns (default 128, as in the paper)")
    g.add_argument("--patch-px", type=positive_int, help="patch size in level-0 pixels (needed without mpp)")
    p.add_argument("--mpp", type=positive_float, help="microns per level-0 pixel, for slides without it")
    p.add_argument("--min-tissue", type=float, default=0.25, help="minimum tissue fraction of a patch (0..1)")
    p.add_argument("--roi-box", type=_box, action="append", metavar="X,Y,W,H",
                   help="score only this level-0 rectangle (repeatable)")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--workers", type=positive_int, help="reader threads (default: CPU count - 1, 1..8)")


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score-slide", help="score whole slides: heatmap, top-k patches with terms, slide scores")
    p.add_argument("slides", nargs="+", type=existing_path, metavar="SLIDE")
    p.add_argument("--model", required=True, type=model_path,
                   help="checkpoint: ours (.safetensors) or the authors' (.pth, which holds CONCH: nothing else "
                        "needed)")
    add_backend_args(p, default=None)
    p.add_argument("--out", required=True, type=Path, help="output folder; one sub-folder per slide")
    p.add_argument("--mode", choices=["sum", "max", "l2", "zero_shot"], default=None)
    p.add_argument("--overwrite", action="store_true", help="replace complete earlier results")
    _grid_args(p)
    add_region_args(p)
    p.set_defaults(func=_score_slide)

    p = sub.add_parser("demo", help="the main job on built-in data: synthetic slides, demo model, heatmap")
    p.add_argument("--out", type=Path, default=Path("demo-output"))
    add_backend_args(p)
    p.add_argument("--size", type=_demo_size, default=4096, help="synthetic slide side in pixels (1024..16384)")
    p.add_argument("--epochs", type=positive_int, default=30)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_demo)


def _score_slide(args: argparse.Namespace) -> int:
    from ..backends import sha256_file
    from ..backends.demo import DEMO_NOTICE
    from ..detector import Detector
    from ..errors import AnonavilaError
    from ..pipeline import score_slide
    from ..slide import open_slide, unique_stems
    from ..splits import describe_split

    det = Detector.load(args.model, backend=args.backend, device=args.device, precision=args.precision,
                        allow_download=args.allow_download)
    print(f"model: {det.describe()}")
    if det.backend is not None and getattr(det.backend, "precision_reason", None):
        print(f"precision: {det.backend.precision_reason}")
    print(describe_split(det.info.get("centroid_split")))
    print(det.calibration.describe() if det.calibration is not None else
          "uncalibrated: scores are raw distances with no z or p-value; run 'anonavila calibrate' on normal tissue")
    if det.calibration is not None:
        from .calibrate import describe_check

        check = det.calibration.check(args.mode or det.mode.value)
        if check:
            print(describe_check(check))
        for line in det.calibration.limits():
            print(f"warning: {line}", file=sys.stderr)
    if det.is_demo:
        print(f"NOTE: {DEMO_NOTICE}")
    ck = {"path": str(args.model), "sha256": sha256_file(args.model)}
    stems = {p: s for s, p in unique_stems(args.slides).items()}  # refuses colliding names before any work
    failed = 0
    for path in stems:
        out = args.out / stems[path]
        bars = progress_bar(args)
        try:
            with open_slide(path, mpp=args.mpp) as probe:
                regions = regions_for(args, path, probe.dimensions_xy, boxes=args.roi_box)
            res = score_slide(det, path, out_dir=out, patch_um=args.patch_um, patch_px=args.patch_px,
                              min_tissue=args.min_tissue, regions=regions, mpp=args.mpp,
                              batch_size=args.batch_size, workers=args.workers, mode=args.mode,
                              overwrite=args.overwrite, checkpoint=ck, on_progress=bars)
        except AnonavilaError as err:
            failed += 1
            print(f"error: {err}", file=sys.stderr)
            continue
        finally:
            bars.close()
        s = res.slide_scores()
        n, c = len(res), res.n_from_cache
        src = "the embedding cache" if c == n else f"pixels ({c} resumed from the embedding cache)" if c else "pixels"
        cal = res.calibrated_summary()
        verdict = (f"; {cal['n_significant']} significant at FDR {cal['fdr']:.0%}, max z {cal['max_z']:.3g}"
                   if cal["calibrated"] and cal["max_z"] is not None else "")
        if cal.get("min_detectable", 0) and cal["min_detectable"] > 1:
            verdict += (f" (a reference of {round(1 / cal['p_floor']) - 1} normal patches floors p at "
                        f"{cal['p_floor']:.2g}: fewer than "
                        f"{cal['min_detectable']} extreme patches cannot be significant; calibrate on more normal "
                        "tissue)")
        print(f"{path.name}: {n} patches from {src}; max {s['max']:.4g}, top-1% {s['top1']:.4g}, "
              f"eroded max {s['max_eroded']:.4g}{verdict} -> {out}")
        if "regions" in res.provenance:
            r = res.provenance["regions"]
            print(f"  regions: {r.get('n_inside', '?')} tissue patches inside the ROI, {r.get('n_excluded', 0)} left "
                  "out by exclusions")
        if cal.get("out_of_domain"):
            print(f"WARNING: {path.name}: {cal['domain_note']}", file=sys.stderr)
    return 2 if failed else 0


def _demo(args: argparse.Namespace) -> int:
    from ..backends.demo import DEMO_NOTICE
    from ..demo import run_demo

    if args.backend == "demo":
        print(f"NOTE: {DEMO_NOTICE}\n")
    report = run_demo(args.out, backend=args.backend, device=args.device, precision=args.precision,
                      allow_download=args.allow_download, size=args.size, epochs=args.epochs,
                      overwrite=args.overwrite, on_progress=progress_bar(args), log=print)
    print(f"\nlocalisation AUROC against the planted ground truth: {report['localisation_auroc']:.3f} "
          f"({report['n_anomalous_patches']} of {report['n_patches']} patches planted)")
    cal = report["calibrated"]
    if cal.get("calibrated"):
        print(f"calibrated: {cal['n_significant']} patches significant at FDR {cal['fdr']:.0%} "
              f"({report['n_significant_planted']} of them planted); max z {cal['max_z']:.1f}")
    print(f"outputs: {report['out']}  (overlay.png, patches.csv, heatmap.npy, summary.json)")
    print("\nWith real weights (CONCH, gated; pip install 'napari-anonavila[conch]'):\n"
          "  anonavila demo --backend conch:/path/to/pytorch_model.bin\n"
          "  anonavila score-slide SLIDE.svs --model model.safetensors --out results/")
    return 0
