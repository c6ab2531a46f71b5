"""A QuPath project as a cohort: `project.qpproj` files written as QuPath 0.4 writes them (absolute percent-encoded
file URIs, a rotated image's nested builder, the project's own URI), their images found where recorded or, after the
project moved with its images (also from a Windows drive), relative to it; `batch` scores them; a project with an
image that cannot be found is refused in one line, naming it, before anything is written."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from napari_anonavila.batch import expand_inputs
from napari_anonavila.batch.cohort import NOT_SCORED, read_cohort
from napari_anonavila.errors import InputFileError

from ..helpers import cli, refused

pytest.importorskip("distributed")


def _uri(path) -> str:
    """A file URI as QuPath (java.net.URI) writes it: ``file:/abs/path``, spaces as %20."""
    return "file:" + str(path).replace("%", "%25").replace(" ", "%20")


def _entry(i: int, uri: str, name: str, rotated: bool = False) -> dict:
    provider = "qupath.lib.images.servers.bioformats.BioFormatsServerBuilder"
    builder = {"builderType": "uri", "providerClassName": provider, "uri": uri, "args": ["--series", "0"],
               "metadata": {"name": name}}
    if rotated:
        builder = {"builderType": "rotated", "rotation": "ROTATE_180", "builder": builder}
    return {"serverBuilder": builder, "entryID": i, "randomizedName": f"0000-{i}", "imageName": name,
            "metadata": {}}


def write_project(folder: Path, images: list[str], project_uri: str, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"version": "0.4.3", "createTimestamp": 1700000000000, "modifyTimestamp": 1700000000000,
           "uri": project_uri, "lastID": len(images),
           "images": [_entry(i + 1, u, n, rotated=i == 1) for i, (u, n) in enumerate(zip(images, names, strict=True))]}
    path = folder / "project.qpproj"
    path.write_text(json.dumps(doc, indent=2))
    return path


@pytest.fixture
def lab(tmp_path, sample_slides):
    """A lab's folder: the project and, beside it, 'slide images/' with two slides (a space in the folder's name)."""
    root = tmp_path / "lab"
    images = root / "slide images"
    images.mkdir(parents=True)
    a = shutil.copy(sample_slides.normal, images / "case 1.tif")
    b = shutil.copy(sample_slides.anomalous, images / "case2.tif")
    project = write_project(root / "qp", [_uri(a), _uri(b)], _uri(root / "qp" / "project.qpproj"),
                            ["case 1.tif", "case2.tif"])
    return root, project, [Path(a), Path(b)]


def test_a_project_lists_its_images_where_recorded_and_after_it_moved(lab, tmp_path):
    root, project, slides = lab
    assert expand_inputs([str(project)]) == slides
    assert expand_inputs([str(project.parent)]) == slides  # the project's folder, as QuPath shows a project
    moved = tmp_path / "elsewhere" / "lab"
    shutil.move(root, moved)  # the recorded absolute paths are gone; relative to the project they still hold
    found = expand_inputs([str(moved / "qp" / "project.qpproj")])
    assert found == [moved / "slide images" / s.name for s in slides] and all(p.is_file() for p in found)
    entries, by = read_cohort(moved / "qp")
    assert [e.status for e in entries] == [NOT_SCORED] * 2 and "QuPath project" in by
    assert all(e.can_open and not e.has_result for e in entries)


def test_a_project_made_on_a_windows_drive_resolves_relative_to_where_it_is(tmp_path, sample_slides):
    here = tmp_path / "copy"
    (here / "slides").mkdir(parents=True)
    shutil.copy(sample_slides.normal, here / "slides" / "a b.tif")
    project = write_project(here / "Nodes", ["file:/C:/Users/path/Projects/slides/a%20b.tif"],
                            "file:/C:/Users/path/Projects/Nodes/project.qpproj", ["a b.tif"])
    assert expand_inputs([str(project)]) == [(here / "slides" / "a b.tif").resolve()]


def test_batch_scores_a_projects_images_and_refuses_one_with_a_missing_image(lab, tmp_path, fitted_on_sample):
    _root, project, slides = lab
    model = fitted_on_sample.save(tmp_path / "m.safetensors")
    res = cli("batch", project, "--model", model, "--out", tmp_path / "R", "--patch-px", 128, "--n-workers", 1)
    assert res.returncode == 0, res.stderr[-2000:]
    with open(tmp_path / "R" / "cohort.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(Path(r["slide"]).name for r in rows) == ["case 1.tif", "case2.tif"]
    assert all(r["status"] == "ok" for r in rows)
    slides[1].unlink()  # an image the project names is gone: refused before anything is written
    line = refused(cli("batch", project, "--model", model, "--out", tmp_path / "S", "--patch-px", 128))
    assert "1 of 2 project images not found" in line and "case2.tif" in line
    assert not (tmp_path / "S").exists()


@pytest.mark.parametrize(("text", "needle"), [("not json", "not JSON"), ('{"version": "0.4"}', "no 'images' list"),
                                          ('{"images": [{"serverBuilder": {"uri": "omero:/a.svs"}}]}',
                                           "no file URI")])
def test_a_damaged_project_is_one_line(tmp_path, text, needle, fitted_on_sample):
    p = tmp_path / "project.qpproj"
    p.write_text(text)
    with pytest.raises(InputFileError, match=needle):
        expand_inputs([str(p)])
    model = fitted_on_sample.save(tmp_path / "m.safetensors")
    refused(cli("batch", p, "--model", model, "--out", tmp_path / "R"), needle)
