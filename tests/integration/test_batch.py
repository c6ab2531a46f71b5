"""Cohort runs on a real dask LocalCluster: outputs, failure rows, resume, a killed worker, equality."""

from __future__ import annotations

import csv
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from napari_anonavila.batch import BatchSettings, expand_inputs, run_batch
from napari_anonavila.batch.distributed import WORK_LOG
from napari_anonavila.cli import main
from napari_anonavila.errors import InputFileError
from napari_anonavila.pipeline import score_slide

from ..conftest import shared_path

distributed = pytest.importorskip("distributed")
SETTINGS = BatchSettings(patch_px=128, min_tissue=0.25)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Four small synthetic slides (two with planted anomalies) plus the corrupt real one."""
    from napari_anonavila.sample import make_tissue, write_pyramid_tiff

    folder = tmp_path_factory.mktemp("cohort")
    slides = []
    for i in range(4):
        img, _ = make_tissue(1024, seed=10 + i, n_anomalies=2 * (i % 2))
        slides.append(write_pyramid_tiff(folder / f"case{i}.tif", img, mpp=0.5))
    return [*slides, shared_path("slides", "broken.svs")]


@pytest.fixture(scope="module")
def model(tmp_path_factory, fitted_on_sample):
    return fitted_on_sample.save(tmp_path_factory.mktemp("m") / "model.safetensors")


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  silence_logs=40) as c:
        yield c


def _log_counts(out: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    if (out / WORK_LOG).is_file():
        for line in (out / WORK_LOG).read_text().splitlines():
            counts[line.split("\t")[0]] = counts.get(line.split("\t")[0], 0) + 1
    return counts


def _cohort(out: Path) -> dict[str, dict]:
    with open(out / "cohort.csv", newline="") as fh:
        return {Path(r["slide"]).name: r for r in csv.DictReader(fh)}


def test_cohort_run_failure_row_and_resume(cohort, model, cluster, tmp_path):
    out = tmp_path / "run"
    report = run_batch(cohort, model, out, settings=SETTINGS, scheduler=cluster.scheduler_address)
    assert (report["ok"], report["failed"], report["scored"]) == (4, 1, 4)
    rows = _cohort(out)
    assert rows["broken.svs"]["status"] == "failed" and "broken.svs" in rows["broken.svs"]["error"]
    for i in range(4):
        row = rows[f"case{i}.tif"]
        summary = json.loads((Path(row["out_dir"]) / "summary.json").read_text())
        assert row["status"] == "ok" and int(row["n_patches"]) == summary["n_patches"] > 0
        assert float(row["max"]) == pytest.approx(summary["slide_scores"]["max"])  # the table matches the outputs
    assert all(v == 1 for v in _log_counts(out).values()) and len(_log_counts(out)) == 4
    again = run_batch(cohort, model, out, settings=SETTINGS, scheduler=cluster.scheduler_address)
    assert (again["scored"], again["skipped"], again["failed"]) == (0, 4, 1)  # no work done on the re-run
    assert all(v == 1 for v in _log_counts(out).values())
    changed = run_batch(cohort[:1], model, out, settings=BatchSettings(patch_px=256),
                        scheduler=cluster.scheduler_address)
    assert changed["scored"] == 1  # other settings: not finished


def test_results_equal_a_single_process_run(cohort, model, cluster, tmp_path):
    import torch

    from napari_anonavila.detector import Detector

    out = tmp_path / "run"
    run_batch(cohort[:2], model, out, settings=SETTINGS, scheduler=cluster.scheduler_address)
    det = Detector.load(model, device="cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the workers
    try:
        local = score_slide(det, cohort[1], patch_px=128)
    finally:
        torch.set_num_threads(threads)
    with open(out / "case1" / "patches.csv", newline="") as fh:
        batch_scores = np.array([float(r["score"]) for r in csv.DictReader(fh)])
    # same device, same threads: equal up to the CSV's 8 significant digits
    np.testing.assert_allclose(batch_scores, local.score, rtol=1e-7)


def test_a_killed_worker_loses_and_doubles_nothing(cohort, model, tmp_path):
    out = tmp_path / "run"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  silence_logs=40) as cl, distributed.Client(cl) as client:
        pids = client.run(os.getpid)  # worker address -> pid
        killed: list[int] = []

        def kill_one(row):
            if killed:
                return
            busy = [addr for addr, keys in client.processing().items() if keys]  # mid-slide right now
            if busy:
                killed.append(pids[busy[0]])
                os.kill(pids[busy[0]], signal.SIGKILL)

        report = run_batch(cohort[:4], model, out, settings=SETTINGS, scheduler=cl.scheduler_address,
                           on_result=kill_one)
    assert killed, "no worker was busy when the first result came back"
    assert report["ok"] == 4, "\n".join(f"{k}: {r['status']} {r['error']}" for k, r in _cohort(out).items())
    assert not [p for p in out.rglob("*") if "partial" in p.name]
    counts = _log_counts(out)
    assert sorted(counts) == sorted(str(s) for s in cohort[:4]) and all(v == 1 for v in counts.values())


def test_inputs_from_globs_and_lists(cohort, tmp_path):
    lst = tmp_path / "slides.txt"
    lst.write_text("# cohort\n" + "\n".join(str(s) for s in cohort[:2]) + "\n")
    got = expand_inputs([str(lst), str(cohort[0].parent / "case*.tif")])
    assert [p.name for p in got] == ["case0.tif", "case1.tif", "case2.tif", "case3.tif"]
    with pytest.raises(InputFileError, match="matches no file"):
        expand_inputs([str(tmp_path / "*.svs")])


def test_cli_batch_with_labels(cohort, model, tmp_path, capsys):
    labels = tmp_path / "labels.csv"
    labels.write_text("slide_id,label\ncase0,0\ncase1,1\ncase2,0\ncase3,1\n")
    code = main(["-q", "batch", *map(str, cohort), "--model", str(model), "--out", str(tmp_path / "o"),
                 "--n-workers", "2", "--patch-px", "128", "--labels", str(labels)])
    printed = capsys.readouterr().out
    assert code == 2  # one slide failed
    assert "4 scored" in printed and "1 failed" in printed
    metrics = json.loads((tmp_path / "o" / "cohort_metrics.json").read_text())
    assert metrics["n"] == 4 and "auroc" in metrics["metrics"]["max"]
