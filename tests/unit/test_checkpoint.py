"""Our checkpoint format, the authors' .pth import, and refusals of bad files."""

from __future__ import annotations

import pickle

import pytest
import torch

from napari_anonavila.detector import Detector
from napari_anonavila.errors import CheckpointError
from napari_anonavila.head import MLP
from napari_anonavila.scoring import ScoreMode
from napari_anonavila.terms import TermPools
from napari_anonavila.training import TrainConfig


@pytest.fixture(scope="module")
def fitted(tiny_backend):
    det = Detector.create(tiny_backend)
    g = torch.Generator().manual_seed(0)
    embs = torch.nn.functional.normalize(torch.randn(40, tiny_backend.embed_dim, generator=g), dim=1)
    det.fit(embs, config=TrainConfig(batch_size=10, accumulate=2, epochs=2))
    return det, embs


def test_round_trip_gives_identical_scores(fitted, tmp_path, tiny_backend):
    det, embs = fitted
    path = det.save(tmp_path / "model.safetensors")
    loaded = Detector.load(path, backend=tiny_backend)
    a, b = det.score_embeddings(embs), loaded.score_embeddings(embs)
    assert torch.equal(torch.as_tensor(a.score), torch.as_tensor(b.score))
    assert loaded.pools == det.pools
    assert loaded.info["n_train"] + loaded.info["n_centroid"] == 40  # 20% held out for the centroids
    assert loaded.info["centroid_split"]["kind"] == "held-out patches"
    assert loaded.reference is not None
    assert loaded.reference.shape == (loaded.info["n_centroid"], embs.shape[1])  # the held-out centroid set


def test_load_rebuilds_backend_from_stored_spec(fitted, tmp_path):
    det, embs = fitted
    path = det.save(tmp_path / "m.safetensors")
    loaded = Detector.load(path)  # spec names the weights file the tiny backend was loaded from
    assert loaded.backend.id == det.backend.id
    assert (loaded.score_embeddings(embs).score == det.score_embeddings(embs).score).all()


def test_save_refuses_overwrite(fitted, tmp_path):
    det, _ = fitted
    path = det.save(tmp_path / "m.safetensors")
    with pytest.raises(FileExistsError, match="--overwrite"):
        det.save(path)
    det.save(path, overwrite=True)


def test_other_backend_is_refused(fitted, tmp_path, demo_backend):
    det, _ = fitted
    path = det.save(tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match="trained with backend"):
        Detector.load(path, backend=demo_backend)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"\x00" * 100])
def test_non_checkpoints_are_refused(tmp_path, content):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(content)
    with pytest.raises(CheckpointError, match=str(p.name)):
        Detector.load(p)


def test_truncated_checkpoint_is_refused(fitted, tmp_path):
    det, _ = fitted
    path = det.save(tmp_path / "m.safetensors")
    data = path.read_bytes()
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        Detector.load(trunc)


def _official_state(dim=16, n_n=92, n_a=48, *, vlm=True, prefix=""):
    torch.manual_seed(3)
    mlp = MLP(dim)
    state = {f"{prefix}MLP.{k}": v for k, v in mlp.state_dict().items()}
    state[f"{prefix}normal_text_embs"] = torch.nn.functional.normalize(torch.randn(n_n, dim), dim=1)
    state[f"{prefix}abnormal_text_embs"] = torch.nn.functional.normalize(torch.randn(n_a, dim), dim=1)
    state[f"{prefix}normal_img_normal_text_centroid"] = torch.randn(1, dim // 4)
    state[f"{prefix}normal_img_abnormal_text_centroid"] = torch.randn(1, dim // 4)
    if vlm:
        state[f"{prefix}VLM.logit_scale"] = torch.tensor(4.6052)
        state[f"{prefix}VLM.visual.proj"] = torch.randn(4, 4)
    return {"epoch": 1, "model_state": state, "optimizer_state": {}, "scheduler_state": {}}, mlp


@pytest.mark.parametrize(("vlm", "prefix"), [(True, ""), (True, "module."), (False, "")])
def test_official_import(tmp_path, tiny_backend, vlm, prefix):
    """MLP, text embeddings and centroids as stored; the scale from VLM.logit_scale (or the given backend)."""
    ck, mlp = _official_state(dim=tiny_backend.embed_dim, vlm=vlm, prefix=prefix)
    path = tmp_path / "official.pth"
    torch.save(ck, path)
    # random stored text embeddings match no shipped prompt: every term stays unnamed, and the import says so
    with pytest.warns(UserWarning, match="92 normal and 48 abnormal terms could not be named"):
        det = Detector.from_official_checkpoint(path, backend=None if vlm else tiny_backend, attach_backend=False)
    expected_scale = float(torch.tensor(4.6052).exp()) if vlm else tiny_backend.logit_scale_exp
    assert det.logit_scale_exp == pytest.approx(expected_scale)
    assert torch.equal(det.normal_text, ck["model_state"][f"{prefix}normal_text_embs"])
    assert torch.equal(det.mlp.linear2.weight, mlp.linear2.weight)
    assert det.term_names("normal")[16] == "normal term 17"
    embs = torch.nn.functional.normalize(torch.randn(5, tiny_backend.embed_dim), dim=1)
    s = det.score_embeddings(embs)
    assert s.score.shape == (5,)
    assert (s.score >= 0).all()


def test_official_without_logit_scale_or_backend_fails(tmp_path):
    ck, _ = _official_state(vlm=False)
    path = tmp_path / "o.pth"
    torch.save(ck, path)
    with pytest.raises(CheckpointError, match="logit_scale"):
        Detector.from_official_checkpoint(path)


def test_official_with_wrong_pool_sizes_fails(tmp_path):
    ck, _ = _official_state(n_n=10)
    path = tmp_path / "o.pth"
    torch.save(ck, path)
    with pytest.raises(CheckpointError, match="10 normal"):
        Detector.from_official_checkpoint(path, pools=TermPools.default(), attach_backend=False)


class _Exploit:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_pickle_that_runs_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"model_state": _Exploit()}, fh)
    with pytest.raises(CheckpointError, match="refused"):
        Detector.from_official_checkpoint(path)
    assert not (tmp_path / "PWNED").exists()
    torch.save({"model_state": {"x": _Exploit()}}, tmp_path / "evil2.pth")
    with pytest.raises(CheckpointError):
        Detector.from_official_checkpoint(tmp_path / "evil2.pth")
    assert not (tmp_path / "PWNED").exists()


def test_zero_shot_needs_no_mlp(tiny_backend):
    det = Detector.create(tiny_backend)
    embs = torch.nn.functional.normalize(torch.randn(6, tiny_backend.embed_dim), dim=1)
    s = det.score_embeddings(embs, mode=ScoreMode.ZERO_SHOT)
    assert ((s.score > 0) & (s.score < 1)).all()
    with pytest.raises(ValueError, match="fit the detector"):
        det.score_embeddings(embs)


@pytest.mark.parametrize("bad", [float("nan"), 0.0])
def test_nan_or_zero_norm_embeddings_are_rejected(fitted, bad):
    det, embs = fitted
    x = embs.clone()
    x[2] = bad
    with pytest.raises(ValueError, match=r"NaN|zero norm"):
        det.score_embeddings(x)


def test_text_embeddings_are_cached_on_disk_per_weights(tiny_weights, monkeypatch):
    from napari_anonavila.backends import get_backend

    a = get_backend(f"open_clip:anonavila-demo@{tiny_weights}", device="cpu")
    prompts = ["an image showing a rare term 1", "an image showing a rare term 2"]
    first = a.encode_texts(prompts)
    b = get_backend(f"open_clip:anonavila-demo@{tiny_weights}", device="cpu")  # a new session, same weights
    calls = []
    original = b._encode_text_raw
    monkeypatch.setattr(b, "_encode_text_raw", lambda ps: (calls.append(list(ps)), original(ps))[1])
    again = b.encode_texts([*prompts, "an image showing a new term"])
    assert calls == [["an image showing a new term"]]  # only the prompt never seen with these weights
    assert torch.equal(again[:2], first)
