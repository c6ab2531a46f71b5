"""The main job on built-in data: write synthetic slides, fit on the normal one, score the anomalous one."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from ._atomic import atomic_write
from .detector import Detector
from .embcache import EmbeddingCache
from .grid import make_grid
from .metrics import bootstrap_metrics
from .pipeline import iter_slide_embeddings, score_slide
from .progress import ProgressCallback, drain
from .sample import cell_labels, write_sample_slides
from .slide import open_slide
from .splits import region_groups
from .training import TrainConfig

__all__ = ["PATCH_UM", "run_demo"]

PATCH_UM = 64.0  # 128 px at 0.5 um/px: enough patches for p-values fine enough to flag the planted regions


def _embed(det: Detector, path: Path, cache: Path, on_progress: ProgressCallback | None):
    """The slide's patch embeddings and each patch's hold-out group (a band of grid rows)."""
    with open_slide(path) as slide:
        grid = make_grid(slide, patch_um=PATCH_UM)
        embs = drain(iter_slide_embeddings(slide, grid, det.backend, det.backend_id, cache=EmbeddingCache(cache)),
                     on_progress)
    return embs, region_groups(grid.xy_l0(), grid.patch_size_l0)


def run_demo(out: str | os.PathLike, *, backend: str = "demo", device: str | None = None, precision: str = "float32",
             allow_download: bool = False, size: int = 4096, epochs: int = 30, overwrite: bool = False,
             on_progress: ProgressCallback | None = None,
             log: Callable[[str], None] = lambda s: None) -> dict:
    """Run the demo into ``out``; return a report with the localisation AUROC of the planted anomalies."""
    out = Path(out)
    log(f"[1/5] writing synthetic slides ({size}x{size} px, 0.5 um/px) to {out / 'slides'}")
    sample = write_sample_slides(out / "slides", size=size, reference=True)
    det = Detector.create(backend, device=device, precision=precision, allow_download=allow_download)
    log(f"[2/5] embedding the normal slide with backend {det.backend_spec}")
    embs, groups = _embed(det, sample.normal, out / "normal", on_progress)
    log(f"[3/5] training the MLP on {len(embs)} normal patches ({epochs} epochs)")
    losses = det.fit(embs, config=TrainConfig(epochs=epochs, batch_size=32, accumulate=1, seed=0), groups=groups,
                     on_progress=on_progress)
    log(f"      loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    log("[4/5] calibrating on a second normal slide (z and p-values against normal tissue)")
    ref, _ = _embed(det, sample.reference, out / "reference", on_progress)
    det.calibrate(det.reference_scores(ref), f"{len(ref)} patches of the normal slide {sample.reference.name}")
    log(f"      {det.calibration.describe()}")
    det.save(out / "model.safetensors", overwrite=True)
    log("[5/5] scoring the slide with planted anomalies")
    res = score_slide(det, sample.anomalous, out_dir=out / "anomalous", patch_um=PATCH_UM, overwrite=True,
                      on_progress=on_progress)
    labels = cell_labels(sample.mask, sample.mask_downsample, res.grid.cells_rc, res.grid.patch_size_l0)
    metrics = bootstrap_metrics(labels, res.score, n_boot=500, seed=0)
    report = {"out": str(out / "anomalous"), "localisation_auroc": metrics["auroc"].value,
              "localisation_auroc_ci95": [metrics["auroc"].ci_low, metrics["auroc"].ci_high],
              "localisation_aupr": metrics["aupr"].value, "n_patches": len(labels),
              "n_anomalous_patches": int(labels.sum()), "backend": det.backend_spec,
              "slide_scores": res.slide_scores(), "calibrated": res.calibrated_summary(),
              "n_significant_planted": int((res.significant() & (labels == 1)).sum()),
              "train_loss_first_last": [losses[0], losses[-1]]}
    with atomic_write(out / "demo_report.json") as fh:
        json.dump(report, fh, indent=1)
    return report
