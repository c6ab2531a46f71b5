"""QA export: QuPath GeoJSON against CONVENTIONS.md, round trips, OME-TIFF alignment, report, provenance, CLI."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
import shapely.geometry

from napari_anonavila.annotations.geojson import read_geojson
from napari_anonavila.cli import main
from napari_anonavila.errors import InputFileError
from napari_anonavila.export.bundle import check_provenance, export_all
from napari_anonavila.export.geojson import feature_to_geojson, region_feature, write_features
from napari_anonavila.export.result_folder import open_result
from napari_anonavila.pipeline import score_slide

from ..conftest import shared_path

OBJECT_TYPES = {"annotation", "detection", "tile", "cell", "tmaCore"}


@pytest.fixture(scope="module")
def result_dir(tmp_path_factory, fitted_on_sample):
    """cmu-1 (non-square: 2220 x 2967 px) scored into a result folder."""
    out = tmp_path_factory.mktemp("res") / "cmu"
    res = score_slide(fitted_on_sample, shared_path("slides", "cmu-1-small-region.svs"), out_dir=out)
    return out, res


@pytest.fixture(scope="module")
def exported(tmp_path_factory, result_dir):
    out, _ = result_dir
    table = open_result(out)
    table.marks.set(table.marks.keys_of(table.grid, table.top_k(1)), "confirmed")
    table.marks.set(table.marks.keys_of(table.grid, table.top_k(2)[1:]), "rejected")
    regions = [region_feature(np.array([[10, 20], [400, 20], [400, 300]]), "Normal", metadata={"by": "reviewer"})]
    folder = tmp_path_factory.mktemp("export")
    written = export_all(folder, table, top_k=5, regions=regions, overlay_png=(out / "overlay.png").read_bytes())
    return table, written


def check_qupath_feature(f: dict, width: int, height: int) -> None:
    """Every rule of shared/docs/CONVENTIONS.md for one feature."""
    assert f["type"] == "Feature"
    uuid.UUID(f["id"])
    assert "objectType" not in f and "object_type" not in f["properties"]
    props = f["properties"]
    assert props["objectType"] in OBJECT_TYPES
    cls = props.get("classification")
    if cls is not None:
        assert isinstance(cls["name"], str)
        assert len(cls["color"]) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in cls["color"])
    if "measurements" in props:
        assert isinstance(props["measurements"], dict)
        assert all(isinstance(v, (int, float)) for v in props["measurements"].values())
    if "isLocked" in props:
        assert props["isLocked"] is True
    if "metadata" in props:
        assert props["objectType"] == "annotation"
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in props["metadata"].items())
    geom = f["geometry"]
    assert geom["type"] == "Polygon"  # single polygons are never one-member MultiPolygons
    ring = geom["coordinates"][0]
    assert ring[0] == ring[-1] and len(ring) >= 4
    poly = shapely.geometry.shape(geom)
    assert poly.is_valid and poly.area > 0
    minx, miny, maxx, maxy = poly.bounds
    assert minx >= 0 and miny >= 0 and maxx <= width and maxy <= height


def test_geojson_follows_qupath_conventions(exported):
    table, written = exported
    doc = json.loads(written["geojson"].read_text())
    assert doc["type"] == "FeatureCollection"
    feats = doc["features"]
    w, h = 2220, 2967
    for f in feats:
        check_qupath_feature(f, w, h)
    tiles = [f for f in feats if f["properties"]["objectType"] == "tile"]
    annos = [f for f in feats if f["properties"]["objectType"] == "annotation"]
    assert len(tiles) == len(table) and len(annos) == 5 + 1
    m = tiles[0]["properties"]["measurements"]
    calibrated = {"z", "p_normal", "significant"} if table.calibrated else set()
    assert set(m) == {"anomaly_score", "d_normal", "d_abnormal", "rank"} | calibrated
    top = [a for a in annos if a["properties"].get("isLocked")]
    assert top[0]["properties"]["classification"]["name"] == "Anomaly confirmed"
    assert top[1]["properties"]["classification"]["name"] == "Anomaly rejected"
    assert "top_abnormal_terms" in top[0]["properties"]["metadata"]
    assert {t["properties"]["classification"]["name"] for t in tiles} <= {"Anomaly low", "Anomaly medium",
                                                                           "Anomaly high", "Anomaly very high"}


def test_x_y_orientation_on_a_non_square_slide(exported, result_dir, fitted_on_sample):
    from napari.layers import Image

    from napari_anonavila._napari.layers import review_points, slide_layer_data
    from napari_anonavila.reviews import ReviewMarks
    from napari_anonavila.slide import open_slide

    table, written = exported
    _, res = result_dir
    tiles = [f for f in json.loads(written["geojson"].read_text())["features"]
             if f["properties"]["objectType"] == "tile"]
    by_rank = {f["properties"]["measurements"]["rank"]: f for f in tiles}
    i = int(table.top_k(1)[0])
    corner = by_rank[1]["geometry"]["coordinates"][0][0]
    x, y = (int(v) for v in table.xy_l0[i])
    assert corner == [x, y]  # CSV (x, y) -> GeoJSON [x, y]
    assert max(f["geometry"]["coordinates"][0][2][1] for f in tiles) > 2220  # y runs along the long side
    with open_slide(res.slide["path"]) as slide:
        data, kwargs, _ = slide_layer_data(slide)
        layer = Image(data, **kwargs)
        coords, pkw = review_points(res, 1, ReviewMarks(), layer)
    p = table.patch_size_l0
    assert tuple(coords[0]) == (y + (p - 1) / 2, x + (p - 1) / 2)  # napari (row=y, col=x)
    assert pkw["scale"] == pytest.approx(tuple(layer.scale))  # the points share the slide's transform


def test_round_trip_export_import_export(exported, tmp_path):
    _, written = exported
    first = read_geojson(written["geojson"])
    again = write_features(tmp_path / "again.geojson", (feature_to_geojson(f) for f in first))
    second = read_geojson(again)
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        assert (a.object_type, a.name, a.classification, a.color, a.locked) == \
               (b.object_type, b.name, b.classification, b.color, b.locked)
        assert a.measurements == b.measurements and a.metadata == b.metadata
        for pa, pb in zip(a.polygons_xy, b.polygons_xy, strict=True):
            np.testing.assert_array_equal(pa, pb)


def test_review_state_round_trips(exported):
    table, written = exported
    feats = read_geojson(written["geojson"])
    states = {int(f.metadata["patch_index"]): f.metadata["review"] for f in feats if "review" in f.metadata}
    assert {k: v for k, v in states.items() if v != "unreviewed"} == table.review_states()


def test_other_layouts_are_read(tmp_path):
    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [4, 0], [4, 4], [0, 0]]]},
         "properties": {"object_type": "detection", "classification": "Tumor",
                        "measurements": [{"name": "area", "value": 8}, {"name": "x", "value": "bad"}]}},
        {"type": "Feature", "geometry": {"type": "MultiPolygon", "coordinates": [
            [[[0, 0], [1, 0], [1, 1], [0, 0]]], [[[5, 5], [6, 5], [6, 6], [5, 5]]]]}, "properties": {"foo": 1}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [7.5, 3]},
         "properties": {"objectType": "spaceship", "classification": {"name": "Other", "color": [1, 2, 3]}}},
    ]}
    p = tmp_path / "qupath.geojson"
    p.write_text(json.dumps(doc))
    with pytest.warns(UserWarning, match="legacy key|spaceship|not a number") as rec:
        feats = read_geojson(p)
    messages = " ".join(str(r.message) for r in rec)
    assert "legacy key" in messages and "spaceship" in messages and "not a number" in messages
    a, b, c = feats
    assert (a.object_type, a.classification, a.measurements) == ("detection", "Tumor", {"area": 8.0})
    assert b.object_type == "annotation" and b.classification is None and len(b.polygons_xy) == 2
    assert b.extra == {"foo": 1}
    assert c.geometry_type == "Point" and c.points_xy.tolist() == [[7.5, 3.0]] and c.color == [1, 2, 3]


@pytest.mark.parametrize("content", ["{not json", '{"type": "Topology"}', '{"type": "FeatureCollection", '
                                     '"features": [{"type": "Feature", "geometry": {"type": "Curve"}}]}'])
def test_bad_geojson_is_a_clear_error(tmp_path, content):
    p = tmp_path / "bad.geojson"
    p.write_text(content)
    with pytest.raises(InputFileError, match=r"bad\.geojson"):
        read_geojson(p)


def test_ome_tiff_heatmap_is_aligned(exported):
    import tifffile

    table, written = exported
    heat = table.heatmap()
    with tifffile.TiffFile(written["ome-tiff"]) as tif:
        base = tif.series[0].levels[0].asarray()
        assert len(tif.series[0].levels) >= 2
        ome = tif.ome_metadata
    k = base.shape[0] // heat.shape[0]
    assert base.shape == (heat.shape[0] * k, heat.shape[1] * k)
    i = int(table.top_k(1)[0])
    r, c = (int(v) for v in table.grid.cells_rc[i])
    assert base[r * k + k // 2, c * k + k // 2] == pytest.approx(table.score[i], rel=1e-6)
    assert np.isnan(base[np.isnan(np.repeat(np.repeat(heat, k, 0), k, 1))]).all()
    # physical size: one heatmap pixel = patch / k level-0 pixels = that many times mpp microns
    size_x = float(ome.split('PhysicalSizeX="')[1].split('"')[0])
    assert size_x * base.shape[1] == pytest.approx(0.499 * table.patch_size_l0 * heat.shape[1], rel=1e-6)


def test_report_and_provenance(exported):
    _table, written = exported
    html = written["html"].read_text()
    assert "Slide scores" in html and html.count("<tr>") >= 5 + 3 and "data:image/png;base64" in html
    record = json.loads(written["provenance"].read_text())
    assert record["slide"]["path"].endswith("cmu-1-small-region.svs")
    assert record["backend"]["spec"] == "demo" and record["term_pools"]["normal"]
    assert record["review_state"] and "band_thresholds" in record["export_settings"]["geojson"]
    assert "napari-anonavila" in record["export_versions"]


def test_reimport_warns_about_another_slide_or_model(exported):
    _, written = exported
    rec = check_provenance(written["geojson"])
    assert rec is not None
    with pytest.warns(UserWarning, match="another slide"):
        check_provenance(written["geojson"], slide_fingerprint="0" * 64)
    with pytest.warns(UserWarning, match="another model"):
        check_provenance(written["geojson"], backend_id="open_clip:x:y")


def test_export_refuses_to_overwrite_and_leaves_files_intact(exported, result_dir):
    table, written = exported
    before = written["geojson"].read_bytes()
    with pytest.raises(FileExistsError):
        export_all(written["folder"].parent, table, formats=["geojson"])
    assert written["geojson"].read_bytes() == before
    assert not [p for p in written["folder"].parent.rglob("*") if "partial" in p.name]


def test_cli_export(result_dir, tmp_path, capsys):
    out, _ = result_dir
    assert main(["export", str(out), "--out", str(tmp_path), "--top-k", "3"]) == 0
    names = {p.name for p in (tmp_path / "cmu-1-small-region").iterdir()}
    assert {"cmu-1-small-region.geojson", "cmu-1-small-region_patches.csv", "cmu-1-small-region_heatmap.ome.tif",
            "cmu-1-small-region_report.html", "cmu-1-small-region.provenance.json"} <= names
    assert main(["export", str(out), "--out", str(tmp_path)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", str(out), "--out", str(tmp_path), "--formats", "pdf"]) == 2


def test_review_state_survives_the_patch_csv(exported, result_dir, tmp_path):
    """A result folder of the oldest layout (patches.csv with its review column, no patches.npz, no reviews.json)
    reads back with its marks on the same patches."""
    import shutil

    table, written = exported
    out, _ = result_dir
    folder = tmp_path / "res"
    folder.mkdir()
    shutil.copy(written["csv"], folder / "patches.csv")
    summary = json.loads((out / "summary.json").read_text())
    del summary["outputs"]
    (folder / "summary.json").write_text(json.dumps(summary))
    old = open_result(folder)
    assert old.review_states() == table.review_states() and len(old.review_states()) == 2
    np.testing.assert_allclose(old.score, table.score, rtol=1e-7)
    assert [old.explain(i) for i in range(len(old))] == [table.explain(i) for i in range(len(table))]
