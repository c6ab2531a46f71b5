"""docs/images/localisation-demo.png: ``anonavila localise`` on a slide of the demo's generator (planted regions at
1 um/px, 200-330 um across) scored by the demo model; run from the repo root after ``bash scripts/demo.sh``:
``.venv/bin/python docs/make_localisation_figure.py``."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from napari_anonavila.sample import make_tissue, write_pyramid_tiff

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images" / "localisation-demo.png"
EXE = str(Path(sys.executable).with_name("anonavila"))


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    model = ROOT / "demo-output" / "model.safetensors"
    if not model.is_file():
        raise SystemExit("run 'bash scripts/demo.sh' first (its model.safetensors is used)")
    rgb, planted = make_tissue(2048, 5, n_anomalies=4)
    slide = write_pyramid_tiff(tmp / "planted.tif", rgb, 1.0)
    Image.fromarray((planted[::8, ::8] * 255).astype(np.uint8)).save(tmp / "planted.png")
    subprocess.run([EXE, "-q", "score-slide", str(slide), "--model", str(model), "--out", str(tmp / "r"),
                    "--patch-px", "64"], check=True)
    subprocess.run([EXE, "-q", "localise", str(tmp / "r" / "planted"), "--lesions", str(tmp / "planted.png"),
                    "--out", str(tmp / "loc")], check=True)
    report = json.loads((tmp / "loc" / "localisation.json").read_text())
    print(json.dumps({"patch": report["patch_level"]["pooled"]["score"], "froc": report["lesion_level"]["froc_score"],
                      "sensitivity_at": report["lesion_level"]["sensitivity_at"],
                      "overlap": report["patch_level"]["pooled"].get("overlap_significant")}, indent=1))
    panels = [Image.open(tmp / "loc" / n).convert("RGB") for n in ("roc.png", "pr.png", "froc.png")]
    h = max(p.height for p in panels)
    out = Image.new("RGB", (sum(p.width for p in panels), h), "white")
    x = 0
    for p in panels:
        out.paste(p, (x, 0))
        x += p.width
    out.save(OUT)
    print(OUT)


if __name__ == "__main__":
    main()
