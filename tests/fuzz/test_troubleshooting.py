"""docs/troubleshooting.md stays true: every row is triggered here and its message checked against the table."""

from __future__ import annotations

import pickle
import re
import resource
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from ..conftest import REPO, shared_path

DOC = REPO / "docs" / "troubleshooting.md"


def _rows() -> dict[str, str]:
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] not in ("id", "---") and cells[2].startswith("`"):
            rows[cells[0]] = cells[2].strip("`")
    return rows


def _pattern(message: str) -> re.Pattern:
    return re.compile(".*".join(re.escape(part) for part in message.split("…")), re.S)


def _error(fn) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fn()
        except Exception as err:
            return str(err)
    raise AssertionError("no error raised")


def _warning(fn) -> str:
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        fn()
    assert rec, "no warning"
    return " ".join(str(r.message) for r in rec)


def _det():
    from napari_anonavila.detector import Detector
    from napari_anonavila.training import TrainConfig

    d = Detector.create("demo")
    d.fit(torch.nn.functional.normalize(torch.randn(10, d.embed_dim), dim=1), config=TrainConfig(batch_size=5))
    return d


def _official(tmp, vlm=True, bad_shape=False):
    from napari_anonavila.head import MLP

    state = {f"MLP.{k}": v for k, v in MLP(16).state_dict().items()}
    state.update(normal_text_embs=torch.randn(92, 16), abnormal_text_embs=torch.randn(48, 16),
                 normal_img_normal_text_centroid=torch.randn(1, 4), normal_img_abnormal_text_centroid=torch.randn(1, 4))
    if vlm:
        state["VLM.logit_scale"] = torch.tensor(4.6)
    if bad_shape:
        state["MLP.linear2.weight"] = torch.randn(3, 3)
    p = tmp / "official.pth"
    torch.save({"model_state": state}, p)
    return p


def _cases(tmp: Path) -> dict:
    from napari_anonavila.backends import get_backend
    from napari_anonavila.detector import Detector
    from napari_anonavila.export.bundle import check_provenance
    from napari_anonavila.export.geojson import read_geojson
    from napari_anonavila.export.tables import read_csv, write_csv
    from napari_anonavila.grid import make_grid
    from napari_anonavila.patches import parse_patch_name
    from napari_anonavila.slide import open_slide
    from napari_anonavila.terms import load_pool
    from napari_anonavila.training import TrainConfig

    def slide(name, **kw):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return open_slide(shared_path("slides", name), **kw)

    def write(name, data):
        p = tmp / name
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
        return p

    def bad_pickle():
        p = tmp / "evil.pth"
        p.write_bytes(pickle.dumps({"model_state": print}))
        return Detector.from_official_checkpoint(p)

    def other_backend():
        ck = _det().save(tmp / "demo.safetensors", overwrite=True)
        from napari_anonavila.backends.demo import write_demo_weights

        w = write_demo_weights(tmp / "other.safetensors", seed=3)
        return Detector.load(ck, backend=f"open_clip:anonavila-demo@{w}")

    def conch_missing():
        saved = {k: sys.modules.get(k) for k in ("conch", "conch.open_clip_custom")}
        sys.modules["conch.open_clip_custom"] = None
        try:
            return get_backend(f"conch:{write('w.bin', b'x')}")
        finally:
            for k, v in saved.items():
                if v is None:
                    sys.modules.pop(k, None)
                else:
                    sys.modules[k] = v

    def unreadable_patches():
        d = tmp / "patches"
        d.mkdir(exist_ok=True)
        src = shared_path("patches", "crc_val_he_7k")
        for p in sorted(src.glob("*.png"))[:3]:
            (d / p.name).write_bytes(p.read_bytes())
        (d / "broken.png").write_bytes(b"no")
        return Detector.create("demo").embed(d)

    def nan_embeddings():
        x = np.ones((3, 64), np.float32)
        x[1, 0] = np.nan
        return _det().score_embeddings(x)

    def other_slide():
        gj = write("x.geojson", '{"type": "FeatureCollection", "features": []}')
        write("x.provenance.json", '{"slide": {"path": "/a/other.svs", "fingerprint_sha256": "abc"}}')
        return check_provenance(gj, slide_fingerprint="def")

    def disk_full():
        csvf = write("s.csv", "patch_name,Ascore\n" + "".join(f"s_{i * 256}_0_1.png,0.{i}\n" for i in range(50)))

        def limit():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (20, 20))

        exe = str(Path(sys.executable).parent / "anonavila")
        out = subprocess.run([exe, "slide-scores", "--scores", str(csvf), "--patch-size", "256", "--out",
                              str(tmp / "big.csv")], capture_output=True, text=True, preexec_fn=limit)
        assert out.returncode == 2
        return out.stderr

    return {
        "slide-corrupt": lambda: _error(lambda: open_slide(shared_path("slides", "broken.svs"))),
        "slide-missing": lambda: _error(lambda: open_slide(tmp / "none.svs")),
        "slide-no-mpp": lambda: _warning(lambda: open_slide(shared_path("slides", "kidney-48-5.tif")).close()),
        "patch-um-no-mpp": lambda: _error(lambda: make_grid(slide("kidney-48-5.tif"), patch_um=128)),
        "patch-too-large": lambda: _error(lambda: make_grid(slide("kidney-48-5.tif"), patch_px=4000)),
        "no-tissue": lambda: _warning(lambda: make_grid(slide("kidney-48-5.tif"))),
        "terms-no-header": lambda: _error(lambda: load_pool(write("t.csv", "Terms\na\n"))),
        "terms-empty": lambda: _error(lambda: load_pool(write("t.txt", "\n"))),
        "terms-duplicates": lambda: _warning(lambda: load_pool(write("d.txt", "a\nA\n"))),
        "terms-encoding": lambda: _error(lambda: load_pool(write("l.txt", b"caf\xe9"))),
        "checkpoint-not-ours": lambda: _error(lambda: Detector.load(write("n.safetensors", b"garbage"))),
        "checkpoint-other-backend": lambda: _error(other_backend),
        "official-code": lambda: _error(bad_pickle),
        "official-no-scale": lambda: _error(lambda: Detector.from_official_checkpoint(_official(tmp, vlm=False))),
        "official-shapes": lambda: _error(lambda: Detector.from_official_checkpoint(_official(tmp, bad_shape=True))),
        "weights-missing": lambda: _error(lambda: get_backend(f"open_clip:ViT-B-16@{tmp / 'none.safetensors'}")),
        "conch-missing": lambda: _error(conch_missing),
        "patch-name": lambda: _error(lambda: parse_patch_name("scan.png")),
        "patch-unreadable": lambda: _warning(unreadable_patches),
        "batch-size": lambda: _error(lambda: TrainConfig(batch_size=1)),
        "embeddings-nan": lambda: _error(nan_embeddings),
        "output-exists": lambda: _error(lambda: write_csv(write("e.csv", "x"), ["a"], [])),
        "geojson-not-json": lambda: _error(lambda: read_geojson(write("g.geojson", "{"))),
        "geojson-other-slide": lambda: _warning(other_slide),
        "csv-column": lambda: _error(lambda: read_csv(write("c.csv", "a,b\n1,2\n"), ["score"])),
        "disk-full": disk_full,
    }


def test_every_row_is_covered_and_true(tmp_path):
    rows = _rows()
    cases = _cases(tmp_path)
    assert set(rows) - {"killed", "worker-died"} == set(cases), "rows without a check, or checks without a row"
    for key, make in cases.items():
        message = make()
        assert _pattern(rows[key]).search(message), f"{key}: the docs say {rows[key]!r}, the tool says {message!r}"


@pytest.mark.parametrize("key", ["killed", "worker-died"])
def test_fault_rows_name_their_tests(key):
    assert key in _rows() or key in DOC.read_text()
