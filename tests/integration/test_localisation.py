"""Localisation measured as the paper and Camelyon16 measure it (issue 37): patch-level AUROC equals sklearn on labels
made here independently; the lesion-level FROC equals an independent re-implementation of the public Camelyon16
evaluation (written here after its Evaluation_FROC.py: its own rasterisation, labelling and threshold sweep); plots
are written; bad inputs are one line each. Through the installed ``anonavila``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from ..conftest import shared_path
from ..helpers import cli, refused


# -- the Camelyon16 evaluation, re-implemented independently (after its public Evaluation_FROC.py) --------------
def c16_evaluation_mask(lesion_polys, dims_xy, ds, mask_um):
    """Rasterise (matplotlib point-in-polygon at pixel centres), distance < 75/2 um, fill holes, 8-connected labels."""
    from matplotlib.path import Path as MplPath
    from scipy import ndimage as nd
    from skimage import measure

    w, h = (int(np.ceil(v / ds)) for v in dims_xy)
    yy, xx = np.mgrid[0:h, 0:w]
    centres = np.stack([(xx.ravel() + 0.5) * ds, (yy.ravel() + 0.5) * ds], axis=1)
    raster = np.zeros(h * w, bool)
    for poly in lesion_polys:
        raster |= MplPath(poly).contains_points(centres)
    raster = raster.reshape(h, w)
    if not raster.any():  # a normal slide: no lesion mask (its detections are all false positives)
        return np.zeros((h, w), int)
    distance = nd.distance_transform_edt(~raster)
    binary = distance < 75 / 2 / mask_um
    filled = nd.binary_fill_holes(binary)
    return measure.label(filled, connectivity=2)


def c16_itc(labels, mask_um):
    from skimage import measure

    return [p.label for p in measure.regionprops(labels) if p.major_axis_length * mask_um < 275]


def c16_froc(cases, ds):
    """cases: [(evaluation mask, itc list, [(x, y, p), ...])]. Returns (FPs per slide, sensitivity, at six rates)."""
    fp_all, tp_all, n_lesions = [], [], 0
    for labels, itc, dets in cases:
        max_label = labels.max()
        tp = [0.0] * max_label
        fp = []
        for x, y, p in dets:
            hit = labels[int(y / ds), int(x / ds)]
            if hit == 0:
                fp.append(p)
            elif hit not in itc:
                tp[hit - 1] = max(tp[hit - 1], p)
        n_lesions += max_label - len(itc)
        fp_all += fp
        tp_all += [t for i, t in enumerate(tp) if i + 1 not in itc]
    probs = sorted(set(fp_all + tp_all))
    total_fps, total_tps = [], []
    for thresh in probs[1:]:
        total_fps.append((np.asarray(fp_all) >= thresh).sum())
        total_tps.append((np.asarray(tp_all) >= thresh).sum())
    total_fps.append(0)
    total_tps.append(0)
    fps = np.asarray(total_fps) / float(len(cases))
    sens = np.asarray(total_tps) / float(n_lesions)
    return fps, sens, np.interp([0.25, 0.5, 1, 2, 4, 8], fps[::-1], sens[::-1])


def _square(x, y, s):
    return np.array([[x, y], [x + s, y], [x + s, y + s], [x, y + s]], float)


def test_froc_equals_an_independent_camelyon16_evaluation():
    """Three synthetic slides (lesions of several sizes, one an ITC, a hole filled by the growing, a normal slide),
    random detections: the same curve and the same six sensitivities."""
    from napari_anonavila.annotations import regions_of_polygons
    from napari_anonavila.localisation import Detections, froc, lesion_mask

    mpp, mask_um = 0.25, 8.0
    ds = mask_um / mpp
    dims = (16000, 12000)
    rng = np.random.default_rng(3)
    slides = [
        [_square(1000, 1000, 3000), _square(6000, 2000, 600), _square(9000, 9000, 300)],  # 300 px = 75 um: an ITC
        [np.array([[2000, 2000], [8000, 2000], [8000, 8000], [2000, 8000]], float)[::-1],
         _square(12000, 3000, 1500)],
        [],  # a normal slide
    ]
    ours, theirs = [], []
    for polys in slides:
        n = 60
        dets = np.column_stack([rng.uniform(0, dims[0], n), rng.uniform(0, dims[1], n), rng.random(n)])
        for poly in polys:  # some detections inside each lesion
            c = poly.mean(axis=0)
            dets = np.vstack([dets, [c[0], c[1], rng.random()]])
        regions = regions_of_polygons(polys, source="t") if polys else None
        mask = lesion_mask(regions, dims, mpp, mask_um=mask_um)
        ours.append((Detections(dets[:, :2], dets[:, 2]), mask))
        labels = c16_evaluation_mask(polys, dims, ds, mask_um)
        theirs.append((labels, c16_itc(labels, mask_um), [tuple(d) for d in dets]))
        assert mask.labels.max() == labels.max() and sorted(mask.itc) == sorted(c16_itc(labels, mask_um))
    assert ours[0][1].itc  # the 75 um square is an isolated tumour cell cluster
    got = froc(ours)
    fps, sens, at = c16_froc(theirs, ds)
    np.testing.assert_allclose(got["fp_per_slide"], fps)
    np.testing.assert_allclose(got["sensitivity"], sens)
    np.testing.assert_allclose([got["sensitivity_at"][k] for k in ("0.25", "0.5", "1.0", "2.0", "4.0", "8.0")], at)
    assert got["froc_score"] == pytest.approx(float(np.mean(at)))


# -- through the CLI, on the demo's planted slide and on a shared real slide ------------------------------------
@pytest.fixture(scope="module")
def model(tmp_path_factory, fitted_on_sample) -> Path:
    return fitted_on_sample.save(tmp_path_factory.mktemp("m") / "m.safetensors")


def test_a_planted_slide_localises_and_agrees_with_sklearn(tmp_path, model):
    """A slide of the demo's generator at 1 um/px (its planted regions 200-330 um across: lesions, not ITCs), its
    ground truth as a mask at 1/8 of the slide, as a user would have it."""
    from PIL import Image

    from napari_anonavila.sample import make_tissue, write_pyramid_tiff

    rgb, planted = make_tissue(2048, 5, n_anomalies=4)
    slide = write_pyramid_tiff(tmp_path / "planted.tif", rgb, 1.0)
    Image.fromarray((planted[::8, ::8] * 255).astype(np.uint8)).save(tmp_path / "planted.png")
    res = cli("score-slide", slide, "--model", model, "--out", tmp_path / "r", "--patch-px", 64)
    assert res.returncode == 0, res.stderr[-2000:]
    res = cli("localise", tmp_path / "r" / "planted", "--lesions", tmp_path / "planted.png", "--out",
              tmp_path / "loc", "--n-boot", 200)
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads((tmp_path / "loc" / "localisation.json").read_text())
    from napari_anonavila import open_result

    r = open_result(tmp_path / "r" / "planted")
    mask = planted[::8, ::8]
    y = np.array([mask[int(py // 8): int((py + 64) // 8), int(px // 8): int((px + 64) // 8)].mean() >= 0.5
                  for px, py in r.xy_l0]).astype(int)
    assert 10 <= y.sum() < len(y)
    pooled = report["patch_level"]["pooled"]["score"]
    assert pooled["auroc"]["value"] == pytest.approx(roc_auc_score(y, r.score))
    assert pooled["aupr"]["value"] == pytest.approx(average_precision_score(y, r.score))
    lesion = report["lesion_level"]
    assert lesion["n_lesions"] >= 2 and 0 <= lesion["froc_score"] <= 1
    assert {"roc.png", "pr.png", "froc.png"} <= {p.name for p in (tmp_path / "loc").iterdir()}


def test_a_drawn_lesion_on_a_real_slide_agrees_with_sklearn(tmp_path, model):
    import shapely

    slide = shared_path("slides", "cmu-1-small-region.svs")
    res = cli("score-slide", slide, "--model", model, "--out", tmp_path / "r", "--patch-px", 128)
    assert res.returncode == 0, res.stderr[-2000:]
    t = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    ring = np.stack([1300 + 450 * np.cos(t), 1700 + 350 * np.sin(t)], axis=1)
    coords = "".join(f'<Coordinate Order="{i}" X="{x:.3f}" Y="{y:.3f}"/>' for i, (x, y) in enumerate(ring))
    (tmp_path / "cmu-1-small-region.xml").write_text(
        '<ASAP_Annotations><Annotations><Annotation Name="L1" Type="Polygon" PartOfGroup="_0"><Coordinates>'
        f"{coords}</Coordinates></Annotation></Annotations></ASAP_Annotations>")
    res = cli("localise", tmp_path / "r" / "cmu-1-small-region", "--lesions", tmp_path, "--out", tmp_path / "loc",
              "--n-boot", 200)
    assert res.returncode == 0, res.stderr[-2000:]
    from napari_anonavila import open_result

    r = open_result(tmp_path / "r" / "cmu-1-small-region")
    lesion = shapely.Polygon(ring)
    y = np.array([shapely.box(x, yy, x + 128, yy + 128).intersection(lesion).area / 128**2 >= 0.5
                  for x, yy in r.xy_l0]).astype(int)
    assert 3 <= y.sum() < len(y)
    report = json.loads((tmp_path / "loc" / "localisation.json").read_text())
    assert report["patch_level"]["pooled"]["score"]["auroc"]["value"] == pytest.approx(roc_auc_score(y, r.score))


def test_bad_inputs_are_one_line_each(tmp_path, model, sample_slides):
    res = cli("score-slide", sample_slides.anomalous, "--model", model, "--out", tmp_path / "r", "--patch-px", 256)
    assert res.returncode == 0, res.stderr[-2000:]
    folder = tmp_path / "r" / "anomalous"
    other = tmp_path / "other.geojson"  # drawn on a much larger slide
    other.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [
        [[0, 0], [40000, 0], [40000, 40000], [0, 0]]]}}))
    refused(cli("localise", folder, "--lesions", other, "--out", tmp_path / "a"), "beyond")
    far = tmp_path / "none.geojson"  # a lesion too small for any patch: no lesion at all
    far.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [
        [[10, 10], [20, 10], [20, 20], [10, 10]]]}}))
    refused(cli("localise", folder, "--lesions", far, "--out", tmp_path / "b"), "no lesion patch in any")
    every = tmp_path / "all.geojson"  # the whole slide a lesion: all labels one class
    every.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [
        [[0, 0], [2048, 0], [2048, 2048], [0, 2048], [0, 0]]]}}))
    refused(cli("localise", folder, "--lesions", every, "--out", tmp_path / "c"), "labels are all abnormal")
    assert not any((tmp_path / d).exists() for d in ("a", "b", "c"))


def test_patch_csvs_with_the_abnormal_percent_in_their_names(tmp_path):
    rng = np.random.default_rng(0)
    pct = rng.choice([0, 10, 60, 100], 80)
    score = pct / 100 + rng.normal(0, 0.4, 80)
    rows = "".join(f"s1_{i * 256}_0_{p}.png,{v}\n" for i, (p, v) in enumerate(zip(pct, score, strict=True)))
    (tmp_path / "s1_Ascores.csv").write_text("patch_name,Ascore\n" + rows)
    res = cli("localise", "--patches", tmp_path / "s1_Ascores.csv", "--out", tmp_path / "loc", "--n-boot", 100)
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads((tmp_path / "loc" / "localisation.json").read_text())
    want = roc_auc_score((pct > 50).astype(int), score)
    assert report["patch_level"]["pooled"]["score"]["auroc"]["value"] == pytest.approx(want)
