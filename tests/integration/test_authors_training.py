"""Training reproduces the authors' trainer: same initialisation, batch order, summed accumulation and centroids.

``tests/data/authors_training.json`` holds the MLP and centroids made by their own ``engine/trainer.py`` on the
patches and tiny open_clip model of ``tests/data/training_case.py`` (``make_authors_training.py``). Here the same
inputs go through the installed ``anonavila train``, with its defaults (seed 42, their batch order).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

DATA = Path(__file__).resolve().parents[1] / "data"
EXE = str(Path(sys.executable).with_name("anonavila"))
sys.path.insert(0, str(DATA))
import training_case as case  # noqa: E402


def _unpack(t: dict) -> torch.Tensor:
    raw = np.frombuffer(base64.b64decode(t["data"]), dtype="<f4")
    return torch.from_numpy(raw.copy()).reshape(t["shape"])


@pytest.fixture(scope="module")
def pinned():
    return json.loads((DATA / "authors_training.json").read_text())


def _train(tmp_path, *extra: str) -> Path:
    train_dir, val_dir = case.write_patches(tmp_path)
    weights = case.write_weights(tmp_path / "weights.safetensors")
    s = case.SETTINGS
    out = tmp_path / "model.safetensors"
    res = subprocess.run([EXE, "-q", "train", "--normal", str(train_dir), "--centroid-set", str(val_dir), "--backend",
                          f"open_clip:{case.MODEL}@{weights}", "--batch-size", str(s["batch_size"]), "--accumulate",
                          str(s["accumulate"]), "--epochs", str(s["epochs"]), "--lr", str(s["lr"]), "--device", "cpu",
                          "--out", str(out), *extra], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    return out


def test_default_training_equals_the_authors_trainer(tmp_path, pinned):
    from napari_anonavila.detector import Detector

    assert pinned["settings"]["seed"] == 42
    det = Detector.load(_train(tmp_path), attach_backend=False)
    want = {k: _unpack(v) for k, v in pinned["tensors"].items()}
    for name, value in det.mlp.state_dict().items():
        assert float((value - want[name]).abs().max()) <= 1e-6, name
    assert float((det.centroids[0] - want["centroid_normal"].reshape(-1)).abs().max()) <= 1e-6
    assert float((det.centroids[1] - want["centroid_abnormal"].reshape(-1)).abs().max()) <= 1e-6
    split = det.info["centroid_split"]
    assert split["kind"] == "given centroid set" and (split["n_train"], split["n_centroid"]) == (40, 12)


def test_another_seed_trains_other_weights(tmp_path, pinned):
    from napari_anonavila.detector import Detector

    det = Detector.load(_train(tmp_path, "--seed", "0"), attach_backend=False)
    w = _unpack(pinned["tensors"]["linear3.weight"])
    assert float((det.mlp.linear3.weight.detach() - w).abs().max()) > 1e-3  # the comparison above can fail
