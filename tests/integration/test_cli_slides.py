"""``anonavila score-slide`` on every real slide, and ``anonavila demo``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from napari_anonavila.cli import main
from napari_anonavila.slide import slide_stem

from ..conftest import shared_path

REAL = ["cmu-1-small-region.svs", "tcga-cr-7395-01a-01-ts1.svs", "fluorescence-dapi-40x.ndpi",
        "os-2-ki67-crop.ome.tif", "kidney-48-5.tif"]


@pytest.fixture(scope="module")
def model(tmp_path_factory, fitted_on_sample):
    return fitted_on_sample.save(tmp_path_factory.mktemp("model") / "demo.safetensors")


@pytest.mark.parametrize("name", REAL)
def test_score_slide_on_real_slides(name, model, tmp_path, capsys):
    slide = shared_path("slides", name)
    code = main(["-q", "score-slide", str(slide), "--model", str(model), "--out", str(tmp_path)])
    out = capsys.readouterr()
    assert code == 0, out.err
    folder = tmp_path / slide_stem(name)
    summary = json.loads((folder / "summary.json").read_text())  # strict JSON, NaN written as null
    assert summary["provenance"]["slide"]["path"] == str(slide)
    assert (folder / "overlay.png").stat().st_size > 1000
    if name == "kidney-48-5.tif":  # mostly background: an empty result and a warning, not a crash
        assert summary["n_patches"] == 0 and summary["slide_scores"]["max"] is None
        assert "no tissue patches" in out.err
    else:
        assert summary["n_patches"] > 0 and summary["slide_scores"]["max"] > 0
    if name == "tcga-cr-7395-01a-01-ts1.svs":
        assert "no microns-per-pixel" in out.err
        assert summary["provenance"]["grid"]["patch_size_l0"] == 256


def test_corrupt_slide_fails_cleanly_and_others_go_on(model, tmp_path, capsys):
    good = shared_path("slides", "cmu-1-small-region.svs")
    bad = shared_path("slides", "broken.svs")
    code = main(["-q", "score-slide", str(bad), str(good), "--model", str(model), "--out", str(tmp_path)])
    out = capsys.readouterr().err  # errors go to stderr
    assert code == 2
    assert "broken.svs" in out and "not a slide" in out
    assert (tmp_path / "cmu-1-small-region" / "summary.json").is_file()
    assert not (tmp_path / "broken").exists()


def test_patch_in_microns_without_mpp_is_refused(model, tmp_path, capsys):
    slide = shared_path("slides", "tcga-cr-7395-01a-01-ts1.svs")
    assert main(["-q", "score-slide", str(slide), "--model", str(model), "--out", str(tmp_path),
                 "--patch-um", "128"]) == 2
    assert "--mpp" in capsys.readouterr().err
    assert main(["-q", "score-slide", str(slide), "--model", str(model), "--out", str(tmp_path),
                 "--patch-um", "128", "--mpp", "0.5"]) == 0


def test_roi_box_limits_scoring(model, tmp_path):
    slide = shared_path("slides", "cmu-1-small-region.svs")
    main(["-q", "score-slide", str(slide), "--model", str(model), "--out", str(tmp_path), "--roi-box",
          "0,1000,2220,1000", "--min-tissue", "0"])
    summary = json.loads((tmp_path / "cmu-1-small-region" / "summary.json").read_text())
    assert 0 < summary["n_patches"] <= 8 * 4
    assert all(1000 <= p["y_l0"] + 128 <= 2000 for p in summary["top_k"])


@pytest.mark.slow
def test_demo_main_job(tmp_path, capsys):
    assert main(["-q", "demo", "--out", str(tmp_path), "--size", "2048", "--epochs", "15"]) == 0
    printed = capsys.readouterr().out
    assert "NO pathology knowledge" in printed and "conch:" in printed
    report = json.loads((tmp_path / "demo_report.json").read_text())
    assert report["localisation_auroc"] > 0.85
    assert (tmp_path / "anomalous" / "overlay.png").is_file()
    assert (tmp_path / "model.safetensors").is_file()


def test_train_from_normal_slides(sample_slides, tmp_path, tiny_weights):
    from napari_anonavila.detector import Detector

    model = tmp_path / "from-slides.safetensors"
    assert main(["-q", "train", "--normal", str(sample_slides.normal), "--centroid-set", str(sample_slides.normal),
                 "--patch-px", "256", "--batch-size", "8", "--accumulate", "1", "--out", str(model), "--backend",
                 f"open_clip:anonavila-demo@{tiny_weights}"]) == 0
    det = Detector.load(model)
    assert det.is_fitted and det.info["n_train"] == det.info["n_centroid"] > 10


def anonavila(*args: str) -> subprocess.CompletedProcess:
    """The installed console script, as a user runs it."""
    exe = Path(sys.executable).with_name("anonavila")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=600)


def test_score_slide_says_what_the_model_is(model, sample_slides, tmp_path):
    """Generated slide (no ../shared): stdout, summary and report all say it is the random demo model."""
    out = anonavila("score-slide", str(sample_slides.anomalous), "--model", str(model), "--out", str(tmp_path),
                    "--patch-um", "64")
    assert out.returncode == 0, out.stderr
    assert "demo model (random weights, NO pathology knowledge" in out.stdout
    assert "lymph-node terms (92 normal / 48 abnormal)" in out.stdout
    folder = tmp_path / "anomalous"
    prov = json.loads((folder / "summary.json").read_text())["provenance"]
    assert prov["demo_model"] is True and "lymph-node" in prov["model"]
    assert anonavila("export", str(folder), "--out", str(tmp_path / "qa"), "--formats", "html").returncode == 0
    report = (tmp_path / "qa" / "anomalous" / "anomalous_report.html").read_text()
    assert "Demo model:" in report and "lymph-node terms" in report
