"""Annotations in: what a pathologist drew (QuPath GeoJSON with holes, MultiPolygons and classes; a Camelyon16-style
ASAP XML; a mask) decides where to score and what to leave out, through the CLI and the API; the patches selected are
exactly those an independent computation selects (the files parsed here with json and ElementTree, each patch's
area inside computed one by one with shapely)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from ..conftest import shared_path
from ..helpers import cli, refused

W, H = 2220, 2967  # cmu-1-small-region.svs, level-0 pixels
P = 128  # patch side, level-0 pixels



def _circle(cx, cy, r, n):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def _closed(ring) -> list:
    ring = [[float(x), float(y)] for x, y in ring]
    return [*ring, ring[0]]


@pytest.fixture(scope="module")
def drawn(tmp_path_factory) -> dict:
    """Files as QuPath and ASAP write them, drawn on cmu-1: a Tumor polygon with a hole (1000 vertices), a Tumor
    MultiPolygon of two squares, a Stroma polygon; an ASAP XML with groups _0 (tumour) and _2 (cut out), and a pen
    mark to exclude."""
    d = tmp_path_factory.mktemp("drawn")
    shell, hole = _circle(1100, 1500, 700, 1000), _circle(1100, 1500, 250, 200)
    sq1 = np.array([[100, 100], [600, 100], [600, 520], [100, 520]])
    sq2 = np.array([[1500, 2500], [2000, 2500], [2000, 2900], [1500, 2900]])
    features = [
        {"type": "Feature", "id": "a", "geometry": {"type": "Polygon", "coordinates": [_closed(shell), _closed(hole)]},
         "properties": {"objectType": "annotation", "classification": {"name": "Tumor", "color": [200, 0, 0]}}},
        {"type": "Feature", "id": "b", "geometry": {"type": "MultiPolygon",
                                                    "coordinates": [[_closed(sq1)], [_closed(sq2)]]},
         "properties": {"objectType": "annotation", "classification": {"name": "Tumor", "color": [200, 0, 0]}}},
        {"type": "Feature", "id": "c", "geometry": {"type": "Polygon", "coordinates": [_closed(
            [[1150, 1000], [1700, 1060], [1650, 1700], [1100, 1500]])]},
         "properties": {"objectType": "annotation", "classification": {"name": "Stroma", "color": [0, 0, 200]}}},
    ]
    geojson = d / "cmu-1-small-region.geojson"
    geojson.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    bare = d / "bare.geojson"  # QuPath 0.2-0.3: a bare list of features
    bare.write_text(json.dumps(features))
    tumour, cut = _circle(900, 1900, 550, 300), _circle(950, 1850, 180, 60)
    pen = np.array([[300, 2200], [900, 2200], [900, 2400], [300, 2400]])

    def ann(name, group, ring):
        coords = "".join(f'<Coordinate Order="{i}" X="{x:.4f}" Y="{y:.4f}"/>' for i, (x, y) in enumerate(ring))
        return f'<Annotation Name="{name}" Type="Polygon" PartOfGroup="{group}" Color="#F4FA58"><Coordinates>' \
               f"{coords}</Coordinates></Annotation>"

    xml = d / "cmu-1-small-region.xml"
    xml.write_text('<?xml version="1.0"?><ASAP_Annotations><Annotations>' + ann("Annotation 0", "_0", tumour)
                   + ann("Annotation 1", "_2", cut) + ann("Annotation 2", "Exclusion", pen) + "</Annotations>"
                   '<AnnotationGroups><Group Name="_0" PartOfGroup="None" Color="#FF0000"><Attributes/></Group>'
                   '<Group Name="_2" PartOfGroup="None" Color="#00FF00"><Attributes/></Group></AnnotationGroups>'
                   "</ASAP_Annotations>")
    return {"geojson": geojson, "bare": bare, "xml": xml}


def _reference_polygons(path: Path, classes: set[str]) -> list:
    """The test's own reading of the files (json, ElementTree) into shapely polygons of the chosen classes."""
    import shapely

    if path.suffix == ".xml":
        out = []
        for a in ET.parse(path).getroot().iter("Annotation"):
            if a.get("PartOfGroup") in classes:
                pts = sorted(a.iter("Coordinate"), key=lambda c: int(c.get("Order")))
                out.append(shapely.Polygon([(float(c.get("X")), float(c.get("Y"))) for c in pts]))
        return out
    doc = json.loads(path.read_text())
    doc = doc["features"] if isinstance(doc, dict) else doc
    out = []
    for f in doc:
        if f["properties"]["classification"]["name"] not in classes:
            continue
        g = f["geometry"]
        polys = [g["coordinates"]] if g["type"] == "Polygon" else g["coordinates"]
        out += [shapely.Polygon(p[0], p[1:]) for p in polys]
    return out


def _expected(tissue_xy: np.ndarray, roi: list, exclude: list = (), fraction: float = 0.25) -> set:
    """Tissue patches with at least ``fraction`` of their area in the ROI and less than it in the exclusions, one
    patch at a time."""
    import shapely

    keep = set()
    for x, y in tissue_xy:
        box = shapely.box(x, y, x + P, y + P)
        inside = sum(box.intersection(p).area for p in roi) / P**2
        out = sum(box.intersection(p).area for p in exclude) / P**2
        if inside >= fraction and out < fraction:
            keep.add((int(x), int(y)))
    return keep


@pytest.fixture(scope="module")
def model(tmp_path_factory, fitted_on_sample) -> Path:
    return fitted_on_sample.save(tmp_path_factory.mktemp("m") / "m.safetensors")


@pytest.fixture(scope="module")
def tissue(tmp_path_factory, model) -> np.ndarray:
    """Every tissue patch of cmu-1 (no regions), as score-slide finds them."""
    from napari_anonavila import open_result

    out = tmp_path_factory.mktemp("all")
    res = cli("score-slide", shared_path("slides", "cmu-1-small-region.svs"), "--model", model, "--out", out,
              "--patch-px", P)
    assert res.returncode == 0, res.stderr[-2000:]
    return open_result(out / "cmu-1-small-region").xy_l0


def _selected(folder: Path) -> set:
    from napari_anonavila import open_result

    return {(int(x), int(y)) for x, y in open_result(folder).xy_l0}


@pytest.mark.parametrize("case", ["geojson Tumor", "bare list Tumor", "geojson Stroma", "xml _0 minus Exclusion"])
def test_the_cli_selects_exactly_the_patches_drawn(tmp_path, drawn, model, tissue, case):
    slide = shared_path("slides", "cmu-1-small-region.svs")
    args = ["score-slide", slide, "--model", model, "--out", tmp_path, "--patch-px", P]
    if case.startswith("xml"):
        args += ["--roi", drawn["xml"], "--roi-class", "_0", "--exclude", drawn["xml"], "--exclude-class",
                 "Exclusion"]
        want = _expected(tissue, _reference_polygons(drawn["xml"], {"_0"}),
                         _reference_polygons(drawn["xml"], {"Exclusion"}))
    else:
        cls = case.split()[-1]
        path = drawn["bare" if case.startswith("bare") else "geojson"]
        args += ["--roi", path, "--roi-class", cls]
        want = _expected(tissue, _reference_polygons(path, {cls}))
    res = cli(*args)
    assert res.returncode == 0, res.stderr[-2000:]
    got = _selected(tmp_path / "cmu-1-small-region")
    assert got == want and 5 <= len(got) < len(tissue)
    summary = json.loads((tmp_path / "cmu-1-small-region" / "summary.json").read_text())
    regions = summary["provenance"]["regions"]
    assert regions["roi"]["sha256"] and regions["n_inside"] >= len(got)
    assert (tmp_path / "cmu-1-small-region" / "regions.geojson").is_file()  # drawn again when it reopens


def test_the_api_selects_the_same_patches(drawn, fitted_on_sample, tissue):
    from napari_anonavila.annotations import ScoreRegions, read_annotations

    roi = read_annotations(drawn["geojson"]).select(["Tumor"])
    res = fitted_on_sample.score_slide(shared_path("slides", "cmu-1-small-region.svs"), patch_px=P,
                                       regions=ScoreRegions(roi))
    assert {(int(x), int(y)) for x, y in res.xy_l0} == _expected(tissue, _reference_polygons(drawn["geojson"],
                                                                                              {"Tumor"}))


def test_a_mask_at_a_downsample_selects_by_area(tmp_path, fitted_on_sample, tissue):
    """A binary mask at 1/8 of the slide: the same rule at the mask's resolution."""
    import tifffile

    from napari_anonavila.annotations import ScoreRegions, read_annotations

    mask = np.zeros((H // 8 + 1, W // 8 + 1), np.uint8)
    mask[100:250, 60:200] = 1  # level-0 x 480..1600, y 800..2000
    tifffile.imwrite(tmp_path / "mask.tif", mask)
    roi = read_annotations(tmp_path / "mask.tif", slide_dimensions_xy=(W, H))
    res = fitted_on_sample.score_slide(shared_path("slides", "cmu-1-small-region.svs"), patch_px=P,
                                       regions=ScoreRegions(roi))
    import shapely

    dx, dy = W / mask.shape[1], H / mask.shape[0]
    box = shapely.box(60 * dx, 100 * dy, 200 * dx, 250 * dy)
    want = _expected(tissue, [box])
    got = {(int(x), int(y)) for x, y in res.xy_l0}
    assert len(got ^ want) <= 0.1 * len(want) and len(got) > 10  # the mask's own resolution (8 px) at the edges


def test_training_on_normal_regions_equals_training_on_the_same_patches_cut_out(tmp_path, drawn):
    """``train --normal-regions`` on a slide gives the model that training on the same patches cut out as image
    files gives (read back in grid order, with the same hold-out bands): the regions select the pixels, nothing else
    differs. (A folder given to ``train`` is read in the authors' os.walk order, which the file system decides.)"""
    from PIL import Image

    from napari_anonavila.annotations import read_annotations
    from napari_anonavila.detector import Detector
    from napari_anonavila.grid import make_grid
    from napari_anonavila.progress import drain
    from napari_anonavila.slide import open_slide
    from napari_anonavila.splits import region_groups
    from napari_anonavila.training import TrainConfig

    slide_path = shared_path("slides", "cmu-1-small-region.svs")
    res = cli("train", "--normal", slide_path, "--normal-regions", drawn["geojson"], "--normal-class", "Tumor",
              "--out", tmp_path / "regions.safetensors", "--patch-px", P, "--epochs", 2, "--batch-size", 8,
              "--accumulate", 1, "--backend", "demo")
    assert res.returncode == 0, res.stderr[-2000:]
    roi = read_annotations(drawn["geojson"]).select(["Tumor"])
    with open_slide(slide_path) as s:
        grid = make_grid(s, patch_px=P, roi=roi)
        files = []
        for i, (x, y) in enumerate(grid.xy_l0()):
            files.append(tmp_path / "cut" / f"{i:05d}.png")
            files[-1].parent.mkdir(exist_ok=True)
            Image.fromarray(s.read_region((int(x), int(y)), 0, (P, P))).save(files[-1])
    det = Detector.create("demo", device="cpu")
    read, embs = drain(det.iter_embed_files(files))
    assert read == files and len(files) > 20
    det.fit(embs, config=TrainConfig(epochs=2, batch_size=8, accumulate=1), groups=region_groups(grid.xy_l0(), P))
    trained = Detector.load(tmp_path / "regions.safetensors")
    assert trained.info["n_train"] == det.info["n_train"] and trained.info["n_centroid"] == det.info["n_centroid"]
    for k, v in trained.mlp.state_dict().items():
        np.testing.assert_allclose(v.numpy(), det.mlp.state_dict()[k].numpy(), rtol=1e-5, atol=1e-7, err_msg=k)
    for a, b in zip(trained.centroids, det.centroids, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7)


# -- bad input: one clear line, nothing written ---------------------------------------------------------------
BAD = {
    "not an annotation": ("notes.txt", "hello", "not an annotation file"),
    "billion laughs": ("lol.xml", '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 '
                       '"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]><ASAP_Annotations>&lol2;'
                       "</ASAP_Annotations>", "DOCTYPE or entities"),
    "nan coordinates": ("nan.xml", '<ASAP_Annotations><Annotations><Annotation Name="a" Type="Polygon" '
                        'PartOfGroup="_0"><Coordinates><Coordinate Order="0" X="nan" Y="1"/><Coordinate Order="1" '
                        'X="5" Y="1"/><Coordinate Order="2" X="5" Y="9"/></Coordinates></Annotation></Annotations>'
                        "</ASAP_Annotations>", "not finite"),
    "outside the slide": ("far.geojson", json.dumps({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [
        [[50000, 50000], [51000, 50000], [51000, 51000], [50000, 50000]]]}, "properties": {}}), "wholly outside"),
    "another slide": ("big.geojson", json.dumps({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [
        [[0, 0], [9000, 0], [9000, 9000], [0, 0]]]}, "properties": {}}), "beyond"),
    "no tissue": ("glass.geojson", json.dumps({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [
        [[0, 0], [60, 0], [60, 60], [0, 60], [0, 0]]]}, "properties": {}}), "leaves no tissue patch"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_annotations_are_one_line_and_write_nothing(tmp_path, model, case):
    name, text, needle = BAD[case]
    (tmp_path / name).write_text(text)
    res = cli("score-slide", shared_path("slides", "cmu-1-small-region.svs"), "--model", model, "--out",
              tmp_path / "out", "--roi", tmp_path / name)
    refused(res, needle)
    assert not (tmp_path / "out" / "cmu-1-small-region" / "summary.json").exists()


def test_a_class_nobody_drew_lists_the_classes_there_are(tmp_path, drawn, model):
    res = cli("score-slide", shared_path("slides", "cmu-1-small-region.svs"), "--model", model, "--out", tmp_path,
              "--roi", drawn["geojson"], "--roi-class", "Necrosis")
    refused(res, "no region of class 'Necrosis'", "Tumor, Stroma")


def test_a_self_intersecting_region_is_repaired_and_said_so(tmp_path):
    from napari_anonavila.annotations import read_annotations

    bowtie = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [
        [[0, 0], [100, 100], [100, 0], [0, 100], [0, 0]]]}, "properties": {"name": "bow tie"}}
    (tmp_path / "b.geojson").write_text(json.dumps(bowtie))
    with pytest.warns(UserWarning, match="self-intersecting region.*bow tie"):
        rs = read_annotations(tmp_path / "b.geojson")
    assert rs.regions[0].geometry.is_valid and rs.regions[0].geometry.area == pytest.approx(5000)


def test_batch_finds_each_slides_file_by_stem(tmp_path, drawn, model, tissue, sample_slides):
    """A cohort with a folder of annotations: cmu-1's file is found by its stem; a slide without one fails (never
    scored whole in place of its ROI); a second run resumes, and a changed annotation file scores it again."""
    import csv
    import shutil

    rois = tmp_path / "rois"
    rois.mkdir()
    shutil.copy(drawn["geojson"], rois / "cmu-1-small-region.geojson")
    slide = shared_path("slides", "cmu-1-small-region.svs")
    args = ["batch", slide, sample_slides.normal, "--model", model, "--out", tmp_path / "R", "--patch-px", P,
            "--n-workers", 1, "--roi", rois, "--roi-class", "Tumor"]
    res = cli(*args)
    assert res.returncode == 2  # one slide failed
    with open(tmp_path / "R" / "cohort.csv", newline="") as fh:
        rows = {Path(r["slide"]).name: r for r in csv.DictReader(fh)}
    assert rows["normal.tif"]["status"] == "failed" and "no ROI file for normal.tif" in rows["normal.tif"]["error"]
    assert _selected(tmp_path / "R" / "cmu-1-small-region") == _expected(
        tissue, _reference_polygons(drawn["geojson"], {"Tumor"}))
    assert "1 already finished" in cli(*args).stdout
    (rois / "cmu-1-small-region.geojson").write_text((rois / "cmu-1-small-region.geojson").read_text() + "\n")
    assert "1 already finished" not in cli(*args).stdout  # its annotation changed: scored again
