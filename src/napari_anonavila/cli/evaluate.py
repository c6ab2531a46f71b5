"""``anonavila slide-scores`` and ``anonavila evaluate``: from patch scores to slide scores to AUROC/AUPR."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ..errors import InputFileError
from ._common import existing_path, positive_int

__all__ = ["add_commands", "parse_label"]

_NEG = {"0", "normal", "negative", "false", "benign", "tumor-free", "tumour-free"}
_POS = {"1", "abnormal", "positive", "true", "tumor", "tumour", "anomaly", "metastasis"}


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("slide-scores", help="patch-score CSVs -> slide scores (max, top-1%%, +/- erosion)")
    p.add_argument("--scores", nargs="+", required=True, type=existing_path, metavar="CSV",
                   help="CSV(s) with patch names '{slide_id}_{x}_{y}_{code}.png' and a score column")
    p.add_argument("--patch-size", required=True, type=positive_int, help="patch size in level-0 pixels")
    sizes = p.add_mutually_exclusive_group()
    sizes.add_argument("--slides", nargs="+", type=existing_path, metavar="SLIDE",
                       help="the slides (ids = file names without suffix): partial edge cells are dropped from the "
                            "eroded heatmap, as in the authors' tester")
    sizes.add_argument("--sizes", type=existing_path, metavar="CSV",
                       help="slide_id,width,height in level-0 pixels: the same, without the slide files")
    p.add_argument("--name-column", default="patch_name")
    p.add_argument("--score-column", default="Ascore")
    p.add_argument("--out", type=Path, help="write the table as CSV (default: print it)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_slide_scores)

    p = sub.add_parser("evaluate", help="AUROC and AUPR with 2000-resample bootstrap 95%% CIs")
    p.add_argument("predictions", type=existing_path, metavar="PREDICTIONS.csv")
    p.add_argument("--labels", required=True, type=existing_path, metavar="LABELS.csv")
    p.add_argument("--score-column", required=True, metavar="COL", help="column(s) of PREDICTIONS to evaluate, "
                   "comma-separated")
    p.add_argument("--id-column", default="slide_id", help="id column in both files (default: slide_id)")
    p.add_argument("--label-column", default="label", help="label column: 0/1 or normal/abnormal (tumor...)")
    p.add_argument("--n-boot", type=positive_int, default=2000)
    p.add_argument("--alpha", type=float, default=0.05, help="threshold of a p_slide column (default 0.05)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="write the metrics as JSON")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_evaluate)


def parse_label(value: str, where: str) -> int:
    """0/1 from a label cell such as '1', 'abnormal' or 'normal'."""
    v = value.strip().casefold()
    if v in _NEG:
        return 0
    if v in _POS:
        return 1
    raise InputFileError(f"{where}: label {value!r} is neither normal (0) nor abnormal (1)")


def _slide_scores(args: argparse.Namespace) -> int:
    from ..export.tables import read_score_column, write_csv
    from ..maps import SLIDE_SCORE_NAMES, heatmaps_from_patch_names, slide_scores
    from ..patches import parse_patch_name

    pairs = [pair for f in args.scores for pair in read_score_column(f, args.name_column, args.score_column)]
    sizes = _slide_sizes(args)
    try:
        maps = heatmaps_from_patch_names(pairs, args.patch_size, sizes)
    except InputFileError as err:
        raise InputFileError(f"{', '.join(map(str, args.scores))}: {err}") from err
    by_slide: dict[str, list[float]] = {}
    for name, value in pairs:  # every patch, partial edge ones included: the scores without erosion use them all
        by_slide.setdefault(parse_patch_name(name).slide_id, []).append(value)
    header = ["slide_id", "n_patches", *SLIDE_SCORE_NAMES, "n_cells"]
    rows = []
    for sid in sorted(maps):
        s = slide_scores(maps[sid], np.asarray(by_slide[sid]))
        rows.append([sid, len(by_slide[sid]), *(f"{s[k]:.17g}" for k in SLIDE_SCORE_NAMES),
                     int(np.isfinite(maps[sid]).sum())])
    if args.out:
        write_csv(args.out, header, rows, overwrite=args.overwrite)
        print(f"{len(rows)} slide(s) -> {args.out}")
    else:
        print(",".join(header))
        for r in rows:
            print(",".join(map(str, r)))
    return 0


def _slide_sizes(args: argparse.Namespace) -> dict[str, tuple[int, int]] | None:
    """Slide id -> level-0 (width, height), from --slides or --sizes; None when neither is given."""
    from ..export.tables import read_csv
    from ..slide import open_slide, slide_stem

    if args.slides:
        import warnings

        from ..errors import MissingMppWarning

        sizes = {}
        for path in args.slides:
            with warnings.catch_warnings():  # only the size in pixels is needed here
                warnings.simplefilter("ignore", MissingMppWarning)
                with open_slide(path) as s:
                    sizes[slide_stem(path)] = s.dimensions_xy
        return sizes
    if args.sizes:
        try:
            return {r["slide_id"]: (int(r["width"]), int(r["height"]))
                    for r in read_csv(args.sizes, ["slide_id", "width", "height"])}
        except ValueError as err:
            raise InputFileError(f"{args.sizes}: width and height must be whole numbers of pixels ({err})") from err
    return None


def _evaluate(args: argparse.Namespace) -> int:
    from .._atomic import atomic_write, check_writable
    from ..export.tables import read_csv, read_score_column
    from ..metrics import bootstrap_metrics

    if args.out:
        check_writable(args.out, overwrite=args.overwrite)
    labels = {}
    for i, row in enumerate(read_csv(args.labels, [args.id_column, args.label_column]), start=2):
        if row[args.id_column] in labels:
            raise InputFileError(f"{args.labels}: row {i}: id {row[args.id_column]!r} appears twice; each slide needs "
                                 "exactly one label")
        labels[row[args.id_column]] = parse_label(row[args.label_column], f"{args.labels}: row {i}")
    result = {}
    for col in [c.strip() for c in args.score_column.split(",") if c.strip()]:
        pairs = read_score_column(args.predictions, args.id_column, col)
        preds = dict(pairs)
        if len(preds) != len(pairs):
            dup = next(k for k in preds if sum(1 for p, _ in pairs if p == k) > 1)
            raise InputFileError(f"{args.predictions}: id {dup!r} appears more than once; each slide needs exactly "
                                 "one prediction")
        missing = sorted(set(preds) - set(labels))
        if missing:
            raise InputFileError(f"{args.labels}: no label for {len(missing)} id(s), e.g. {missing[:3]}")
        ids = sorted(preds)
        m = bootstrap_metrics(np.array([labels[i] for i in ids]), np.array([preds[i] for i in ids]),
                              n_boot=args.n_boot, seed=args.seed)
        result[col] = {"n": len(ids), "n_abnormal": int(sum(labels[i] for i in ids)),
                       **{k: v.to_dict() for k, v in m.items()}}
    fmt = "{value:.3f} [{ci_low:.3f}, {ci_high:.3f}]"
    print(f"{'score':<16} {'n':>5}  {'AUROC [95% CI]':<26} {'AUPR [95% CI]':<26}")
    for col, r in result.items():
        print(f"{col:<16} {r['n']:>5}  {fmt.format(**r['auroc']):<26} {fmt.format(**r['aupr']):<26}")
    decisions = _decisions(args, labels)
    if decisions:
        print(f"\n{'calibrated decision':<28} {'false alarms on normal':<26} {'sensitivity':<26}")
        for col, r in decisions.items():
            far = fmt.format(**r["false_alarm_rate"]) if r["false_alarm_rate"] else "n/a (no normal slide)"
            sens = fmt.format(**r["sensitivity"]) if r["sensitivity"] else "n/a (no abnormal slide)"
            print(f"{col + (' > 0' if col == 'n_significant' else f' <= {args.alpha:g}'):<28} {far:<26} {sens:<26}")
    if args.out:
        meta = {"predictions": str(args.predictions), "labels": str(args.labels), "n_boot": args.n_boot,
                "seed": args.seed, "ci": "95% percentile bootstrap", "metrics": result,
                "calibrated_decisions": {"alpha": args.alpha, "ci": "95% Clopper-Pearson", **decisions}}
        with atomic_write(args.out) as fh:
            json.dump(meta, fh, indent=2)
        print(f"wrote {args.out}")
    return 0


def _decisions(args: argparse.Namespace, labels: dict[str, int]) -> dict:
    """False-alarm rate and sensitivity of each calibrated decision column the predictions hold (cohort.csv has
    n_significant and, with a slide reference, p_slide); slides without a value are left out."""
    from ..export.tables import read_csv
    from ..metrics import DECISIONS, decision_rates, flag_slides

    with open(args.predictions, encoding="utf-8-sig") as fh:
        header = fh.readline().strip().split(",")
    out = {}
    for col in (c for c in DECISIONS if c in header):
        rows = [r for r in read_csv(args.predictions, [args.id_column, col]) if r[col].strip() not in ("", "nan")]
        rows = [r for r in rows if r[args.id_column] in labels]
        if not rows:
            continue
        try:
            values = np.array([float(r[col]) for r in rows])
        except ValueError as err:
            raise InputFileError(f"{args.predictions}: column {col} holds a non-number ({err})") from err
        y = np.array([labels[r[args.id_column]] for r in rows])
        out[col] = {"rule": DECISIONS[col], "n": len(rows), **decision_rates(y, flag_slides(col, values, args.alpha))}
    return out
