"""Integrity under unlucky and hostile input: results are never stale, never silently replaced, never NaN.

Each test reproduces one failure class of issue 12 through the door a user uses (the installed ``anonavila``
command where there is one) and checks the outcome that is right now: a fresh result, a refusal naming the
problem, or a one-line error with exit code 2.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

EXE = str(Path(sys.executable).with_name("anonavila"))


def anonavila(*args, env=None, preexec_fn=None) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, "-q", *map(str, args)], capture_output=True, text=True, timeout=600, env=env,
                          preexec_fn=preexec_fn)


def one_line_error(out: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit code 2, one 'error:' line on stderr naming the problem, no traceback."""
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr and "Traceback" not in out.stdout, out.stderr
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, out.stderr
    for n in needles:
        assert n in errors[0], (n, errors[0])
    return errors[0]


@pytest.fixture(scope="module")
def model(tmp_path_factory, fitted_on_sample):
    return fitted_on_sample.save(tmp_path_factory.mktemp("integrity-model") / "model.safetensors")


def _plain_tiff(path: Path, rgb: np.ndarray, mpp: float = 0.5) -> Path:
    """An uncompressed tiled TIFF: every tile's bytes sit at a fixed place, so a tile can be rewritten in place."""
    import tifffile

    tifffile.imwrite(path, rgb, tile=(256, 256), photometric="rgb", resolution=(1e4 / mpp, 1e4 / mpp),
                     resolutionunit="CENTIMETER")
    return path


# -- stale results ----------------------------------------------------------------------------------------------
def test_a_slide_changed_in_place_at_the_same_size_is_scored_afresh(tmp_path, model, sample_slides):
    """100 of 144 tiles re-encoded at the same size: the old fingerprint (size + first/last 4 MiB) missed it."""
    import tifffile

    from napari_anonavila.sample import make_tissue

    rgb, _ = make_tissue(3072, seed=11)  # 27 MiB uncompressed: more than the 8 MiB the old fingerprint read
    slide = _plain_tiff(tmp_path / "case.tif", rgb)
    out = tmp_path / "out"
    assert anonavila("score-slide", slide, "--model", model, "--out", out, "--patch-px", "256").returncode == 0
    first = json.loads((out / "case" / "summary.json").read_text())
    with tifffile.TiffFile(slide) as tif:
        page = tif.pages[0]
        offsets, counts = page.dataoffsets, page.databytecounts
    size = slide.stat().st_size
    inside = [i for i, o in enumerate(offsets) if 5 << 20 < o < size - (5 << 20)]
    assert len(inside) >= 60
    other, _ = make_tissue(3072, seed=12, n_anomalies=8)  # other tissue, tumour-like in places
    with open(slide, "r+b") as fh:  # rewrite those tiles in place, each at its own size (uncompressed)
        for i in inside:
            r, c = divmod(i, 3072 // 256)
            fh.seek(offsets[i])
            fh.write(np.ascontiguousarray(other[r * 256 : (r + 1) * 256, c * 256 : (c + 1) * 256]).tobytes())
            assert counts[i] == 256 * 256 * 3
    assert slide.stat().st_size == size
    again = anonavila("score-slide", slide, "--model", model, "--out", out, "--patch-px", "256", "--overwrite")
    assert again.returncode == 0, again.stderr
    assert "from pixels" in again.stdout  # not from the embedding cache
    second = json.loads((out / "case" / "summary.json").read_text())
    assert second["provenance"]["slide"]["fingerprint_sha256"] != first["provenance"]["slide"]["fingerprint_sha256"]
    assert second["top_k"] != first["top_k"]
    # batch does not skip it as finished either
    from napari_anonavila.batch import BatchSettings, run_batch

    report = run_batch([slide], model, tmp_path / "cohort", settings=BatchSettings(patch_px=256), n_workers=1)
    assert report["ok"] == 1
    with open(slide, "r+b") as fh:
        fh.seek(offsets[inside[0]])
        fh.write(b"\x00" * 1024)
    report = run_batch([slide], model, tmp_path / "cohort", settings=BatchSettings(patch_px=256), n_workers=1)
    assert report["ok"] == 1 and report["skipped"] == 0  # changed content: scored again, not skipped


# -- silent replacement -----------------------------------------------------------------------------------------
def test_output_names_come_from_the_whole_file_name(tmp_path, model, sample_slides):
    a, b, hidden = tmp_path / "case.v1.tif", tmp_path / "case.v2.ome.tif", tmp_path / ".hidden.tif"
    for p in (a, b, hidden):
        p.write_bytes(sample_slides.anomalous.read_bytes())
    out = tmp_path / "out"
    res = anonavila("score-slide", a, b, hidden, "--model", model, "--out", out, "--patch-px", "256")
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["_hidden", "case.v1", "case.v2"]
    assert not (out / "summary.json").exists()  # nothing written into --out itself


def test_two_slides_with_one_name_are_refused_naming_both(tmp_path, model, sample_slides):
    (tmp_path / "site-a").mkdir()
    (tmp_path / "site-b").mkdir()
    a, b = tmp_path / "site-a" / "case.tif", tmp_path / "site-b" / "case.tif"
    for p in (a, b):
        p.write_bytes(sample_slides.anomalous.read_bytes())
    res = anonavila("score-slide", a, b, "--model", model, "--out", tmp_path / "out", "--patch-px", "256")
    one_line_error(res, str(a), str(b), "'case'")
    assert not (tmp_path / "out").exists()  # refused before any work
    res = anonavila("batch", a, b, "--model", model, "--out", tmp_path / "cohort", "--patch-px", "256")
    one_line_error(res, str(a), str(b))


def test_exports_of_results_with_one_name_are_refused(tmp_path, model, sample_slides):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in ("a", "b"):
        s = tmp_path / d / "case.tif"
        s.write_bytes(sample_slides.anomalous.read_bytes())
        assert anonavila("score-slide", s, "--model", model, "--out", tmp_path / f"res-{d}", "--patch-px",
                         "256").returncode == 0
    res = anonavila("export", tmp_path / "res-a" / "case", tmp_path / "res-b" / "case", "--out", tmp_path / "qa")
    one_line_error(res, "res-a", "res-b", "'case'")
    assert not (tmp_path / "qa").exists()


def test_a_second_run_into_a_claimed_folder_fails_at_once(tmp_path, model, sample_slides):
    """Two runs on one --out: the second is refused while the first holds the folder, never both 'succeed'; a
    holder killed and not yet reaped (a zombie, like a dask worker just after SIGKILL) holds nothing."""
    from napari_anonavila._atomic import lock_path

    from ..helpers import hold_folder

    out = tmp_path / "out" / "anomalous"
    holder = hold_folder(out)
    try:
        res = anonavila("score-slide", sample_slides.anomalous, "--model", model, "--out", tmp_path / "out",
                        "--patch-px", "256")
        assert res.returncode == 2 and f"pid {holder.pid}" in res.stderr and "is writing here" in res.stderr
        assert not (out / "summary.json").exists()
        holder.kill()
        os.waitid(os.P_PID, holder.pid, os.WEXITED | os.WNOWAIT)  # until it has exited, leaving it unreaped
        res = anonavila("score-slide", sample_slides.anomalous, "--model", model, "--out", tmp_path / "out",
                        "--patch-px", "256")
        assert res.returncode == 0, res.stderr
        assert not lock_path(out).exists()
    finally:
        holder.kill()
        holder.wait()


def _race(folder: str, barrier, log: str) -> None:
    """One starter of the lock race: claim, record the holding interval, release."""
    import time

    from napari_anonavila._atomic import claimed_dir
    from napari_anonavila.errors import OutputExistsError

    barrier.wait()
    try:
        with claimed_dir(folder):
            t0 = time.monotonic()
            time.sleep(0.02)
            with open(log, "a") as fh:
                fh.write(f"{t0} {time.monotonic()}\n")
    except OutputExistsError:
        pass


def test_a_hundred_lock_races_have_one_holder_at_a_time(tmp_path):
    """Eight processes start at once on a folder with a leftover lock file (a dead run's, an empty or a damaged one);
    in 100 races no two ever hold it together, and every race has a holder."""
    import itertools
    import multiprocessing as mp

    from napari_anonavila._atomic import _HOST, lock_path

    ctx = mp.get_context("fork")
    gone = ctx.Process(target=int)
    gone.start()
    gone.join()
    dead = gone.pid  # a pid of this host whose process has ended
    for race in range(100):
        folder, log = tmp_path / f"r{race}", tmp_path / f"r{race}.log"
        folder.mkdir()
        leftover = ["", json.dumps({"host": _HOST, "pid": dead, "since": "?"}), "{damaged"][race % 3]
        lock_path(folder).write_text(leftover)
        barrier = ctx.Barrier(8)
        procs = [ctx.Process(target=_race, args=(str(folder), barrier, str(log))) for _ in range(8)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        spans = sorted(tuple(map(float, ln.split())) for ln in log.read_text().splitlines())
        assert spans, f"race {race}: nobody held the folder"
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), f"race {race}: overlap {spans}"


def test_concurrent_runs_on_one_out_never_both_succeed(tmp_path, model, sample_slides):
    args = [EXE, "-q", "score-slide", str(sample_slides.anomalous), "--model", str(model), "--out",
            str(tmp_path / "out"), "--patch-px", "64"]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.returncode, err) for p in procs for _out, err in [p.communicate(timeout=600)]]
    codes = sorted(c for c, _ in results)
    assert codes == [0, 2], results
    loser = next(err for c, err in results if c == 2)
    assert "is writing here" in loser or "output exists" in loser


# -- NaN with exit 0 --------------------------------------------------------------------------------------------
def test_diverging_training_fails_and_writes_nothing(tmp_path, sample_slides, tiny_weights):
    ck = tmp_path / "m.safetensors"
    res = anonavila("train", "--normal", sample_slides.normal, "--patch-px", "256", "--batch-size", "8",
                    "--accumulate", "1", "--lr", "1e30", "--epochs", "3", "--out", ck, "--backend",
                    f"open_clip:anonavila-demo@{tiny_weights}")
    one_line_error(res, "training diverged", "learning rate")
    assert not ck.exists()


def _tamper(src: Path, dst: Path, name: str, fn) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as fh:
        meta, tensors = fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    tensors[name] = fn(tensors[name])
    save_file(tensors, str(dst), metadata=meta)
    return dst


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_checkpoint_tensors_are_refused(tmp_path, model, sample_slides, value):
    def poison(t):
        t = t.clone()
        t.view(-1)[3] = value
        return t

    bad = _tamper(model, tmp_path / "bad.safetensors", "mlp.linear2.weight", poison)
    res = anonavila("score-slide", sample_slides.anomalous, "--model", bad, "--out", tmp_path / "o")
    one_line_error(res, "bad.safetensors", "mlp.linear2.weight", "NaN or infinite")


def test_a_checkpoint_with_a_3_value_centroid_or_a_huge_embed_dim_is_refused_before_allocating(tmp_path, model):
    from napari_anonavila.detector import Detector
    from napari_anonavila.errors import CheckpointError

    three = _tamper(model, tmp_path / "c3.safetensors", "centroid.normal", lambda t: t[:3].clone())
    with pytest.raises(CheckpointError, match=r"centroid\.normal has shape \(3,\)"):
        Detector.load(three)
    # a small file whose metadata declares a 16000-d model: refused from the header, without a big allocation
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(model), framework="pt") as fh:
        header, tensors = fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    meta = json.loads(header["meta"])
    meta["embed_dim"] = 16000
    save_file(tensors, str(tmp_path / "big.safetensors"), metadata={**header, "meta": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="embed_dim 16000"):
        Detector.load(tmp_path / "big.safetensors")
    peak = _peak_rss_mib("from napari_anonavila.checkpoint import read_checkpoint\ntry:\n    read_checkpoint("
                         f"{str(tmp_path / 'big.safetensors')!r})\nexcept ValueError:\n    pass")
    assert peak < 1000, f"peak RSS {peak:.0f} MiB: something sized by the metadata was allocated"
    deep = json.dumps({"a": None})
    for _ in range(100_000):
        deep = '{"a": ' + deep + "}"
    save_file(tensors, str(tmp_path / "deep.safetensors"), metadata={**header, "meta": deep})
    with pytest.raises(CheckpointError, match="metadata is damaged"):
        Detector.load(tmp_path / "deep.safetensors")


def test_nan_logit_scale_in_an_authors_checkpoint_is_refused(tmp_path):
    from napari_anonavila.detector import Detector
    from napari_anonavila.errors import CheckpointError
    from napari_anonavila.head import MLP

    state = {f"MLP.{k}": v for k, v in MLP(16).state_dict().items()}
    state.update(normal_text_embs=torch.randn(92, 16), abnormal_text_embs=torch.randn(48, 16),
                 normal_img_normal_text_centroid=torch.randn(1, 4), normal_img_abnormal_text_centroid=torch.randn(1, 4),
                 **{"VLM.logit_scale": torch.tensor(float("nan"))})
    torch.save({"model_state": state}, tmp_path / "a.pth")
    with pytest.raises(CheckpointError, match=r"VLM\.logit_scale is not finite"):
        Detector.from_official_checkpoint(tmp_path / "a.pth")


def test_a_damaged_text_embedding_cache_is_rebuilt_with_a_warning(tmp_path, tiny_weights, monkeypatch):
    from safetensors.torch import save_file

    from napari_anonavila.backends import get_backend

    monkeypatch.setenv("ANONAVILA_CACHE", str(tmp_path))
    spec = f"open_clip:anonavila-demo@{tiny_weights}"
    prompts = ["an image showing a", "an image showing b"]
    fresh = get_backend(spec, "cpu").encode_texts(prompts)
    [cache] = (tmp_path / "text-embeddings").iterdir()
    bad = fresh.clone()
    bad[1, 0] = float("nan")
    save_file({"embeddings": bad.contiguous()}, str(cache), metadata={"prompts": json.dumps(prompts)})
    with pytest.warns(UserWarning, match="text-embedding cache does not verify"):
        again = get_backend(spec, "cpu").encode_texts(prompts)
    torch.testing.assert_close(again, fresh)


# -- the embedding cache verifies itself --------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["same-shape random", "one NaN", "broken npy header", "truncated"])
def test_a_damaged_embedding_cache_is_rebuilt_with_one_warning(tmp_path, sample_slides, fitted_on_sample, damage):
    from napari_anonavila.embcache import CacheWarning
    from napari_anonavila.pipeline import score_slide

    out = tmp_path / "r"
    fresh = score_slide(fitted_on_sample, sample_slides.anomalous, out_dir=out, patch_px=256)
    [chunk] = (out / "embeddings").glob("*/chunk-00000.npy")
    arr = np.load(chunk)
    if damage == "same-shape random":
        np.save(chunk, np.random.default_rng(0).standard_normal(arr.shape).astype(np.float32))
    elif damage == "one NaN":
        arr[3, 5] = np.nan
        np.save(chunk, arr)
    elif damage == "broken npy header":
        raw = bytearray(chunk.read_bytes())
        raw[10:40] = b"{'descr': <<garbage>>, (((((("
        chunk.write_bytes(bytes(raw))
    else:
        chunk.write_bytes(chunk.read_bytes()[:-100])
    with pytest.warns(CacheWarning, match=r"do not verify") as rec:
        again = score_slide(fitted_on_sample, sample_slides.anomalous, out_dir=out, patch_px=256, overwrite=True)
    assert len([r for r in rec if issubclass(r.category, CacheWarning)]) == 1
    assert str(out) in str(rec[0].message)
    assert not again.from_cache
    np.testing.assert_allclose(again.score, fresh.score, rtol=0, atol=1e-6)
    third = score_slide(fitted_on_sample, sample_slides.anomalous, out_dir=out, patch_px=256, overwrite=True)
    assert third.from_cache  # rebuilt and verified


# -- memory that grows with the input -----------------------------------------------------------------------------
def _peak_rss_mib(code: str) -> float:
    """Peak resident memory of ``code`` run in a fresh interpreter (VmHWM: ru_maxrss would inherit the parent's)."""
    out = subprocess.run([sys.executable, "-c", code + "\nimport re\nprint(re.search(r'VmHWM:\\s+(\\d+)', "
                          "open('/proc/self/status').read()).group(1))"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[-1]) / 1024


@pytest.mark.slow
def test_a_huge_single_level_tiff_is_read_in_bands(tmp_path):
    """20,000^2 px in one level (2 MB compressed): thumbnail and tissue mask in bounded memory."""
    import tifffile

    path = tmp_path / "huge.tif"
    tile = np.full((1024, 1024, 3), 240, np.uint8)
    tile[200:800, 200:800] = (180, 90, 160)
    n = 20
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write((tile for _ in range(n * n)), shape=(n * 1024, n * 1024, 3), dtype=np.uint8, tile=(1024, 1024),
                  photometric="rgb", compression="zlib", resolution=(1e4 / 0.5, 1e4 / 0.5),
                  resolutionunit="CENTIMETER")
    assert path.stat().st_size < 20 << 20
    peak = _peak_rss_mib(f"from napari_anonavila.slide import open_slide\nfrom napari_anonavila.grid import "
                         f"tissue_mask\ns = open_slide({str(path)!r})\nassert len(s.levels) == 1\n"
                         f"m = tissue_mask(s)\nassert 0.2 < m.fraction < 0.6, m.fraction")
    assert peak < 1500, f"peak RSS {peak:.0f} MiB (the whole level is {n * n * 3} MiB)"


def test_text_encoding_is_batched(tiny_backend, monkeypatch):
    sizes = []
    raw = tiny_backend._encode_text_raw
    monkeypatch.setattr(tiny_backend, "_encode_text_raw", lambda prompts: (sizes.append(len(prompts)), raw(prompts))[1])
    monkeypatch.setattr(tiny_backend, "weights_sha256", None)  # no disk cache: every prompt is encoded here
    embs = tiny_backend.encode_texts([f"an image showing term {i}" for i in range(1000)])
    assert embs.shape[0] == 1000 and max(sizes) <= 256 and sum(sizes) == 1000


def test_a_huge_patch_image_is_skipped_before_decoding(tmp_path, demo_backend):
    from PIL import Image

    from napari_anonavila.detector import Detector

    d = tmp_path / "patches"
    d.mkdir()
    Image.new("RGB", (12000, 12000), (200, 120, 180)).save(d / "huge.png")  # 144 Mpx, a few hundred KB
    Image.new("RGB", (224, 224), (200, 120, 180)).save(d / "ok.png")
    det = Detector.create(demo_backend)
    from napari_anonavila.progress import drain

    with pytest.warns(UserWarning, match=r"skipped 1 of 2 unreadable \(or too large\)"):
        read, _embs = drain(det.iter_embed_files(sorted(d.iterdir())))
    assert [p.name for p in read] == ["ok.png"]
    peak = _peak_rss_mib(f"from napari_anonavila.patches import read_image\nfrom pathlib import Path\n"
                         f"assert read_image(Path({str(d / 'huge.png')!r})) is None")
    assert peak < 300, f"peak RSS {peak:.0f} MiB: the 144 Mpx image (432 MiB decoded) was decoded"


# -- implausible metadata, dark-field slides ----------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "reader"), [("svs", "openslide"), ("svs", "tifffile"), ("tiff", "tifffile")])
def test_implausible_mpp_is_not_believed_from_any_reader(tmp_path, kind, reader):
    """An Aperio SVS (read by either reader) and a plain TIFF that both claim 10^6 um per pixel."""
    import tifffile

    from napari_anonavila.errors import MissingMppWarning
    from napari_anonavila.grid import make_grid
    from napari_anonavila.sample import make_tissue
    from napari_anonavila.slide import open_slide

    rgb, _ = make_tissue(1024, seed=2)
    path = tmp_path / f"mpp.{kind}"
    if kind == "svs":
        desc = ("Aperio Image Library v12.0.0\r\n1024x1024 [0,0 1024x1024] (256x256) JPEG/RGB Q=70|AppMag = 20|"
                "MPP = 1000000")
        tifffile.imwrite(path, rgb, tile=(256, 256), photometric="rgb", compression="jpeg", description=desc,
                         metadata=None)
    else:
        tifffile.imwrite(path, rgb, tile=(256, 256), photometric="rgb", compression="jpeg",
                         resolution=(1e-2, 1e-2), resolutionunit="CENTIMETER")  # 10^6 um per pixel
    with pytest.warns(MissingMppWarning, match=r"outside the plausible 0\.01\.\.100"):
        s = open_slide(path, reader=reader)
    with s:
        assert s.reader == reader and s.mpp is None
        assert len(make_grid(s)) < 30  # 256-px patches, not 8-px ones
    with open_slide(path, mpp=0.5) as s:  # the way out the message names
        assert s.mpp == 0.5


def test_dark_field_tissue_is_found_and_low_coverage_is_warned(tmp_path):
    from napari_anonavila.grid import TissueMaskWarning, make_grid, tissue_mask
    from napari_anonavila.sample import write_pyramid_tiff
    from napari_anonavila.slide import open_slide

    rng = np.random.default_rng(0)
    img = np.zeros((2048, 2048, 3), np.uint8)  # fluorescence-like: sparse bright nuclei on black, in a section
    yy, xx = np.mgrid[0:2048, 0:2048]
    section = ((yy - 1024) / 900) ** 2 + ((xx - 1024) / 700) ** 2 < 1
    nuclei = (rng.random((2048, 2048)) < 0.004) & section
    from scipy import ndimage

    img[..., 2] = np.clip(ndimage.gaussian_filter(nuclei.astype(np.float32), 3) * 3000, 0, 255).astype(np.uint8)
    img[..., 2] = np.maximum(img[..., 2], np.where(section, 6, 1)).astype(np.uint8)
    write_pyramid_tiff(tmp_path / "dapi.tif", img, 0.5)
    with open_slide(tmp_path / "dapi.tif") as s:
        m = tissue_mask(s)
        assert m.kind == "dark-field"
        assert m.fraction > 0.8 * section.mean()  # the section, not just its nuclei
        assert len(make_grid(s, patch_px=256)) >= 0.7 * 64 * section.mean()
    # a smear of scattered cell clusters (48 um, 140 um apart; closer, the mask's closing joins them): signal
    # everywhere, but each cluster is smaller than a tissue fragment and is dropped as a speck; the user is told,
    # instead of getting an empty heatmap
    smear = np.full((4096, 4096, 3), 245, np.uint8)
    for y in range(60, 4096, 280):
        for x in range(60, 4096, 280):
            smear[y : y + 96, x : x + 96] = (150, 60, 140)
    write_pyramid_tiff(tmp_path / "smear.tif", smear, 0.5)
    with open_slide(tmp_path / "smear.tif") as s, pytest.warns(TissueMaskWarning, match="has signal"):
        tissue_mask(s)


# -- export is all or nothing -------------------------------------------------------------------------------------
def test_a_failed_export_leaves_nothing_and_a_rerun_works(tmp_path, model, sample_slides):
    out = tmp_path / "res"
    assert anonavila("score-slide", sample_slides.anomalous, "--model", model, "--out", out,
                     "--patch-px", "256").returncode == 0
    (out / "anomalous" / "overlay.png").unlink()  # an output is missing: the result is incomplete
    res = anonavila("export", out / "anomalous", "--out", tmp_path / "qa")
    one_line_error(res, "overlay.png: missing")
    assert not (tmp_path / "qa").exists() or not list((tmp_path / "qa").iterdir())
    assert anonavila("score-slide", sample_slides.anomalous, "--model", model, "--out", out, "--patch-px", "256",
                     "--overwrite").returncode == 0  # scored again (from the embedding cache): whole again
    res = anonavila("export", out / "anomalous", "--out", tmp_path / "qa", "--formats", "geojson,csv,ome-tiff")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "qa" / "anomalous" / "anomalous.provenance.json").is_file()

    def limit():  # a full disk halfway through the OME-TIFF
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    res = anonavila("export", out / "anomalous", "--out", tmp_path / "qa2", "--formats", "geojson,csv,ome-tiff",
                    preexec_fn=limit)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert not list((tmp_path / "qa2").rglob("*.geojson"))  # no partial set
    assert anonavila("export", out / "anomalous", "--out", tmp_path / "qa2", "--formats",
                     "geojson,csv,ome-tiff").returncode == 0


# -- tracebacks instead of one line -------------------------------------------------------------------------------
def test_bad_arguments_give_one_line_errors(tmp_path, model, sample_slides):
    s = sample_slides.anomalous
    one_line_error(anonavila("score-slide", s, "--model", model, "--out", tmp_path / "a", "--device", "banana"),
                   "banana")
    if not torch.cuda.is_available():
        one_line_error(anonavila("score-slide", s, "--model", model, "--out", tmp_path / "b", "--device", "cuda"),
                       "not available")
    one_line_error(anonavila("score-slide", s, "--model", model, "--out", tmp_path / "c", "--mpp", "1e300"),
                   "plausible")
    terms = tmp_path / "t.txt"
    terms.write_text("a\nb\n")
    one_line_error(anonavila("train", "--normal", s, "--out", tmp_path / "m.safetensors", "--normal-terms", terms,
                             "--abnormal-terms", terms, "--template", "{organ} {}"), "template")
    scores = tmp_path / "far.csv"
    scores.write_text("patch_name,Ascore\ns_100000000_100000000_100.png,0.1\ns_0_0_100.png,0.2\n")
    one_line_error(anonavila("slide-scores", "--scores", scores, "--patch-size", "256"), "check the patch names")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "summary.json").write_text('{"heatmap": {"shape_rc": "x"}}')
    (damaged / "patches.csv").write_text("x_l0,y_l0,size_l0,row,col,d_normal,d_abnormal,score,top_normal,"
                                         "top_abnormal\n0,0,256,0,0,1,1,nan,a,b\n")
    one_line_error(anonavila("export", damaged, "--out", tmp_path / "qa"), "damaged")


@pytest.mark.parametrize("doc", ["[" * 100_000 + "]" * 100_000,
                                 '{"type": "Feature", "geometry": {"type": "Point", "coordinates": [1' + "0" * 400
                                 + ', 5]}, "properties": {}}'])
def test_hostile_geojson_is_one_error(tmp_path, doc):
    from napari_anonavila.annotations.geojson import read_geojson
    from napari_anonavila.errors import InputFileError

    p = tmp_path / "x.geojson"
    p.write_text(doc)
    with pytest.raises(InputFileError, match=r"x\.geojson"):
        read_geojson(p)


def test_per_slide_errors_go_to_stderr(tmp_path, model):
    bad = tmp_path / "broken.svs"
    bad.write_bytes(b"not a slide")
    res = anonavila("score-slide", bad, "--model", model, "--out", tmp_path / "o")
    assert res.returncode == 2 and "broken.svs" in res.stderr and "broken.svs" not in res.stdout


def test_kill_during_export_leaves_no_partial_set(tmp_path, model, sample_slides):
    out = tmp_path / "res"
    assert anonavila("score-slide", sample_slides.anomalous, "--model", model, "--out", out,
                     "--patch-px", "32").returncode == 0
    qa = tmp_path / "qa"
    for delay in (2.0, 2.5, 3.0, 3.5, 4.0, 4.5):
        proc = subprocess.Popen([EXE, "-q", "export", str(out / "anomalous"), "--out", str(qa), "--overwrite"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        visible = [p for p in qa.rglob("*") if p.is_file() and not any(
            part.startswith(".") for part in p.relative_to(qa).parts)] if qa.exists() else []
        if visible:  # complete or absent, never a partial set
            assert any(p.name.endswith(".provenance.json") for p in visible), visible
            assert len(visible) == 5, visible
    assert anonavila("export", out / "anomalous", "--out", qa, "--overwrite").returncode == 0
    assert not [p for p in qa.iterdir() if p.name.startswith(".")]  # killed runs' folders swept


def test_a_rerun_sweeps_what_a_killed_run_left_inside_its_caches(tmp_path, model, sample_slides):
    """A worker killed while saving the grid or an embedding chunk leaves a temporary file deep in the cache; the
    next run into that folder removes it (the killer's pid is gone), so nothing half-written stays."""
    import socket

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    out = tmp_path / "res"
    host = socket.gethostname().replace(".", "_")
    leftovers = [out / "anomalous" / "grids" / "abc" / f".grid.npz.{host}.{dead.pid}.x1.partial",
                 out / "anomalous" / "embeddings" / "def" / f".chunk-00000.npy.{host}.{dead.pid}.y2.partial"]
    for p in leftovers:
        p.parent.mkdir(parents=True)
        p.write_bytes(b"half")
    assert anonavila("score-slide", sample_slides.anomalous, "--model", model, "--out", out,
                     "--patch-px", "256").returncode == 0
    assert not [p for p in out.rglob("*") if p.name.endswith(".partial")]


def test_an_error_at_any_rename_of_a_result_leaves_the_old_result_or_the_new(tmp_path, sample_slides,
                                                                             fitted_on_sample, monkeypatch):
    """A fault at each rename (and at the folder exchange) of a re-score: the folder then holds the earlier result
    whole, or the new one whole, never a mix; and the next run succeeds."""
    import copy

    from napari_anonavila import _atomic
    from napari_anonavila.export.result_folder import open_result

    out = tmp_path / "res"
    old_det = fitted_on_sample
    new_det = copy.deepcopy(fitted_on_sample)
    new_det.mode = type(new_det.mode)("max")  # other scores, same cache
    kw = {"out_dir": out / "anomalous", "patch_px": 256}
    old_det.score_slide(sample_slides.anomalous, **kw)
    old = {n: (out / "anomalous" / n).read_bytes() for n in ("patches.csv", "heatmap.npy")}
    calls = {"n": 0, "fail_at": None}
    real_move, real_exchange = _atomic._move, _atomic._renameat2_exchange

    def counted(fn):
        def wrapper(*a):
            calls["n"] += 1
            if calls["n"] == calls["fail_at"]:
                raise OSError(5, "injected I/O error")
            return fn(*a)
        return wrapper

    monkeypatch.setattr(_atomic, "_move", counted(real_move))
    monkeypatch.setattr(_atomic, "_renameat2_exchange", counted(real_exchange))
    new_det.score_slide(sample_slides.anomalous, overwrite=True, **kw)  # count the steps of an undisturbed re-score
    new = {n: (out / "anomalous" / n).read_bytes() for n in old}
    assert new["patches.csv"] != old["patches.csv"]
    steps = calls["n"]
    assert steps >= 3  # the caches moved across, then the exchange
    names = ("patches.csv", "patches.npz", "summary.json", "heatmap.npy", "overlay.png")
    for k in range(1, steps + 1):
        calls["fail_at"] = None
        old_det.score_slide(sample_slides.anomalous, overwrite=True, **kw)  # back to an old result
        before = {n: (out / "anomalous" / n).read_bytes() for n in names}
        assert before["patches.csv"] == old["patches.csv"]
        calls.update(n=0, fail_at=k)
        with pytest.raises(OSError, match="injected"):
            new_det.score_slide(sample_slides.anomalous, overwrite=True, **kw)
        calls["fail_at"] = None
        now = {n: (out / "anomalous" / n).read_bytes() for n in names}
        # every step before the exchange is undone, and the exchange is one step: the old result, byte for byte
        assert now == before, f"not the old result after a fault at step {k} of {steps}"
        open_result(out / "anomalous")  # and it reads as a whole result
        assert not list(out.glob(".*.partial")), "the staged folder was left behind"
        assert (out / "anomalous" / "embeddings").is_dir()  # the caches moved back
    new_det.score_slide(sample_slides.anomalous, overwrite=True, **kw)
    assert (out / "anomalous" / "patches.csv").read_bytes() == new["patches.csv"]
