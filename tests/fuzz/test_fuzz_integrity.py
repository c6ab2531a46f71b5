"""Fuzzing the integrity boundaries: damaged caches and checkpoints, absurd numbers, templates and mpp values.

The only outcomes allowed: the right result (equal to a fresh computation), or our own error naming the input.
Never a NaN, never a stale value, never a traceback from deep inside a library.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_anonavila.errors import AnonavilaError, CheckpointError, InputFileError, TermPoolError


@pytest.fixture(scope="module")
def small(tmp_path_factory, fitted_on_sample):
    """A small slide, its fresh scores and a result folder whose cache the examples damage."""
    from napari_anonavila.pipeline import score_slide
    from napari_anonavila.sample import make_tissue, write_pyramid_tiff

    root = tmp_path_factory.mktemp("fz-cache")
    slide = write_pyramid_tiff(root / "s.tif", make_tissue(512, 4)[0], 0.5)
    fresh = score_slide(fitted_on_sample, slide, patch_px=64, min_tissue=0).score
    return slide, fresh, root


@settings(max_examples=15)
@given(target=st.sampled_from(["chunk", "manifest"]), where=st.floats(0, 1), value=st.integers(0, 255),
       truncate=st.booleans())
def test_damaged_cache_never_gives_stale_scores(small, fitted_on_sample, target, where, value, truncate):
    from napari_anonavila.pipeline import score_slide

    slide, fresh, root = small
    out = root / "out"
    score_slide(fitted_on_sample, slide, out_dir=out, patch_px=64, min_tissue=0, overwrite=True)
    [entry] = (out / "embeddings").iterdir()
    path = entry / ("chunk-00000.npy" if target == "chunk" else "manifest.json")
    raw = bytearray(path.read_bytes())
    raw = raw[: int(where * len(raw))] if truncate else raw
    if not truncate and raw:
        raw[min(len(raw) - 1, int(where * len(raw)))] = value
    path.write_bytes(bytes(raw))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = score_slide(fitted_on_sample, slide, out_dir=out, patch_px=64, min_tissue=0, overwrite=True)
    np.testing.assert_allclose(res.score, fresh, rtol=0, atol=1e-6)


@settings(max_examples=25)
@given(name=st.sampled_from(["mlp.linear1.weight", "mlp.linear3.bias", "text.normal", "text.abnormal",
                             "centroid.normal", "reference"]),
       value=st.sampled_from([math.nan, math.inf, -math.inf, 1e38, 0.0, -3.0]), index=st.integers(0, 10_000))
def test_tampered_checkpoints_load_or_are_refused(tmp_path_factory, fitted_on_sample, name, value, index):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from napari_anonavila.detector import Detector

    d = tmp_path_factory.mktemp("fz-ck")
    ck = fitted_on_sample.save(d / "ok.safetensors")
    with safe_open(str(ck), framework="pt") as fh:
        header, tensors = fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    t = tensors[name].clone()
    t.view(-1)[index % t.numel()] = value
    tensors[name] = t
    save_file(tensors, str(d / "x.safetensors"), metadata=header)
    try:
        det = Detector.load(d / "x.safetensors", attach_backend=False)
    except CheckpointError as err:
        assert "x.safetensors" in str(err) and not math.isfinite(value)
        return
    assert math.isfinite(value)
    try:
        scores = det.score_embeddings(torch.nn.functional.normalize(torch.randn(4, det.embed_dim), dim=1))
    except AnonavilaError:  # e.g. a zeroed text embedding: refused, never NaN passed on
        return
    assert np.isfinite(scores.score).all()


@given(x=st.integers(0, 10**12), y=st.integers(0, 10**12), p=st.integers(1, 4096))
def test_slide_scores_from_names_never_allocate_absurdly(x, y, p):
    from napari_anonavila.maps import MAX_CELLS, heatmaps_from_patch_names

    try:
        maps = heatmaps_from_patch_names([(f"s_{x}_{y}_1.png", 0.5), ("s_0_0_1.png", 0.1)], p)
    except InputFileError as err:
        assert "check the patch names" in str(err) or "same heatmap cell" in str(err)
        return
    assert maps["s"].size <= MAX_CELLS


@given(template=st.text(max_size=30))
def test_templates_are_checked(template):
    from napari_anonavila.terms import TermPools

    try:
        pools = TermPools(("a " + template.replace("{}", "x"),), ("b",), template=template)
    except TermPoolError as err:
        assert "template" in str(err) or "duplicates" in str(err) or "empty" in str(err)
        return
    assert template.count("{}") == 1
    assert pools.template.format("term")


@given(mpp=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10**6)))
def test_given_mpp_is_checked_before_opening(tmp_path_factory, sample_slides, mpp):
    from napari_anonavila.slide import open_slide

    try:
        s = open_slide(sample_slides.normal, mpp=mpp)
    except ValueError as err:
        assert "plausible" in str(err)
        return
    with s:
        assert 0.01 <= s.mpp <= 100


@given(depth=st.integers(1, 200_000), digits=st.integers(1, 5000))
def test_geojson_depth_and_digits(tmp_path_factory, depth, digits):
    from napari_anonavila.annotations.geojson import read_geojson

    d = tmp_path_factory.mktemp("fz-gj")
    nested = "[" * depth + "]" * depth
    doc = json.dumps({"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [0, 0]}})
    doc = doc.replace("[0, 0]", f"[1{'0' * digits}, {nested if depth < 50 else 0}]")
    p = d / "g.geojson"
    p.write_text(doc)
    try:
        feats = read_geojson(p)
    except InputFileError as err:
        assert "g.geojson" in str(err)
        return
    assert all(np.isfinite(f.points_xy).all() for f in feats if f.points_xy is not None)
