"""Truncated and bit-flipped copies of the real slides, and random command lines: no crash, no hang."""

from __future__ import annotations

import signal
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_anonavila.errors import SlideReadError
from napari_anonavila.slide import open_slide

from ..conftest import shared_path

NAMES = ["cmu-1-small-region.svs", "tcga-cr-7395-01a-01-ts1.svs", "fluorescence-dapi-40x.ndpi",
         "os-2-ki67-crop.ome.tif", "kidney-48-5.tif"]


class _Timeout(Exception):
    pass


def _alarm(seconds: int):
    def handler(signum, frame):
        raise _Timeout(f"no result within {seconds} s")

    signal.signal(signal.SIGALRM, handler)
    signal.alarm(seconds)


@pytest.fixture(scope="module")
def originals():
    return {n: shared_path("slides", n).read_bytes() for n in NAMES}


@settings(max_examples=25)
@given(name=st.sampled_from(NAMES), cut=st.floats(0.0, 1.0), flips=st.lists(st.integers(0, 2**40), max_size=6))
def test_damaged_slides(tmp_path_factory, originals, name, cut, flips):
    data = bytearray(originals[name][: max(1, int(len(originals[name]) * cut))])
    for f in flips:
        data[f % len(data)] ^= 1 << (f % 8)
    path = tmp_path_factory.mktemp("slide") / name
    path.write_bytes(bytes(data))
    _alarm(60)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            slide = open_slide(path)
        with slide:
            w, h = slide.dimensions_xy
            for lvl in range(len(slide.levels)):
                region = slide.read_region((w // 3, h // 3), lvl, (64, 64))
                assert region.shape == (64, 64, 3) and region.dtype == np.uint8
            slide.thumbnail(128)
    except SlideReadError as err:
        assert name in str(err)
    finally:
        signal.alarm(0)


TOKENS = ["slide-scores", "evaluate", "export", "--scores", "--patch-size", "--labels", "--score-column", "--out",
          "--overwrite", "--formats", "0", "-3", "256", "x", "", "--top-k", "nan", "/nonexistent", "--n-boot", "1"]


@settings(max_examples=60)
@given(st.lists(st.sampled_from(TOKENS), min_size=0, max_size=8))
def test_random_command_lines(tmp_path_factory, capsys, argv):
    from napari_anonavila.cli import main

    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own usage errors
        code = exit_.code
    assert code in (0, 2)
    err = capsys.readouterr().err
    assert "Traceback" not in err
