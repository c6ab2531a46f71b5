"""The patch-folder CLI workflow: train, score-patches, slide-scores, evaluate, and its bad inputs."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_anonavila.cli import main

from ..conftest import shared_path


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_weights):
    """Normal patches named in the authors' layout, a top folder of two 'slides', and a trained model."""
    root = tmp_path_factory.mktemp("cli")
    src = sorted(shared_path("patches", "crc_val_he_7k").glob("*.png"))
    with open(shared_path("patches", "labels.csv"), newline="") as fh:
        labels = {r["path"].split("/")[-1]: r["label"] for r in csv.DictReader(fh)}
    normal = [p for p in src if labels.get(p.name) != "tumor"]
    (root / "normal").mkdir()
    for p in normal[:12]:
        shutil.copy(p, root / "normal" / p.name)
    top = root / "top"
    for s, slide in enumerate(["slide_A", "slide_B"]):
        d = top / slide
        d.mkdir(parents=True)
        for i, p in enumerate(src[s * 8 : s * 8 + 8]):
            shutil.copy(p, d / f"{slide}_{(i % 4) * 224}_{(i // 4) * 224}_200.png")
    model = root / "model.safetensors"
    code = main(["-q", "train", "--normal", str(root / "normal"), "--out", str(model), "--backend",
                 f"open_clip:anonavila-demo@{tiny_weights}", "--batch-size", "4", "--accumulate", "1",
                 "--epochs", "2", "--device", "cpu"])
    assert code == 0
    return root, top, model


def test_train_writes_a_loadable_checkpoint(workspace):
    from napari_anonavila.detector import Detector

    _, _, model = workspace
    det = Detector.load(model)
    assert det.is_fitted
    split = det.info["centroid_split"]
    assert (split["kind"], split["n_train"] + split["n_centroid"]) == ("held-out patches", 12)


def test_score_patches_writes_authors_layout(workspace):
    root, top, model = workspace
    out = root / "scores"
    assert main(["-q", "score-patches", str(top), "--model", str(model), "--out", str(out)]) == 0
    rows = _rows(out / "slide_A_Ascores.csv")
    assert len(rows) == 8
    assert list(rows[0])[:2] == ["patch_name", "Ascore"]
    assert all(float(r["Ascore"]) >= 0 for r in rows)
    assert ":" in rows[0]["top_abnormal"]
    # refused without --overwrite, and the file is untouched
    before = (out / "slide_A_Ascores.csv").read_bytes()
    assert main(["-q", "score-patches", str(top), "--model", str(model), "--out", str(out)]) == 2
    assert (out / "slide_A_Ascores.csv").read_bytes() == before


def test_slide_scores_and_evaluate(workspace, capsys):
    root, top, model = workspace
    out = root / "scores2"
    main(["-q", "score-patches", str(top), "--model", str(model), "--out", str(out)])
    table = root / "slides.csv"
    assert main(["slide-scores", "--scores", *map(str, sorted(out.glob("*.csv"))), "--patch-size", "224",
                 "--out", str(table)]) == 0
    rows = {r["slide_id"]: r for r in _rows(table)}
    assert set(rows) == {"slide_A", "slide_B"}
    a = [float(r["Ascore"]) for r in _rows(out / "slide_A_Ascores.csv")]
    assert float(rows["slide_A"]["max"]) == pytest.approx(max(a), rel=1e-6)
    assert float(rows["slide_A"]["top1"]) == pytest.approx(max(a), rel=1e-6)  # 8 patches -> k = 1
    assert float(rows["slide_A"]["max_eroded"]) <= float(rows["slide_A"]["max"])
    labels = root / "labels.csv"
    labels.write_text("slide_id,label\nslide_A,normal\nslide_B,tumor\n")
    # two slides is too few for a bootstrap; add more rows to make a valid evaluation set
    preds = root / "preds.csv"
    rng = np.random.default_rng(0)
    ids = [f"s{i}" for i in range(30)]
    y = rng.integers(0, 2, 30)
    y[:2] = [0, 1]
    preds.write_text("slide_id,max\n" + "".join(f"{i},{v + rng.normal()}\n" for i, v in zip(ids, y, strict=False)))
    labels.write_text("slide_id,label\n" + "".join(f"{i},{v}\n" for i, v in zip(ids, y, strict=False)))
    metrics = root / "m.json"
    capsys.readouterr()
    assert main(["evaluate", str(preds), "--labels", str(labels), "--score-column", "max", "--out", str(metrics),
                 "--n-boot", "200"]) == 0
    printed = capsys.readouterr().out
    assert "AUROC" in printed
    m = json.loads(metrics.read_text())["metrics"]["max"]
    assert m["auroc"]["ci_low"] <= m["auroc"]["value"] <= m["auroc"]["ci_high"]


@pytest.mark.parametrize(("args", "message"), [
    (["slide-scores", "--scores", "{bad_names}", "--patch-size", "256"], "does not parse"),
    (["slide-scores", "--scores", "{bad_numbers}", "--patch-size", "256"], "not a number"),
    (["evaluate", "{bad_names}", "--labels", "{bad_names}", "--score-column", "Ascore"], "missing column"),
])
def test_bad_tables_give_clear_errors(tmp_path, capsys, args, message):
    bad_names = tmp_path / "names.csv"
    bad_names.write_text("patch_name,Ascore\nnot-a-patch-name.png,0.1\n")
    bad_numbers = tmp_path / "numbers.csv"
    bad_numbers.write_text("patch_name,Ascore\ns_0_0_200.png,abc\n")
    argv = [a.format(bad_names=bad_names, bad_numbers=bad_numbers) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_argument_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--normal", "/nonexistent", "--out", "x.safetensors"])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        main(["slide-scores", "--scores", __file__, "--patch-size", "0"])
    assert "at least 1" in capsys.readouterr().err


def test_train_batch_size_below_two(workspace, capsys, tmp_path):
    root, _, _ = workspace
    assert main(["-q", "train", "--normal", str(root / "normal"), "--out", str(tmp_path / "m.safetensors"),
                 "--batch-size", "1"]) == 2
    assert "at least 2" in capsys.readouterr().err


def test_console_script_is_installed():
    exe = shutil.which("anonavila", path=str(Path(sys.executable).parent))
    assert exe is not None
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("train", "score-patches", "slide-scores", "evaluate"):
        assert cmd in out
