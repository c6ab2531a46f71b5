"""Training on the real patches in ../shared/data/patches with the demo backend."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_anonavila.detector import Detector
from napari_anonavila.errors import CancelledError
from napari_anonavila.training import TrainConfig

from ..conftest import shared_path


@pytest.fixture(scope="module")
def patch_embeddings(demo_backend):
    det = Detector.create(demo_backend)
    folder = shared_path("patches", "crc_val_he_7k")
    return det, det.embed(folder, batch_size=16)


def test_loss_decreases_on_real_patches(patch_embeddings):
    det, embs = patch_embeddings
    assert embs.shape == (32, det.embed_dim)
    losses = det.fit(embs, config=TrainConfig(epochs=30, batch_size=16, accumulate=1, lr=1e-3, seed=0))
    assert len(losses) == 60
    assert np.mean(losses[-6:]) < np.mean(losses[:6]) - 1e-3
    assert det.is_fitted


def test_training_is_seeded(patch_embeddings):
    det, embs = patch_embeddings
    cfg = TrainConfig(epochs=3, batch_size=8, accumulate=2, seed=11)
    a = Detector.create(det.backend)
    b = Detector.create(det.backend)
    assert a.fit(embs, config=cfg) == b.fit(embs, config=cfg)
    assert torch.equal(a.mlp.linear1.weight, b.mlp.linear1.weight)
    s = a.score_embeddings(embs)
    assert np.array_equal(s.score, b.score_embeddings(embs).score)


def test_fit_from_a_folder_with_a_bad_file_warns_and_counts(tmp_path, demo_backend):
    src = shared_path("patches", "kather2016_texture", "02_STROMA")
    for i, f in enumerate(sorted(src.iterdir())):
        (tmp_path / f"p{i}.tif").write_bytes(f.read_bytes())
    (tmp_path / "broken.png").write_bytes(b"not an image")
    det = Detector.create(demo_backend)
    events = []
    with pytest.warns(UserWarning, match="skipped|too few") as rec:
        det.fit(tmp_path, config=TrainConfig(batch_size=2, accumulate=1), on_progress=events.append)
    assert det.info["n_train"] == 3
    messages = " ".join(str(w.message) for w in rec)
    assert "skipped 1 of 4" in messages and "too few to hold any out" in messages  # 3 patches: no held-out set
    assert {e.stage for e in events} == {"embed", "train"}


def test_cancel_stops_training(patch_embeddings):
    import threading

    det, embs = patch_embeddings
    fresh = Detector.create(det.backend)
    cancel = threading.Event()

    def on_progress(e):
        if e.stage == "train" and e.done == 2:
            cancel.set()

    with pytest.raises(CancelledError, match="train"):
        fresh.fit(embs, config=TrainConfig(epochs=5, batch_size=4), on_progress=on_progress, cancel=cancel)
    assert not fresh.is_fitted


def test_batch_size_below_two_is_rejected():
    with pytest.raises(ValueError, match="at least 2"):
        TrainConfig(batch_size=1)
