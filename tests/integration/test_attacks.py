"""Inputs an adversary (or an unlucky user) gives the installed CLI: each is refused with a one-line message, or
written safely; none gives a traceback, a NaN result or a formula in a spreadsheet."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ..helpers import EXE, cli, refused


@pytest.mark.parametrize("value", ["inf", "-inf", "Infinity"])
def test_slide_scores_refuses_infinite_scores(tmp_path, value):
    csv = tmp_path / "s_Ascores.csv"
    csv.write_text(f"patch_name,Ascore\ns_0_0_1.png,0.1\ns_256_0_1.png,{value}\n")
    refused(cli("slide-scores", "--scores", str(csv), "--patch-size", "256"), "row 3", "finite")


@pytest.mark.parametrize("where", ["predictions", "labels"])
def test_evaluate_refuses_duplicate_ids(tmp_path, where):
    ids = [f"s{i}" for i in range(6)]
    preds = tmp_path / "p.csv"
    labels = tmp_path / "l.csv"
    rows_p = [f"{s},{i / 10}" for i, s in enumerate(ids)] + (["s0,0.9"] if where == "predictions" else [])
    rows_l = [f"{s},{i % 2}" for i, s in enumerate(ids)] + (["s1,0"] if where == "labels" else [])
    preds.write_text("slide_id,max\n" + "\n".join(rows_p) + "\n")
    labels.write_text("slide_id,label\n" + "\n".join(rows_l) + "\n")
    refused(cli("evaluate", str(preds), "--labels", str(labels), "--score-column", "max"), "twice" if
            where == "labels" else "more than once")


def test_swapped_term_pools_are_refused(tmp_path):
    n, a = tmp_path / "normal_words.csv", tmp_path / "abnormal_words.csv"
    n.write_text("Normal\nan image showing lymphocytes\n")
    a.write_text("Abnormal\nan image showing tumor cells\n")
    refused(cli("train", "--normal", str(tmp_path), "--normal-terms", str(a), "--abnormal-terms", str(n), "--out",
                str(tmp_path / "m.safetensors")), "given as the normal pool", "swap")


def _tampered_checkpoint(fitted, path: Path, edit) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save_file

    src = fitted.save(path.with_name("src.safetensors"))
    with safe_open(str(src), framework="pt") as fh:
        meta, tensors = fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    edit(tensors)
    save_file(tensors, str(path), metadata=meta)
    return path


def test_an_all_zero_centroid_is_refused(tmp_path, fitted_on_sample, sample_slides):
    model = _tampered_checkpoint(fitted_on_sample, tmp_path / "zero.safetensors",
                                 lambda t: t["centroid.normal"].zero_())
    refused(cli("score-slide", str(sample_slides.normal), "--model", str(model), "--out", str(tmp_path / "o")),
            "centroid is all zeros")


def test_an_absurd_logit_scale_is_refused(tmp_path):
    from napari_anonavila.head import MLP

    state = {f"MLP.{k}": v for k, v in MLP(16).state_dict().items()}
    state.update(normal_text_embs=torch.randn(92, 16), abnormal_text_embs=torch.randn(48, 16),
                 normal_img_normal_text_centroid=torch.randn(1, 4), normal_img_abnormal_text_centroid=torch.randn(1, 4),
                 **{"VLM.logit_scale": torch.tensor(-1000.0)})
    torch.save({"model_state": state}, tmp_path / "a.pth")
    (tmp_path / "top" / "s").mkdir(parents=True)
    refused(cli("score-patches", str(tmp_path / "top"), "--model", str(tmp_path / "a.pth"), "--out",
                str(tmp_path / "o")), "logit scale", "outside")


@pytest.mark.parametrize(("args", "needle"), [
    (["--patch-um", "0.01"], "at least 8"),
    (["--patch-um", "inf"], "positive finite"),
    (["--patch-um", "nan"], "positive finite"),
    (["--roi-box", "nan,0,100,100"], "finite"),
    (["--roi-box", "0,0,inf,100"], "finite"),
])
def test_absurd_grid_arguments_are_refused(tmp_path, fitted_on_sample, sample_slides, args, needle):
    model = fitted_on_sample.save(tmp_path / "m.safetensors")
    refused(cli("score-slide", str(sample_slides.normal), "--model", str(model), "--out", str(tmp_path / "o"), *args),
            needle)
    assert not (tmp_path / "o" / "normal" / "summary.json").exists()


def test_a_demo_too_large_to_hold_is_refused(tmp_path):
    refused(cli("demo", "--size", "200000", "--out", str(tmp_path / "d")), "1024..16384")


def test_terms_that_look_like_formulas_stay_text_in_every_csv(tmp_path):
    from PIL import Image

    from napari_anonavila.detector import Detector
    from napari_anonavila.terms import TermPools

    formula = '=HYPERLINK("http://example.invalid","x")'
    pools = TermPools(("an image showing " + formula,), ("an image showing @SUM(1+1)", "an image showing -1+2"))
    det = Detector.create("demo", pools)
    det.fit(torch.nn.functional.normalize(torch.randn(60, det.embed_dim, generator=torch.Generator().manual_seed(0)),
                                          dim=1))
    model = det.save(tmp_path / "m.safetensors")
    (tmp_path / "top" / "s").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((64, 64, 3), 100 + 40 * i, np.uint8)).save(tmp_path / "top" / "s" / f"s_{i}_0_1.png")
    res = cli("-q", "score-patches", str(tmp_path / "top"), "--model", str(model), "--out", str(tmp_path / "o"))
    assert res.returncode == 0, res.stderr
    text = (tmp_path / "o" / "s_Ascores.csv").read_text()
    cells = [c for line in text.splitlines()[1:] for c in line.split(",")]
    assert not any(c.lstrip('"').startswith(("=", "@", "+")) for c in cells), text
    assert any(c.lstrip('"').startswith("'=HYPERLINK") for c in cells)
    # numbers keep their sign
    from napari_anonavila.export.tables import safe_cell

    assert safe_cell("-0.25") == "-0.25" and safe_cell("-1+2") == "'-1+2"


def test_geojson_booleans_are_not_coordinates(tmp_path):
    from napari_anonavila.annotations.geojson import read_geojson
    from napari_anonavila.errors import InputFileError

    doc = {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"objectType": "annotation"},
           "geometry": {"type": "Polygon", "coordinates": [[[True, False], [10, 0], [10, 10], [True, False]]]}}]}
    (tmp_path / "b.geojson").write_text(json.dumps(doc))
    with pytest.raises(InputFileError, match="coordinates must be numbers, got"):
        read_geojson(tmp_path / "b.geojson")  # never read as (1, 0)


def test_a_hundred_thousand_terms_score_in_bounded_memory(tmp_path, demo_backend, sample_slides):
    """The head's (patches, terms, D) tensor is chunked: 10^5 terms score a slide in well under 2 GB."""
    from napari_anonavila.detector import Detector
    from napari_anonavila.terms import TermPools

    k = 100_000
    pools = TermPools(tuple(f"an image showing normal term {i}" for i in range(k)), ("an image showing tumour",))
    g = torch.Generator().manual_seed(0)
    d = demo_backend.embed_dim
    det = Detector(backend=demo_backend, backend_spec="demo", backend_id=demo_backend.id, pools=pools,
                   normal_text=torch.nn.functional.normalize(torch.randn(k, d, generator=g), dim=1),
                   abnormal_text=torch.nn.functional.normalize(torch.randn(1, d, generator=g), dim=1),
                   logit_scale_exp=demo_backend.logit_scale_exp)
    from napari_anonavila.head import MLP

    det.mlp = MLP(d)
    det.centroids = (torch.randn(d // 4, generator=g), torch.randn(d // 4, generator=g))
    model = det.save(tmp_path / "many.safetensors")
    # a fresh parent, so that the peak is this run's alone
    probe = ("import resource, subprocess, sys\n"
             "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
             "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
             "sys.stderr.write(r.stderr)\n")
    res = subprocess.run([sys.executable, "-c", probe, EXE, "-q", "score-slide", str(sample_slides.normal),
                          "--model", str(model), "--out", str(tmp_path / "o"), "--patch-px", "256"],
                         capture_output=True, text=True, timeout=900)
    code, peak_kib = map(int, res.stdout.split())
    assert code == 0, res.stderr
    assert peak_kib / 1024 < 2048, peak_kib / 1024


def test_export_refuses_a_slide_edited_since_it_was_scored(tmp_path, fitted_on_sample):
    from napari_anonavila.sample import make_tissue, write_pyramid_tiff

    model = fitted_on_sample.save(tmp_path / "m.safetensors")
    slide = write_pyramid_tiff(tmp_path / "case.tif", make_tissue(1024, 3)[0], 0.5)
    assert cli("-q", "score-slide", str(slide), "--model", str(model), "--out", str(tmp_path / "r"),
               "--patch-px", "128").returncode == 0
    write_pyramid_tiff(slide, make_tissue(1024, 4)[0], 0.5)  # other tissue, same name and size
    refused(cli("export", str(tmp_path / "r" / "case"), "--out", str(tmp_path / "qa"), "--formats", "html"),
            "not the slide this result was made on", "score it again")
    assert not any((tmp_path / "qa").rglob("*.html"))


def test_batch_never_replaces_another_slides_result_without_overwrite(tmp_path, fitted_on_sample):
    import csv

    from napari_anonavila.sample import make_tissue, write_pyramid_tiff

    model = fitted_on_sample.save(tmp_path / "m.safetensors")
    a = write_pyramid_tiff((tmp_path / "a").mkdir() or tmp_path / "a" / "case.tif", make_tissue(1024, 5)[0], 0.5)
    b = write_pyramid_tiff((tmp_path / "b").mkdir() or tmp_path / "b" / "case.tif", make_tissue(1024, 6)[0], 0.5)
    args = ["--model", str(model), "--out", str(tmp_path / "R"), "--n-workers", "1", "--patch-px", "128"]
    assert cli("batch", str(a), *args).returncode == 0
    first = (tmp_path / "R" / "case" / "patches.csv").read_bytes()
    res = cli("batch", str(b), *args)
    with open(tmp_path / "R" / "cohort.csv", newline="") as fh:
        [row] = [r for r in csv.DictReader(fh) if r["slide"] == str(b)]
    assert row["status"] == "failed" and "holds the complete result of another slide" in row["error"], row
    assert (tmp_path / "R" / "case" / "patches.csv").read_bytes() == first  # a's result is intact
    assert res.returncode != 0 or "failed" in res.stdout
    assert cli("batch", str(b), *args, "--overwrite").returncode == 0
    assert (tmp_path / "R" / "case" / "patches.csv").read_bytes() != first


@pytest.mark.parametrize("accumulate", ["1", "100"])
def test_a_diverging_training_says_so_and_saves_nothing(tmp_path, accumulate):
    from PIL import Image

    for i in range(12):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
            tmp_path / f"p{i}.png")
    res = cli("-q", "train", "--normal", str(tmp_path), "--lr", "1e30", "--batch-size", "4", "--accumulate",
              accumulate, "--out", str(tmp_path / "m.safetensors"))
    refused(res, "training diverged", "lower the learning rate", "nothing was saved")
    assert res.stderr.count("\n") == 1 and not (tmp_path / "m.safetensors").exists()


def test_two_batches_into_one_out_fail_no_slide(tmp_path, fitted_on_sample):
    """Started together on the same slides and --out: a slide the other batch is writing is waited for, not failed."""
    import csv

    from napari_anonavila.sample import make_tissue, write_pyramid_tiff

    model = fitted_on_sample.save(tmp_path / "m.safetensors")
    slides = [str(write_pyramid_tiff(tmp_path / f"c{i}.tif", make_tissue(1024, 20 + i)[0], 0.5)) for i in range(3)]
    args = [EXE, "-q", "batch", *slides, "--model", str(model), "--out", str(tmp_path / "R"), "--n-workers", "1",
            "--patch-px", "128"]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    with open(tmp_path / "R" / "cohort.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["status"] for r in rows) != [] and all(r["status"] in ("ok", "skipped") for r in rows), rows


@pytest.mark.parametrize("damage", ["flip a sign", "swap two prompts"])
def test_a_tampered_text_cache_is_rebuilt_not_served(tmp_path, damage):
    """The text-embedding cache is checked against its digest: a flipped sign bit (still a unit vector) or two
    swapped prompt names are caught, warned about once, and the terms encoded again."""
    import os

    from PIL import Image
    from safetensors import safe_open
    from safetensors.torch import save_file

    for i in range(12):
        Image.fromarray(np.random.default_rng(i).integers(90, 200, (64, 64, 3), dtype=np.uint8)).save(
            tmp_path / f"p{i}.png")
    env = {**os.environ, "ANONAVILA_CACHE": str(tmp_path / "cache")}

    def train(name):
        return subprocess.run([EXE, "-q", "train", "--normal", str(tmp_path), "--batch-size", "4", "--out",
                               str(tmp_path / name)], capture_output=True, text=True, env=env, timeout=600)

    assert train("a.safetensors").returncode == 0
    [cache] = (tmp_path / "cache" / "text-embeddings").glob("*.safetensors")
    with safe_open(str(cache), framework="pt") as fh:
        meta, embs = fh.metadata(), fh.get_tensor("embeddings")
    if damage == "flip a sign":
        embs[0, 0] = -embs[0, 0]
    else:
        prompts = json.loads(meta["prompts"])
        prompts[0], prompts[1] = prompts[1], prompts[0]
        keys = json.loads(meta["keys"])
        keys[0], keys[1] = keys[1], keys[0]
        meta = {**meta, "prompts": json.dumps(prompts), "keys": json.dumps(keys)}
    save_file({"embeddings": embs.contiguous()}, str(cache), metadata=meta)
    res = train("b.safetensors")
    assert res.returncode == 0, res.stderr
    assert res.stderr.count("text-embedding cache does not verify") == 1, res.stderr
    from napari_anonavila.detector import Detector

    a = Detector.load(tmp_path / "a.safetensors", attach_backend=False)
    b = Detector.load(tmp_path / "b.safetensors", attach_backend=False)
    assert torch.equal(a.normal_text, b.normal_text) and torch.equal(a.abnormal_text, b.abnormal_text)


def test_a_damaged_summary_with_an_absurd_heatmap_is_one_line(tmp_path, fitted_on_sample, sample_slides):
    model = fitted_on_sample.save(tmp_path / "m.safetensors")
    assert cli("-q", "score-slide", str(sample_slides.normal), "--model", str(model), "--out", str(tmp_path / "r"),
               "--patch-px", "256").returncode == 0
    summary = tmp_path / "r" / "normal" / "summary.json"
    doc = json.loads(summary.read_text())
    doc["heatmap"]["shape_rc"] = [30000, 30000]
    summary.write_text(json.dumps(doc))
    refused(cli("export", str(tmp_path / "r" / "normal"), "--out", str(tmp_path / "qa")), "damaged score-slide result",
            "beyond any slide")


def test_a_local_cluster_listens_on_loopback_only():
    pytest.importorskip("distributed")
    from napari_anonavila.batch.distributed import _client

    client, cluster, _ = _client(None, 1)
    try:
        addresses = [cluster.scheduler_address, *(w.address for w in cluster.workers.values())]
        assert all(a.startswith("tcp://127.0.0.1:") for a in addresses), addresses
        assert client.dashboard_link.startswith("http://127.0.0.1:")
        ports = {int(a.rsplit(":", 1)[1]) for a in addresses}
        ports.add(int(client.dashboard_link.split(":")[2].split("/")[0]))
        listening = _listening()  # what the kernel says: (address, port) of every listening TCP socket
        bound = {addr for addr, port in listening if port in ports}
        assert bound == {"127.0.0.1"}, (ports, sorted(listening))
    finally:
        client.close()
        cluster.close()


def _listening() -> set[tuple[str, int]]:
    """Listening TCP sockets (IPv4 and IPv6) from /proc/net, as (address, port)."""
    import ipaddress

    out = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            if state != "0A":  # LISTEN
                continue
            hexaddr, hexport = local.split(":")
            raw = bytes.fromhex(hexaddr)
            if len(raw) == 4:
                addr = str(ipaddress.IPv4Address(raw[::-1]))
            else:
                addr = str(ipaddress.IPv6Address(b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))))
                addr = "127.0.0.1" if addr == "::ffff:127.0.0.1" else addr
            out.add((addr, int(hexport, 16)))
    return out


def test_model_demo_says_where_a_demo_checkpoint_comes_from(sample_slides, tmp_path):
    res = cli("score-slide", str(sample_slides.normal), "--model", "demo", "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and "'demo' is a backend, not a checkpoint" in res.stderr
    assert "anonavila demo" in res.stderr and "train --backend demo" in res.stderr


def test_a_region_of_a_huge_single_level_slide_reads_only_the_region(tmp_path, fitted_on_sample, monkeypatch):
    """A single-level TIFF with no cheap thumbnail (here 8600 x 8600 px): scoring a small --roi-box reads that box
    (tissue mask and overlay), never the whole slide (which took minutes on a 50,000 px one)."""
    import tifffile

    from napari_anonavila.slide import open_slide
    from napari_anonavila.slide.base import Slide

    path = tmp_path / "huge.tif"
    img = np.full((8600, 8600, 3), 240, np.uint8)
    img[4000:4600, 4000:4600] = (180, 90, 160)  # a piece of stained tissue inside the box
    tifffile.imwrite(path, img, tile=(512, 512), photometric="rgb", compression="zlib",
                     resolution=(1 / 0.5e-4, 1 / 0.5e-4), resolutionunit="CENTIMETER")
    del img
    with open_slide(path) as s:
        assert not s.cheap_thumbnail and len(s.level_shapes) == 1

    def whole_slide(self, *a, **k):
        raise AssertionError("the whole slide was read for a region")

    monkeypatch.setattr(Slide, "thumbnail", whole_slide)
    res = fitted_on_sample.score_slide(path, out_dir=tmp_path / "r", patch_px=128,
                                       roi_polygons_xy_l0=[np.array([[3900, 3900], [4700, 3900], [4700, 4700],
                                                                     [3900, 4700]], float)])
    assert 20 <= len(res) <= 40  # the stained piece's cells, found by the box's own mask
    assert (tmp_path / "r" / "overlay.png").stat().st_size > 0
