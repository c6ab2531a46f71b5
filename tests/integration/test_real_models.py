"""The real-model path: the files users really have, through the doors they use, with no network.

- the authors' checkpoint (a .pth holding CONCH under VLM.*) as a complete detector, equal to an independent
  per-patch computation of the authors' code path;
- the paper's 100/50 checkpoint with duplicate terms;
- the shipped pools encoding exactly like the authors' CSV prompts (CONCH's tokenizer, trailing spaces);
- CONCH, open_clip hf-hub models and transformers CLIPModels from local Hugging Face cache layouts, and
  each failure (missing entry, wrong model, truncated file) as one line;
- held-out centroids, the authors' slide scores, and the precision option.

The CONCH architecture is built with seeded random weights (395 M parameters, slow on a CPU): those tests are
marked slow and share one module-scoped model.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ..conftest import shared_path
from ..helpers import (
    authors_checkpoint,
    authors_per_image_scores,
    hf_cache_entry,
    tiny_hf_clip,
    tiny_open_clip_repo,
)

EXE = str(Path(sys.executable).with_name("anonavila"))


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf-hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


# -- CONCH and the authors' checkpoint ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def conch(tmp_path_factory):
    pytest.importorskip("conch.open_clip_custom", reason="needs the [conch] extra (conch-fork)")
    from napari_anonavila.backends import get_backend
    from napari_anonavila.backends.conch import build_conch_model

    torch.manual_seed(0)
    model = build_conch_model().eval()
    weights = tmp_path_factory.mktemp("conch") / "pytorch_model.bin"
    torch.save(model.state_dict(), weights)
    backend = get_backend(f"conch:{weights}", "cpu")
    return model, weights, backend


@pytest.fixture(scope="module")
def authors(conch, tmp_path_factory, sample_slides):
    """An authors' checkpoint with all of CONCH, text embeddings of the shipped prompts and real centroids."""
    from napari_anonavila.head import MLP, text_augmented_embeddings
    from napari_anonavila.slide import open_slide
    from napari_anonavila.terms import TermPools

    model, _weights, backend = conch
    pools = TermPools.default()
    nt, at = backend.encode_texts(pools.normal), backend.encode_texts(pools.abnormal)
    with open_slide(sample_slides.normal) as s:
        normal = backend.embed_images([s.read_region((x, y), 0, (256, 256)) for x, y in ((512, 512), (1024, 768))])
    torch.manual_seed(3)
    mlp = MLP(512)
    with torch.no_grad():
        h_n, h_a = text_augmented_embeddings(normal, nt, at, backend.logit_scale_exp, mlp)
    path = tmp_path_factory.mktemp("authors") / "anonavila_camelyon16.pth"
    path, mlp_state = authors_checkpoint(path, model.state_dict(), nt, at, (h_n.mean(0), h_a.mean(0)))
    return path, mlp_state, nt, at, (h_n.mean(0), h_a.mean(0))


@pytest.mark.slow
def test_the_authors_pth_alone_scores_a_slide_like_their_code(authors, conch, sample_slides, tmp_path):
    import openslide
    from conch.open_clip_custom.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    from conch.open_clip_custom.transform import image_transform

    path, mlp_state, nt, at, cents = authors
    model, _, _ = conch
    out = tmp_path / "out"
    res = subprocess.run([EXE, "-q", "score-slide", str(sample_slides.anomalous), "--model", str(path), "--out",
                          str(out), "--patch-px", "256", "--roi-box", "768,768,512,512", "--device", "cpu"],
                         capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stderr
    assert "CONCH" in res.stdout and "lymph-node" in res.stdout
    summary = json.loads((out / "anomalous" / "summary.json").read_text())
    prov = summary["provenance"]
    assert prov["backend"]["spec"] == f"conch:{path}" and prov["backend"]["precision"] == "float32"
    rows = [ln.split(",") for ln in (out / "anomalous" / "patches.csv").read_text().splitlines()[1:]]
    assert 1 <= len(rows) <= 4
    osr = openslide.OpenSlide(str(sample_slides.anomalous))
    images = [np.asarray(osr.read_region((int(r[0]), int(r[1])), 0, (256, 256)).convert("RGB")) for r in rows]
    transform = image_transform(448, mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD)
    ref = authors_per_image_scores(model, transform, images, nt, at, mlp_state, cents,
                                   float(model.logit_scale.detach().exp()))
    names_n, names_a = backend_term_names()
    for r, (score, top_a, top_n) in zip(rows, ref, strict=True):
        assert float(r[7]) == pytest.approx(score, rel=1e-3)
        assert r[10].split("|")[0].rsplit(":", 1)[0] == names_a[top_a]
        assert r[9].split("|")[0].rsplit(":", 1)[0] == names_n[top_n]


@pytest.mark.slow
def test_patches_of_every_pil_mode_score_like_their_code(authors, conch, tmp_path):
    """score-patches with the authors' .pth on PNG/TIFF patches in every PIL mode; the reference opens each file as
    their datasets do (Image.open, no convert) and runs CONCH's own transform: resize first, RGB after."""
    import io

    from conch.open_clip_custom.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    from conch.open_clip_custom.transform import image_transform
    from PIL import Image

    path, mlp_state, nt, at, cents = authors
    model, _, _ = conch
    rng = np.random.default_rng(7)
    rgb = (rng.random((260, 300, 3)) * np.linspace(40, 255, 300)[None, :, None]).astype(np.uint8)
    alpha = rng.integers(0, 256, (260, 300), dtype=np.uint8)
    modes = {"RGB": Image.fromarray(rgb), "RGBA": Image.fromarray(np.dstack([rgb, alpha])),
             "LA": Image.fromarray(np.dstack([rgb[..., 0], alpha])), "P": Image.fromarray(rgb).quantize(32),
             "L": Image.fromarray(rgb[..., 1]), "I;16": Image.fromarray(rgb[..., 2].astype(np.uint16) * 257),
             "CMYK": Image.fromarray(rgb).convert("CMYK")}
    folder = tmp_path / "top" / "modes"
    folder.mkdir(parents=True)
    files = {}
    for i, (mode, im) in enumerate(modes.items()):
        files[mode] = folder / f"modes_{i * 256}_0_200.{'tif' if mode == 'CMYK' else 'png'}"
        im.save(files[mode])
        with Image.open(files[mode]) as check:
            assert check.mode == mode
    out = tmp_path / "scores"
    res = subprocess.run([EXE, "-q", "score-patches", str(tmp_path / "top"), "--model", str(path), "--out", str(out),
                          "--device", "cpu"], capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stderr
    ours = {r.split(",")[0]: float(r.split(",")[1]) for r in (out / "modes_Ascores.csv").read_text().splitlines()[1:]}
    transform = image_transform(448, mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD)
    opened = [Image.open(io.BytesIO(files[m].read_bytes())) for m in modes]
    ref = authors_per_image_scores(model, transform, opened, nt, at, mlp_state, cents,
                                   float(model.logit_scale.detach().exp()))
    for mode, (score, _a, _n) in zip(modes, ref, strict=True):
        assert abs(ours[files[mode].name] - score) <= 1e-8, mode  # scores ~3e-4; measured differences <= 5e-10


@pytest.mark.slow
def test_a_head_only_pth_imports_and_asks_for_the_image_model(authors, conch, sample_slides, tmp_path):
    """MLP, text embeddings, centroids and VLM.logit_scale without CONCH's weights: it imports; scoring a slide
    asks for --backend, and with it scores as the complete file does."""
    path, _mlp_state, nt, at, cents = authors
    model, weights, _ = conch
    head, _ = authors_checkpoint(tmp_path / "head_only.pth", None, nt, at, cents,
                                 logit_scale=model.state_dict()["logit_scale"].clone())
    args = ["-q", "score-slide", str(sample_slides.anomalous), "--patch-px", "256", "--roi-box", "768,768,512,512",
            "--device", "cpu"]
    refused = subprocess.run([EXE, *args, "--model", str(head), "--out", str(tmp_path / "a")], capture_output=True,
                             text=True, timeout=600)
    assert refused.returncode == 2 and "holds the head only" in refused.stderr and "--backend" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) <= 2  # the unnamed-terms warning, then the one-line error
    ok = subprocess.run([EXE, *args, "--model", str(head), "--backend", f"conch:{weights}", "--out",
                         str(tmp_path / "b")], capture_output=True, text=True, timeout=1200)
    assert ok.returncode == 0, ok.stderr
    full = subprocess.run([EXE, *args, "--model", str(path), "--out", str(tmp_path / "c")], capture_output=True,
                          text=True, timeout=1200)
    assert full.returncode == 0, full.stderr
    rows_b = (tmp_path / "b" / "anomalous" / "patches.csv").read_text().splitlines()[1:]
    rows_c = (tmp_path / "c" / "anomalous" / "patches.csv").read_text().splitlines()[1:]
    assert [r.split(",")[7] for r in rows_b] == [r.split(",")[7] for r in rows_c]  # the same scores


def backend_term_names():
    from napari_anonavila.terms import TermPools

    pools = TermPools.default()
    return pools.terms("normal"), pools.terms("abnormal")


@pytest.mark.slow
def test_the_papers_100_50_checkpoint_with_duplicates_imports_and_scores(authors, conch, tmp_path):
    from napari_anonavila.detector import Detector
    from napari_anonavila.terms import TermPools

    _path, _mlp, nt, at, cents = authors
    model, _, backend = conch
    extra_n = backend.encode_texts([f"an image showing a term retired from the pools {i}" for i in range(3)])
    extra_a = backend.encode_texts(["an image showing an old abnormal term", "an image showing another one"])
    normal = torch.cat([nt, nt[:5], extra_n])  # 92 + 5 duplicates + 3 unknown = 100
    abnormal = torch.cat([at, extra_a])  # 48 + 2 unknown = 50
    path, _ = authors_checkpoint(tmp_path / "paper_100_50.pth", model.state_dict(), normal, abnormal, cents)
    with pytest.warns(UserWarning, match="3 normal and 2 abnormal terms could not be named"):
        det = Detector.load(path, device="cpu")
    assert (len(det.pools.normal), len(det.pools.abnormal)) == (100, 50)
    assert torch.equal(det.normal_text, normal) and torch.equal(det.abnormal_text, abnormal)  # as stored
    names = det.term_names("normal")
    assert names[92:97] == names[:5]  # duplicates named (and kept)
    assert names[97:] == ["normal term 98", "normal term 99", "normal term 100"]
    scores = det.score_embeddings(torch.nn.functional.normalize(torch.randn(3, 512), dim=1))
    assert np.isfinite(scores.score).all()
    # duplicates change the softmax weights: dropping them would change the scores
    dedup = Detector(backend=None, backend_spec="x", backend_id="x", pools=TermPools.default(), normal_text=nt,
                     abnormal_text=at, logit_scale_exp=det.logit_scale_exp, mlp=det.mlp, centroids=det.centroids)
    e = torch.nn.functional.normalize(torch.randn(3, 512), dim=1)
    assert not np.allclose(det.score_embeddings(e).score, dedup.score_embeddings(e).score)


@pytest.mark.slow
def test_text_embeddings_equal_the_authors_from_their_token_ids(conch):
    """Our encode_texts of the shipped prompts against the authors' path: the ids pinned by their own tokenize()
    (transformers 4.57, tests/data/conch_token_ids.json) through CONCH's encode_text(normalize=True)."""
    from napari_anonavila.terms import TermPools, load_pool

    model, _, backend = conch
    doc = json.loads((Path(__file__).resolve().parents[1] / "data" / "conch_token_ids.json").read_text("utf-8"))
    pools = TermPools.default()
    for kind in ("normal", "abnormal"):
        entries = [e for e in doc["entries"] if e["pool"] == kind]
        assert list(getattr(pools, kind)) == [e["prompt"] for e in entries] == load_pool(
            shared_path("words", f"{kind}_words.csv"))  # byte for byte, trailing spaces kept
        ids = torch.tensor([e["ids"] + [0] * (128 - len(e["ids"])) for e in entries])
        with torch.no_grad():
            theirs = model.encode_text(ids, normalize=True)
        ours = backend.encode_texts(list(getattr(pools, kind)))
        assert float((ours - theirs).abs().max()) <= 1e-6
    spaced = [p for p in pools.normal if p.endswith(" ")]
    assert len(spaced) == 9
    a, b = backend.encode_texts([spaced[0], spaced[0].rstrip()])
    assert not torch.allclose(a, b)  # the trailing space is a token: stripping it would change the embedding

@pytest.mark.slow
def test_conch_from_the_local_hugging_face_cache(conch, hf_cache, no_network):
    from napari_anonavila.backends import get_backend

    _, weights, file_backend = conch
    hf_cache_entry(hf_cache, "MahmoodLab/CONCH", {"pytorch_model.bin": weights})
    b = get_backend("conch", "cpu")
    assert b.id.split(":")[-1] == file_backend.weights_sha256
    torch.testing.assert_close(b.encode_texts(["an image showing sinuses"]),
                               file_backend.encode_texts(["an image showing sinuses"]))
    assert not no_network


def test_conch_missing_from_the_cache_is_one_line(hf_cache, no_network):
    pytest.importorskip("conch.open_clip_custom", reason="needs the [conch] extra (conch-fork)")
    from napari_anonavila.backends import get_backend
    from napari_anonavila.errors import BackendUnavailableError

    with pytest.raises(BackendUnavailableError) as info:
        get_backend("conch", "cpu")
    msg = str(info.value)
    assert "MahmoodLab/CONCH" in msg and str(hf_cache) in msg and "huggingface-cli download" in msg
    assert "\n" not in msg and not no_network
    # through the CLI, in a fresh process (conch's import of timm warns there first): one line, the error
    res = subprocess.run([EXE, "train", "--normal", str(hf_cache), "--backend", "conch", "--out",
                          str(hf_cache / "m.safetensors")], capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert res.stderr.startswith("error: conch backend: pytorch_model.bin of MahmoodLab/CONCH"), res.stderr


def test_conch_cache_entry_of_another_model_or_truncated_is_refused(hf_cache, tmp_path, no_network):
    pytest.importorskip("conch.open_clip_custom", reason="needs the [conch] extra (conch-fork)")
    from napari_anonavila.backends import get_backend
    from napari_anonavila.errors import CheckpointError

    other = tmp_path / "other.bin"
    torch.save({"visual.proj": torch.zeros(2, 2)}, other)
    hf_cache_entry(hf_cache, "MahmoodLab/CONCH", {"pytorch_model.bin": other})
    with pytest.raises(CheckpointError, match="not CONCH weights"):
        get_backend("conch", "cpu")
    cut = tmp_path / "cut.bin"
    cut.write_bytes(other.read_bytes()[:300])
    hf_cache_entry(hf_cache, "MahmoodLab/CONCH", {"pytorch_model.bin": cut}, revision="1" * 40)
    with pytest.raises(CheckpointError, match="not valid CONCH weights"):
        get_backend("conch", "cpu")
    assert not no_network


# -- open_clip hf-hub and transformers CLIPModels from the cache --------------------------------------------------
def test_open_clip_hf_hub_model_from_the_cache(hf_cache, tmp_path, no_network):
    import open_clip

    from napari_anonavila.backends import get_backend

    files = tiny_open_clip_repo(tmp_path / "repo")
    snap = hf_cache_entry(hf_cache, "wisdomik/QuiltNet-tiny", files)
    b = get_backend("open_clip:hf-hub:wisdomik/QuiltNet-tiny", "cpu")
    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{snap}")
    tok = open_clip.get_tokenizer(f"local-dir:{snap}")
    with torch.no_grad():
        ref = torch.nn.functional.normalize(model.encode_text(tok(["an image showing sinuses"])), dim=-1)
    torch.testing.assert_close(b.encode_texts(["an image showing sinuses"]), ref)
    assert b.embed_images([np.full((80, 80, 3), 200, np.uint8)]).shape == (1, 64)
    assert not no_network


def test_a_checkpoint_never_takes_the_tool_online(hf_cache, tmp_path, no_network):
    """A checkpoint whose backend is an hf-hub model that is not in the cache: one line, and no connection."""
    from napari_anonavila.detector import Detector
    from napari_anonavila.errors import BackendUnavailableError
    from napari_anonavila.training import TrainConfig

    files = tiny_open_clip_repo(tmp_path / "repo")
    snap = hf_cache_entry(hf_cache, "org/tiny-clip", files)
    det = Detector.create("open_clip:hf-hub:org/tiny-clip", device="cpu")
    det.fit(torch.nn.functional.normalize(torch.randn(20, det.embed_dim), dim=1), config=TrainConfig(batch_size=5))
    ck = det.save(tmp_path / "m.safetensors")
    assert Detector.load(ck).backend.id == det.backend_id
    for p in snap.iterdir():
        p.unlink()  # the cache was cleared
    with pytest.raises(BackendUnavailableError, match="not in the local Hugging Face cache") as info:
        Detector.load(ck)
    assert "org/tiny-clip" in str(info.value) and "--allow-download" in str(info.value)
    assert not no_network


def test_open_clip_hf_hub_entry_without_weights_is_one_line(hf_cache, tmp_path, no_network):
    from napari_anonavila.backends import get_backend
    from napari_anonavila.errors import BackendUnavailableError

    files = tiny_open_clip_repo(tmp_path / "repo")
    hf_cache_entry(hf_cache, "org/half", {"open_clip_config.json": files["open_clip_config.json"]})
    with pytest.raises(BackendUnavailableError, match=r"open_clip_model\.safetensors or open_clip_pytorch_model\.bin"):
        get_backend("open_clip:hf-hub:org/half", "cpu")
    assert not no_network


@pytest.mark.parametrize("how", ["folder", "cache"])
def test_transformers_clip_model_from_a_folder_or_the_cache(hf_cache, tmp_path, no_network, how):
    from transformers import CLIPModel, CLIPTokenizer

    from napari_anonavila.backends import get_backend

    folder = tiny_hf_clip(tmp_path / "plip")
    if how == "cache":
        hf_cache_entry(hf_cache, "vinid/plip-tiny", {p.name: p for p in folder.iterdir() if p.is_file()})
    b = get_backend(f"hf_clip:{folder}" if how == "folder" else "hf_clip:vinid/plip-tiny", "cpu")
    assert (b.embed_dim, b.image_size) == (24, 64)
    model, tok = CLIPModel.from_pretrained(folder), CLIPTokenizer.from_pretrained(folder)
    with torch.no_grad():
        out = model.get_text_features(**tok(["an image showing sinuses"], return_tensors="pt"))
    ref = out if isinstance(out, torch.Tensor) else out.pooler_output
    torch.testing.assert_close(b.encode_texts(["an image showing sinuses"]),
                               torch.nn.functional.normalize(ref, dim=-1))
    e = b.embed_images([np.full((100, 90, 3), 180, np.uint8)])
    assert e.shape == (1, 24) and torch.isfinite(e).all()
    if how == "folder":  # int8: the vision model and its projection quantised, the text side float32's exactly
        q = get_backend(f"hf_clip:{folder}", "cpu", precision="int8")
        assert type(q.model.visual_projection).__module__.startswith("torch.ao.nn.quantized.dynamic")
        assert torch.equal(q.encode_texts(["an image showing sinuses"]), b.encode_texts(["an image showing sinuses"]))
        assert float((q.embed_images([np.full((100, 90, 3), 180, np.uint8)]) * e).sum()) > 0.99
    assert not no_network


def test_transformers_clip_truncated_weights_are_refused(tmp_path):
    from napari_anonavila.backends import get_backend
    from napari_anonavila.errors import AnonavilaError

    folder = tiny_hf_clip(tmp_path / "plip")
    w = folder / "model.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    with pytest.raises(AnonavilaError, match="plip"):
        get_backend(f"hf_clip:{folder}", "cpu")


# -- held-out centroids, authors' slide scores, precision -----------------------------------------------------------
def test_training_holds_out_whole_slides_for_the_centroids(sample_slides, tmp_path, tiny_weights):
    from napari_anonavila.detector import Detector

    other = tmp_path / "normal-2.tif"
    other.write_bytes(sample_slides.anomalous.read_bytes())
    model = tmp_path / "m.safetensors"
    res = subprocess.run([EXE, "-q", "train", "--normal", str(sample_slides.normal), str(other), "--patch-px",
                          "256", "--batch-size", "8", "--accumulate", "1", "--out", str(model), "--backend",
                          f"open_clip:anonavila-demo@{tiny_weights}"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    split = Detector.load(model).info["centroid_split"]
    assert split["kind"] == "held-out groups" and len(split["held_out"]) == 1
    assert split["n_train"] > 0 and split["n_centroid"] > 0
    assert "centroids from" in res.stdout


@pytest.mark.parametrize("sizes_from", ["sizes", "slides"])
def test_slide_scores_equal_the_authors_tester_with_and_without_erosion(tmp_path, sizes_from):
    """48 random grids (partial edge rows and columns included) scored by the authors' own tester
    (tests/data/make_authors_slide_scores.py), then by `anonavila slide-scores` from the same CSVs."""
    import tifffile

    doc = json.loads((Path(__file__).resolve().parents[1] / "data" / "authors_slide_scores.json").read_text())
    want = {}
    for p in sorted({c["patch_size"] for c in doc["cases"]}):
        cases = [c for c in doc["cases"] if c["patch_size"] == p]
        csvs = []
        for c in cases:
            csv = tmp_path / f"{c['slide_id']}_Ascores.csv"
            csv.write_text("patch_name,Ascore\n" + "".join(f"{c['slide_id']}_{x}_{y}_200.png,{v!r}\n"
                                                            for x, y, v in c["patches"]))
            csvs.append(str(csv))
            want[c["slide_id"]] = c
        if sizes_from == "sizes":
            sizes = tmp_path / f"sizes{p}.csv"
            sizes.write_text("slide_id,width,height\n" + "".join(f"{c['slide_id']},{c['width']},{c['height']}\n"
                                                                 for c in cases))
            extra = ["--sizes", str(sizes)]
        else:  # the slides themselves (blank tiled TIFFs of the same sizes)
            extra = ["--slides"]
            for c in cases:
                slide = tmp_path / f"{c['slide_id']}.tif"
                tifffile.imwrite(slide, np.zeros((c["height"], c["width"], 3), np.uint8), tile=(128, 128),
                                 compression="zlib")
                extra.append(str(slide))
        out = tmp_path / f"slides{p}.csv"
        res = subprocess.run([EXE, "slide-scores", "--scores", *csvs, "--patch-size", str(p), *extra, "--out",
                              str(out)], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        for line in out.read_text().splitlines()[1:]:
            sid, n, mx, top1, mx_e, top1_e, _cells = line.split(",")
            c = want.pop(sid)
            assert int(n) == len(c["patches"])
            assert [float(mx), float(top1)] == pytest.approx(c["erosion_false"], rel=1e-12, abs=0)
            assert [float(mx_e), float(top1_e)] == pytest.approx(c["erosion_true"], rel=1e-12, abs=0)
    assert not want  # every case came back


def test_slide_scores_take_sizes_from_the_slides(tmp_path, sample_slides):
    csv = tmp_path / "s.csv"
    csv.write_text("patch_name,Ascore\nanomalous_1800_0_1.png,0.5\nanomalous_0_0_1.png,0.1\n")
    res = subprocess.run([EXE, "slide-scores", "--scores", str(csv), "--patch-size", "300", "--slides",
                          str(sample_slides.anomalous)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    row = res.stdout.splitlines()[1].split(",")
    assert row[:3] == ["anomalous", "2", "0.5"]  # without erosion: every patch, as the authors
    assert row[4] == "0.10000000000000001" and row[-1] == "1"  # eroded: the partial column dropped (1800 // 300 = 6)


def test_precision_is_an_option_recorded_in_provenance_and_the_cache_key(tmp_path, sample_slides, fitted_on_sample):
    model = fitted_on_sample.save(tmp_path / "m.safetensors")
    out = tmp_path / "o"
    args = [EXE, "-q", "score-slide", str(sample_slides.anomalous), "--model", str(model), "--out", str(out),
            "--patch-px", "256", "--device", "cpu"]
    first = subprocess.run([*args, "--precision", "bfloat16"], capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    prov = json.loads((out / "anomalous" / "summary.json").read_text())["provenance"]
    assert prov["backend"]["precision"] == "bfloat16"
    again = subprocess.run([*args, "--overwrite"], capture_output=True, text=True, timeout=600)  # float32 default
    assert again.returncode == 0 and "from pixels" in again.stdout  # not the bfloat16 cache
    prov = json.loads((out / "anomalous" / "summary.json").read_text())["provenance"]
    assert prov["backend"]["precision"] == "float32"
