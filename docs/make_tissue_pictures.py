"""docs/images/tissue-masks.png: the tissue mask's outline over slides with pen ink, a pale section, and the real
slides in ../shared (H&E, IHC, fluorescence). Run: .venv/bin/python docs/make_tissue_pictures.py
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from napari_anonavila.grid.tissue import tissue_mask
from napari_anonavila.sample import add_pen_marks, make_tissue, write_pyramid_tiff
from napari_anonavila.slide import open_slide

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "shared" / "data" / "slides"
SIDE = 360


def panel(path: Path, title: str) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = open_slide(path)
        tm = tissue_mask(s)
        thumb, _ = s.thumbnail(1024)
    s.close()
    im = Image.fromarray(thumb)
    im.thumbnail((SIDE, SIDE - 40))
    mask = np.asarray(Image.fromarray(tm.mask.astype(np.uint8) * 255).resize(im.size)) > 127
    edge = mask & ~ndimage.binary_erosion(mask, iterations=2, border_value=1)
    img = np.array(im)
    img[edge] = (0, 200, 255)
    im = Image.fromarray(img)
    out = Image.new("RGB", (SIDE, SIDE), "white")
    out.paste(im, ((SIDE - im.width) // 2, 36))
    d = ImageDraw.Draw(out)
    d.text((6, 4), title, fill="black")
    d.text((6, 18), f"{tm.kind}, tissue {tm.fraction:.0%}, ink {tm.ink_fraction:.1%}", fill=(60, 60, 60))
    return out


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    rgb, _ = make_tissue(2048, seed=21)
    add_pen_marks(rgb, seed=4, width_px=24)
    inked = write_pyramid_tiff(tmp / "inked.tif", rgb, mpp=2.0)
    pale, _ = make_tissue(2048, seed=8)
    pale = pale.astype(np.float32)
    pale[:, :1024] = 244 * 0.65 + pale[:, :1024] * 0.35
    faint = write_pyramid_tiff(tmp / "pale.tif", pale.astype(np.uint8), mpp=2.0)
    items = [(inked, "green, blue and black marker"), (faint, "left half at 35% of the stain")]
    for name, title in (("cmu-1-small-region.svs", "H&E (Aperio SVS)"), ("os-2-ki67-crop.ome.tif", "IHC Ki-67 crop"),
                        ("fluorescence-dapi-40x.ndpi", "fluorescence (NDPI)"),
                        ("tcga-cr-7395-01a-01-ts1.svs", "H&E (TCGA, J2K)"),
                        ("kidney-48-5.tif", "IHC kidney, mostly glass")):
        if (SHARED / name).exists():
            items.append((SHARED / name, title))
    panels = [panel(p, t) for p, t in items]
    cols = 3
    rows = (len(panels) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * SIDE, rows * SIDE), "white")
    for i, p in enumerate(panels):
        sheet.paste(p, ((i % cols) * SIDE, (i // cols) * SIDE))
    sheet.save(HERE / "images" / "tissue-masks.png")
    print(HERE / "images" / "tissue-masks.png")


if __name__ == "__main__":
    main()
