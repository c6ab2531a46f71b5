"""Writers of the vendor slide layouts OpenSlide reads, for tests: Leica SCN and Ventana BIF (TIFFs written with
tifffile, with the vendor's XML) and 3DHISTECH MIRAX (a .mrxs file beside a folder of Slidedat.ini, Index.dat and
a JPEG data file). Each is the smallest file OpenSlide 4 accepts as that vendor's, with real JPEG tiles, several
levels, an mpp and an objective power; the formats are described at openslide.org/formats.
"""

from __future__ import annotations

import io
import struct
import uuid
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image


def _xmp(text: str) -> list[tuple]:
    return [(700, 1, len(text.encode()), text.encode(), True)]  # XMLPacket, bytes


def write_scn(path, levels: list[np.ndarray], mpp: float) -> tuple[int, int]:
    """Leica SCN: the main image sits 5 x 7 px inside the collection, whose macro image is page 0 (which also
    holds the XML); levels are 4x apart. Returns level 0's (rows, cols): the whole collection."""
    nm = mpp * 1000  # Leica's positions are in nanometres
    (h, w), off = levels[0].shape[:2], (5, 7)
    cx, cy = round((w + 10) * nm), round((h + 14) * nm)

    def image(name, dims, view, objective):
        return (f'<image name="{name}"><creationDate>2026-11-28T00:00:00.00Z</creationDate>'
                '<device model="Leica SCN400;Leica SCN" version="1.5"/>'
                f'<pixels sizeX="{dims[0][0]}" sizeY="{dims[0][1]}">'
                + "".join(f'<dimension sizeX="{x}" sizeY="{y}" r="{r}" ifd="{ifd}"/>' for r, (x, y, ifd) in
                          enumerate(dims))
                + f'</pixels><view sizeX="{view[0]}" sizeY="{view[1]}" offsetX="{view[2]}" offsetY="{view[3]}" '
                'spacingZ="0"/><scanSettings><objectiveSettings><objective>'
                f"{objective}</objective></objectiveSettings><illuminationSettings><numericalAperture>0.5"
                "</numericalAperture><illuminationSource>brightfield</illuminationSource></illuminationSettings>"
                "</scanSettings></image>")

    main = [(lv.shape[1], lv.shape[0], k + 1) for k, lv in enumerate(levels)]
    xml = ('<?xml version="1.0" encoding="utf-8"?><scn xmlns="http://www.leica-microsystems.com/scn/2010/10/01">'
           f'<collection name="synthetic" sizeX="{cx}" sizeY="{cy}"><barcode>synthetic</barcode>'
           + image("macro", [(64, 64, 0)], (cx, cy, 0, 0), 1.25)
           + image("main", main, (round(w * nm), round(h * nm), round(off[0] * nm), round(off[1] * nm)), 20)
           + "</collection></scn>")
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(np.full((64, 64, 3), 230, np.uint8), tile=(64, 64), photometric="rgb", compression="jpeg",
                  description=xml, metadata=None)
        for lv in levels:
            um = mpp * h / lv.shape[0]
            tif.write(lv, tile=(256, 256), photometric="rgb", compression="jpeg", metadata=None,
                      resolution=(1e4 / um, 1e4 / um), resolutionunit="CENTIMETER")
    return h + 14, w + 10


def write_bif(path, levels: list[np.ndarray], mpp: float) -> tuple[int, int]:
    """Ventana BIF: page 0 is the label with the iScan XMP; level 0 carries the EncodeInfo XMP (one area, its
    tiles joined without overlap, numbered from the bottom row in a serpentine). Returns level 0's (rows, cols):
    whole tiles."""
    t = 256
    h, w = levels[0].shape[:2]
    rows, cols = -(-h // t), -(-w // t)

    def number(col, row_from_bottom):
        return row_from_bottom * cols + (col if row_from_bottom % 2 == 0 else cols - 1 - col) + 1

    joints = [f'<TileJointInfo FlagJoined="1" Confidence="100" Direction="{d}" Tile1="{number(c, r)}" '
              f'Tile2="{number(c + (d == "RIGHT"), r + (d == "UP"))}" OverlapX="0" OverlapY="0"/>'
              for r in range(rows) for c in range(cols) for d in ("RIGHT", "UP")
              if (d == "RIGHT" and c + 1 < cols) or (d == "UP" and r + 1 < rows)]
    encode = ('<?xml version="1.0" encoding="utf-8"?><EncodeInfo Ver="2"><SlideStitchInfo>'
              f'<ImageInfo AOIScanned="1" AOIIndex="0" Width="{t}" Height="{t}" NumRows="{rows}" NumCols="{cols}" '
              'Pos-X="0" Pos-Y="0">' + "".join(joints) + '</ImageInfo></SlideStitchInfo><AoiOrigin>'
              '<AOI0 OriginX="0" OriginY="0"/></AoiOrigin></EncodeInfo>')
    iscan = f'<?xml version="1.0" encoding="utf-8"?><iScan Z-layers="1" Magnification="20" ScanRes="{mpp}"/>'
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(np.full((64, 128, 3), 200, np.uint8), photometric="rgb", description="Label Image",
                  metadata=None, extratags=_xmp(iscan))
        tif.write(levels[-1][::2, ::2], photometric="rgb", description="Thumbnail", metadata=None)
        for k, lv in enumerate(levels):
            tif.write(lv, tile=(t, t), photometric="rgb", compression="jpeg", metadata=None,
                      description=f"level={k} mag={20 / 2**k:g} quality=90", extratags=_xmp(encode) if k == 0 else [])
    return rows * t, cols * t


def write_mrxs(path, img: np.ndarray, mpp: float, *, n_levels: int = 3, tile: int = 256) -> tuple[int, int]:
    """MIRAX: level-0 camera images of ``tile`` px on a grid with no overlap (one image per camera position),
    each further level 2 x 2 images of the one below shrunk into one; a macro image. Returns level 0's (rows,
    cols): whole images, the slide padded with white."""
    path = Path(path)
    folder = path.with_suffix("")
    folder.mkdir()
    path.write_bytes(b"")
    h, w = img.shape[:2]
    rows, cols = -(-h // tile), -(-w // tile)
    full = np.full((rows * tile, cols * tile, 3), 255, np.uint8)
    full[:h, :w] = img
    slide_id = str(uuid.UUID(int=20261128))

    def jpeg(a: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="JPEG", quality=90)
        return buf.getvalue()

    data, records = bytearray(), []  # records per level: (image index on the level-0 grid, offset, length)
    for k in range(n_levels):
        f = 2**k
        level = full if f == 1 else full.reshape(rows * tile // f, f, cols * tile // f, f, 3).mean(
            axis=(1, 3)).round().astype(np.uint8)
        level_records = []
        for y in range(0, rows, f):
            for x in range(0, cols, f):
                image = np.full((tile, tile, 3), 255, np.uint8)
                part = level[y * tile // f : y * tile // f + tile, x * tile // f : x * tile // f + tile]
                image[: part.shape[0], : part.shape[1]] = part
                encoded = jpeg(image)
                level_records.append((y * cols + x, len(data), len(encoded)))
                data += encoded
        records.append(level_records)
    macro = jpeg(np.full((64, 128, 3), 220, np.uint8))
    macro_at = len(data)
    data += macro
    (folder / "Data0000.dat").write_bytes(bytes(data))

    # Index.dat: version and slide id; the hierarchical root (a pointer per zoom level to a list of data pages of
    # (image index, offset, length, file number) records); the non-hierarchical root (one record: the macro)
    head = b"01.02" + slide_id.encode()
    hier_table = len(head) + 8
    pos = hier_table + 4 * n_levels
    level_heads = [pos + 8 * k for k in range(n_levels)]
    pos += 8 * n_levels
    pages = []
    for level_records in records:
        pages.append(pos)
        pos += 8 + 16 * len(level_records)
    nonhier_table = pos
    macro_head = nonhier_table + 4
    macro_page = macro_head + 8
    out = bytearray(head) + struct.pack("<ii", hier_table, nonhier_table)
    out += struct.pack(f"<{n_levels}i", *level_heads)
    for page in pages:
        out += struct.pack("<ii", 0, page)
    for level_records in records:
        out += struct.pack("<ii", len(level_records), 0)
        for index, offset, length in level_records:
            out += struct.pack("<iiii", index, offset, length, 0)
    out += struct.pack("<i", macro_head) + struct.pack("<ii", 0, macro_page)
    out += struct.pack("<iiii", 1, 0, 0, 0) + struct.pack("<iii", macro_at, len(macro), 0)
    (folder / "Index.dat").write_bytes(bytes(out))

    ini = ["[GENERAL]", "SLIDE_VERSION=01.03", f"SLIDE_ID={slide_id}", f"IMAGENUMBER_X={cols}",
           f"IMAGENUMBER_Y={rows}", "OBJECTIVE_MAGNIFICATION=20", "CameraImageDivisionsPerSide=1", "",
           "[HIERARCHICAL]", "HIER_COUNT=1", "NONHIER_COUNT=1", "INDEXFILE=Index.dat",
           "HIER_0_NAME=Slide zoom level", f"HIER_0_COUNT={n_levels}"]
    for k in range(n_levels):
        ini += [f"HIER_0_VAL_{k}=ZoomLevel_{k}", f"HIER_0_VAL_{k}_SECTION=LAYER_0_LEVEL_{k}_SECTION"]
    ini += ["NONHIER_0_NAME=Scan data layer", "NONHIER_0_COUNT=1", "NONHIER_0_VAL_0=ScanDataLayer_SlideThumbnail",
            "NONHIER_0_VAL_0_SECTION=NONHIERLAYER_0_LEVEL_0_SECTION", "", "[DATAFILE]", "FILE_COUNT=1",
            "FILE_0=Data0000.dat", "", "[NONHIERLAYER_0_LEVEL_0_SECTION]", "THUMBNAIL_IMAGE_TYPE=JPEG"]
    for k in range(n_levels):
        ini += ["", f"[LAYER_0_LEVEL_{k}_SECTION]", "OVERLAP_X=0", "OVERLAP_Y=0",
                f"MICROMETER_PER_PIXEL_X={mpp * 2**k}", f"MICROMETER_PER_PIXEL_Y={mpp * 2**k}", "IMAGE_FORMAT=JPEG",
                "IMAGE_FILL_COLOR_BGR=16777215", f"DIGITIZER_WIDTH={tile}", f"DIGITIZER_HEIGHT={tile}",
                f"IMAGE_CONCAT_FACTOR={int(k > 0)}"]
    (folder / "Slidedat.ini").write_text("\n".join(ini) + "\n")
    return rows * tile, cols * tile
