"""Invariants as property tests: batching, erosion, slide scores, grid geometry, export/import."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from napari_anonavila.maps import HeatmapGeometry, erode, slide_scores


@pytest.fixture(scope="module")
def det():
    from napari_anonavila.detector import Detector
    from napari_anonavila.training import TrainConfig

    d = Detector.create("demo")
    d.fit(torch.nn.functional.normalize(torch.randn(40, d.embed_dim, generator=torch.Generator().manual_seed(1)),
                                        dim=1), config=TrainConfig(batch_size=10, epochs=2))
    return d


@given(n=st.integers(1, 40), seed=st.integers(0, 2**31), chunk=st.integers(1, 50))
def test_scores_do_not_depend_on_batch_composition_or_order(det, n, seed, chunk):
    rng = np.random.default_rng(seed)
    embs = rng.standard_normal((n, det.embed_dim)).astype(np.float32)
    full = det.score_embeddings(embs)
    perm = rng.permutation(n)
    shuffled = det.score_embeddings(embs[perm], chunk=chunk)
    np.testing.assert_allclose(shuffled.score, full.score[perm], rtol=0, atol=1e-8)
    np.testing.assert_array_equal(shuffled.top_abnormal_idx, full.top_abnormal_idx[perm])


heatmaps = arrays(np.float64, st.tuples(st.integers(1, 12), st.integers(1, 12)),
                  elements=st.floats(0, 1e-2) | st.just(np.nan))


@given(heatmaps)
def test_erosion_never_raises_and_keeps_nan(h):
    e = erode(h)
    assert np.array_equal(np.isnan(e), np.isnan(h))
    ok = ~np.isnan(h)
    assert (e[ok] <= h[ok]).all()


@given(heatmaps)
def test_top1_at_most_max(h):
    s = slide_scores(h)
    if np.isnan(h).all():
        assert all(np.isnan(v) for v in s.values())
    else:
        assert s["top1"] <= s["max"] and s["top1_eroded"] <= s["max_eroded"] <= s["max"]


@given(p=st.integers(8, 1024), ox=st.integers(0, 5000), oy=st.integers(0, 5000), r=st.integers(0, 100),
       c=st.integers(0, 100), dx=st.integers(0, 10**6), dy=st.integers(0, 10**6))
def test_heatmap_cell_maps_back_to_its_patch(p, ox, oy, r, c, dx, dy):
    g = HeatmapGeometry(p, (ox, oy))
    x, y = ox + c * p + dx % p, oy + r * p + dy % p  # any pixel inside the patch of cell (r, c)
    assert g.cell_of(x, y) == (r, c)
    ty, tx = g.napari_translate
    assert (r * p + ty, c * p + tx) == (oy + r * p + (p - 1) / 2, ox + c * p + (p - 1) / 2)


@given(n=st.integers(1, 30), seed=st.integers(0, 2**31), k=st.integers(1, 10))
def test_geojson_export_import_inverse(tmp_path_factory, n, seed, k):
    from napari_anonavila.annotations.geojson import read_geojson
    from napari_anonavila.export.geojson import write_geojson
    from napari_anonavila.reviews import ReviewMarks

    from ..helpers import result_of_scores

    rng = np.random.default_rng(seed)
    cells = rng.choice(400, n, replace=False)
    rows, cols = cells // 20, cells % 20
    t = result_of_scores(rows, cols, 64, (20, 20), rng.random(n) * 1e-3)
    rejected = ReviewMarks.keys_of(t.grid, rng.choice(n, min(n, 2), replace=False))
    t.marks = ReviewMarks(dict.fromkeys(rejected, "rejected"))
    path = tmp_path_factory.mktemp("gj") / "t.geojson"
    write_geojson(path, t, top_k=k)
    feats = read_geojson(path)
    tiles = [f for f in feats if f.object_type == "tile"]
    assert len(tiles) == n
    back = {(int(f.polygons_xy[0][0][0]), int(f.polygons_xy[0][0][1])): f.measurements["anomaly_score"]
            for f in tiles}
    for i in range(n):
        assert back[tuple(int(v) for v in t.xy_l0[i])] == t.score[i]
    marks = {int(f.metadata["patch_index"]): f.metadata["review"] for f in feats if "review" in f.metadata}
    assert {i: s for i, s in marks.items() if s != "unreviewed"} == {i: s for i, s in t.review_states().items()
                                                                     if i in marks}
