"""Term pools: the authors' CSVs, plain text, dedupe, and bad files."""

from __future__ import annotations

import pytest

from napari_anonavila.errors import TermPoolError
from napari_anonavila.terms import TermPools, load_pool, save_pool

from ..conftest import shared_path


def test_authors_csvs_parse():
    normal = load_pool(shared_path("words", "normal_words.csv"))
    abnormal = load_pool(shared_path("words", "abnormal_words.csv"))
    assert (len(normal), len(abnormal)) == (92, 48)
    assert all(p.startswith("an image showing ") and p == p.lstrip() for p in normal + abnormal)
    assert sum(p.endswith(" ") for p in normal + abnormal) == 12  # kept: CONCH's tokenizer encodes the space
    assert "an image showing glands are small, round, and microacinar" in abnormal  # quoted comma row


def test_shipped_defaults_equal_the_authors_pools():
    pools = TermPools.default()
    assert list(pools.normal) == load_pool(shared_path("words", "normal_words.csv"))
    assert list(pools.abnormal) == load_pool(shared_path("words", "abnormal_words.csv"))
    assert pools.terms("normal")[0] == "helper t lymphocyte"


def test_dedupe_warns_with_names(tmp_path):
    f = tmp_path / "n.txt"
    f.write_text("Lymphocytes\nlymphocytes \n  LYMPHOCYTES\nsinus\n\n# comment\n", encoding="utf-8")
    with pytest.warns(UserWarning, match=r"dropped 2 duplicate.*showing lymphocytes '") as rec:
        pool = load_pool(f)
    assert pool == ["an image showing Lymphocytes", "an image showing sinus"]
    assert rec[0].filename == __file__  # the warning points at the caller's line


@pytest.mark.parametrize("content", ["", "\n\n", "# only a comment\n"])
def test_empty_pool_is_rejected(tmp_path, content):
    f = tmp_path / "empty.txt"
    f.write_text(content)
    with pytest.raises(TermPoolError, match="empty"):
        load_pool(f)


def test_duplicate_only_csv_keeps_one(tmp_path):
    f = tmp_path / "dup.csv"
    f.write_text("Normal\nan image showing a\nAN IMAGE SHOWING A\n")
    with pytest.warns(UserWarning, match="duplicate"):
        assert load_pool(f) == ["an image showing a"]


@pytest.mark.parametrize(("content", "match"), [
    ("Terms\nan image showing a\n", "header line 'Normal' or 'Abnormal'"),
    ("Normal\na,b\n", "more than one column"),
])
def test_bad_csv(tmp_path, content, match):
    f = tmp_path / "bad.csv"
    f.write_text(content)
    with pytest.raises(TermPoolError, match=match) as info:
        load_pool(f)
    assert str(f) in str(info.value)


def test_non_utf8_and_missing_files(tmp_path):
    f = tmp_path / "latin.txt"
    f.write_bytes(b"caf\xe9\n")
    with pytest.raises(TermPoolError, match="not UTF-8"):
        load_pool(f)
    with pytest.raises(TermPoolError, match="cannot read"):
        load_pool(tmp_path / "missing.txt")


def test_bom_and_crlf(tmp_path):
    f = tmp_path / "bom.csv"
    f.write_bytes("\ufeffAbnormal\r\nan image showing x\r\n".encode())
    assert load_pool(f) == ["an image showing x"]


@pytest.mark.parametrize("suffix", [".csv", ".txt"])
def test_save_load_round_trip(tmp_path, suffix):
    pools = TermPools.default()
    path = save_pool(list(pools.abnormal), tmp_path / f"a{suffix}", kind="abnormal")
    assert load_pool(path) == list(pools.abnormal)
    with pytest.raises(FileExistsError):
        save_pool(list(pools.abnormal), path, kind="abnormal")


def test_termpools_rejects_empty_and_duplicates():
    with pytest.raises(TermPoolError, match="normal term pool is empty"):
        TermPools((), ("x",))
    with pytest.raises(TermPoolError, match="duplicates"):
        TermPools(("a", "A "), ("x",))
