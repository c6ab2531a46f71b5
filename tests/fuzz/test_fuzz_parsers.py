"""Every parser at the boundary: the only outcomes are a correct result or our own error naming the input."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from napari_anonavila.annotations.geojson import read_geojson
from napari_anonavila.errors import AnonavilaError, CheckpointError, InputFileError, TermPoolError
from napari_anonavila.export.tables import read_score_column
from napari_anonavila.patches import parse_patch_name
from napari_anonavila.terms import load_pool

text_lines = st.lists(st.text(min_size=0, max_size=40), max_size=12)
newline = st.sampled_from(["\n", "\r\n", "\r"])


def _write(tmp_path_factory, name: str, data: bytes):
    p = tmp_path_factory.mktemp("fz") / name
    p.write_bytes(data)
    return p


@given(lines=text_lines, nl=newline, bom=st.booleans(), header=st.sampled_from(["Normal", "Abnormal", "normal",
                                                                                  "Terms", ""]),
       suffix=st.sampled_from([".csv", ".txt"]))
@example(lines=['a,"b', '"c""d"'], nl="\n", bom=True, header="Normal", suffix=".csv")
def test_term_files(tmp_path_factory, lines, nl, bom, header, suffix):
    body = nl.join([header, *lines] if suffix == ".csv" else lines)
    path = _write(tmp_path_factory, f"pool{suffix}", (b"\xef\xbb\xbf" if bom else b"") + body.encode("utf-8"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            pool = load_pool(path)
        except TermPoolError as err:
            assert str(path) in str(err) or "template" in str(err)
            return
    assert pool and all(p.strip() for p in pool)  # kept as written (spaces are tokens to CONCH), never blank
    keys = [" ".join(p.casefold().split()) for p in pool]
    assert len(keys) == len(set(keys))


@given(slide=st.text(min_size=1, max_size=20), x=st.integers(0, 10**7), y=st.integers(0, 10**7),
       code=st.text(alphabet="0123456789abc", min_size=1, max_size=4))
def test_patch_names_round_trip(slide, x, y, code):
    if "/" in slide or "\x00" in slide or slide.strip() != slide or "\n" in slide:
        return
    p = parse_patch_name(f"{slide}_{x}_{y}_{code}.png")
    assert (p.slide_id, p.x, p.y, p.code) == (slide, x, y, code)


@given(st.text(max_size=40))
def test_patch_names_random(name):
    try:
        p = parse_patch_name(name)
    except InputFileError as err:
        assert "does not parse" in str(err)
        return
    assert isinstance(p.x, int) and isinstance(p.y, int)


@given(rows=st.lists(st.tuples(st.text(max_size=15), st.text(max_size=10)), max_size=8), bom=st.booleans())
def test_score_csvs(tmp_path_factory, rows, bom):
    import csv
    import io

    buf = io.StringIO()
    csv.writer(buf).writerows([("patch_name", "Ascore"), *rows])
    path = _write(tmp_path_factory, "s.csv", (b"\xef\xbb\xbf" if bom else b"") + buf.getvalue().encode("utf-8",
                                                                                                        "replace"))
    try:
        out = read_score_column(path, "patch_name", "Ascore")
    except InputFileError as err:
        assert "s.csv" in str(err)
        return
    assert all(np.isfinite(v) or np.isinf(v) for _, v in out)


json_values = st.recursive(st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=8),
                           lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                           max_leaves=20)
geometry = st.fixed_dictionaries({"type": st.sampled_from(["Polygon", "MultiPolygon", "Point", "LineString", "x"]),
                                  "coordinates": json_values})
feature = st.fixed_dictionaries({"type": st.just("Feature"), "geometry": geometry | json_values,
                                 "properties": st.dictionaries(st.sampled_from(
                                     ["objectType", "object_type", "classification", "measurements", "metadata",
                                      "name", "isLocked", "other"]), json_values, max_size=5) | json_values})


@given(st.lists(feature, max_size=4) | json_values)
def test_geojson_structures(tmp_path_factory, features):
    doc = {"type": "FeatureCollection", "features": features} if isinstance(features, list) else features
    path = _write(tmp_path_factory, "f.geojson", json.dumps(doc).encode())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            feats = read_geojson(path)
        except InputFileError as err:
            assert "f.geojson" in str(err)
            return
    for f in feats:
        assert f.polygons_xy or f.points_xy is not None


RANDOM_BYTES_READERS = {
    "pool.csv": (load_pool, TermPoolError),
    "s.csv": (lambda p: read_score_column(p, "patch_name", "Ascore"), InputFileError),
    "f.geojson": (read_geojson, InputFileError),
}


@pytest.mark.parametrize("name", sorted(RANDOM_BYTES_READERS))
@given(data=st.binary(max_size=300))
def test_text_parsers_on_random_bytes(tmp_path_factory, name, data):
    read, error = RANDOM_BYTES_READERS[name]
    path = _write(tmp_path_factory, name, data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            read(path)
        except error as err:
            assert name in str(err)


@given(st.binary(max_size=400))
def test_checkpoints_random_bytes(tmp_path_factory, data):
    from napari_anonavila.detector import Detector

    for name in ("m.safetensors", "m.pth"):
        path = _write(tmp_path_factory, name, data)
        with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
            (Detector.load(path, attach_backend=False) if name.endswith("safetensors")
             else Detector.from_official_checkpoint(path))


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    from napari_anonavila.detector import Detector
    from napari_anonavila.training import TrainConfig

    det = Detector.create("demo")
    det.fit(torch.nn.functional.normalize(torch.randn(20, det.embed_dim), dim=1), config=TrainConfig(batch_size=10))
    return det.save(tmp_path_factory.mktemp("ck") / "good.safetensors").read_bytes()


@given(cut=st.floats(0, 1), flips=st.lists(st.integers(0, 10**9), max_size=4))
def test_checkpoints_truncated_or_flipped(tmp_path_factory, good_checkpoint, cut, flips):
    from napari_anonavila.detector import Detector

    data = bytearray(good_checkpoint[: max(1, int(len(good_checkpoint) * cut))])
    for f in flips:
        data[f % len(data)] ^= 0x5A
    path = _write(tmp_path_factory, "c.safetensors", bytes(data))
    try:
        det = Detector.load(path, attach_backend=False)
    except CheckpointError as err:
        assert "c.safetensors" in str(err)
        return
    assert det.embed_dim > 0  # a flip inside tensor data still loads a well-formed checkpoint


@given(st.sampled_from(["normal_text_embs", "MLP.linear1.weight", "normal_img_normal_text_centroid"]),
       st.sampled_from([(3,), (2, 2, 2), (0, 16)]))
def test_official_checkpoint_wrong_tensors(tmp_path_factory, key, shape):
    from napari_anonavila.detector import Detector
    from napari_anonavila.head import MLP

    state = {f"MLP.{k}": v for k, v in MLP(16).state_dict().items()}
    state.update(normal_text_embs=torch.randn(92, 16), abnormal_text_embs=torch.randn(48, 16),
                 normal_img_normal_text_centroid=torch.randn(1, 4), normal_img_abnormal_text_centroid=torch.randn(1, 4))
    state["VLM.logit_scale"] = torch.tensor(4.6)
    state[key] = torch.randn(*shape)
    path = tmp_path_factory.mktemp("o") / "bad.pth"
    torch.save({"model_state": state}, path)
    with pytest.raises(AnonavilaError, match=r"bad\.pth"):
        Detector.from_official_checkpoint(path)
