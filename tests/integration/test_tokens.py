"""CONCH's token ids equal the authors' under every transformers version: checked against ids pinned as data.

``tests/data/conch_token_ids.json`` was made once by the authors' own call, ``conch.open_clip_custom.tokenize``,
under transformers 4.57 (``tests/data/make_conch_token_ids.py``); nothing in this project took part in making it.
The check runs here (transformers 5) and in ``.venv-tf4`` (transformers 4.x, made by scripts/setup_tf4.sh).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("conch.open_clip_custom", reason="needs the [conch] extra (conch-fork)")

DATA = Path(__file__).resolve().parents[1] / "data"
FIXTURE = DATA / "conch_token_ids.json"
REPO = Path(__file__).resolve().parents[2]


def _check(python: str) -> dict:
    res = subprocess.run([python, str(DATA / "check_conch_token_ids.py"), str(FIXTURE)], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_the_fixture_covers_the_shipped_prompts_byte_for_byte():
    from napari_anonavila.terms import TermPools

    doc = json.loads(FIXTURE.read_text(encoding="utf-8"))
    pools = TermPools.default()
    for kind in ("normal", "abnormal"):
        pinned = [e["prompt"] for e in doc["entries"] if e["pool"] == kind]
        assert pinned == list(getattr(pools, kind))  # trailing spaces included
    assert sum(e["prompt"].endswith(" ") for e in doc["entries"]) == 12
    assert int(doc["versions"]["transformers"].split(".")[0]) == 4  # made as the authors did


def test_ids_equal_the_authors_under_the_installed_transformers():
    out = _check(sys.executable)
    assert out["n"] == 146 and out["ours_wrong"] == 0, out


def test_ids_equal_the_authors_under_transformers_4():
    python = REPO / ".venv-tf4" / "bin" / "python"
    if not python.is_file():
        pytest.skip(f"needs {python.parent.parent} (transformers 4.x): bash scripts/setup_tf4.sh")
    out = _check(str(python))
    assert out["transformers"].startswith("4."), out
    assert out["ours_wrong"] == 0, out
    assert out["conch_call_wrong"] == 0, out  # the authors' own call reproduces the pinned ids there
