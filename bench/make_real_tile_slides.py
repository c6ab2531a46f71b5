"""Write benchmark slides laid out like vendor files, from real tissue: tiles cut from the real slides in
../shared/data/slides, repeated over a large level 0.

- ``bench/data/real-aperio.svs``: Aperio's layout (240-px tiles, RGB JPEG, levels at 1, 4, 16, 64 in Aperio's page
  order with a stripped thumbnail, Aperio description with MPP), from CMU-1-Small-Region's pixels;
- ``bench/data/real-ome.ome.tif``: a pyramidal OME-TIFF as QuPath and bfconvert write it (512-px tiles, YCbCr JPEG
  with 2x2 chroma subsampling, levels halving as SubIFDs), from the TCGA slide's pixels.

Level k shows the source shrunk by its downsample (PIL box filter), so every level holds real-looking tissue.
Run: .venv/bin/python bench/make_real_tile_slides.py [--size 40000x30000]
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

DATA = Path(__file__).resolve().parent / "data"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "slides"


def _source(name: str) -> np.ndarray:
    from napari_anonavila.slide import open_slide

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with open_slide(SHARED / name) as s:
            return np.asarray(s.level_arrays[0])


def _tiles(src: np.ndarray, w: int, h: int, tile: int):
    """Row-major tiles of a (h, w) level that repeats ``src`` (mirrored every other time, so seams match)."""
    sh, sw = src.shape[:2]
    big = np.concatenate([src, src[:, ::-1]], axis=1)
    big = np.concatenate([big, big[::-1]], axis=0)  # period (2 sh, 2 sw), continuous at every seam
    for y in range(0, h, tile):
        for x in range(0, w, tile):
            ys = (np.arange(y, y + tile) % (2 * sh))
            xs = (np.arange(x, x + tile) % (2 * sw))
            t = big[ys][:, xs]
            if y + tile > h or x + tile > w:
                t = t.copy()
                t[max(0, h - y) :] = 255
                t[:, max(0, w - x) :] = 255
            yield np.ascontiguousarray(t)


def _shrink(src: np.ndarray, ds: int) -> np.ndarray:
    if ds == 1:
        return src
    im = Image.fromarray(src)
    return np.asarray(im.resize((max(1, src.shape[1] // ds), max(1, src.shape[0] // ds)), Image.Resampling.BOX))


def aperio(path: Path, width: int, height: int, mpp: float = 0.25) -> None:
    import tifffile

    src, tile = _source("cmu-1-small-region.svs"), 240
    opts = {"tile": (tile, tile), "photometric": "rgb", "compression": "jpeg", "compressionargs": {"level": 80},
            "metadata": None}
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for k, ds in enumerate((1, 4, 16, 64)):
            w, h = math.ceil(width / ds), math.ceil(height / ds)
            desc = (f"Aperio Image Library v12.0.16\r\n{width}x{height} [0,0 {width}x{height}] ({tile}x{tile}) "
                    f"JPEG/RGB Q=80|AppMag = 40|MPP = {mpp}") if k == 0 else \
                   f"Aperio Image Library v12.0.16\r\n{width}x{height} -> {w}x{h} - ({tile}x{tile})"
            tif.write(_tiles(_shrink(src, ds), w, h, tile), shape=(h, w, 3), dtype=np.uint8, description=desc,
                      **opts)
            if k == 0:
                thumb = np.ascontiguousarray(_shrink(src, 8)[:768, :768])
                tif.write(thumb, photometric="rgb", compression="jpeg", rowsperstrip=16, metadata=None,
                          description=f"Aperio Image Library v12.0.16\r\n{width}x{height} -> "
                                      f"{thumb.shape[1]}x{thumb.shape[0]} - ")


def ome(path: Path, width: int, height: int, mpp: float = 0.25) -> None:
    import tifffile

    src, tile = _source("tcga-cr-7395-01a-01-ts1.svs"), 512
    n = 1 + max(0, math.ceil(math.log2(max(width, height) / 1024)))
    opts = {"tile": (tile, tile), "photometric": "ycbcr", "subsampling": (2, 2), "compression": "jpeg",
            "compressionargs": {"level": 80}, "dtype": np.uint8}
    res = (1e4 / mpp, 1e4 / mpp)
    meta = {"axes": "YXS", "PhysicalSizeX": mpp, "PhysicalSizeY": mpp, "PhysicalSizeXUnit": "µm",
            "PhysicalSizeYUnit": "µm"}
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tif:
        tif.write(_tiles(src, width, height, tile), shape=(height, width, 3), subifds=n - 1, resolution=res,
                  resolutionunit="CENTIMETER", metadata=meta, **opts)
        for k in range(1, n):
            ds = 2**k
            w, h = math.ceil(width / ds), math.ceil(height / ds)
            tif.write(_tiles(_shrink(src, ds), w, h, tile), shape=(h, w, 3), subfiletype=1,
                      resolution=(res[0] / ds, res[1] / ds), resolutionunit="CENTIMETER", metadata=None, **opts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="40000x30000", help="WIDTHxHEIGHT in level-0 pixels")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    DATA.mkdir(parents=True, exist_ok=True)
    for name, make in (("real-aperio.svs", aperio), ("real-ome.ome.tif", ome)):
        path = DATA / name
        t0 = time.perf_counter()
        tmp = path.with_name(path.name + ".partial")
        make(tmp, w, h)
        tmp.replace(path)
        print(f"{path}: {w} x {h} px, {path.stat().st_size / 2**30:.2f} GiB in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
