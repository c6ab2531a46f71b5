"""Thread workers around the core generators. Everything slow runs here, never on the UI thread: loading or
building a model, fitting, the tissue mask and grid, fingerprinting the slide, scoring and exporting.

Workers yield once per batch, so Cancel acts within one batch. Besides :class:`~napari_anonavila.progress.Progress`
they yield :class:`DetectorReady` and :class:`GridReady` so the widgets can show them as soon as they exist.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

from napari.qt.threading import thread_worker

# torch, the models and the pipeline are imported inside the workers, on their threads: never on the UI thread
from ..annotations import RegionSet, ScoreRegions
from ..embcache import EmbeddingCache
from ..grid import PatchGrid, make_grid, tissue_mask, too_few_patches_message
from ..options import TrainConfig
from ..progress import Progress, restage, waiting
from ..slide import Slide
from ..userfiles import cache_dir

__all__ = ["DetectorReady", "GridReady", "ScorePlan", "export_worker", "fit_worker", "load_worker", "pools_worker",
           "score_worker", "warm_worker"]

MIN_REFERENCE_PATCHES = 8  # fewer normal patches than this make no meaningful normal reference


@dataclass(frozen=True)
class DetectorReady:
    """The run's detector exists (loaded, built or fitted); ``checkpoint`` is its file, if any."""

    detector: object
    checkpoint: Path | None = None


@dataclass(frozen=True)
class GridReady:
    grid: PatchGrid


@dataclass
class ScorePlan:
    """One Run of the Score widget: where the detector comes from, what to score, and how."""

    slide: Slide
    patch_um: float | None
    batch_size: int
    mode: str
    patch_px: int | None = None  # the patch in level-0 pixels (a slide without mpp), instead of patch_um
    regions: ScoreRegions | None = None  # where to score: an ROI and exclusions (Shapes layers, annotation files)
    grid: PatchGrid | None = None  # score this grid again (a re-score): no tissue mask, no pixel reads if cached
    detector: object | None = None  # use as is
    model_path: Path | None = None  # else load this checkpoint
    checkpoint: Path | None = None  # the file ``detector`` was loaded from, for the result's provenance
    device: str = "auto"
    precision: str = "float32"
    demo_regions: RegionSet | None = None  # else build the demo model and fit it on these normal regions
    fit_config: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=20, batch_size=32, accumulate=1))


def _spare_a_core() -> int:
    """Torch threads that leave one core to the UI thread (reader threads: the pipeline's default, which does too)."""
    return max(1, (os.cpu_count() or 2) - 1)


class _TorchThreads:
    """Leave one core to the UI thread while the worker computes."""

    def __enter__(self):
        import torch

        self.before = torch.get_num_threads()
        torch.set_num_threads(min(self.before, _spare_a_core()))

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self.before)


def session_cache(slide: Slide, grid: PatchGrid) -> EmbeddingCache:
    """The embedding cache of one grid of a slide, for interactive sessions (user cache folder, keyed by content).

    One folder per grid, so going back to an earlier patch size or region re-scores without reading pixels.
    """
    import hashlib
    import json

    grid_key = hashlib.sha256(json.dumps(grid.key(), sort_keys=True).encode()).hexdigest()[:16]
    return EmbeddingCache(cache_dir() / "napari-sessions" / slide.fingerprint()[:20] / grid_key)


def _reference_grid(slide: Slide, roi, patch_um: float | None, what: str) -> PatchGrid:
    """The normal reference's grid: the slide's tissue inside ``roi`` (a RegionSet) by the tissue rule."""
    mask = tissue_mask(slide)
    grid = make_grid(slide, patch_um=patch_um if slide.mpp else None, roi=roi, mask=mask)
    if len(grid) < MIN_REFERENCE_PATCHES:
        raise ValueError(too_few_patches_message(slide, grid, MIN_REFERENCE_PATCHES, what=what, roi=roi,
                                                 mask=mask))
    return grid


def _iter_reference(detector, *, slides=(), roi=None, patch_um=None, folder=None):
    """Embed a normal reference (regions of a slide, whole slides, and/or a folder); return (embeddings, hold-out
    groups, each patch's slide: its index into ``slides``, -1 for a folder's patches). Hold-out groups: drawn
    regions when there are several, else blocks of each slide's tissue (a 4 x 4 division), and sub-folders.
    ``roi`` (a RegionSet) applies to the one slide given with it."""
    import numpy as np
    import torch

    from ..patches import list_images
    from ..pipeline import iter_slide_embeddings
    from ..splits import region_groups

    parts, groups, owner = [], [], []
    for i, slide in enumerate(slides):
        what = "the normal regions" if roi is not None else f"the normal slide {slide.path.name}"
        grid = _reference_grid(slide, roi, patch_um, what)
        embs = yield from restage(iter_slide_embeddings(slide, grid, detector.backend, detector.backend_id),
                                  f"encoding {what}" + (f" ({i + 1} of {len(slides)})" if len(slides) > 1 else ""))
        parts.append(torch.as_tensor(embs))
        owner.append(np.full(len(grid), i))
        groups += region_groups(grid.xy_l0(), grid.patch_size_l0, roi.outlines() if roi is not None else None,
                                prefix=f"{slide.path.name}: ")
    if folder is not None:
        paths, embs = yield from restage(detector.iter_embed_files(list_images(folder, order="walk")),
                                         f"encoding the patches in {folder.name}")
        parts.append(embs)
        owner.append(np.full(len(paths), -1))
        groups += [str(p.parent) for p in paths]
    if not parts:
        raise ValueError("choose a normal reference: a Shapes layer of normal regions, normal slides or a folder "
                         "of normal patches")
    return torch.cat(parts), groups, np.concatenate(owner)


def _iter_fit(detector, *, slides=(), roi=None, patch_um=None, folder=None, config: TrainConfig
              ) -> Generator[Progress, None, list[float]]:
    """Embed the normal reference, train, fit centroids (and the calibration) on held-out whole regions (or bands
    of grid rows, or sub-folders), never on neighbours of training patches."""
    embs, groups, _ = yield from _iter_reference(detector, slides=slides, roi=roi, patch_um=patch_um, folder=folder)
    return (yield from detector.iter_fit(embs, config=config, groups=groups))


def _detector_class():
    """The Detector class; its first import loads torch and the models (seconds, tens of seconds on a cold disk).
    torch's libraries are loaded first with the GIL released, so the window is not held while they map.

    pandas is imported here too: napari imports it on the UI thread for the first points layer with features (the
    top-k), which held the window 0.3 s when the first result was drawn.
    """
    import importlib

    from .._torch_libs import preload_torch_libraries

    preload_torch_libraries()
    from ..detector import Detector

    importlib.import_module("pandas")
    return Detector


_WARM = {"started": False}


def warm_worker():
    """A worker that starts torch and imports the models' code in the background, once per process (None when that
    has been started already): the first Run then finds them loaded."""
    if _WARM["started"]:
        return None
    _WARM["started"] = True
    return _warm()


@thread_worker(ignore_errors=True)
def _warm():
    _detector_class()


@thread_worker(ignore_errors=True)
def load_worker(path: Path, *, device: str, precision: str):
    """Load a checkpoint in the background as soon as it is chosen (the Run that follows reuses it)."""
    return _detector_class().load(path, device=device, precision=precision)


@thread_worker(ignore_errors=True)  # the widgets show errors in the notification area
def score_worker(plan: ScorePlan):
    """Get the detector (reuse, load, or build and fit the demo), lay the grid, score; return the SlideResult.

    Loading torch and building or loading a model have no progress of their own: they run beside the worker
    (:func:`~napari_anonavila.progress.waiting`), so the bar counts seconds and Cancel acts at once.
    """
    Detector = yield from waiting(_detector_class, "starting torch")
    with _TorchThreads():
        det = plan.detector
        if det is None and plan.model_path is not None:
            det = yield from waiting(lambda: Detector.load(plan.model_path, device=plan.device,
                                                           precision=plan.precision), "loading the model")
            yield DetectorReady(det, plan.model_path)
        elif det is None:
            det = yield from waiting(lambda: Detector.create("demo", device=plan.device, precision=plan.precision),
                                     "building the demo model")
            yield from _iter_fit(det, slides=[plan.slide], roi=plan.demo_regions, patch_um=plan.patch_um,
                                 config=plan.fit_config)
            yield DetectorReady(det, None)
        grid, counts = plan.grid, {}
        if grid is None:
            yield Progress("finding tissue", 0, 1)
            regions = plan.regions or ScoreRegions()
            regions.check(plan.slide)
            grid = make_grid(plan.slide, patch_um=plan.patch_um if plan.slide.mpp else None,
                             patch_px=plan.patch_px if plan.patch_px or not plan.slide.mpp else None,
                             roi=regions.roi, exclude=regions.exclude, roi_fraction=regions.roi_fraction,
                             exclude_fraction=regions.exclude_fraction, counts=counts)
        yield GridReady(grid)
        from ..pipeline import iter_score_slide
        from ..userfiles import sha256_file

        ck = plan.model_path or plan.checkpoint
        record = {"path": str(Path(ck).resolve()), "sha256": sha256_file(ck)} if ck and Path(ck).is_file() else None
        result = yield from iter_score_slide(plan.slide, grid, det, batch_size=plan.batch_size,
                                             cache=session_cache(plan.slide, grid), mode=plan.mode,
                                             checkpoint=record)
        if plan.regions:
            result.provenance["regions"] = plan.regions.describe(counts)
    return result


@thread_worker(ignore_errors=True)
def calibrate_worker(detector, *, slides=(), roi=None, patch_um=None, folder=None, normalise: str = "reference"):
    """Calibrate ``detector`` on normal tissue it never saw (its MLP and centroids unchanged), each slide kept as
    the reference's unit (as ``anonavila calibrate`` does: the slide p-value and the leave-one-slide-out check);
    ``normalise="slide"``: each slide on its own scale. Returns the number of reference patches."""
    import numpy as np

    from ..maps import top_percent_mean

    with _TorchThreads():
        embs, _groups, owner = yield from _iter_reference(detector, slides=slides, roi=roi, patch_um=patch_um,
                                                          folder=folder)
        yield Progress("calibrating", 0, 1)
        table = detector.reference_scores(embs)
        names = [s.path.name for s in slides] + ([folder.name] if folder is not None else [])
        where = "normal regions" if roi is not None else ", ".join(names)
        stats = np.array([[top_percent_mean(table[owner == j, m]) for m in range(3)] for j in range(len(slides))])
        detector.calibrate(table, f"{len(embs)} normal patches of {where}, given in napari",
                           stats if len(slides) else None, owner if len(slides) else None, "top1", normalise)
        return len(embs)


@thread_worker(ignore_errors=True)
def fit_worker(detector, *, slides=(), roi=None, patch_um=None, folder=None, config: TrainConfig):
    """Retrain ``detector`` on a normal reference; yield Progress throughout; return the losses."""
    with _TorchThreads():
        return (yield from _iter_fit(detector, slides=slides, roi=roi, patch_um=patch_um, folder=folder,
                                     config=config))


@thread_worker(ignore_errors=True)
def pools_worker(detector, pools):
    """Give ``detector`` new term pools: encodes only unseen prompts, recomputes the centroids; returns it."""
    yield Progress("encoding terms", 0, 1)
    detector.set_pools(pools)
    return detector


@thread_worker(ignore_errors=True)
def export_worker(folder: Path, result, *, formats, top_k: int, regions, slide):
    """Render the overlay and write the chosen formats of ``result``; return the written paths."""
    from ..export.bundle import export_all
    from ..export.overlay import overlay_png

    yield Progress("rendering the overlay", 0, 2)
    picture = overlay_png(result, slide) if "html" in formats else None
    yield Progress("writing", 1, 2)
    return export_all(folder, result, formats=formats, top_k=top_k, regions=regions, slide=slide,
                      overlay_png=picture, overwrite=True)
