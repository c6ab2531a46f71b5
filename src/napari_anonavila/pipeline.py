"""Streaming whole-slide scoring: reader threads prefetch and preprocess patches while the model encodes.

Memory is bounded by the batch size and the prefetch depth, not by the slide. Embeddings stream into the
embedding cache; a later re-score (new terms, MLP or centroids) reads the cache and never touches pixels.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from collections.abc import Generator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from .backends import VLMBackend
from .embcache import EmbeddingCache
from .grid import PatchGrid
from .maps import HeatmapGeometry, cells_to_heatmap, erode, slide_scores
from .progress import Progress
from .scoring import PatchScores
from .slide import Slide

__all__ = ["SlideResult", "cache_key", "iter_embed_grid", "iter_score_slide", "score_slide"]


@dataclass
class SlideResult:
    """Scores of one slide's patch grid, in grid order, with the slide's description and timings."""

    slide: dict
    grid: PatchGrid
    scores: PatchScores
    mode: str
    timings: dict = field(default_factory=dict)
    from_cache: bool = False

    @property
    def geometry(self) -> HeatmapGeometry:
        return HeatmapGeometry(self.grid.patch_size_l0, self.grid.origin_xy_l0)

    def heatmap(self, *, eroded: bool = False, values: str = "score") -> np.ndarray:
        """(rows, cols) grid of ``values`` (score, d_normal or d_abnormal), NaN where nothing was scored."""
        n = len(self.scores)
        cells = self.grid.cells_rc[:n]
        h = cells_to_heatmap(cells[:, 0], cells[:, 1], getattr(self.scores, values), self.grid.shape_rc)
        return erode(h) if eroded else h

    def slide_scores(self) -> dict[str, float]:
        return slide_scores(self.heatmap())

    def top_k(self, k: int = 10) -> np.ndarray:
        """Indices of the ``k`` highest-scoring patches, best first."""
        order = np.argsort(-self.scores.score, kind="stable")
        return order[:k]


def cache_key(slide: Slide, grid: PatchGrid, backend_id: str, embed_dim: int, image_size: int) -> dict:
    """What the embeddings depend on: slide content, reader, grid, and the embedding model."""
    return {"slide_fingerprint": slide.fingerprint(), "reader": slide.reader, "grid": grid.key(),
            "backend_id": backend_id, "embed_dim": embed_dim, "image_size": image_size}


def _read_patch(slide: Slide, xy: np.ndarray, p: int, level: int, backend: VLMBackend) -> torch.Tensor:
    ds = slide.level_downsamples[level]
    side = max(1, math.ceil(p / ds))
    region = slide.read_region((int(xy[0]), int(xy[1])), level, (side, side))
    return backend.preprocess([region])[0]


def default_workers() -> int:
    return max(2, min(8, (os.cpu_count() or 2)))


def iter_embed_grid(slide: Slide, grid: PatchGrid, backend: VLMBackend, *, batch_size: int = 32,
                    workers: int | None = None, prefetch: int = 2
                    ) -> Generator[tuple[int, torch.Tensor, dict], None, None]:
    """Yield ``(start, embeddings, timing)`` per batch, in grid order. Reads run ``prefetch`` batches ahead."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    xy = grid.xy_l0()
    level = slide.best_level(grid.patch_size_l0 / backend.image_size)
    pool = ThreadPoolExecutor(max_workers=workers or default_workers(), thread_name_prefix="anonavila-read")
    pending: deque[Future] = deque()
    nxt = 0
    try:
        for start in range(0, len(grid), batch_size):
            t0 = time.perf_counter()
            while nxt < min(len(grid), start + (prefetch + 1) * batch_size):
                pending.append(pool.submit(_read_patch, slide, xy[nxt], grid.patch_size_l0, level, backend))
                nxt += 1
            pixels = torch.stack([pending.popleft().result() for _ in range(min(batch_size, len(grid) - start))])
            t1 = time.perf_counter()
            embs = backend.encode_images(pixels)
            yield start, embs, {"wait_read_s": t1 - t0, "encode_s": time.perf_counter() - t1}
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def iter_score_slide(slide: Slide, grid: PatchGrid, detector, *, batch_size: int = 32, workers: int | None = None,
                     prefetch: int = 2, cache: EmbeddingCache | None = None, mode: str | None = None, top_k: int = 3
                     ) -> Generator[Progress, None, SlideResult]:
    """Score every grid patch; yield Progress per batch (``info``: ``start`` and the batch's ``scores``).

    With ``cache``, valid cached embeddings are scored without reading a pixel; otherwise they are computed
    and written to the cache when complete. Closing the generator stops the readers; nothing partial is kept.
    """
    t_start = time.perf_counter()
    mode = str(mode or detector.mode.value)
    total = len(grid)
    parts: list[PatchScores] = []
    backend = detector.backend
    key = cache_key(slide, grid, detector.backend_id, detector.embed_dim,
                    backend.image_size if backend else 0) if cache else None
    cached = cache.load(key) if cache else None
    timing = {"wait_read_s": 0.0, "encode_s": 0.0, "score_s": 0.0}
    if cached is not None:
        for start in range(0, total, 4096):
            t0 = time.perf_counter()
            s = detector.score_embeddings(np.array(cached[start : start + 4096]), mode=mode, top_k=top_k)
            timing["score_s"] += time.perf_counter() - t0
            parts.append(s)
            yield Progress("score", start + len(s), total, {"start": start, "scores": s})
    else:
        detector.require_backend()
        writer = cache.writer(key) if cache and total else None
        try:
            for start, embs, t in iter_embed_grid(slide, grid, backend, batch_size=batch_size, workers=workers,
                                                  prefetch=prefetch):
                for k in t:
                    timing[k] += t[k]
                if writer:
                    writer.append(embs.numpy())
                t0 = time.perf_counter()
                s = detector.score_embeddings(embs, mode=mode, top_k=top_k)
                timing["score_s"] += time.perf_counter() - t0
                parts.append(s)
                yield Progress("encode", start + len(s), total, {"start": start, "scores": s})
            if writer:
                writer.commit()
        finally:
            if writer and not writer.committed:
                writer.abort()
    timing["total_s"] = time.perf_counter() - t_start
    return SlideResult(slide.describe(), grid, PatchScores.concat(parts, top_k), mode, timing, cached is not None)


def score_slide(detector, slide: Slide | str | os.PathLike, *, out_dir: str | os.PathLike | None = None,
                patch_um: float | None = None, patch_px: int | None = None, min_tissue: float = 0.25,
                roi_polygons_xy_l0=None, mpp: float | None = None, batch_size: int = 32, workers: int | None = None,
                prefetch: int = 2, mode: str | None = None, top_k: int = 3, overwrite: bool = False,
                checkpoint: dict | None = None, extra: dict | None = None, on_progress=None, cancel=None
                ) -> SlideResult:
    """Open (if needed), grid, score and (with ``out_dir``) write outputs and the embedding cache."""
    from ._atomic import check_writable, sweep_partials
    from .export.slide_outputs import write_slide_outputs
    from .grid import make_grid, patch_size_l0
    from .progress import drain
    from .slide import open_slide

    own = not isinstance(slide, Slide)
    sl = open_slide(slide, mpp=mpp) if own else slide
    try:
        if out_dir is not None:
            check_writable(os.path.join(out_dir, "summary.json"), overwrite=overwrite)
            if os.path.isdir(out_dir):
                sweep_partials(out_dir)  # temporary files of killed runs
        cache = EmbeddingCache(out_dir) if out_dir is not None else None
        grid_key = {"slide_fingerprint": sl.fingerprint(), "patch_size_l0": patch_size_l0(sl, patch_um=patch_um,
                    patch_px=patch_px), "min_tissue": min_tissue, "mpp": sl.mpp,
                    "roi_polygons_xy_l0": [np.asarray(p).tolist() for p in roi_polygons_xy_l0 or []]}
        grid = cache.load_grid(grid_key) if cache else None
        if grid is None:
            grid = make_grid(sl, patch_um=patch_um, patch_px=patch_px, min_tissue=min_tissue,
                             roi_polygons_xy_l0=roi_polygons_xy_l0)
            if cache:
                cache.save_grid(grid_key, grid)
        gen = iter_score_slide(sl, grid, detector, batch_size=batch_size, workers=workers, prefetch=prefetch,
                               cache=cache, mode=mode, top_k=top_k)
        result = drain(gen, on_progress, cancel)
        if out_dir is not None:
            write_slide_outputs(out_dir, result, detector, sl, thumbnail=cache.thumbnail(sl), overwrite=overwrite,
                                checkpoint=checkpoint, extra=extra)
        return result
    finally:
        if own:
            sl.close()


def iter_slide_embeddings(slide: Slide, grid: PatchGrid, backend: VLMBackend, backend_id: str, *,
                          cache: EmbeddingCache | None = None, batch_size: int = 32, workers: int | None = None
                          ) -> Generator[Progress, None, np.ndarray]:
    """All (N, D) embeddings of a grid (for fitting), from the cache when it is valid."""
    key = cache_key(slide, grid, backend_id, backend.embed_dim, backend.image_size) if cache else None
    cached = cache.load(key) if cache else None
    if cached is not None:
        return np.array(cached)
    out = np.zeros((len(grid), backend.embed_dim), np.float32)
    for start, embs, _ in iter_embed_grid(slide, grid, backend, batch_size=batch_size, workers=workers):
        out[start : start + len(embs)] = embs.numpy()
        yield Progress("encode", start + len(embs), len(grid))
    if cache and len(grid):
        writer = cache.writer(key)
        try:
            writer.append(out)
            writer.commit()
        finally:
            if not writer.committed:
                writer.abort()
    return out
