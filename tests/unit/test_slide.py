"""Slide readers on the real slides in ../shared/data/slides: metadata, lazy reads equal library reads, errors."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest

from napari_anonavila.errors import MissingMppWarning, SlideReadError
from napari_anonavila.slide import composite_on_white, open_slide

from ..conftest import shared_path


def _open(name, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingMppWarning)
        return open_slide(shared_path("slides", name), **kw)


@pytest.mark.parametrize(("name", "reader", "n_levels", "mpp"), [
    ("cmu-1-small-region.svs", "tifffile", 1, 0.499),
    ("tcga-cr-7395-01a-01-ts1.svs", "tifffile", 2, None),
    ("fluorescence-dapi-40x.ndpi", "openslide", 7, 0.2282),
    ("os-2-ki67-crop.ome.tif", "tifffile", 1, 0.2271),
    ("kidney-48-5.tif", "tifffile", 1, None),
], ids=lambda v: str(v))
def test_metadata(name, reader, n_levels, mpp):
    with _open(name) as s:
        assert s.reader == reader
        assert len(s.levels) == len(s.level_shapes) == len(s.level_downsamples) == n_levels
        assert s.mpp == (pytest.approx(mpp, abs=1e-4) if mpp else None)
        for lvl, shape in zip(s.levels, s.level_shapes, strict=False):
            assert lvl.shape == (*shape, 3) and lvl.dtype == np.uint8
        assert all(a > b for a, b in zip(s.level_shapes[0], s.level_shapes[-1], strict=False)) or n_levels == 1
        assert s.reads == 0  # opening reads no pixels


def test_non_integer_downsample_and_vendor():
    with _open("tcga-cr-7395-01a-01-ts1.svs") as s:
        assert s.level_downsamples[1] == pytest.approx(2.0005, abs=1e-4)
        assert s.vendor == "aperio"
        assert "thumbnail" in s.associated_images
        assert s.read_associated("thumbnail").shape[2] == 3


def test_missing_mpp_warns_once_and_accepts_user_mpp():
    with pytest.warns(MissingMppWarning, match="no microns-per-pixel"):
        s = open_slide(shared_path("slides", "tcga-cr-7395-01a-01-ts1.svs"))
    s.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = open_slide(shared_path("slides", "tcga-cr-7395-01a-01-ts1.svs"), mpp=0.5)
    assert s.mpp == 0.5 and s.mpp_source == "user"
    s.close()


@pytest.mark.parametrize("name", ["cmu-1-small-region.svs", "fluorescence-dapi-40x.ndpi",
                                  "tcga-cr-7395-01a-01-ts1.svs"])
def test_lazy_reads_equal_openslide(name):
    import openslide

    rng = np.random.default_rng(1)
    with _open(name) as s, openslide.OpenSlide(str(s.path)) as osr:
        for level, ds in enumerate(s.level_downsamples):
            rows, cols = s.level_shapes[level]
            ch, cw = s.levels[level].chunksize[:2]
            for _ in range(4):
                if float(ds).is_integer():  # any window
                    h, w = int(rng.integers(1, min(300, rows))), int(rng.integers(1, min(300, cols)))
                    y, x = int(rng.integers(0, rows - h + 1)), int(rng.integers(0, cols - w + 1))
                elif s.reader == "tifffile":  # the level's own pixels (OpenSlide resamples at fractional offsets)
                    continue  # compared with the file's decoded level below
                else:  # OpenSlide resamples at fractional offsets: compare within one chunk read
                    y = int(rng.integers(0, rows // ch)) * ch
                    x = int(rng.integers(0, cols // cw)) * cw
                    h, w = min(ch, rows - y), min(cw, cols - x)
                ours = s.levels[level][y : y + h, x : x + w].compute()
                ref = composite_on_white(np.asarray(osr.read_region((round(x * ds), round(y * ds)), level, (w, h))))
                np.testing.assert_array_equal(ours, ref, err_msg=f"{name} level {level} at x={x} y={y}")
    if s.reader == "tifffile":  # Aperio SVS: every level equals the file's own decoded level
        import tifffile

        with tifffile.TiffFile(s.path) as tif, _open(name) as s2:
            for level, lvl in enumerate(tif.series[0].levels):
                np.testing.assert_array_equal(np.asarray(s2.level_arrays[level]), lvl.asarray().reshape(
                    s2.level_shapes[level] + (3,)), err_msg=f"{name} level {level}")


@pytest.mark.parametrize("name", ["os-2-ki67-crop.ome.tif", "kidney-48-5.tif"])
def test_lazy_reads_equal_tifffile(name):
    import tifffile

    rng = np.random.default_rng(2)
    full = tifffile.imread(shared_path("slides", name))
    with _open(name) as s:
        rows, cols = s.level_shapes[0]
        for _ in range(6):
            h, w = int(rng.integers(1, 400)), int(rng.integers(1, 400))
            y, x = int(rng.integers(0, rows - h)), int(rng.integers(0, cols - w))
            np.testing.assert_array_equal(s.levels[0][y : y + h, x : x + w].compute(), full[y : y + h, x : x + w])
            np.testing.assert_array_equal(s.read_region((x, y), 0, (w, h)), full[y : y + h, x : x + w])


def test_read_region_pads_outside_with_white():
    with _open("os-2-ki67-crop.ome.tif") as s:
        w, h = s.dimensions_xy
        r = s.read_region((w - 10, h - 10), 0, (30, 30))
        assert r.shape == (30, 30, 3)
        assert (r[10:, :] == 255).all() and (r[:, 10:] == 255).all()


def test_single_strip_tiff_is_not_read_whole():
    with _open("kidney-48-5.tif") as s:
        assert s.levels[0].numblocks[:2] != (1, 1)  # chunked lazily although the file is one strip


@pytest.mark.parametrize("name", ["broken.svs"])
def test_corrupt_file_error_names_it(name):
    with pytest.raises(SlideReadError, match=name):
        open_slide(shared_path("slides", name))


def test_truncated_and_missing_files(tmp_path):
    src = shared_path("slides", "cmu-1-small-region.svs")
    data = src.read_bytes()
    trunc = tmp_path / "truncated.svs"
    trunc.write_bytes(data[: len(data) // 3])
    with pytest.raises(SlideReadError, match=r"truncated\.svs"), open_slide(trunc) as s:
        s.levels[0].compute()
    with pytest.raises(SlideReadError, match="no such slide"):
        open_slide(tmp_path / "nope.svs")
    txt = tmp_path / "notes.tif"
    txt.write_text("hello")
    with pytest.raises(SlideReadError, match=r"notes\.tif"):
        open_slide(txt)


def test_reads_are_thread_safe():
    from concurrent.futures import ThreadPoolExecutor

    with _open("cmu-1-small-region.svs") as s:
        ref = s.read_region((100, 200), 0, (64, 64))
        with ThreadPoolExecutor(8) as pool:
            outs = list(pool.map(lambda _: s.read_region((100, 200), 0, (64, 64)), range(32)))
        assert all(np.array_equal(o, ref) for o in outs)
        assert s.reads == 33


def test_copy_keeps_working(tmp_path):
    dst = tmp_path / "copy.svs"
    shutil.copy(shared_path("slides", "cmu-1-small-region.svs"), dst)
    with open_slide(dst) as a, open_slide(shared_path("slides", "cmu-1-small-region.svs")) as b:
        assert a.fingerprint() == b.fingerprint()


def test_tile_cache_keeps_tiles_while_reads_reuse_them():
    from napari_anonavila.slide.tifffile_reader import _TileCache

    tile = np.zeros((16, 16, 3), np.uint8)
    cache = _TileCache(budget=64 * tile.nbytes)  # room for 64 tiles

    def read(key):
        if cache.get(key) is None:
            cache.put(key, tile)

    for r in range(8):  # grid order: each tile is met by several neighbouring patches
        for c in range(40):
            for _ in range(3):
                read((0, r, c))
    assert cache.keeping and cache.size == 64 * tile.nbytes
    rng = np.random.default_rng(0)
    for _ in range(600):  # random order over 100,000 tiles: none is met twice
        read((0, *rng.integers(0, 316, 2)))
    assert not cache.keeping
    kept = dict(cache._tiles)
    for _ in range(100):
        read((0, *rng.integers(0, 316, 2)))
    assert dict(cache._tiles) == kept  # nothing new is kept: no cost beyond a key
    for c in range(60):  # grid order again: reuse is seen through the keys of tiles not kept, and keeping resumes
        for _ in range(3):
            read((1, 0, c))
    assert cache.keeping and cache.get((1, 0, 59)) is not None


def test_tile_cache_is_sized_to_the_slide(tmp_path):
    """A small slide's cache holds what grid-order reads reuse (four tile rows; at least 32 MiB), not the 96 MiB a
    100,000-px-wide slide may use: peak memory does not climb to the cap on every slide."""
    from napari_anonavila.sample import make_tissue, write_pyramid_tiff

    img, _ = make_tissue(2048, seed=3, n_anomalies=0)
    path = write_pyramid_tiff(tmp_path / "small.tif", img, mpp=0.5)
    with open_slide(path) as s:
        cache = s._levels[0].cache
        assert cache.budget == 32 << 20
        for y in range(0, 2048 - 224, 224):  # grid order over the whole slide: 9 MiB of decoded pixels
            for x in range(0, 2048 - 224, 224):
                np.testing.assert_array_equal(s.read_region((x, y), 0, (224, 224)), img[y : y + 224, x : x + 224])
        assert 0 < cache.size <= cache.budget


def test_reads_work_in_a_forked_child_after_parallel_reads():
    import multiprocessing as mp

    with _open("tcga-cr-7395-01a-01-ts1.svs") as s:
        ref = s.read_region((300, 300), 0, (700, 700))  # several tiles: the decode pool is running
    ctx = mp.get_context("fork")
    with ctx.Pool(1) as pool:
        got = pool.apply_async(_read_in_child, ((300, 300), (700, 700))).get(timeout=60)
    np.testing.assert_array_equal(got, ref)


def _read_in_child(xy, size):
    with _open("tcga-cr-7395-01a-01-ts1.svs") as s:
        return s.read_region(xy, 0, size)


@pytest.mark.parametrize("f", [2, 3, 16, 17])
def test_thumbnail_block_means_are_rounded_means(f):
    from napari_anonavila.slide.pixels import block_mean

    img = np.random.default_rng(f).integers(0, 256, (5 * f + 3, 7 * f + 1, 3), dtype=np.uint8)
    padded = np.pad(img, ((0, -img.shape[0] % f), (0, -img.shape[1] % f), (0, 0)), mode="edge").astype(float)
    ref = padded.reshape(padded.shape[0] // f, f, padded.shape[1] // f, f, 3).mean(axis=(1, 3))
    np.testing.assert_array_equal(block_mean(img, f), np.floor(ref + 0.5).astype(np.uint8))
