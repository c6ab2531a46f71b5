"""``anonavila train`` and ``anonavila score-patches``: the authors' patch-folder workflow."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputFileError
from ._common import (
    add_backend_args,
    add_terms_args,
    existing_path,
    model_path,
    positive_float,
    positive_int,
    progress_bar,
)
from ._regions import add_normal_region_args

if TYPE_CHECKING:
    import torch

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the MLP on normal patches (folders or slides) and save a checkpoint")
    p.add_argument("--normal", nargs="+", type=existing_path, metavar="DIR_OR_SLIDE",
                   help="normal patch folder(s) (searched recursively: png, jpg, tif) and/or normal slides "
                        "(their tissue patches)")
    p.add_argument("--centroid-set", nargs="+", type=existing_path, metavar="DIR_OR_SLIDE",
                   help="separate normal folder(s) or slides for the centroids, as the authors (their validation "
                        "folder) and the paper: train on all of --normal (default: a seeded 20%% of the normal "
                        "reference is held out for them: whole slides or folders when there are several, else "
                        "sub-folders or blocks of the tissue (a 4 x 4 division))")
    p.add_argument("--patch-um", type=positive_float, help="patch field for slides in microns (default 128)")
    p.add_argument("--patch-px", type=positive_int, help="patch size for slides in level-0 pixels")
    add_normal_region_args(p)
    p.add_argument("--out", required=True, type=Path, help="checkpoint to write (.safetensors)")
    add_backend_args(p)
    add_terms_args(p)
    p.add_argument("--epochs", type=positive_int, default=1)
    p.add_argument("--batch-size", type=positive_int, default=100, help="training batch, at least 2 (default 100)")
    p.add_argument("--lr", type=positive_float, default=1e-3)
    p.add_argument("--accumulate", type=positive_int, default=100, help="batches summed per optimiser step")
    p.add_argument("--seed", type=int, default=42, help="seed of the MLP's initialisation, the batch order and the "
                   "centroid hold-out (default 42, as the authors; with their files in their os.walk order, their "
                   "batches)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint")
    p.set_defaults(func=_train)

    p = sub.add_parser("score-patches", help="score TOP_DIR/<slide>/ patch folders; write {slide}_Ascores.csv")
    p.add_argument("top_dir", type=existing_path, metavar="TOP_DIR")
    p.add_argument("--model", required=True, type=model_path,
                   help="checkpoint: ours (.safetensors) or the authors' (.pth)")
    add_backend_args(p, default=None)
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--mode", choices=["sum", "max", "l2", "zero_shot"], default=None)
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_score_patches)


def _embed_sources(det, sources, args, bars) -> tuple[torch.Tensor, list[str]]:
    """Embeddings of patch folders (as the authors cut them, in their os.walk order) and of normal slides' tissue
    patches, and each patch's hold-out group: its slide or folder when there are several, else its sub-folder or
    band of grid rows (so neighbouring patches never sit on both sides of the centroid split)."""
    import torch

    from ..grid import make_grid
    from ..patches import list_images
    from ..pipeline import iter_slide_embeddings
    from ..progress import drain
    from ..slide import open_slide
    from ..splits import region_groups
    from ._regions import normal_regions_for

    parts, groups, fine = [], [], []
    for src in sources:
        if src.is_dir():
            read, embs = drain(det.iter_embed_files(list_images(src, order="walk")), bars)
            parts.append(embs)
            groups += [str(src)] * len(read)
            fine += [str(p.parent) for p in read]
            continue
        with open_slide(src, mpp=getattr(args, "mpp", None)) as slide:
            normal = normal_regions_for(args, src, slide.dimensions_xy)
            grid = make_grid(slide, patch_um=args.patch_um, patch_px=args.patch_px, roi=normal)
            if not len(grid):
                where = " inside the normal regions" if normal else ""
                raise InputFileError(f"{src}: no normal tissue patch{where}")
            embs = drain(iter_slide_embeddings(slide, grid, det.backend, det.backend_id), bars)
        parts.append(torch.as_tensor(embs))
        groups += [str(src)] * len(embs)
        fine += region_groups(grid.xy_l0(), grid.patch_size_l0, normal.outlines() if normal else None,
                              prefix=f"{src.name}: ")
    return torch.cat(parts), groups if len(set(groups)) >= 2 else fine


def _train(args: argparse.Namespace) -> int:
    from .._atomic import check_writable
    from ..detector import Detector
    from ..progress import drain
    from ..splits import describe_split
    from ..training import TrainConfig
    from ._common import terms_from_args

    check_writable(args.out, overwrite=args.overwrite)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, accumulate=args.accumulate,
                         seed=args.seed)
    det = Detector.create(args.backend, terms_from_args(args), device=args.device, precision=args.precision,
                          allow_download=args.allow_download)
    bars = progress_bar(args)
    if not args.normal:
        raise ValueError("give the normal reference with --normal (patch folders and/or slides)")
    normal, groups = _embed_sources(det, args.normal, args, bars)
    centroid = _embed_sources(det, args.centroid_set, args, bars)[0] if args.centroid_set else None
    losses = drain(det.iter_fit(normal, centroid, config=config, groups=groups), bars)
    bars.close()
    det.info["normal_sources"] = [str(f) for f in args.normal]
    det.save(args.out, overwrite=args.overwrite)
    split = det.info["centroid_split"]
    print(det.info.get("calibration_outcome", ""))
    print(f"trained on {split['n_train']} normal patches; {describe_split(split)}; loss {losses[0]:.4f} -> "
          f"{losses[-1]:.4f}; wrote {args.out}")
    return 0


def _score_patches(args: argparse.Namespace) -> int:
    from .._atomic import check_writable
    from ..detector import Detector
    from ..export.tables import write_csv
    from ..patches import list_images
    from ..progress import drain
    from ..result import PatchTerms

    slides = sorted(d for d in args.top_dir.iterdir() if d.is_dir())
    if not slides:
        raise InputFileError(f"{args.top_dir}: expected one sub-folder of patches per slide, found none")
    targets = [args.out / f"{d.name}_Ascores.csv" for d in slides]
    for t in targets:
        check_writable(t, overwrite=args.overwrite)
    det = Detector.load(args.model, backend=args.backend, device=args.device, precision=args.precision,
                        allow_download=args.allow_download)
    names_n, names_a = det.term_names("normal"), det.term_names("abnormal")
    print(det.calibration.describe() if det.calibration is not None else
          "uncalibrated: z and p_normal stay empty; run 'anonavila calibrate' on normal tissue")
    bars = progress_bar(args)
    for d, target in zip(slides, targets, strict=False):
        read, embs = drain(det.iter_embed_files(list_images(d), batch_size=args.batch_size), bars)
        scores = det.score_embeddings(embs, mode=args.mode)
        cal = det.calibration
        if cal is not None and (why := cal.unusable_for(scores.score, "folder")) is not None:
            print(f"warning: {d.name}: {why}", file=sys.stderr)
            cal = None
        mode = (args.mode or det.mode.value)
        z = cal.z(scores.score, mode) if cal is not None else None
        p_normal = cal.p(scores.score, mode) if cal is not None else None
        terms = PatchTerms.of_scores(scores, names_n, names_a)
        rows = [[p.name, f"{scores.score[i]:.8g}", f"{scores.d_normal[i]:.8g}", f"{scores.d_abnormal[i]:.8g}",
                 *terms.explain(i),
                 *((f"{z[i]:.6g}", f"{p_normal[i]:.6g}") if cal is not None else ("", ""))]
                for i, p in enumerate(read)]
        write_csv(target, ["patch_name", "Ascore", "d_normal", "d_abnormal", "top_normal", "top_abnormal", "z",
                           "p_normal"], rows, overwrite=args.overwrite)
        print(f"{d.name}: {len(rows)} patches -> {target}")
    bars.close()
    return 0
