"""Realistic slides from the generator (small versions of the benchmark's 100,000 x 80,000 px ones), and a scoring
run killed mid-slide that resumes to the same result as an uninterrupted one (CLI, API)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_anonavila.slide import open_slide
from napari_anonavila.synthetic import write_wsi

EXE = str(Path(sys.executable).parent / "anonavila")


@pytest.fixture(scope="module")
def wsi(tmp_path_factory):
    """A 6144 x 4096 px SVS-like slide at 0.5 um/px: about 5000 tissue patches of 64 px (several cache chunks)."""
    return write_wsi(tmp_path_factory.mktemp("wsi") / "large.svs", 6144, 4096, mpp=0.5, seed=11, n_anomalies=5)


@pytest.mark.parametrize(("layout", "reader"), [("svs", "tifffile"), ("ome-tiff", "tifffile")])
def test_generated_slides_open_with_their_full_pyramid_and_truth(tmp_path, layout, reader):
    made = write_wsi(tmp_path / f"s.{'svs' if layout == 'svs' else 'ome.tif'}", 5000, 3000, mpp=0.25,
                     layout=layout, seed=3)
    with tifffile.TiffFile(made.path) as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.JPEG and tif.pages[0].is_tiled
    s = open_slide(made.path)
    try:
        assert s.reader == reader
        assert s.dimensions_xy == (5000, 3000) and s.mpp == pytest.approx(0.25)
        assert len(s.level_shapes) == made.levels == 4  # 5000 -> 2500 -> 1250 -> 625: halves down to ~1024 px
        assert [tuple(d) for d in s.level_shapes[1:]] == [(1500, 2500), (750, 1250), (375, 625)]
        # tissue is darker than glass; planted anomalies (dense dark nuclei) darker than other tissue
        thumb = np.asarray(s.read_level(3, 0, 0, *s.level_shapes[3]))[..., :3].mean(axis=2)
        ds = made.truth_downsample / 8
        truth = np.kron(made.truth, np.ones((int(ds), int(ds)), bool))[: thumb.shape[0], : thumb.shape[1]]
        assert truth.any()
        glass = thumb > 235
        assert 0.1 < glass.mean() < 0.9
        assert thumb[truth].mean() < thumb[~truth & ~glass].mean() - 15
    finally:
        s.close()


def test_the_generator_is_deterministic(tmp_path):
    a = write_wsi(tmp_path / "a.svs", 2048, 1536, seed=5)
    b = write_wsi(tmp_path / "b.svs", 2048, 1536, seed=5)
    sa, sb = open_slide(a.path), open_slide(b.path)
    try:
        ra = np.asarray(sa.read_region((700, 500), 0, (512, 512)))
        assert np.array_equal(ra, np.asarray(sb.read_region((700, 500), 0, (512, 512))))
        assert np.array_equal(a.truth, b.truth)
    finally:
        sa.close()
        sb.close()


def _chunks_committed(out: Path) -> int:
    n = 0
    for m in out.glob("*/embeddings/*/manifest.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            n = max(n, len(json.loads(m.read_text())["chunks"]))
    return n


def _score(wsi_path, model, out, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, "score-slide", str(wsi_path), "--model", str(model), "--out", str(out),
                           "--patch-px", "64", "--batch-size", "32", *kw.get("extra", [])],
                          capture_output=True, text=True, check=True)


def test_a_killed_cli_run_resumes_to_the_uninterrupted_result(tmp_path, wsi, fitted_on_sample):
    model = fitted_on_sample.save(tmp_path / "model.safetensors")
    whole = _score(wsi.path, model, tmp_path / "whole")
    assert "resumed" not in whole.stdout

    out = tmp_path / "killed"
    proc = subprocess.Popen([EXE, "-q", "score-slide", str(wsi.path), "--model", str(model), "--out", str(out),
                             "--patch-px", "64", "--batch-size", "32"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while _chunks_committed(out) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _chunks_committed(out)
    assert done >= 1, "the run ended before a chunk was committed: make the slide larger"
    assert not (out / "large" / "summary.json").exists()  # killed before the end: no outputs claimed finished

    resumed = _score(wsi.path, model, out)
    n = len(np.load(tmp_path / "whole" / "large" / "heatmap.npy")[np.isfinite(
        np.load(tmp_path / "whole" / "large" / "heatmap.npy"))])
    line = next(ln for ln in resumed.stdout.splitlines() if ln.startswith("large.svs:"))
    assert f"{n} patches from pixels (" in line and "resumed from the embedding cache" in line, line
    n_resumed = int(line.split("(")[1].split()[0])
    assert 0 < n_resumed < n and n_resumed % 32 == 0  # whole committed chunks only, fewer than all
    for name in ("patches.csv", "heatmap.npy"):
        assert (out / "large" / name).read_bytes() == (tmp_path / "whole" / "large" / name).read_bytes(), name
    summary = json.loads((out / "large" / "summary.json").read_text())
    assert summary["n_from_embedding_cache"] == n_resumed


def test_a_cancelled_api_run_resumes_and_encodes_only_the_rest(tmp_path, wsi, fitted_on_sample):
    import threading

    from napari_anonavila.errors import CancelledError
    from napari_anonavila.pipeline import score_slide

    det = fitted_on_sample
    ref = score_slide(det, wsi.path, patch_px=64)  # no out dir: no cache, a plain run

    seen, stop = [], threading.Event()

    def progress(p) -> None:  # what the Cancel button does: set the event; the run stops after this batch
        seen.append(p.done)
        if _chunks_committed(tmp_path / "x") >= 1:
            stop.set()

    with pytest.raises(CancelledError):
        score_slide(det, wsi.path, out_dir=tmp_path / "x" / "large", patch_px=64, on_progress=progress, cancel=stop)
    assert seen and seen[-1] < len(ref)
    again = score_slide(det, wsi.path, out_dir=tmp_path / "x" / "large", patch_px=64)
    assert 0 < again.n_from_cache < len(ref) and not again.from_cache
    np.testing.assert_array_equal(again.score, ref.score)
    assert os.path.exists(tmp_path / "x" / "large" / "summary.json")


def _drop_chunk(out: Path, i: int, *, chunk_rows=None) -> Path:
    """Forget chunk ``i`` of the cache (as a run interrupted before it would have left it), or damage chunk_rows."""
    [manifest] = out.glob("*/embeddings/*/manifest.json")
    doc = json.loads(manifest.read_text())
    doc["chunks"].pop(str(i))
    if chunk_rows is not None:
        doc["chunk_rows"] = chunk_rows
    manifest.write_text(json.dumps(doc))
    return manifest


def test_a_resume_with_another_batch_size_equals_the_uninterrupted_result(tmp_path, wsi, fitted_on_sample):
    """Chunks hold 2048 rows at batch 32; a rerun at batch 100 (2100 per chunk) must fill the missing chunk exactly."""
    model = fitted_on_sample.save(tmp_path / "model.safetensors")
    out = tmp_path / "o"
    _score(wsi.path, model, out)
    whole = (out / "large" / "patches.csv").read_bytes()
    _drop_chunk(out, 1)
    again = subprocess.run([EXE, "score-slide", str(wsi.path), "--model", str(model), "--out", str(out),
                            "--patch-px", "64", "--batch-size", "100", "--overwrite"], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "resumed from the embedding cache" in again.stdout
    resumed = (out / "large" / "patches.csv").read_bytes()
    # the missing chunk was encoded in batches of 100: equal to float rounding (a batch's size changes the last bits)
    np.testing.assert_allclose(_scores(resumed), _scores(whole), rtol=1e-4, atol=1e-9)
    third = _score(wsi.path, model, out, extra=["--overwrite"])  # and the cache it left is whole and valid
    assert "patches from the embedding cache;" in third.stdout, third.stdout
    np.testing.assert_allclose(_scores((out / "large" / "patches.csv").read_bytes()), _scores(resumed), rtol=1e-4)


def _scores(csv_bytes: bytes) -> np.ndarray:
    lines = csv_bytes.decode().splitlines()
    col = lines[0].split(",").index("score")
    return np.array([float(ln.split(",")[col]) for ln in lines[1:]])


@pytest.mark.parametrize("bad", [-5, 0, 0.5, "abc", [1], True, 10**9])
def test_a_damaged_chunk_rows_is_recomputed_not_trusted(tmp_path, wsi, fitted_on_sample, bad):
    model = fitted_on_sample.save(tmp_path / "model.safetensors")
    out = tmp_path / "o"
    _score(wsi.path, model, out)
    whole = (out / "large" / "patches.csv").read_bytes()
    _drop_chunk(out, 0, chunk_rows=bad)
    again = subprocess.run([EXE, "score-slide", str(wsi.path), "--model", str(model), "--out", str(out),
                            "--patch-px", "64", "--overwrite"], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("cached embeddings do not verify") == 1 and "chunk_rows" in again.stderr
    assert "nan" not in again.stdout and (out / "large" / "patches.csv").read_bytes() == whole
