"""Results that belong to their slide wherever they are opened from: absolute provenance and lookup by content, one
lock holder, folders readable by colleagues, symbolic links, validate-then-write, and result folders checked whole.

Each attack is made through the installed ``anonavila`` as a user would (or with the files a user or an adversary
would leave); each gives one clear line and loses nothing."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ..helpers import cli, refused


def ok(res: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert res.returncode == 0, res.stderr[-3000:]
    return res


@pytest.fixture(scope="module")
def model(tmp_path_factory, fitted_on_sample) -> Path:
    return fitted_on_sample.save(tmp_path_factory.mktemp("model") / "m.safetensors")


@pytest.fixture
def lab(tmp_path, sample_slides) -> Path:
    """A working folder with a slide in a sub-folder ``x/``, as a user's project is laid out."""
    (tmp_path / "x").mkdir()
    shutil.copy(sample_slides.anomalous, tmp_path / "x" / "s.tif")
    return tmp_path


def _scored_from_a_relative_path(lab: Path, model: Path, out: str = "res") -> Path:
    ok(cli("score-slide", "x/s.tif", "--model", model, "--out", out, "--patch-px", "256", cwd=lab))
    return lab / out / "s"


# -- provenance that travels --------------------------------------------------------------------------------------
def test_a_result_records_its_slide_by_absolute_path_and_content(lab, model):
    folder = _scored_from_a_relative_path(lab, model)
    slide = json.loads((folder / "summary.json").read_text())["provenance"]["slide"]
    assert slide["path"] == str((lab / "x" / "s.tif").resolve())
    assert len(slide["fingerprint_sha256"]) == 64


def test_export_from_another_folder_and_after_moving_has_its_pictures(lab, model, tmp_path_factory):
    folder = _scored_from_a_relative_path(lab, model)
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    res = ok(cli("export", folder, "--out", elsewhere / "qa", "--formats", "html", cwd=elsewhere))
    assert "warning" not in res.stderr
    assert (elsewhere / "qa" / "s" / "s_report.html").read_text().count('<img src="data:image/png') >= 2
    # the project moves (slides and results together): the slide is found beside the result, by content
    moved = elsewhere / "moved"
    shutil.move(str(lab), moved)
    res = ok(cli("export", moved / "res" / "s", "--out", elsewhere / "qa2", "--formats", "html", cwd=elsewhere))
    assert "warning" not in res.stderr
    assert (elsewhere / "qa2" / "s" / "s_report.html").read_text().count('<img src="data:image/png') >= 2


def test_export_says_when_it_cannot_find_the_slide(lab, model, tmp_path_factory):
    folder = _scored_from_a_relative_path(lab, model)
    away = tmp_path_factory.mktemp("away")
    shutil.move(str(folder), away / "s")
    (lab / "x" / "s.tif").rename(lab / "x" / "renamed.tif")
    res = ok(cli("export", away / "s", "--out", away / "qa", "--formats", "html"))
    assert "is not there" in res.stderr and "no patch pictures" in res.stderr
    # a folder named with --slides is searched (by name; the content decides)
    (lab / "x" / "renamed.tif").rename(lab / "x" / "s.tif")
    res = ok(cli("export", away / "s", "--out", away / "qa2", "--formats", "html", "--slides", lab / "x"))
    assert "warning" not in res.stderr


def test_another_slides_file_of_the_same_name_is_refused_by_content(lab, model, sample_slides):
    folder = _scored_from_a_relative_path(lab, model)
    shutil.copy(sample_slides.normal, lab / "x" / "s.tif")  # same name, other content
    refused(cli("export", folder, "--out", lab / "qa", "--formats", "html"), "not the slide this result was made on")
    assert not (lab / "qa").exists()


def test_batch_from_another_folder_never_replaces_another_slides_result(tmp_path, model, sample_slides):
    """Two folders each with x/s.tif (other contents), one --out: the guard compares contents, not paths."""
    for name, src in (("a", sample_slides.anomalous), ("b", sample_slides.normal)):
        (tmp_path / name / "x").mkdir(parents=True)
        shutil.copy(src, tmp_path / name / "x" / "s.tif")
    out = tmp_path / "R"
    args = ("--model", model, "--out", out, "--patch-px", "256", "--n-workers", "1")
    ok(cli("batch", "x/s.tif", *args, cwd=tmp_path / "a"))
    first = (out / "s" / "patches.npz").read_bytes()
    res = cli("batch", "x/s.tif", *args, cwd=tmp_path / "b")
    assert res.returncode == 2 and "another slide" in (out / "cohort.csv").read_text()
    assert (out / "s" / "patches.npz").read_bytes() == first
    # the same slide from another folder is its own finished result: skipped, not scored again
    (tmp_path / "c" / "x").mkdir(parents=True)
    shutil.copy(tmp_path / "a" / "x" / "s.tif", tmp_path / "c" / "x" / "s.tif")
    assert "1 already finished" in ok(cli("batch", "x/s.tif", *args, cwd=tmp_path / "c")).stdout


# -- a cohort that accumulates; finished means verified ---------------------------------------------------------
def test_a_cohort_accumulates_and_counts_only_whole_results(tmp_path, model, sample_slides):
    import csv

    out = tmp_path / "R"
    args = ("--model", model, "--out", out, "--patch-px", "256", "--n-workers", "1")
    ok(cli("batch", sample_slides.normal, *args))
    ok(cli("batch", sample_slides.anomalous, *args))
    with open(out / "cohort.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(Path(r["slide"]).name for r in rows) == ["anomalous.tif", "normal.tif"]
    assert all(Path(r["slide"]).is_absolute() and len(r["fingerprint_sha256"]) == 64 for r in rows)
    (out / "normal" / "patches.csv").unlink()  # a result with an output missing is not finished
    res = ok(cli("batch", sample_slides.normal, sample_slides.anomalous, *args))
    assert "1 to score, 1 already finished" in res.stdout
    assert (out / "normal" / "patches.csv").is_file()
    from napari_anonavila import open_result

    open_result(out / "normal", verify=True)


# -- one holder per folder --------------------------------------------------------------------------------------
_RACER = r"""
import os, sys, time
from pathlib import Path
from napari_anonavila._atomic import claimed_dir, commit_dir, staging_dir
from napari_anonavila.errors import OutputExistsError
folder, marker, seconds = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
held = doubles = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    try:
        with claimed_dir(folder) as real:
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                doubles += 1
                continue
            os.close(fd)
            held += 1
            staged = staging_dir(real)
            (staged / "out.txt").write_text(str(os.getpid()))
            (real / "cache.bin").write_bytes(b"x")
            commit_dir(real, staged, ("out.txt",))  # the window where the lock used to move away
            os.unlink(marker)
    except OutputExistsError:
        pass
print(held, doubles)
"""


@pytest.mark.slow
def test_two_processes_racing_for_a_minute_never_both_hold_a_folder(tmp_path):
    folder, marker = tmp_path / "res", tmp_path / "held-by"
    racers = [subprocess.Popen([sys.executable, "-c", _RACER, str(folder), str(marker), "60"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=180) for p in racers]
    for p, (_out, err) in zip(racers, outs, strict=True):
        assert p.returncode == 0 and not err, err
    counts = [tuple(map(int, out.split())) for out, _ in outs]
    assert all(held > 10 for held, _ in counts), counts  # both really ran, many times
    assert sum(d for _, d in counts) == 0, f"double holders: {counts}"


# -- permissions, symbolic links -------------------------------------------------------------------------------
def test_result_folders_and_files_follow_the_umask(lab, model):
    os.umask(old := os.umask(0o022))
    folder = _scored_from_a_relative_path(lab, model)
    want_dir, want_file = 0o777 & ~old, 0o666 & ~old
    assert stat.S_IMODE(folder.stat().st_mode) == want_dir
    for p in folder.rglob("*"):
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (want_dir if p.is_dir() else want_file), (p, oct(mode))


@pytest.mark.parametrize("target_on", ["same disk", "another file system"])
def test_a_symlinked_result_folder_commits_into_its_target(lab, model, target_on):
    if target_on == "another file system":
        shm = Path("/dev/shm")
        if not shm.is_dir() or os.stat(shm).st_dev == os.stat(lab).st_dev:
            pytest.skip("no second file system (/dev/shm) here")
        victim = Path(__import__("tempfile").mkdtemp(dir=shm))
    else:
        victim = lab / "victim"
        victim.mkdir()
    try:
        (victim / "notes.txt").write_text("mine")
        (lab / "res").mkdir()
        (lab / "res" / "s").symlink_to(victim, target_is_directory=True)
        ok(cli("score-slide", "x/s.tif", "--model", model, "--out", "res", "--patch-px", "256", cwd=lab))
        assert (lab / "res" / "s").is_symlink()  # still the user's link
        assert (victim / "notes.txt").read_text() == "mine"  # the user's file is where it was
        assert (victim / "summary.json").is_file() and (victim / "patches.npz").is_file()
        assert not [p for p in victim.parent.iterdir() if ".partial" in p.name]
        from napari_anonavila import open_result

        assert len(open_result(lab / "res" / "s")) > 0
    finally:
        shutil.rmtree(victim, ignore_errors=True)


# -- validate, then write -----------------------------------------------------------------------------------------
def test_calibrate_with_a_degenerate_reference_leaves_the_checkpoint_as_it_was(tmp_path, model, sample_slides):
    from PIL import Image

    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(30):  # one image thirty times: no spread at all
        Image.new("RGB", (64, 64), (200, 120, 160)).save(flat / f"p{i}.png")
    good = tmp_path / "good.safetensors"
    ok(cli("calibrate", "--model", model, "--normal", sample_slides.normal, "--out", good, "--patch-px", "128"))
    before = good.read_bytes()
    last = refused(cli("calibrate", "--model", model, "--normal", flat, "--out", good, "--overwrite"))
    assert "degenerate" in last and "more varied normal tissue" in last
    assert good.read_bytes() == before
    refused(cli("calibrate", "--model", model, "--normal", flat, "--out", tmp_path / "new.safetensors"), "degenerate")
    assert not (tmp_path / "new.safetensors").exists()


def test_a_reference_of_mostly_equal_scores_is_refused():
    from napari_anonavila.calibration import Calibration

    table = np.zeros((20, 4))
    table[-1] = 1.0  # 19 equal scores and one other
    with pytest.raises(ValueError, match="degenerate: 19 of its 20 sum scores are equal"):
        Calibration(table, "test")


# -- a result folder checked whole ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def good_result(tmp_path_factory, fitted_on_sample, sample_slides) -> Path:
    out = tmp_path_factory.mktemp("good") / "anomalous"
    fitted_on_sample.score_slide(sample_slides.anomalous, out_dir=out, patch_px=256)
    return out


def _crafted(tmp_path: Path, good: Path, edit) -> Path:
    folder = tmp_path / "crafted"
    shutil.copytree(good, folder, ignore=shutil.ignore_patterns("embeddings", "grids", "thumbnail*"))
    summary = json.loads((folder / "summary.json").read_text())
    edit(summary, folder)
    (folder / "summary.json").write_text(json.dumps(summary) if not isinstance(summary, str) else summary)
    return folder


def _raw(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


CRAFTED = {
    "no fingerprint": (lambda s, f: s["provenance"]["slide"].pop("fingerprint_sha256"), "fingerprint_sha256"),
    "empty fingerprint": (lambda s, f: s["provenance"]["slide"].update(fingerprint_sha256=""), "fingerprint_sha256"),
    "origin 1e400": (lambda s, f: s["heatmap"].update(origin_xy_l0=["1e400", 0]), "origin_xy_l0"),
    "size 1e300": (lambda s, f: s["heatmap"].update(cell_size_l0=1e300), "cell_size_l0"),
    "size 0": (lambda s, f: s["heatmap"].update(cell_size_l0=0), "cell_size_l0"),
    "size -256": (lambda s, f: s["heatmap"].update(cell_size_l0=-256), "cell_size_l0"),
    "slide path an object": (lambda s, f: s["provenance"]["slide"].update(path={"a": 1}), "slide.path"),
    "grid a list": (lambda s, f: s["provenance"].update(grid=[1, 2]), "provenance.grid"),
    "scores edited": (lambda s, f: s["slide_scores"].update(max=123.0), "slide score max"),
    "patches.csv deleted": (lambda s, f: (f / "patches.csv").unlink(), "patches.csv: missing"),
    "review mark 1e400": (lambda s, f: (f / "reviews.json").write_text(
        '{"columns": {"x_l0": [1e400], "y_l0": [0], "size_l0": [256], "review": ["confirmed"]}}'), "reviews.json"),
}


@pytest.mark.parametrize("attack", list(CRAFTED))
def test_a_crafted_result_folder_is_one_clear_line(tmp_path, good_result, attack):
    edit, needle = CRAFTED[attack]
    folder = _crafted(tmp_path, good_result, edit)
    last = refused(cli("export", folder, "--out", tmp_path / "qa", "--formats", "csv"))
    assert needle in last and str(folder.name) in last, last
    assert not (tmp_path / "qa").exists()


def test_two_patches_in_one_cell_is_one_clear_line(tmp_path, good_result):
    folder = _crafted(tmp_path, good_result, lambda s, f: None)
    with np.load(folder / "patches.npz") as z:
        cols = {k: z[k] for k in z.files}
    cols["row"][1], cols["col"][1] = cols["row"][0], cols["col"][0]
    np.savez(folder / "patches.npz", **cols)
    summary = json.loads((folder / "summary.json").read_text())
    summary["outputs"]["patches.npz"]["bytes"] = (folder / "patches.npz").stat().st_size
    summary["outputs"]["patches.npz"].pop("sha256")
    (folder / "summary.json").write_text(json.dumps(summary))
    refused(cli("export", folder, "--out", tmp_path / "qa", "--formats", "csv"), "same heatmap cell")


def test_a_huge_result_reads_in_bulk(tmp_path):
    """A 3 x 10^5-patch result written and read back whole (the 2 x 10^6 row of bench/bench_result_io.py runs the
    same code): the review marks of a tenth of it come back on their patches."""
    from napari_anonavila import open_result
    from napari_anonavila.export.result_folder import write_result_folder
    from napari_anonavila.reviews import ReviewMarks, write_reviews

    from ..helpers import result_of_scores

    side = 550
    cells = np.argwhere(np.ones((side, side), bool))[: 300_000]
    res = result_of_scores(cells[:, 0], cells[:, 1], 32, (side, side), np.random.default_rng(0).random(len(cells)))
    res.slide["fingerprint_sha256"] = "f" * 64
    thumb = (np.full((side, side, 3), 230, np.uint8), 32.0)
    write_result_folder(tmp_path / "big", res, None, thumbnail=thumb)
    marks = ReviewMarks(dict.fromkeys(ReviewMarks.keys_of(res.grid, range(0, len(cells), 10)), "rejected"))
    write_reviews(tmp_path / "big", marks, slide_fingerprint="f" * 64)
    back = open_result(tmp_path / "big")
    np.testing.assert_array_equal(back.score, res.score)
    states = back.review_states()
    assert len(states) == 30_000 and set(states) == set(range(0, len(cells), 10))


def test_a_cohort_table_cell_is_plain_text(tmp_path):
    from napari_anonavila.batch.cohort import read_cohort
    from napari_anonavila.export.tables import read_csv

    table = tmp_path / "cohort.csv"
    table.write_text("slide,status,error,out_dir\n=HYPERLINK(\"x\"),failed,<a href='x'>click</a><img src=x>,\n")
    entries, _ = read_cohort(tmp_path)
    assert entries[0].error.startswith("<a href")  # kept as the text it is; the browser shows it as plain text
    assert read_csv(table, ["slide"])[0]["slide"].startswith("=")


def test_pool_csv_cells_are_protected_and_read_back_as_written(tmp_path):
    from napari_anonavila.terms import load_pool, save_pool

    prompts = ["=cmd|' /C calc'!A0", "+1+1", "an image showing lymphocytes"]
    path = save_pool(prompts, tmp_path / "normal.csv", kind="normal")
    text = path.read_text().splitlines()
    assert text[1].startswith("'=") and text[2].startswith("'+")
    assert load_pool(path, kind="normal") == prompts
