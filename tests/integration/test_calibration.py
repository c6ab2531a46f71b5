"""Calibrated scores through the doors users use: `anonavila calibrate`, score-patches, score-slide, export and
evaluate, and the Python API, all giving the same z and p-values.

The uniformity test is exchangeable by construction: normal patches of three synthetic normal slides are split
at random into a calibration set and a test set, so the conformal p-values of the test set must be uniform.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

EXE = str(Path(sys.executable).with_name("anonavila"))


def run(*args: str) -> subprocess.CompletedProcess:
    res = subprocess.run([EXE, "-q", *args], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr
    return res


def rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def patch_pool(tmp_path_factory):
    """cal/ and top/test/: normal 128-px patches of three normal slides, split at random (seeded)."""
    from PIL import Image

    from napari_anonavila.grid import make_grid
    from napari_anonavila.sample import make_tissue, write_pyramid_tiff
    from napari_anonavila.slide import open_slide

    root = tmp_path_factory.mktemp("pool")
    rng = np.random.default_rng(5)
    (root / "cal").mkdir()
    (root / "top" / "test").mkdir(parents=True)
    n = 0
    for seed in (21, 22, 23):
        path = write_pyramid_tiff(root / f"normal{seed}.tif", make_tissue(2048, seed)[0], 0.5)
        with open_slide(path) as s:
            for x, y in make_grid(s, patch_px=128).xy_l0():
                side = "cal" if rng.random() < 0.5 else "top/test"
                Image.fromarray(s.read_region((int(x), int(y)), 0, (128, 128))).save(
                    root / side / f"n{seed}_{x}_{y}_0.png")
                n += 1
    return root, n


@pytest.fixture(scope="module")
def calibrated_model(patch_pool, fitted_on_sample, tmp_path_factory):
    root, _ = patch_pool
    model = fitted_on_sample.save(tmp_path_factory.mktemp("m") / "model.safetensors")
    out = model.with_name("calibrated.safetensors")
    res = run("calibrate", "--model", str(model), "--normal", str(root / "cal"), "--out", str(out))
    assert "calibrated on" in res.stdout
    return out


def test_p_values_of_held_out_normal_patches_are_uniform(patch_pool, calibrated_model, tmp_path):
    root, n = patch_pool
    run("score-patches", str(root / "top"), "--model", str(calibrated_model), "--out", str(tmp_path))
    table = rows(tmp_path / "test_Ascores.csv")
    p = np.array([float(r["p_normal"]) for r in table])
    score = np.array([float(r["Ascore"]) for r in table])
    z = np.array([float(r["z"]) for r in table])
    m, n_cal = len(p), n - len(p)
    assert m > 200 and n_cal > 200
    # uniform: KS distance within its 1% critical value plus the p-values' step 1/(n_cal + 1)
    d = stats.kstest(p, "uniform").statistic
    assert d <= 1.63 / np.sqrt(m) + 1 / (n_cal + 1), d
    # the false-alarm rate at 0.05 within its 99% binomial interval
    lo, hi = stats.binom.interval(0.99, m, 0.05)
    assert lo <= int((p <= 0.05).sum()) <= hi
    # z ranks exactly as the score
    assert np.array_equal(np.argsort(z, kind="stable"), np.argsort(score, kind="stable"))
    assert len(set(score.tolist())) == m  # (no ties to hide behind)


def test_every_output_carries_the_same_calibrated_numbers(calibrated_model, sample_slides, tmp_path):
    from napari_anonavila.calibration import benjamini_hochberg
    from napari_anonavila.detector import Detector

    out = tmp_path / "res"
    res = run("score-slide", str(sample_slides.anomalous), "--model", str(calibrated_model), "--out", str(out),
              "--patch-px", "128")
    assert "calibrated on" in res.stdout and "significant at FDR 5%" in res.stdout
    folder = out / "anomalous"
    table = rows(folder / "patches.csv")
    z = np.array([float(r["z"]) for r in table])
    p = np.array([float(r["p_normal"]) for r in table])
    sig = np.array([r["significant"] == "1" for r in table])
    assert np.array_equal(sig, benjamini_hochberg(p, 0.05)) and sig.any()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["calibrated"]["n_significant"] == int(sig.sum())
    assert summary["calibrated"]["max_z"] == pytest.approx(z.max(), rel=1e-5)
    # the Python API gives the same numbers
    api = Detector.load(calibrated_model).score_slide(sample_slides.anomalous, patch_px=128)
    np.testing.assert_allclose(api.z, z, rtol=1e-5)
    np.testing.assert_allclose(api.p_normal, p, rtol=1e-5)
    # GeoJSON tiles and the HTML report
    run("export", str(folder), "--out", str(tmp_path / "qa"), "--formats", "geojson,html")
    gj = json.loads(next((tmp_path / "qa").rglob("*.geojson")).read_text())
    tiles = [f["properties"]["measurements"] for f in gj["features"] if f["properties"]["objectType"] == "tile"]
    np.testing.assert_allclose([t["z"] for t in tiles], z, rtol=1e-5)
    np.testing.assert_allclose([t["p_normal"] for t in tiles], p, rtol=1e-5)
    assert [t["significant"] for t in tiles] == sig.astype(int).tolist()
    html = next((tmp_path / "qa").rglob("*.html")).read_text()
    top = int(np.argmax(z))
    assert f"<td>{z[top]:.2f}</td>" in html and f"{int(sig.sum())} of {len(z)} patches significant" in html


def test_an_uncalibrated_model_says_so(fitted_on_sample, sample_slides, tmp_path):
    from napari_anonavila.detector import Detector

    det = Detector.load(fitted_on_sample.save(tmp_path / "m.safetensors"))
    det.calibration = None
    model = det.save(tmp_path / "uncal.safetensors")
    res = run("score-slide", str(sample_slides.anomalous), "--model", str(model), "--out", str(tmp_path / "o"),
              "--patch-px", "128")
    assert "uncalibrated" in res.stdout
    summary = json.loads((tmp_path / "o" / "anomalous" / "summary.json").read_text())
    assert summary["calibrated"]["calibrated"] is False and "uncalibrated" in summary["calibrated"]["note"]
    assert rows(tmp_path / "o" / "anomalous" / "patches.csv")[0]["z"] == ""


def test_evaluate_reports_false_alarms_at_the_calibrated_threshold(tmp_path):
    preds = tmp_path / "cohort.csv"
    preds.write_text("slide_id,max,n_significant,p_slide\n" + "".join(
        f"s{i},{i / 10},{n},{p}\n" for i, (n, p) in enumerate([(0, 0.5), (2, 0.04), (0, 0.3), (0, 0.7),
                                                                  (5, 0.01), (3, 0.02), (0, 0.2), (1, 0.06)])))
    labels = tmp_path / "labels.csv"
    labels.write_text("slide_id,label\n" + "".join(f"s{i},{y}\n" for i, y in enumerate([0, 0, 0, 0, 1, 1, 1, 1])))
    out = tmp_path / "m.json"
    res = run("evaluate", str(preds), "--labels", str(labels), "--score-column", "max", "--n-boot", "200", "--out",
              str(out))
    assert "false alarms on normal" in res.stdout
    dec = json.loads(out.read_text())["calibrated_decisions"]
    assert dec["n_significant"]["false_alarm_rate"]["value"] == pytest.approx(1 / 4)  # s1 of s0..s3
    assert dec["n_significant"]["sensitivity"]["value"] == pytest.approx(3 / 4)  # s4, s5, s7
    assert dec["p_slide"]["false_alarm_rate"]["value"] == pytest.approx(1 / 4)  # s1 at 0.04
    assert dec["p_slide"]["sensitivity"]["value"] == pytest.approx(2 / 4)  # s4, s5
    lo, hi = dec["n_significant"]["false_alarm_rate"]["ci_low"], dec["n_significant"]["false_alarm_rate"]["ci_high"]
    assert lo == pytest.approx(stats.beta.ppf(0.025, 1, 4)) and hi == pytest.approx(stats.beta.ppf(0.975, 2, 3))
