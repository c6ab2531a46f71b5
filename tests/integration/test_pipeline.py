"""Whole-slide scoring on synthetic slides with planted anomalies: ranking, alignment, cache, cancel."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from napari_anonavila.errors import CancelledError
from napari_anonavila.export.result_folder import OUTPUT_FILES
from napari_anonavila.grid import make_grid
from napari_anonavila.pipeline import score_slide
from napari_anonavila.sample import cell_labels
from napari_anonavila.slide import open_slide
from napari_anonavila.terms import TermPools


def cached(out):
    """The one complete cache entry in a result folder: (its key, its embeddings)."""
    from napari_anonavila.embcache import EmbeddingCache

    [folder] = list((out / "embeddings").iterdir())
    key = json.loads((folder / "manifest.json").read_text())["key"]
    return key, EmbeddingCache(out).load(key)


def tree(folder):
    """Every file under ``folder`` (relative path -> bytes), hidden temporary files excluded."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()
            and ".partial" not in p.name and not p.name.endswith(".anonavila.lock")}


@pytest.fixture(scope="module")
def scored(tmp_path_factory, sample_slides, fitted_on_sample):
    out = tmp_path_factory.mktemp("scored") / "anomalous"
    with open_slide(sample_slides.anomalous) as s:
        res = score_slide(fitted_on_sample, s, out_dir=out, patch_px=128, batch_size=16)
        reads = s.reads
    return res, out, reads


def test_planted_cells_rank_high(scored, sample_slides):
    res, _, _ = scored
    labels = cell_labels(sample_slides.mask, sample_slides.mask_downsample, res.grid.cells_rc, res.grid.patch_size_l0)
    assert labels.sum() >= 5
    assert roc_auc_score(labels, res.score) > 0.9
    top = res.top_k(int(labels.sum()))
    assert labels[top].mean() > 0.6


def test_heatmap_cells_map_back_to_their_patch(scored):
    res, out, _ = scored
    heat = np.load(out / "heatmap.npy")
    xy = res.grid.xy_l0()
    g = res.geometry
    for i in [0, len(xy) // 2, len(xy) - 1]:
        r, c = g.cell_of(int(xy[i, 0]) + 5, int(xy[i, 1]) + 5)
        assert heat[r, c] == pytest.approx(res.score[i], rel=1e-6)
        # napari: the cell centre sits at (row * p + translate) == the patch's level-0 pixel centre
        ty, tx = g.napari_translate
        assert (r * g.patch_size_l0 + ty, c * g.patch_size_l0 + tx) == (xy[i, 1] + 63.5, xy[i, 0] + 63.5)


def test_outputs_and_provenance(scored):
    res, out, _ = scored
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_patches"] == len(res)
    assert summary["slide_scores"]["top1"] <= summary["slide_scores"]["max"]
    assert summary["slide_scores"]["max_eroded"] <= summary["slide_scores"]["max"]
    prov = summary["provenance"]
    assert prov["backend"]["spec"] == "demo" and len(prov["slide"]["fingerprint_sha256"]) == 64
    assert prov["grid"]["patch_size_l0"] == 128 and prov["term_pools"]["normal"]
    assert len(summary["top_k"]) == 10 and summary["top_k"][0]["rank"] == 1
    assert (out / "overlay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = (out / "patches.csv").read_text().splitlines()
    assert lines[0].startswith("x_l0,y_l0,size_l0") and len(lines) == len(res) + 1


def test_cache_rescore_equals_fresh_without_reading_pixels(scored, sample_slides, fitted_on_sample):
    res, out, first_reads = scored
    assert first_reads >= len(res)
    with open_slide(sample_slides.anomalous) as s:
        again = score_slide(fitted_on_sample, s, out_dir=out, patch_px=128, overwrite=True)
        assert s.reads == 0
    assert again.from_cache
    # batch shapes differ between the runs (16 vs 512 rows): float32 head, float64 distances agree to 1e-8
    np.testing.assert_allclose(again.score, res.score, rtol=0, atol=1e-8)


def test_term_edit_rescored_from_cache_differs_and_reads_nothing(scored, sample_slides, fitted_on_sample, tmp_path):
    import copy

    _, out, _ = scored
    det = copy.deepcopy(fitted_on_sample)
    pools = det.pools
    det.set_pools(TermPools(pools.normal[:-5], (*pools.abnormal, "an image showing necrotic debris")))
    with open_slide(sample_slides.anomalous) as s:
        res = score_slide(det, s, out_dir=out, patch_px=128, overwrite=True)
        assert s.reads == 0
    assert res.from_cache
    assert not np.array_equal(res.score, fitted_on_sample.score_embeddings(cached(out)[1]).score)


def test_cache_for_another_grid_is_rebuilt(scored, sample_slides, fitted_on_sample):
    _, out, _ = scored
    with open_slide(sample_slides.anomalous) as s:
        res = score_slide(fitted_on_sample, s, out_dir=out, patch_px=256, overwrite=True)
        assert s.reads > 0
    assert not res.from_cache
    key, embs = cached(out)  # the finished run replaced the other grid's entry
    assert key["grid"]["patch_size_l0"] == 256 and len(embs) == len(res)


def test_cancel_leaves_previous_outputs_untouched(tmp_path, sample_slides, fitted_on_sample):
    out = tmp_path / "run"
    score_slide(fitted_on_sample, sample_slides.anomalous, out_dir=out, patch_px=256)
    before = tree(out)
    cancel = threading.Event()

    def on_progress(e):
        if e.done >= 8:
            cancel.set()

    with pytest.raises(CancelledError):
        score_slide(fitted_on_sample, sample_slides.anomalous, out_dir=out, patch_px=128, overwrite=True,
                    batch_size=4, on_progress=on_progress, cancel=cancel)
    after = tree(out)
    assert not list(out.rglob("*.partial"))  # no partial file
    assert {n: after[n] for n in before} == before  # results and the finished cache untouched
    assert set(OUTPUT_FILES) - {"regions.geojson"} <= set(before)  # (regions.geojson: only with an ROI)


def test_existing_result_is_refused_without_overwrite(tmp_path, sample_slides, fitted_on_sample):
    out = tmp_path / "r"
    score_slide(fitted_on_sample, sample_slides.anomalous, out_dir=out, patch_px=256)
    with pytest.raises(FileExistsError, match="overwrite"):
        score_slide(fitted_on_sample, sample_slides.anomalous, out_dir=out, patch_px=256)


def test_score_invariant_to_batch_size(sample_slides, fitted_on_sample):
    with open_slide(sample_slides.anomalous) as s:
        g = make_grid(s, patch_px=256)
        a = score_slide(fitted_on_sample, s, patch_px=256, batch_size=3, workers=2)
        b = score_slide(fitted_on_sample, s, patch_px=256, batch_size=64, workers=4)
    assert len(a) == len(g)
    # the float32 VLM and head depend on the batch shape at ~1e-7: scores agree to 1e-4 relative or 1e-9 absolute
    np.testing.assert_allclose(a.score, b.score, rtol=1e-4, atol=1e-9)
    assert (np.argsort(a.score) == np.argsort(b.score)).mean() > 0.95


def test_fit_from_a_normal_region(sample_slides, demo_backend):
    from napari_anonavila.detector import Detector
    from napari_anonavila.pipeline import iter_slide_embeddings
    from napari_anonavila.progress import drain
    from napari_anonavila.training import TrainConfig

    det = Detector.create(demo_backend)
    box = np.array([[0, 0], [1024, 0], [1024, 1024], [0, 1024]])
    with open_slide(sample_slides.normal) as s:
        grid = make_grid(s, patch_px=128, roi_polygons_xy_l0=[box])
        embs = drain(iter_slide_embeddings(s, grid, demo_backend, det.backend_id))
    assert len(embs) == len(grid) <= 64
    det.fit(embs, config=TrainConfig(batch_size=8, accumulate=1, epochs=2))
    assert det.is_fitted
