"""Make ``authors_slide_scores.json``: slide scores of random patch grids by the authors' own tester.

Run once with a checkout of the authors' code (github.com/strue02/ICCV2025_Ano-NAViLa, unmodified) and an
environment with openslide-python, pandas, scipy and tifffile:

    python tests/data/make_authors_slide_scores.py /path/to/ICCV2025_Ano-NAViLa tests/data/authors_slide_scores.json

For each seeded random case it writes a blank tiled TIFF of the case's size (OpenSlide reads only its size),
a ``{slide}_Ascores.csv`` of patches on the level-0 grid (partial edge rows and columns included, as a patch
extractor that pads would give), and calls their ``engine.tester.draw_heatmap`` (scale factor = patch size, as in
the paper), ``WSI_level_Ascore_erosion_true`` and ``WSI_level_Ascore_erosion_false``. Nothing of their code is
copied; the JSON holds only the inputs and their outputs.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

N_CASES = 48


def main(authors_repo: str, out: str) -> None:
    import tifffile

    sys.path.insert(0, authors_repo)
    from engine.tester import WSI_level_Ascore_erosion_false, WSI_level_Ascore_erosion_true, draw_heatmap

    rng = np.random.default_rng(20251017)
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(N_CASES):
            p = int(rng.choice([128, 256, 512]))
            w, h = (int(v) for v in rng.integers(p + 1, 18 * p, size=2))
            sid = f"case_{i:02d}_{w}x{h}"
            cols, rows = -(-w // p), -(-h // p)  # partial edge cells included
            keep = rng.random((rows, cols)) < rng.uniform(0.3, 1.0)
            keep[rng.integers(rows), rng.integers(cols)] = True
            yy, xx = np.nonzero(keep)
            scores = [float(f"{v:.6e}") for v in rng.gamma(2.0, 1e-3, size=len(yy))]
            if rng.random() < 0.5:  # the highest score in a partial edge cell, where the two readings differ most
                edge = np.nonzero((xx == cols - 1) | (yy == rows - 1))[0]
                if len(edge):
                    scores[int(edge[0])] = float(f"{max(scores) * 1.5:.6e}")
            patches = [[int(x) * p, int(y) * p, s] for y, x, s in zip(yy, xx, scores, strict=True)]
            slide = Path(tmp) / f"{sid}.tif"
            tifffile.imwrite(slide, np.zeros((h, w, 3), np.uint8), tile=(128, 128), compression="zlib")
            csv = Path(tmp) / f"{sid}_Ascores.csv"
            csv.write_text("patch_name,Ascore\n" + "".join(f"{sid}_{x}_{y}_200.png,{s!r}\n" for x, y, s in patches))
            eroded, ascores = draw_heatmap(str(slide), str(csv), p, scale_factor=p)
            cases.append({"slide_id": sid, "width": w, "height": h, "patch_size": p, "patches": patches,
                          "erosion_true": [float(v) for v in WSI_level_Ascore_erosion_true(eroded)],
                          "erosion_false": [float(v) for v in WSI_level_Ascore_erosion_false(ascores)]})
    doc = {"made_by": "tests/data/make_authors_slide_scores.py with the authors' engine/tester.py",
           "columns": {"erosion_true": ["Ascore_max", "Ascore_top1pct"],
                       "erosion_false": ["Ascore_max", "Ascore_top1pct"]},
           "cases": cases}
    Path(out).write_text(json.dumps(doc, separators=(",", ":")) + "\n", encoding="utf-8")
    differ = sum(c["erosion_false"] != c["erosion_true"] for c in cases)
    print(f"wrote {len(cases)} cases to {out} ({differ} where erosion changes a score)")


if __name__ == "__main__":
    main(*sys.argv[1:3])
