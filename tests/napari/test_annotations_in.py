"""In a real window: a QuPath GeoJSON and an ASAP XML opened with File > Open land on their slide as one Shapes layer
per class, in the slide's place; picked in the Score panel as the region (and another as what to leave out), they
select exactly the patches an independent shapely computation selects; a result scored so reopens with them drawn;
a 10^5-vertex outline opens simplified, its exact shape kept."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ..conftest import shared_path
from ..integration.test_annotations import P, _expected, _reference_polygons, drawn  # noqa: F401 (fixture)
from .conftest import PLUGIN, click, open_widget, wait_worker


@pytest.mark.slow
def test_annotations_open_onto_their_slide_and_choose_the_patches(make_napari_viewer, qtbot, drawn,  # noqa: F811
                                                                  fitted_on_sample, tmp_path, errors):
    viewer = make_napari_viewer()
    [slide] = viewer.open(str(shared_path("slides", "cmu-1-small-region.svs")), plugin=PLUGIN)
    layers = viewer.open(str(drawn["geojson"]), plugin=PLUGIN)
    assert sorted(ly.name for ly in layers) == ["cmu-1-small-region: Stroma", "cmu-1-small-region: Tumor"]
    tumour = viewer.layers["cmu-1-small-region: Tumor"]
    # in the slide's place: every vertex napari shows, taken through the layer's and the slide's transforms, lies on
    # the exact outline (within the display simplification, under a screen pixel of the whole slide)
    import shapely

    exact = tumour.metadata["anonavila_regions"].area().boundary
    for path in tumour.data:
        rc = np.array([slide.world_to_data(tumour.data_to_world(v)) for v in path])
        xy = rc[:, ::-1] + 0.5
        assert shapely.distance(exact, shapely.points(xy)).max() < 2.0
    assert tumour.visible and tumour.metadata["anonavila_for"]  # part of the slide's group
    xml_layers = viewer.open(str(drawn["xml"]), plugin=PLUGIN)
    exclusion = next(ly for ly in xml_layers if ly.name.endswith("Exclusion"))
    roi_xml = next(ly for ly in xml_layers if ly.name.endswith("_0"))

    score = open_widget(viewer, "Score")
    det = fitted_on_sample
    score.session.detector = det
    score.slide_layer.value = slide
    score.patch_um.value = P * slide.metadata["mpp"]
    score.region.value = "shapes layer"
    score.region_layer.value = roi_xml
    score.exclude_layer.value = exclusion
    click(score.run_button)
    wait_worker(qtbot, score)
    res = score.session.result
    tissue = det.score_slide(shared_path("slides", "cmu-1-small-region.svs"), patch_px=P).xy_l0
    want = _expected(tissue, _reference_polygons(drawn["xml"], {"_0"}),
                     _reference_polygons(drawn["xml"], {"Exclusion"}))
    assert {(int(a), int(b)) for a, b in res.xy_l0} == want and len(want) > 5
    assert res.provenance["regions"]["roi"]["classes"] == ["_0"]
    # the Review list says which listed patches lie in the lesions opened onto the slide (as localise counts them)
    review = open_widget(viewer, "Review top-k")
    col = [review.table.horizontalHeaderItem(c).text() for c in range(review.table.columnCount())].index("lesion")
    marks = [review.table.item(r, col).text() for r in range(review.table.rowCount())]
    assert set(marks) <= {"hit", "miss"} and "hit" in marks
    assert not errors


@pytest.mark.slow
def test_a_huge_outline_opens_in_seconds_with_its_exact_shape_kept(make_napari_viewer, tmp_path):
    import time

    t = np.linspace(0, 2 * np.pi, 100_000, endpoint=False)
    r = 800 + 40 * np.sin(t * 300)  # a wiggly tissue outline of 10^5 vertices
    ring = np.stack([1100 + r * np.cos(t), 1480 + r * np.sin(t)], axis=1).tolist()
    path = tmp_path / "cmu-1-small-region.geojson"
    path.write_text(json.dumps({"type": "Feature", "properties": {"classification": {"name": "Tissue"}},
                                "geometry": {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}}))
    viewer = make_napari_viewer()
    viewer.open(str(shared_path("slides", "cmu-1-small-region.svs")), plugin=PLUGIN)
    t0 = time.perf_counter()
    [layer] = viewer.open(str(path), plugin=PLUGIN)
    seconds = time.perf_counter() - t0
    assert layer.metadata["vertices_exact"] >= 100_000 and layer.metadata["vertices_shown"] < 10_000
    assert layer.metadata["anonavila_regions"].regions[0].geometry.area == pytest.approx(
        __import__("shapely").Polygon(ring).area)
    assert seconds < 60  # (napari took 13 s at 5,000 raw vertices; the bench has the timings)


def test_review_lists_misses_or_hits_first_against_opened_lesions(make_napari_viewer, qtbot, sample_slides,
                                                                  fitted_on_sample, tmp_path, errors):
    """A lesion file opened onto a scored slide: the Review list marks each listed patch hit or miss (half its area
    in a lesion) and can list the misses (or the hits) first, by rank within each; a row still centres on its
    patch."""
    viewer = make_napari_viewer()
    [slide] = viewer.open(str(sample_slides.anomalous), plugin=PLUGIN)
    half = [[0, 0], [1024, 0], [1024, 2048], [0, 2048], [0, 0]]  # the left half of the 2048 px slide, level 0
    lesions = tmp_path / "anomalous.geojson"
    lesions.write_text(json.dumps({"type": "Feature", "properties": {"classification": {"name": "Tumor"}},
                                   "geometry": {"type": "Polygon", "coordinates": [half]}}))
    viewer.open(str(lesions), plugin=PLUGIN)
    score = open_widget(viewer, "Score")
    score.session.detector = fitted_on_sample
    score.slide_layer.value = slide
    score.patch_um.value = 64.0  # 128 px at 0.5 um/px
    score.top_k.value = 60
    click(score.run_button)
    wait_worker(qtbot, score)
    review = open_widget(viewer, "Review top-k")
    head = [review.table.horizontalHeaderItem(c).text() for c in range(review.table.columnCount())]

    def column(name):
        return [review.table.item(r, head.index(name)).text() for r in range(review.table.rowCount())]

    by_rank = column("lesion")
    assert {"hit", "miss"} <= set(by_rank) and [int(r) for r in column("rank")] == sorted(map(int, column("rank")))
    res = score.session.result
    for order, first in (("misses first", "miss"), ("hits first", "hit")):
        review.order.setCurrentText(order)
        marks, ranks = column("lesion"), [int(r) for r in column("rank")]
        n = by_rank.count(first)
        assert marks == [first] * n + [m for m in by_rank if m != first]
        assert ranks[:n] == sorted(ranks[:n]) and ranks[n:] == sorted(ranks[n:])
        review.select(0)  # the first row shown: a patch of the group listed first
        i = int(np.flatnonzero(res.rank == ranks[0])[0])
        x = int(res.xy_l0[i, 0])
        assert (x + 64 <= 1024) == (first == "hit") and f"({x}, {int(res.xy_l0[i, 1])})" in review.details.text()
    assert not errors
