"""Streaming whole-slide scoring: reader threads prefetch and preprocess patches while the model encodes.

Memory is bounded by the batch size and the prefetch depth, not by the slide. Embeddings stream into the
embedding cache; a later re-score (new terms, MLP or centroids) reads the cache and never touches pixels.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections import deque
from collections.abc import Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from .backends import VLMBackend
from .embcache import CHUNK_ROWS, EmbeddingCache
from .errors import GridError, NonFiniteError
from .grid import PatchGrid
from .progress import Progress
from .provenance import provenance, slide_record
from .result import SlideResult
from .scoring import PatchScores
from .slide import Slide

__all__ = ["cache_key", "iter_embed_patches", "iter_grid_embeddings", "iter_score_slide",
           "iter_slide_embeddings", "score_slide"]


def cache_key(slide: Slide, grid: PatchGrid, backend_id: str, embed_dim: int, backend: VLMBackend | None) -> dict:
    """What the embeddings depend on: slide content, reader, grid, and the embedding model and its precision."""
    return {"slide_fingerprint": slide.fingerprint(), "reader": slide.reader, "grid": grid.key(),
            "backend_id": backend_id, "embed_dim": embed_dim, "image_size": backend.image_size if backend else 0,
            "precision": backend.numerics if backend else "float32"}


def _read_patches(slide: Slide, xy: np.ndarray, p: int, level: int, backend: VLMBackend) -> list[np.ndarray]:
    """Read and prepare (resize, crop) a few patches: one reader task. The heavy parts run outside the GIL."""
    side = max(1, math.ceil(p / slide.level_downsamples[level]))
    return [backend.prepare(slide.read_region((int(x), int(y)), level, (side, side))) for x, y in xy]


def default_workers() -> int:
    """Reader threads: one per core but one, which the batch conversion and the encoder's own threads use (on
    2 cores, 1 reader beats 2 and 4 by 13-16% when reading is the limit: docs/benchmarks.md); at most 8."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def iter_embed_patches(slide: Slide, grid: PatchGrid, backend: VLMBackend, indices: np.ndarray, *,
                       batch_size: int = 32, workers: int | None = None, prefetch: int = 2
                       ) -> Generator[tuple[int, torch.Tensor, dict], None, None]:
    """Encode the grid patches ``indices`` (in that order); yield ``(position in indices, embeddings, timing)``
    per batch. Reader threads read and prepare patches a few at a time, ``prefetch`` batches ahead; each batch
    is converted and normalised at once (on the model's device) and encoded. Non-finite embeddings raise."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    xy = grid.xy_l0()[np.asarray(indices, np.int64)]
    n = len(xy)
    level = slide.best_level(grid.patch_size_l0 / backend.image_size)
    per_task = max(1, min(8, batch_size // max(1, workers or default_workers())))
    pool = ThreadPoolExecutor(max_workers=workers or default_workers(), thread_name_prefix="anonavila-read")
    batches: deque[list[Future]] = deque()
    starts = iter(range(0, n, batch_size))

    def submit_next() -> None:
        s = next(starts, None)
        if s is not None:
            e = min(n, s + batch_size)
            batches.append([pool.submit(_read_patches, slide, xy[a : min(e, a + per_task)], grid.patch_size_l0,
                                        level, backend) for a in range(s, e, per_task)])

    try:
        for _ in range(prefetch + 1):
            submit_next()
        start = 0
        while batches:
            t0 = time.perf_counter()
            prepared = [img for f in batches.popleft() for img in f.result()]
            submit_next()
            t1 = time.perf_counter()
            embs = backend.encode_images(backend.to_pixels(prepared))
            bad = ~torch.isfinite(embs).all(dim=1)
            if bad.any():
                x, y = xy[start + int(bad.nonzero()[0, 0])]
                raise NonFiniteError(f"{slide.path.name}: the model gave NaN or infinite embeddings for "
                                     f"{int(bad.sum())} patch(es), the first at level-0 ({x}, {y}); its weights "
                                     "may be damaged")
            yield start, embs, {"wait_read_s": t1 - t0, "encode_s": time.perf_counter() - t1}
            start += len(embs)
    finally:
        for fs in batches:
            for f in fs:
                f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def iter_grid_embeddings(slide: Slide, grid: PatchGrid, backend: VLMBackend | None, backend_id: str, embed_dim: int,
                         *, cache: EmbeddingCache | None = None, batch_size: int = 32, workers: int | None = None,
                         prefetch: int = 2, no_backend: Callable[[], Exception] | None = None
                         ) -> Generator[tuple[int, np.ndarray | torch.Tensor, bool, dict], None, None]:
    """Every grid patch's embedding, in grid order: ``(start, rows, from_cache, timing)`` per batch.

    With ``cache``, verified chunks are read instead of pixels and new chunks are committed as soon as they are
    complete, so an interrupted run resumes where it stopped. Without a backend, patches missing from the cache
    raise ``no_backend()`` (the caller's message saying how to attach one).
    """
    n = len(grid)
    entry = None
    if cache is not None:
        rows = batch_size * math.ceil(CHUNK_ROWS / batch_size)  # chunks hold whole batches: a resume encodes alike
        entry = cache.entry(cache_key(slide, grid, backend_id, embed_dim, backend), chunk_rows=rows)
    ranges = entry.ranges() if entry else ([(0, n)] if n else [])
    good = [entry is not None and entry.read(i) is not None for i in range(len(ranges))]
    todo = [np.arange(s, e) for (s, e), ok in zip(ranges, good, strict=True) if not ok]
    if todo and backend is None:
        raise no_backend() if no_backend else ValueError("embeddings are not cached for this grid, and there is no "
                                                         "image model to compute them")
    enc = iter_embed_patches(slide, grid, backend, np.concatenate(todo), batch_size=batch_size, workers=workers,
                             prefetch=prefetch) if todo else None
    carry, carry_timing = None, {}  # rows of a batch that straddled a chunk boundary (a resume with another batch)
    try:
        for i, ((s, e), ok) in enumerate(zip(ranges, good, strict=True)):
            if ok:
                arr = entry.rows(i)
                for b in range(s, e, 4096):
                    yield b, arr[b - s : min(e, b + 4096) - s], True, {}
                continue
            got, parts = s, []
            while got < e:
                if carry is not None:
                    embs, timing, carry, carry_timing = carry, carry_timing, None, {}
                else:
                    _, embs, timing = next(enc)
                if got + len(embs) > e:  # the rest belongs to the next chunk to compute
                    carry, carry_timing = embs[e - got :], {}
                    embs = embs[: e - got]
                parts.append(embs.numpy())
                yield got, embs, False, timing
                got += len(embs)
            if entry is not None:
                entry.write(i, np.concatenate(parts))
    finally:
        if enc is not None:
            enc.close()


def iter_score_slide(slide: Slide, grid: PatchGrid, detector, *, batch_size: int = 32, workers: int | None = None,
                     prefetch: int = 2, cache: EmbeddingCache | None = None, mode: str | None = None, top_k: int = 3,
                     checkpoint: dict | None = None) -> Generator[Progress, None, SlideResult]:
    """Score every grid patch; yield Progress per batch (``info``: ``start`` and the batch's ``scores``); return
    the :class:`~napari_anonavila.result.SlideResult` with its provenance (``checkpoint``: the model file's
    ``{path, sha256}``).

    With ``cache``, verified cached embeddings are scored without reading a pixel, and new ones are committed in
    chunks as they are made (an interrupted run resumes). Closing the generator stops the readers.
    """
    t_start = time.perf_counter()
    mode = str(mode or detector.mode.value)
    total = len(grid)
    parts: list[PatchScores] = []
    timing = {"wait_read_s": 0.0, "encode_s": 0.0, "score_s": 0.0}
    all_cached, n_cached = True, 0
    for start, embs, cached, t in iter_grid_embeddings(slide, grid, detector.backend, detector.backend_id,
                                                       detector.embed_dim, cache=cache, batch_size=batch_size,
                                                       workers=workers, prefetch=prefetch,
                                                       no_backend=detector.no_backend_error):
        all_cached &= cached
        n_cached += len(embs) if cached else 0
        for k in t:
            timing[k] += t[k]
        t0 = time.perf_counter()
        s = detector.score_embeddings(np.asarray(embs) if cached else embs, mode=mode, top_k=top_k)
        timing["score_s"] += time.perf_counter() - t0
        parts.append(s)
        yield Progress("score" if cached else "encode", start + len(s), total, {"start": start, "scores": s})
    timing["total_s"] = time.perf_counter() - t_start
    done = sum(len(p) for p in parts)
    if done != total:  # never a result with patches missing (a cache that lied about its layout, say)
        raise NonFiniteError(f"{done} of {total} patches were scored; the embedding cache or the run is inconsistent: "
                             "score again (--overwrite)")
    record, cal = slide_record(slide), detector.calibration
    return SlideResult.from_run(record, grid, PatchScores.concat(parts, top_k), detector.term_names("normal"),
                                detector.term_names("abnormal"), mode, cal,
                                provenance=provenance(record, grid, mode, cal, detector, checkpoint=checkpoint),
                                timings=timing, from_cache=all_cached and total > 0, n_from_cache=n_cached)


def score_slide(detector, slide: Slide | str | os.PathLike, *, out_dir: str | os.PathLike | None = None,
                patch_um: float | None = None, patch_px: int | None = None, min_tissue: float = 0.25,
                roi_polygons_xy_l0=None, regions=None, mpp: float | None = None, batch_size: int = 32,
                workers: int | None = None, prefetch: int = 2, mode: str | None = None, top_k: int = 3,
                overwrite: bool = False, checkpoint: dict | None = None, extra: dict | None = None, on_progress=None,
                cancel=None) -> SlideResult:
    """Open (if needed), grid, score and (with ``out_dir``) write outputs and the embedding cache. ``extra`` goes
    into the result's provenance (a batch run's settings, say). ``regions`` (a
    :class:`~napari_anonavila.annotations.ScoreRegions`: an ROI and exclusions from annotation files) or
    ``roi_polygons_xy_l0`` say where to score; their files, classes and patch counts go into the provenance.

    The output folder is claimed for the run (a second run into it fails at once); its embedding cache is
    committed in chunks, so a killed or cancelled run resumes, and the outputs are replaced only when complete.
    """
    import contextlib

    from ._atomic import check_writable, claimed_dir, sweep_partials
    from .export.result_folder import write_result_folder
    from .grid import make_grid, patch_size_l0, small_grid_hint
    from .progress import drain
    from .slide import open_slide
    from .slide.brightfield import brightfield_warning

    own = not isinstance(slide, Slide)
    sl = open_slide(slide, mpp=mpp) if own else slide
    try:
        with claimed_dir(out_dir) if out_dir is not None else contextlib.nullcontext() as held:
            out_dir = held  # a symbolic link's target, absolute: where the outputs and caches are committed
            if out_dir is not None:
                check_writable(os.path.join(out_dir, "summary.json"), overwrite=overwrite)
                sweep_partials(out_dir, recursive=True)  # temporary files of killed runs, caches included
                sweep_partials(os.path.dirname(os.path.abspath(out_dir)))  # and their staged result folders
            cache = EmbeddingCache(out_dir) if out_dir is not None else None
            thumb = cache.thumbnail(sl) if cache is not None and sl.cheap_thumbnail else None  # kept: read once
            if (note := brightfield_warning(sl, thumb[0] if thumb else None)) is not None:
                warnings.warn(note, UserWarning, stacklevel=2)
            regions = _regions(regions, roi_polygons_xy_l0, sl)
            grid_key = {"slide_fingerprint": sl.fingerprint(), "min_tissue": min_tissue, "mpp": sl.mpp,
                        "patch_size_l0": patch_size_l0(sl, patch_um=patch_um, patch_px=patch_px),
                        "regions": regions.key()}
            grid = cache.load_grid(grid_key) if cache else None
            counts: dict = {}
            if grid is None or regions:
                grid = make_grid(sl, patch_um=patch_um, patch_px=patch_px, min_tissue=min_tissue, roi=regions.roi,
                                 exclude=regions.exclude, roi_fraction=regions.roi_fraction,
                                 exclude_fraction=regions.exclude_fraction, counts=counts)
                if regions.roi is not None and not len(grid):
                    raise GridError(f"{sl.path.name}: the ROI ({regions.roi.source}) leaves no tissue patch to score")
                if cache:
                    cache.save_grid(grid_key, grid)
            if (hint := small_grid_hint(sl, grid)) is not None:
                warnings.warn(hint, UserWarning, stacklevel=2)
            gen = iter_score_slide(sl, grid, detector, batch_size=batch_size, workers=workers, prefetch=prefetch,
                                   cache=cache, mode=mode, top_k=top_k, checkpoint=checkpoint)
            result = drain(gen, on_progress, cancel)
            result.provenance.update(extra or {})
            if regions:
                result.provenance["regions"] = regions.describe(counts)
            if out_dir is not None:
                write_result_folder(out_dir, result, sl, thumbnail=thumb, overwrite=overwrite, regions=regions)
                cache.prune(cache_key(sl, grid, detector.backend_id, detector.embed_dim, detector.backend), grid_key)
        return result
    finally:
        if own:
            sl.close()


def _regions(regions, polygons, slide: Slide):
    """The run's ROI and exclusions (polygons given as arrays join the ROI), checked against the slide."""
    from .annotations import ScoreRegions, merge, regions_of_polygons

    regions = regions or ScoreRegions()
    if polygons is not None:
        boxes = regions_of_polygons(polygons, source="the regions given", kind="polygons")
        regions = ScoreRegions(merge([regions.roi, boxes]), regions.exclude, regions.roi_fraction,
                               regions.exclude_fraction)
    regions.check(slide)
    return regions


def iter_slide_embeddings(slide: Slide, grid: PatchGrid, backend: VLMBackend, backend_id: str, *,
                          cache: EmbeddingCache | None = None, batch_size: int = 32, workers: int | None = None
                          ) -> Generator[Progress, None, np.ndarray]:
    """All (N, D) embeddings of a grid (for fitting), from the cache where it verifies."""
    out = np.zeros((len(grid), backend.embed_dim), np.float32)
    for start, embs, _cached, _ in iter_grid_embeddings(slide, grid, backend, backend_id, backend.embed_dim,
                                                        cache=cache, batch_size=batch_size, workers=workers):
        out[start : start + len(embs)] = np.asarray(embs)
        yield Progress("encode", start + len(embs), len(grid))
    return out
