"""The reader and sample contributions, and the manifest."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from napari_anonavila._napari.reader import get_reader
from napari_anonavila.errors import MissingMppWarning, SlideReadError

from ..conftest import shared_path


@pytest.mark.parametrize(("name", "n_levels", "mpp"), [
    ("cmu-1-small-region.svs", 1, 0.499), ("fluorescence-dapi-40x.ndpi", 7, 0.2282),
    ("os-2-ki67-crop.ome.tif", 1, 0.2271), ("tcga-cr-7395-01a-01-ts1.svs", 2, None),
    ("kidney-48-5.tif", 1, None)])
def test_file_open_gives_a_lazy_multiscale_layer(viewer, name, n_levels, mpp):
    path = shared_path("slides", name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingMppWarning)
        [layer] = viewer.open(str(path), plugin="napari-anonavila")
    assert layer.multiscale and layer.rgb
    assert len(layer.data) == n_levels
    assert layer.metadata["mpp"] == (pytest.approx(mpp, abs=1e-4) if mpp else None)
    assert layer.scale[-1] == pytest.approx(mpp or 1.0, abs=1e-4)
    assert layer.units[-1] == ("micrometer" if mpp else "pixel")  # the scale bar shows true size when mpp is known


def test_file_open_of_a_generated_pyramid(viewer, sample_slides):
    """The same door without ../shared: a pyramidal TIFF written here (0.5 um/px, 3 levels)."""
    [layer] = viewer.open(str(sample_slides.anomalous), plugin="napari-anonavila")
    assert layer.multiscale and len(layer.data) == 3
    assert layer.scale[-1] == pytest.approx(0.5) and str(layer.units[-1]) == "micrometer"
    assert layer.data[0].shape == (2048, 2048, 3)
    assert np.asarray(layer.data[-1][:8, :8]).dtype == np.uint8


def test_reader_declines_other_files_and_reports_corrupt_ones(viewer):
    assert get_reader("image.png") is None
    assert get_reader(["a.svs", "b.svs"]) is None
    reader = get_reader(str(shared_path("slides", "broken.svs")))
    with pytest.raises(SlideReadError, match=r"broken\.svs"):
        reader(str(shared_path("slides", "broken.svs")))


def test_manifest_validates():
    exe = Path(sys.executable).parent / "npe2"
    out = subprocess.run([str(exe), "validate", "napari-anonavila"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "valid" in out.stdout


def test_open_sample_returns_at_once_and_the_slide_follows(viewer, qtbot, monkeypatch, tmp_path):
    """File > Open Sample: the slide is written in a worker (the UI thread is not held), a placeholder layer stands
    in until the slide replaces it; the second time the cached slide opens directly."""
    import time

    from napari_anonavila._napari import sample_data

    monkeypatch.setenv("ANONAVILA_CACHE", str(tmp_path))
    monkeypatch.setattr(sample_data, "SAMPLE_SIZE", 1024)  # small and quick
    t0 = time.perf_counter()
    [placeholder] = viewer.open_sample("napari-anonavila", "planted_anomalies")
    assert time.perf_counter() - t0 < 1.0 and placeholder.name == sample_data.PLACEHOLDER
    qtbot.waitUntil(lambda: sample_data.SAMPLE_NAME in viewer.layers, timeout=60_000)
    assert [ly.name for ly in viewer.layers] == [sample_data.SAMPLE_NAME]
    layer = viewer.layers[0]
    assert layer.data[0].shape == (1024, 1024, 3) and np.asarray(layer.data[-1]).mean() < 255
    assert (tmp_path / "sample-slides" / "normal.tif").is_file()  # its normal twin, for fitting
    [again] = viewer.open_sample("napari-anonavila", "planted_anomalies")
    assert again.name.startswith(sample_data.SAMPLE_NAME) and again.data[0].shape == (1024, 1024, 3)
