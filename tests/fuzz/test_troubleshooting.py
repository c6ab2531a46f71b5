"""docs/troubleshooting.md stays true: every row is triggered here and its message checked against the table."""

from __future__ import annotations

import json
import os
import pickle
import re
import resource
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from ..conftest import NETWORK_ATTEMPTS, REPO, shared_path

DOC = REPO / "docs" / "troubleshooting.md"


def _rows() -> dict[str, str]:
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] not in ("id", "---") and cells[2].startswith("`"):
            rows[cells[0]] = cells[2].strip("`")
    return rows


def _pattern(message: str) -> re.Pattern:
    return re.compile(".*".join(re.escape(part) for part in message.split("…")), re.S)


def _error(fn) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fn()
        except Exception as err:
            return str(err)
    raise AssertionError("no error raised")


def _warning(fn) -> str:
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        fn()
    assert rec, "no warning"
    return " ".join(str(r.message) for r in rec)


def _cli_error(main, argv) -> str:
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(argv) == 2
    return err.getvalue()


def _det_fit(n: int):
    from napari_anonavila.detector import Detector
    from napari_anonavila.training import TrainConfig

    d = Detector.create("demo")
    d.fit(torch.nn.functional.normalize(torch.randn(n, d.embed_dim), dim=1), config=TrainConfig(batch_size=2))
    return d


def _det():
    from napari_anonavila.detector import Detector
    from napari_anonavila.training import TrainConfig

    d = Detector.create("demo")
    d.fit(torch.nn.functional.normalize(torch.randn(10, d.embed_dim), dim=1), config=TrainConfig(batch_size=5))
    return d


def _official(tmp, vlm=True, bad_shape=False):
    from napari_anonavila.head import MLP

    state = {f"MLP.{k}": v for k, v in MLP(16).state_dict().items()}
    state.update(normal_text_embs=torch.randn(92, 16), abnormal_text_embs=torch.randn(48, 16),
                 normal_img_normal_text_centroid=torch.randn(1, 4), normal_img_abnormal_text_centroid=torch.randn(1, 4))
    if vlm:
        state["VLM.logit_scale"] = torch.tensor(4.6)
    if bad_shape:
        state["MLP.linear2.weight"] = torch.randn(3, 3)
    p = tmp / "official.pth"
    torch.save({"model_state": state}, p)
    return p


def _cases(tmp: Path) -> dict:
    from napari_anonavila.annotations.geojson import read_geojson
    from napari_anonavila.backends import get_backend
    from napari_anonavila.calibration import Calibration
    from napari_anonavila.detector import Detector
    from napari_anonavila.export.bundle import check_provenance
    from napari_anonavila.export.tables import read_csv, write_csv
    from napari_anonavila.grid import make_grid
    from napari_anonavila.patches import parse_patch_name
    from napari_anonavila.slide import open_slide
    from napari_anonavila.terms import load_pool
    from napari_anonavila.training import TrainConfig

    def slide(name, **kw):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return open_slide(shared_path("slides", name), **kw)

    def write(name, data):
        p = tmp / name
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
        return p

    def bad_pickle():
        p = tmp / "evil.pth"
        p.write_bytes(pickle.dumps({"model_state": print}))
        return Detector.from_official_checkpoint(p)

    def other_backend():
        ck = _det().save(tmp / "demo.safetensors", overwrite=True)
        from napari_anonavila.backends.demo import write_demo_weights

        w = write_demo_weights(tmp / "other.safetensors", seed=3)
        return Detector.load(ck, backend=f"open_clip:anonavila-demo@{w}")

    def conch_missing():
        saved = {k: sys.modules.get(k) for k in ("conch", "conch.open_clip_custom")}
        sys.modules["conch.open_clip_custom"] = None
        try:
            return get_backend(f"conch:{write('w.bin', b'x')}")
        finally:
            for k, v in saved.items():
                if v is None:
                    sys.modules.pop(k, None)
                else:
                    sys.modules[k] = v

    def unreadable_patches():
        d = tmp / "patches"
        d.mkdir(exist_ok=True)
        src = shared_path("patches", "crc_val_he_7k")
        for p in sorted(src.glob("*.png"))[:3]:
            (d / p.name).write_bytes(p.read_bytes())
        (d / "broken.png").write_bytes(b"no")
        return Detector.create("demo").embed(d)

    def nan_embeddings():
        x = np.ones((3, 64), np.float32)
        x[1, 0] = np.nan
        return _det().score_embeddings(x)

    def other_slide():
        gj = write("x.geojson", '{"type": "FeatureCollection", "features": []}')
        write("x.provenance.json", '{"slide": {"path": "/a/other.svs", "fingerprint_sha256": "abc"}}')
        return check_provenance(gj, slide_fingerprint="def")

    def disk_full():
        csvf = write("s.csv", "patch_name,Ascore\n" + "".join(f"s_{i * 256}_0_1.png,0.{i}\n" for i in range(50)))

        def limit():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (20, 20))

        exe = str(Path(sys.executable).parent / "anonavila")
        out = subprocess.run([exe, "slide-scores", "--scores", str(csvf), "--patch-size", "256", "--out",
                              str(tmp / "big.csv")], capture_output=True, text=True, preexec_fn=limit)
        assert out.returncode == 2
        return out.stderr

    def sample_slide(name="s.tif", size=512):
        from napari_anonavila.sample import make_tissue, write_pyramid_tiff

        return write_pyramid_tiff(tmp / name, make_tissue(size, 1)[0], 0.5)

    def implausible_mpp():
        import tifffile

        p = tmp / "mpp.tif"
        tifffile.imwrite(p, np.full((256, 256, 3), 200, np.uint8), tile=(256, 256), photometric="rgb",
                         resolution=(1e-2, 1e-2), resolutionunit="CENTIMETER")
        return _warning(lambda: open_slide(p).close())

    def name_clash():
        from napari_anonavila.slide import unique_stems

        return _error(lambda: unique_stems([tmp / "a" / "case.svs", tmp / "b" / "case.svs"]))

    def export_clash():
        from napari_anonavila.cli import main

        for d in ("ra", "rb"):
            (tmp / d).mkdir(exist_ok=True)
            slide = {"path": f"/{d}/case.svs", "fingerprint_sha256": d * 32}
            (tmp / d / "summary.json").write_text(json.dumps({
                "heatmap": {"shape_rc": [1, 1], "cell_size_l0": 8}, "provenance": {"slide": slide},
                "slide_scores": {"max": 0.2, "top1": 0.2, "max_eroded": 0.2, "top1_eroded": 0.2}}))
            (tmp / d / "patches.csv").write_text("x_l0,y_l0,size_l0,row,col,d_normal,d_abnormal,score,top_normal,"
                                                 "top_abnormal\n0,0,8,0,0,0.1,0.1,0.2,a:1,b:1\n")
        return _cli_error(main, ["export", str(tmp / "ra"), str(tmp / "rb"), "--out", str(tmp / "qa")])

    def claimed():
        from napari_anonavila._atomic import claimed_dir

        from ..helpers import hold_folder

        d = tmp / "claimed"
        holder = hold_folder(d)

        def enter():
            with claimed_dir(d):
                pass

        try:
            return _error(enter)
        finally:
            holder.kill()
            holder.wait()

    def diverged():
        d = Detector.create("demo")
        return _error(lambda: d.fit(torch.nn.functional.normalize(torch.randn(20, d.embed_dim), dim=1),
                                    config=TrainConfig(batch_size=5, lr=1e30, epochs=3, accumulate=1)))

    def tampered(name, fn, meta_fn=None):
        from safetensors import safe_open
        from safetensors.torch import save_file

        ck = _det().save(tmp / "ok.safetensors", overwrite=True)
        with safe_open(str(ck), framework="pt") as fh:
            header, tensors = fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
        if name:
            tensors[name] = fn(tensors[name])
        if meta_fn:
            header = {**header, "meta": meta_fn(header["meta"])}
        out = tmp / "tampered.safetensors"
        save_file(tensors, str(out), metadata=header)
        return _error(lambda: Detector.load(out))

    def nan_at(t):
        t = t.clone()
        t.view(-1)[0] = float("nan")
        return t

    def official_nan():
        p = _official(tmp)
        obj = torch.load(p, weights_only=True)
        obj["model_state"]["VLM.logit_scale"] = torch.tensor(float("nan"))
        torch.save(obj, p)
        return _error(lambda: Detector.from_official_checkpoint(p))

    def nan_scores():
        d = _det()
        d.centroids = (torch.full_like(d.centroids[0], float("nan")), d.centroids[1])
        return _error(lambda: d.score_embeddings(np.ones((2, d.embed_dim), np.float32)))

    def nan_encoder():
        from safetensors.torch import load_file, save_file

        from napari_anonavila.backends.demo import write_demo_weights
        from napari_anonavila.pipeline import score_slide

        w = write_demo_weights(tmp / "nanw.safetensors", seed=5)
        state = load_file(str(w))
        state["visual.proj"] = torch.full_like(state["visual.proj"], float("nan"))
        save_file(state, str(w))
        d = Detector.create(get_backend(f"open_clip:anonavila-demo@{w}", "cpu"))
        return _error(lambda: score_slide(d, sample_slide(), patch_px=128, min_tissue=0))

    def cache_unverified():
        from napari_anonavila.pipeline import score_slide

        d, out, slide_path = _det(), tmp / "res", sample_slide("c.tif")
        score_slide(d, slide_path, out_dir=out, patch_px=128, overwrite=True)
        [chunk] = out.glob("embeddings/*/chunk-00000.npy")
        chunk.write_bytes(chunk.read_bytes()[:-64])
        return _warning(lambda: score_slide(d, slide_path, out_dir=out, patch_px=128, overwrite=True))

    def calibration_dropped():
        from dataclasses import replace

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its unnamed terms
            det = Detector.from_official_checkpoint(_official(tmp), attach_backend=False)
        det.calibrate(np.random.default_rng(0).random((30, 4)), "test")
        return _warning(lambda: det.set_pools(replace(det.pools, normal=det.pools.normal[1:])))

    def text_cache_unverified():
        import os as _os

        from napari_anonavila.backends.demo import write_demo_weights

        old = _os.environ.get("ANONAVILA_CACHE")
        _os.environ["ANONAVILA_CACHE"] = str(tmp / "tc")
        try:
            w = write_demo_weights(tmp / "tw.safetensors", seed=9)
            get_backend(f"open_clip:anonavila-demo@{w}", "cpu").encode_texts(["a b"])
            [f] = (tmp / "tc" / "text-embeddings").iterdir()
            f.write_bytes(b"damaged")
            return _warning(lambda: get_backend(f"open_clip:anonavila-demo@{w}", "cpu").encode_texts(["a b"]))
        finally:
            _os.environ["ANONAVILA_CACHE"] = old

    def low_coverage():
        from napari_anonavila.grid import tissue_mask
        from napari_anonavila.sample import write_pyramid_tiff

        smear = np.full((4096, 4096, 3), 245, np.uint8)
        for y in range(60, 4096, 280):
            for x in range(60, 4096, 280):
                smear[y : y + 96, x : x + 96] = (150, 60, 140)
        p = write_pyramid_tiff(tmp / "smear.tif", smear, 0.5)
        return _warning(lambda: tissue_mask(open_slide(p)))

    def too_few():
        from napari_anonavila.grid import too_few_patches_message

        s = open_slide(sample_slide("f.tif", 1024))
        box = np.array([[300, 300], [560, 300], [560, 560], [300, 560]], float)
        return too_few_patches_message(s, make_grid(s, patch_px=256, roi_polygons_xy_l0=[box]), 8,
                                       what="the normal regions", roi_polygons_xy_l0=[box])

    def export_no_overlay():
        from napari_anonavila.export.bundle import export_all
        from napari_anonavila.export.result_folder import open_result

        export_clash()
        return _error(lambda: export_all(tmp / "qa3", open_result(tmp / "ra"), formats=["html"]))

    def result_folder(name: str, **slide) -> Path:
        export_clash()
        folder = tmp / name
        shutil.copytree(tmp / "ra", folder, dirs_exist_ok=True)
        summary = json.loads((folder / "summary.json").read_text())
        summary["provenance"]["slide"].update(slide)
        (folder / "summary.json").write_text(json.dumps(summary))
        return folder

    def result_changed():
        from napari_anonavila.export.result_folder import open_result

        folder = result_folder("changed")
        summary = json.loads((folder / "summary.json").read_text())
        summary["outputs"] = {"patches.csv": {"bytes": 1, "sha256": "0" * 64}}
        (folder / "summary.json").write_text(json.dumps(summary))
        return _error(lambda: open_result(folder))

    def result_slide(content: bool):
        from napari_anonavila.export.result_folder import open_result
        from napari_anonavila.slide.locate import find_slide, result_neighbourhood

        path = sample_slide("scored.tif") if content else tmp / "gone" / "scored.tif"
        folder = result_folder("moved", path=str(path))
        res = open_result(folder)
        return _error(lambda: find_slide(res.slide, where=str(folder), near=result_neighbourhood(folder)))

    def export_damaged():
        from napari_anonavila.export.result_folder import open_result

        (tmp / "dmg").mkdir(exist_ok=True)
        (tmp / "dmg" / "summary.json").write_text('{"heatmap": {"shape_rc": "x"}}')
        (tmp / "dmg" / "patches.csv").write_text("x_l0,y_l0,size_l0,row,col,d_normal,d_abnormal,score,top_normal,"
                                                 "top_abnormal\n0,0,8,0,0,0.1,0.1,0.2,a,b\n")
        return _error(lambda: open_result(tmp / "dmg"))

    def device_unavailable():
        from napari_anonavila.backends import resolve_device

        return _error(lambda: resolve_device("cuda:7"))

    def hub_missing():
        old = os.environ.get("HF_HUB_CACHE")
        os.environ["HF_HUB_CACHE"] = str(tmp / "empty-hub")
        try:
            NETWORK_ATTEMPTS.clear()
            message = _error(lambda: get_backend("open_clip:hf-hub:org/none"))
            assert not NETWORK_ATTEMPTS, "a missing hub model must fail from the cache, not reach the network"
            return message
        finally:
            if old is None:
                os.environ.pop("HF_HUB_CACHE")
            else:
                os.environ["HF_HUB_CACHE"] = old

    def far_patches():
        from napari_anonavila.maps import heatmaps_from_patch_names

        return _error(lambda: heatmaps_from_patch_names([("s_100000000_100000000_1.png", 0.1)], 256))

    return {
        "mpp-implausible": implausible_mpp,
        "mpp-given-implausible": lambda: _error(lambda: open_slide(sample_slide(), mpp=1e300)),
        "name-clash": name_clash,
        "export-name-clash": export_clash,
        "out-claimed": claimed,
        "training-diverged": diverged,
        "checkpoint-nonfinite": lambda: tampered("mlp.linear1.bias", nan_at),
        "checkpoint-shapes": lambda: tampered("centroid.normal", lambda t: t[:3].clone()),
        "checkpoint-dim": lambda: tampered(None, None, lambda m: m.replace('"embed_dim": 64', '"embed_dim": 16000')),
        "checkpoint-metadata": lambda: tampered(None, None, lambda m: "[" * 100_000 + "]" * 100_000),
        "official-nonfinite": official_nan,
        "scores-nonfinite": nan_scores,
        "encoder-nonfinite": nan_encoder,
        "cache-unverified": cache_unverified,
        "text-cache-unverified": text_cache_unverified,
        "tissue-low-coverage": low_coverage,
        "too-few-reference": too_few,
        "export-no-overlay": export_no_overlay,
        "export-damaged": export_damaged,
        "result-no-fingerprint": lambda: _error(lambda: __import__("napari_anonavila").open_result(
            result_folder("nofp", fingerprint_sha256=""))),
        "result-changed": result_changed,
        "result-slide-moved": lambda: result_slide(False),
        "result-other-slide": lambda: result_slide(True),
        "reference-degenerate": lambda: _error(lambda: Calibration(np.r_[np.zeros((19, 4)), np.ones((1, 4))], "x")),
        "device-unknown": lambda: _error(lambda: get_backend("demo", "banana")),
        "device-unavailable": device_unavailable,
        "template": lambda: _error(lambda: load_pool(write("tt.txt", "a\n"), template="{organ} {}")),
        "slide-scores-far": far_patches,
        "hub-missing": hub_missing,
        "authors-unnamed": lambda: _warning(lambda: Detector.from_official_checkpoint(_official(tmp),
                                                                                    attach_backend=False)),
        "too-few-to-hold-out": lambda: _warning(lambda: _det_fit(3)),
        "geojson-unusable": lambda: _error(lambda: read_geojson(write("deep.geojson", "[" * 100_000 + "]" * 100_000))),
        "slide-corrupt": lambda: _error(lambda: open_slide(shared_path("slides", "broken.svs"))),
        "slide-missing": lambda: _error(lambda: open_slide(tmp / "none.svs")),
        "slide-no-mpp": lambda: _warning(lambda: open_slide(shared_path("slides", "kidney-48-5.tif")).close()),
        "patch-um-no-mpp": lambda: _error(lambda: make_grid(slide("kidney-48-5.tif"), patch_um=128)),
        "patch-too-large": lambda: _error(lambda: make_grid(slide("kidney-48-5.tif"), patch_px=4000)),
        "no-tissue": lambda: _warning(lambda: make_grid(slide("kidney-48-5.tif"))),
        "terms-no-header": lambda: _error(lambda: load_pool(write("t.csv", "Terms\na\n"))),
        "terms-empty": lambda: _error(lambda: load_pool(write("t.txt", "\n"))),
        "terms-duplicates": lambda: _warning(lambda: load_pool(write("d.txt", "a\nA\n"))),
        "terms-encoding": lambda: _error(lambda: load_pool(write("l.txt", b"caf\xe9"))),
        "checkpoint-not-ours": lambda: _error(lambda: Detector.load(write("n.safetensors", b"garbage"))),
        "checkpoint-other-backend": lambda: _error(other_backend),
        "official-code": lambda: _error(bad_pickle),
        "official-no-scale": lambda: _error(lambda: Detector.from_official_checkpoint(_official(tmp, vlm=False))),
        "head-only": lambda: _error(lambda: Detector.from_official_checkpoint(_official(tmp)).score_images(
            [np.zeros((32, 32, 3), np.uint8)])),
        "calibration-small": lambda: _error(lambda: Calibration(np.ones((5, 4)), "x")),
        "calibration-dropped": calibration_dropped,
        "official-shapes": lambda: _error(lambda: Detector.from_official_checkpoint(_official(tmp, bad_shape=True))),
        "weights-missing": lambda: _error(lambda: get_backend(f"open_clip:ViT-B-16@{tmp / 'none.safetensors'}")),
        "conch-missing": lambda: _error(conch_missing),
        "patch-name": lambda: _error(lambda: parse_patch_name("scan.png")),
        "patch-unreadable": lambda: _warning(unreadable_patches),
        "batch-size": lambda: _error(lambda: TrainConfig(batch_size=1)),
        "embeddings-nan": lambda: _error(nan_embeddings),
        "output-exists": lambda: _error(lambda: write_csv(write("e.csv", "x"), ["a"], [])),
        "geojson-not-json": lambda: _error(lambda: read_geojson(write("g.geojson", "{"))),
        "geojson-other-slide": lambda: _warning(other_slide),
        "csv-column": lambda: _error(lambda: read_csv(write("c.csv", "a,b\n1,2\n"), ["score"])),
        "disk-full": disk_full,
    }


def test_every_row_is_covered_and_true(tmp_path):
    rows = _rows()
    cases = _cases(tmp_path)
    assert set(rows) - {"killed", "worker-died", "export-interrupted"} == set(cases), \
        "rows without a check, or checks without a row"
    for key, make in cases.items():
        message = make()
        assert _pattern(rows[key]).search(message), f"{key}: the docs say {rows[key]!r}, the tool says {message!r}"


@pytest.mark.parametrize("key", ["killed", "worker-died", "export-interrupted"])
def test_fault_rows_name_their_tests(key):
    assert key in _rows() or key in DOC.read_text()
