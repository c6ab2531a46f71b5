"""Every pyramid layout a lab produces opens with all its levels, its mpp, and pixels equal to the library's own.

Each file is written here with tifffile: OME-TIFF pyramids (SubIFDs, as QuPath and bfconvert write), SubIFD
and multi-page TIFF pyramids, plain tiled and striped TIFFs (compressed and not), Aperio SVS files, and the
vendor layouts OpenSlide reads (written by ``tests/vendor_slides.py``): Leica SCN (a BigTIFF whose first page
holds the collection XML, a macro image and a main image placed inside it), Ventana BIF (iScan and EncodeInfo
XMP, levels named by magnification, tiles numbered in Ventana's serpentine order) and MIRAX (.mrxs beside its
folder of Slidedat.ini, Index.dat and JPEG data). The pixels of random windows at every level must equal
tifffile's (or OpenSlide's) own decoding of the same file. NDPI is tested on the real file in ../shared.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_anonavila.sample import make_tissue
from napari_anonavila.slide import open_slide

from ..vendor_slides import write_bif, write_mrxs, write_scn

MPP = 0.5
RES = {"resolution": (1e4 / MPP, 1e4 / MPP), "resolutionunit": "CENTIMETER"}


def _levels(img: np.ndarray, n: int) -> list[np.ndarray]:
    return [img[:: 2**k, :: 2**k] for k in range(n)]


def _write(path, kind: str, img: np.ndarray) -> tuple[int, tuple[int, int]]:
    """Write ``img`` in the layout ``kind``; returns the number of levels and level 0's (rows, cols)."""
    levels = _levels(img, 3)
    if kind == "scn":
        return 3, write_scn(path, [img[:: 4**k, :: 4**k] for k in range(3)], MPP)
    if kind == "bif":
        return 3, write_bif(path, levels, MPP)
    if kind == "mrxs":
        return 3, write_mrxs(path, img, MPP, n_levels=3)
    if kind == "ome-subifd":
        with tifffile.TiffWriter(path, ome=True) as tif:
            tif.write(levels[0], subifds=2, tile=(256, 256), photometric="rgb", compression="jpeg",
                      metadata={"axes": "YXS", "PhysicalSizeX": MPP, "PhysicalSizeY": MPP}, **RES)
            for lv in levels[1:]:
                tif.write(lv, tile=(256, 256), photometric="rgb", compression="jpeg", subfiletype=1)
    elif kind == "subifd":
        with tifffile.TiffWriter(path) as tif:
            tif.write(levels[0], subifds=2, tile=(256, 256), photometric="rgb", compression="zlib", **RES)
            for lv in levels[1:]:
                tif.write(lv, tile=(256, 256), photometric="rgb", compression="zlib", subfiletype=1)
    elif kind == "multipage":
        with tifffile.TiffWriter(path) as tif:
            for k, lv in enumerate(levels):
                tif.write(lv, tile=(256, 256), photometric="rgb", compression="jpeg", subfiletype=int(k > 0),
                          **(RES if k == 0 else {}))
    elif kind == "tiled-raw":
        tifffile.imwrite(path, img, tile=(256, 256), photometric="rgb", **RES)
    elif kind == "striped-raw":
        tifffile.imwrite(path, img, photometric="rgb", rowsperstrip=64, **RES)
    elif kind == "striped-lzw":
        tifffile.imwrite(path, img, photometric="rgb", rowsperstrip=64, compression="lzw", **RES)
    elif kind in ("svs", "svs-reduced"):  # Aperio's page order (level 0, thumbnail, levels); or levels as reduced
        h, w = img.shape[:2]
        with tifffile.TiffWriter(path) as tif:
            for k, lv in enumerate(levels):
                first = f"{w}x{h} [0,0 {w}x{h}] (256x256) JPEG/RGB Q=85|AppMag = 20|MPP = {MPP}"
                desc = "Aperio Image Library v12.0.16\r\n" + (first if k == 0 else
                                                                f"{w}x{h} -> {lv.shape[1]}x{lv.shape[0]}")
                tif.write(lv, tile=(256, 256), photometric="rgb", compression="jpeg", description=desc,
                          metadata=None, subfiletype=int(k > 0 and kind == "svs-reduced"))
                if k == 0 and kind == "svs":
                    tif.write(levels[-1][::2, ::2], photometric="rgb", compression="jpeg", metadata=None,
                              description=f"Aperio Image Library v12.0.16\r\n{w}x{h} -> thumbnail")
    return (len(levels) if kind not in ("tiled-raw", "striped-raw", "striped-lzw") else 1), img.shape[:2]


class _OpenSlideLevel:
    """OpenSlide's own reading of a level window, RGBA (at a non-integer downsample OpenSlide resamples, and
    the resampled edge pixels of a window are partly transparent)."""

    def __init__(self, path, level):
        import openslide

        self.osr, self.level = openslide.OpenSlide(str(path)), level
        self.ds = self.osr.level_downsamples[level]
        w, h = self.osr.level_dimensions[level]
        self.shape = (h, w, 3)

    def __getitem__(self, key):
        rows, cols = key
        y0, y1, _ = rows.indices(self.shape[0])
        x0, x1, _ = cols.indices(self.shape[1])
        region = self.osr.read_region((round(x0 * self.ds), round(y0 * self.ds)), self.level, (x1 - x0, y1 - y0))
        return np.asarray(region)


def _assert_same_pixels(got: np.ndarray, want: np.ndarray) -> None:
    """Equal RGB; where the reference is RGBA and not opaque, equal to it composited on white (within the
    1-level rounding of OpenSlide's straight-alpha conversion)."""
    if want.shape[-1] == 3:
        np.testing.assert_array_equal(got, want)
        return
    a = want[..., 3:].astype(float)
    opaque = want[..., 3] == 255
    np.testing.assert_array_equal(got[opaque], want[..., :3][opaque])
    on_white = want[..., :3] * a / 255 + 255 - a
    np.testing.assert_allclose(got[~opaque], on_white[~opaque], atol=1.01)


def _reference(path, reader: str, level: int):
    if reader == "openslide":
        return _OpenSlideLevel(path, level)
    with tifffile.TiffFile(path) as tif:
        return tif.series[0].levels[level].asarray()


@pytest.fixture(scope="module")
def image():
    img, _ = make_tissue(1100, seed=4)  # not a multiple of the tile: partial edge tiles
    return img[:1100, :1037]


@pytest.mark.parametrize(("kind", "reader"), [("ome-subifd", "tifffile"), ("subifd", "tifffile"),
                                              ("multipage", "tifffile"), ("tiled-raw", "tifffile"),
                                              ("striped-raw", "tifffile"), ("striped-lzw", "tifffile"),
                                              ("svs", "tifffile"), ("svs-reduced", "openslide"),
                                              ("scn", "openslide"), ("bif", "openslide"), ("mrxs", "openslide")])
def test_layout_opens_with_all_levels_and_exact_pixels(tmp_path, image, kind, reader):
    suffix = (".ome.tif" if kind.startswith("ome") else ".svs" if kind.startswith("svs") else
              {"scn": ".scn", "bif": ".bif", "mrxs": ".mrxs"}.get(kind, ".tif"))
    path = tmp_path / f"s{suffix}"
    n, shape0 = _write(path, kind, image)
    rng = np.random.default_rng(0)
    with open_slide(path) as s:
        assert s.reader == reader and len(s.levels) == n
        assert s.mpp == pytest.approx(MPP)
        assert s.level_shapes[0] == shape0
        for level in range(n):
            ref = _reference(path, reader, level)
            assert ref.shape[:2] == s.level_shapes[level]
            rows, cols = s.level_shapes[level]
            for _ in range(4):
                h, w = rng.integers(1, min(rows, 300)), rng.integers(1, min(cols, 300))
                y, x = rng.integers(0, rows - h + 1), rng.integers(0, cols - w + 1)
                _assert_same_pixels(s.level_arrays[level][y : y + h, x : x + w], ref[y : y + h, x : x + w])
            _assert_same_pixels(np.asarray(s.levels[level][:50, :70]), ref[:50, :70])  # the dask view
        # a region read in level-0 coordinates, partly outside the slide: white there
        out = s.read_region((shape0[1] - 20, shape0[0] - 10), 0, (40, 30))
        _assert_same_pixels(out[:10, :20], _reference(path, reader, 0)[-10:, -20:])
        assert (out[10:] == 255).all() and (out[:, 20:] == 255).all()


@pytest.mark.parametrize(("kind", "vendor", "offset_xy"), [("scn", "leica", (5, 7)), ("bif", "ventana", (0, 0))])
def test_vendor_layouts_place_the_image_and_keep_their_metadata(tmp_path, image, kind, vendor, offset_xy):
    """The written SCN and BIF are what they claim: OpenSlide's level 0 holds the main image's pixels at its
    place (as tifffile decodes that page), with the objective, mpp and associated images."""
    path = tmp_path / f"s.{kind}"
    _write(path, kind, image)
    with open_slide(path) as s, tifffile.TiffFile(path) as tif:
        page = next(p for p in tif.pages if p.shape[:2] == image.shape[:2]).asarray()
        x, y = offset_xy
        np.testing.assert_array_equal(s.read_region((x, y), 0, (image.shape[1], image.shape[0])), page)
        assert s.vendor == vendor and s.objective_power == 20
        assert "macro" in s.associated_images and s.read_associated("macro").ndim == 3


def test_mirax_places_each_camera_image_and_fingerprints_its_data_files(tmp_path, image):
    """The written MRXS is what it claims: each level-0 camera image sits at its grid place (as PIL decodes its
    JPEG); and the slide's identity covers its data folder, so a rewritten data file is a different slide."""
    import io

    from PIL import Image

    path = tmp_path / "s.mrxs"
    _write(path, "mrxs", image)
    data = (tmp_path / "s" / "Data0000.dat").read_bytes()
    first = np.asarray(Image.open(io.BytesIO(data)))  # image 0 of level 0: the top-left 256 x 256
    with open_slide(path) as s:
        assert s.vendor == "mirax" and s.objective_power == 20 and s.mpp == pytest.approx(MPP)
        np.testing.assert_array_equal(s.read_region((0, 0), 0, (256, 256)), first)
        assert (tmp_path / "s" / "Index.dat") in s.files()
        before = s.fingerprint()
    (tmp_path / "s" / "Data0000.dat").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with open_slide(path) as s:
        assert s.fingerprint() != before


def test_a_multichannel_stack_is_refused_clearly(tmp_path):
    from napari_anonavila.errors import SlideReadError

    path = tmp_path / "stack.ome.tif"
    tifffile.imwrite(path, np.zeros((3, 64, 64), np.uint16), metadata={"axes": "CYX"})
    with pytest.raises(SlideReadError, match=r"stack\.ome\.tif"):
        open_slide(path)
