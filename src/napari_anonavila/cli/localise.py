"""``anonavila localise``: patch-level AUROC/AUPR, Camelyon16 lesion-level FROC and the overlap of the significant set,
from result folders and lesion annotations, or from patch-score CSVs whose patch names carry the abnormal percent."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from ..errors import InputFileError
from ._common import existing_path, fraction, positive_int

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("localise", help="localisation: patch AUROC/AUPR, Camelyon16 FROC, overlap; with plots")
    p.add_argument("results", nargs="*", type=existing_path, metavar="RESULT_OR_BATCH_DIR",
                   help="score-slide result folders, or batch folders (their slides)")
    p.add_argument("--lesions", type=existing_path, metavar="FILE_OR_DIR",
                   help="lesion annotations (QuPath GeoJSON, ASAP/Camelyon XML, mask); a folder: each slide's file "
                        "by its stem, a slide without one is normal")
    p.add_argument("--lesion-class", action="append", default=[], metavar="CLASS",
                   help="only these classes are lesions (e.g. _0 and _1 of Camelyon16; repeatable)")
    p.add_argument("--lesion-fraction", type=fraction, default=0.5,
                   help="a patch is a lesion patch when at least this part of its area is lesion (default 0.5)")
    p.add_argument("--patches", nargs="+", type=existing_path, default=[], metavar="CSV",
                   help="score-patches CSVs ({slide}_Ascores.csv): labels from the names' abnormal percent")
    p.add_argument("--percent-threshold", type=float, default=50.0,
                   help="with --patches: a patch is abnormal when its abnormal percent is above this (default 50)")
    p.add_argument("--n-boot", type=positive_int, default=2000)
    p.add_argument("--out", required=True, type=Path, help="folder for localisation.json and the plots")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_localise)


def _result_folders(paths: list[Path]) -> list[Path]:
    out = []
    for p in paths:
        if (p / "cohort.csv").is_file():
            out += sorted(d for d in p.iterdir() if (d / "summary.json").is_file())
        elif (p / "summary.json").is_file():
            out.append(p)
        else:
            raise InputFileError(f"{p}: neither a result folder (summary.json) nor a batch folder (cohort.csv)")
    return out


def _localise(args: argparse.Namespace) -> int:
    from .._atomic import atomic_write, check_writable

    out = args.out
    check_writable(out / "localisation.json", overwrite=args.overwrite)
    if args.patches:
        report = _from_patch_csvs(args)
    else:
        if not args.results or args.lesions is None:
            raise InputFileError("give result folders with --lesions, or score-patches CSVs with --patches")
        report = _from_results(args)
    out.mkdir(parents=True, exist_ok=True)
    plots = _plots(report, out)
    report["plots"] = plots
    with atomic_write(out / "localisation.json", encoding="utf-8") as fh:
        json.dump(report, fh, indent=1, default=_finite)
    pooled = report["patch_level"]["pooled"]["score"]
    print(f"patch level, pooled over {report['n_slides']} slide(s): AUROC {pooled['auroc']['value']:.4f} "
          f"[{pooled['auroc']['ci_low']:.4f}, {pooled['auroc']['ci_high']:.4f}], AUPR {pooled['aupr']['value']:.4f}")
    if report.get("lesion_level", {}).get("froc_score") is not None:
        print(f"lesion level (Camelyon16 FROC): score {report['lesion_level']['froc_score']:.4f} over "
              f"{report['lesion_level']['n_lesions']} lesion(s)")
    print(f"-> {out / 'localisation.json'} ({', '.join(plots)})")
    return 0


def _finite(o):
    if isinstance(o, (np.floating, np.integer)):
        o = o.item()
    return None if isinstance(o, float) and not math.isfinite(o) else str(o)


def _from_results(args: argparse.Namespace) -> dict:
    from ..annotations import ScoreRegions, read_annotations
    from ..annotations.sources import file_for_slide
    from ..export.result_folder import open_result
    from ..localisation import detections_of, froc, lesion_mask, overlap, patch_labels, patch_metrics

    folders = _result_folders(args.results)
    results, lesion_sets = [], []
    for folder in folders:  # everything read and checked before anything is computed
        res = open_result(folder)
        dims = tuple(res.slide.get("dimensions_xy") or ())
        f = file_for_slide(args.lesions, Path(res.slide["path"]))
        lesions = read_annotations(f, slide_dimensions_xy=dims).select(args.lesion_class or None) if f else None
        if lesions is not None:
            ScoreRegions(lesions).check(_SlideSize(Path(res.slide["path"]).name, dims))
        results.append(res)
        lesion_sets.append(lesions)
    labels = [patch_labels(r, les, args.lesion_fraction) for r, les in zip(results, lesion_sets, strict=True)]
    if not any(lab.any() for lab in labels):
        raise InputFileError(f"no lesion patch in any of the {len(results)} slide(s) (lesion fraction "
                             f"{args.lesion_fraction:g}): nothing to localise; check --lesions and --lesion-class")
    calibrated = all(r.calibrated for r in results)
    per_slide = {}
    for r, lab in zip(results, labels, strict=True):
        name = Path(r.slide["path"]).name
        per_slide[name] = {"n_patches": len(r), "n_lesion_patches": int(lab.sum()),
                           "score": patch_metrics(lab, r.score, n_boot=args.n_boot),
                           **({"z": patch_metrics(lab, r.z, n_boot=args.n_boot)} if calibrated else {}),
                           "overlap_significant": overlap(r.significant(), lab) if r.calibrated else None}
    y = np.concatenate(labels)
    pooled = {"score": patch_metrics(y, np.concatenate([r.score for r in results]), n_boot=args.n_boot)}
    if isinstance(pooled["score"], str):
        raise InputFileError(f"pooled over the slides, {pooled['score']}")
    if calibrated:
        pooled["z"] = patch_metrics(y, np.concatenate([r.z for r in results]), n_boot=args.n_boot)
        pooled["overlap_significant"] = overlap(np.concatenate([r.significant() for r in results]), y)
    slides = []
    for r, les in zip(results, lesion_sets, strict=True):
        mpp = r.grid.mpp or r.slide.get("mpp")
        if not mpp:
            raise InputFileError(f"{r.folder}: the slide has no mpp; the FROC's 75 um and 275 um rules need microns")
        slides.append((detections_of(r, "z" if calibrated else "score"), lesion_mask(les, tuple(r.slide[
            "dimensions_xy"]), float(mpp))))
    return {"n_slides": len(results), "lesion_fraction": args.lesion_fraction,
            "lesions": {"source": str(args.lesions), "classes": args.lesion_class or "all"},
            "patch_level": {"pooled": pooled, "per_slide": per_slide,
                            "curves": _curves(y, np.concatenate([r.score for r in results]))},
            "lesion_level": {**froc(slides), "detections": "3x3 local maxima of the "
                                                            + ("z" if calibrated else "score") + " heatmap"}}


class _SlideSize:
    """A slide as far as a bounds check needs it: name and level-0 size."""

    def __init__(self, name: str, dims) -> None:
        self.path, self.dimensions_xy = Path(name), tuple(int(v) for v in dims)


def _from_patch_csvs(args: argparse.Namespace) -> dict:
    from ..export.tables import read_csv
    from ..localisation import patch_metrics
    from ..patches import parse_patch_name

    per_slide, ys, ss = {}, [], []
    for path in args.patches:
        rows = read_csv(path, ["patch_name", "Ascore"])
        try:
            pct = np.array([float(parse_patch_name(r["patch_name"]).code) for r in rows])
        except ValueError as err:
            raise InputFileError(f"{path}: patch names must end in the abnormal percent "
                                 "({WSI}_{x}_{y}_{abnormal_percent}.png)") from err
        y = (pct > args.percent_threshold).astype(int)
        s = np.array([float(r["Ascore"]) for r in rows])
        per_slide[path.name] = {"n_patches": len(rows), "n_abnormal": int(y.sum()),
                                "score": patch_metrics(y, s, n_boot=args.n_boot)}
        ys.append(y)
        ss.append(s)
    y, s = np.concatenate(ys), np.concatenate(ss)
    pooled = {"score": patch_metrics(y, s, n_boot=args.n_boot)}
    if isinstance(pooled["score"], str):
        raise InputFileError(f"pooled over the CSVs, {pooled['score']} (percent threshold {args.percent_threshold:g})")
    return {"n_slides": len(args.patches), "percent_threshold": args.percent_threshold,
            "patch_level": {"pooled": pooled, "per_slide": per_slide, "curves": _curves(y, s)}}


def _curves(y: np.ndarray, s: np.ndarray) -> dict:
    from sklearn.metrics import precision_recall_curve, roc_curve

    fpr, tpr, _ = roc_curve(y, s)
    prec, rec, _ = precision_recall_curve(y, s)
    return {"roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()}, "pr": {"precision": prec.tolist(),
                                                                        "recall": rec.tolist()}}


def _plots(report: dict, out: Path) -> list[str]:
    """ROC and PR of the pooled patches, and the FROC curve, as PNG (matplotlib, headless)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .._atomic import atomic_path

    written = []
    curves, pooled = report["patch_level"]["curves"], report["patch_level"]["pooled"]["score"]

    def save(fig, name: str) -> None:
        with atomic_path(out / name) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
        plt.close(fig)
        written.append(name)

    fig, ax = plt.subplots(figsize=(4.2, 4))
    auc = pooled["auroc"]
    ax.plot(curves["roc"]["fpr"], curves["roc"]["tpr"], lw=1.5,
            label=f"AUROC {auc['value']:.3f} [{auc['ci_low']:.3f}, {auc['ci_high']:.3f}]")
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="patch level ROC (pooled)")
    ax.legend(loc="lower right", fontsize=8)
    save(fig, "roc.png")
    fig, ax = plt.subplots(figsize=(4.2, 4))
    ap = pooled["aupr"]
    ax.plot(curves["pr"]["recall"], curves["pr"]["precision"], lw=1.5,
            label=f"AUPR {ap['value']:.3f} [{ap['ci_low']:.3f}, {ap['ci_high']:.3f}]")
    ax.set(xlabel="recall", ylabel="precision", title="patch level PR (pooled)")
    ax.legend(loc="lower left", fontsize=8)
    save(fig, "pr.png")
    lesion = report.get("lesion_level")
    if lesion and lesion.get("n_lesions"):
        from ..localisation import FP_RATES

        fig, ax = plt.subplots(figsize=(4.6, 4))
        ax.plot(lesion["fp_per_slide"], lesion["sensitivity"], drawstyle="steps-post", lw=1.5)
        ax.plot(FP_RATES, [lesion["sensitivity_at"][str(r)] for r in FP_RATES], "o",
                label=f"FROC score {lesion['froc_score']:.3f}")
        ax.set_xscale("log")
        ax.set(xlabel="mean false positives per slide", ylabel="lesion sensitivity", ylim=(0, 1.02),
               title=f"lesion level FROC ({lesion['n_lesions']} lesion(s), {lesion['n_slides']} slide(s))")
        ax.legend(loc="lower right", fontsize=8)
        save(fig, "froc.png")
    return written
