"""Faults: a process killed while scoring, exporting or saving a checkpoint, and a full disk."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..conftest import REPO

EXE = str(Path(sys.executable).parent / "anonavila")


def _kill_after(cmd: list[str], seconds: float, env=None) -> None:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    time.sleep(seconds)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _no_complete_looking_partials(folder: Path) -> None:
    """Nothing a reader could take for output: staged folders say '.partial'. A killed run's lock file may stay
    (its flock went with the process; the next run takes the file over)."""
    from napari_anonavila._atomic import LOCK_SUFFIX

    for p in folder.rglob("*"):
        assert p.is_dir() or ".partial" in p.name or not p.name.startswith(".") or p.name.endswith(LOCK_SUFFIX), p


@pytest.fixture(scope="module")
def scored(tmp_path_factory, sample_slides, fitted_on_sample):
    root = tmp_path_factory.mktemp("faults")
    model = fitted_on_sample.save(root / "model.safetensors")
    out = root / "out"
    subprocess.run([EXE, "-q", "score-slide", str(sample_slides.anomalous), "--model", str(model), "--out", str(out),
                    "--patch-px", "256"], check=True, capture_output=True)
    return model, out / "anomalous"


def test_kill_during_scoring_keeps_previous_outputs(scored, sample_slides):
    model, folder = scored
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    for delay in (1.0, 2.5, 4.0):  # during start-up, tissue detection and encoding
        _kill_after([EXE, "-q", "score-slide", str(sample_slides.anomalous), "--model", str(model), "--out",
                     str(folder.parent), "--patch-px", "32", "--overwrite"], delay)
        after = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and ".partial" not in p.name}
        for name in ("patches.csv", "heatmap.npy", "overlay.png", "summary.json"):
            assert after[name] == before[name], name
        _no_complete_looking_partials(folder)
    # a lock file left by a killed run never blocks the next one, which removes it when done
    subprocess.run([EXE, "-q", "score-slide", str(sample_slides.anomalous), "--model", str(model), "--out",
                    str(folder.parent), "--patch-px", "256", "--overwrite"], check=True, capture_output=True)
    assert (folder / "summary.json").is_file() and not list(folder.parent.glob("*.anonavila.lock"))


def test_kill_during_checkpoint_saving_never_leaves_a_broken_file(scored, tmp_path):
    from napari_anonavila.detector import Detector

    model, _ = scored
    target = tmp_path / "m.safetensors"
    code = (f"from napari_anonavila.detector import Detector\nimport torch\nd = Detector.load({str(model)!r})\n"
            "d.reference = torch.randn(20000, d.embed_dim)\n"
            f"while True:\n    d.save({str(target)!r}, overwrite=True)\n")
    for delay in (2.0, 2.6, 3.3):
        _kill_after([sys.executable, "-c", code], delay)
        if target.exists():
            Detector.load(target, attach_backend=False)  # complete, or the previous complete one
    _no_complete_looking_partials(tmp_path)


def test_kill_during_export_never_leaves_a_broken_file(tmp_path):
    import json

    code = (f"import sys, numpy as np\nsys.path.insert(0, {str(REPO)!r})\nfrom tests.helpers import result_of_scores\n"
            "from napari_anonavila.export.geojson import write_geojson\nn = 60000\n"
            "t = result_of_scores(np.zeros(n, int), np.arange(n), 64, (1, n), np.linspace(0, 1, n))\n"
            f"while True:\n    write_geojson({str(tmp_path / 't.geojson')!r}, t, overwrite=True)\n")
    for delay in (2.0, 2.7, 3.5):
        _kill_after([sys.executable, "-c", code], delay)
        if (tmp_path / "t.geojson").exists():
            assert len(json.loads((tmp_path / "t.geojson").read_text())["features"]) == 60000 + 10
    _no_complete_looking_partials(tmp_path)


def _limit_file_size():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))


def test_full_disk_gives_a_clear_error_and_no_corruption(scored, sample_slides, tmp_path):
    model, folder = scored
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    proc = subprocess.run([EXE, "-q", "score-slide", str(sample_slides.anomalous), "--model", str(model), "--out",
                           str(folder.parent), "--patch-px", "64", "--overwrite"], capture_output=True, text=True,
                          preexec_fn=_limit_file_size)
    assert proc.returncode == 2, proc.stderr
    assert "File too large" in proc.stderr and "earlier outputs are unchanged" in proc.stderr
    assert "Traceback" not in proc.stderr
    after = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    for name in ("patches.csv", "heatmap.npy", "overlay.png", "summary.json"):
        assert after[name] == before[name]
    # the failed writes cleaned up after themselves, and the run swept the partials of the killed runs above
    assert not [n for n in after if ".partial" in n]


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 4 MiB tmpfs (needs root and mount(8)); skipped where it cannot be mounted."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("tmpfs cannot be mounted here")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_no_space_left_on_a_real_small_disk(scored, sample_slides, small_tmpfs):
    model, _ = scored
    out = small_tmpfs / "out"
    subprocess.run([EXE, "-q", "score-slide", str(sample_slides.anomalous), "--model", str(model), "--out", str(out),
                    "--patch-px", "256"], check=True, capture_output=True)
    folder = out / "anomalous"
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    free = os.statvfs(small_tmpfs).f_bavail * os.statvfs(small_tmpfs).f_frsize
    (small_tmpfs / "filler").write_bytes(b"\0" * max(0, free - 20_000))  # leave ~20 kB
    proc = subprocess.run([EXE, "-q", "score-slide", str(sample_slides.anomalous), "--model", str(model), "--out",
                           str(out), "--patch-px", "64", "--overwrite"], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "No space left on device" in proc.stderr and "Traceback" not in proc.stderr
    after = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    for name in ("patches.csv", "heatmap.npy", "overlay.png", "summary.json"):
        assert after[name] == before[name]
    assert not [n for n in after if ".partial" in n]
