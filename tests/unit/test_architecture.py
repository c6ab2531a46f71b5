"""The code's shape: imports point one way (no circle anywhere in src/, lazy and type-only imports included), and
each derived view of a result is defined once."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "napari_anonavila"


def _modules(root: Path) -> dict[str, tuple[Path, bool]]:
    out = {}
    for p in root.rglob("*.py"):
        parts = list(p.relative_to(root.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (p, is_pkg)
    return out


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its text (top level, inside functions, under
    TYPE_CHECKING): every arrow a reader has to follow."""
    mods = _modules(root)

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rsplit(".", 1)[0] if "." in name else ""
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, (path, is_pkg) in mods.items():
        base = m if is_pkg else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                parts = base.split(".")
                mod = ".".join([*parts[: len(parts) - node.level + 1], *([node.module] if node.module else [])]) \
                    if node.level else node.module or ""
                targets = [mod, *(f"{mod}.{a.name}" for a in node.names)]
            else:
                continue
            graph[m] |= {r for t in targets if t.startswith(root.name) and (r := resolve(t)) and r != m}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_circle_finder_finds_a_circle(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from .sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import f\n")
    (pkg / "c.py").write_text("from . import a\n")
    assert circles(import_graph(pkg)) == [["pkg.a", "pkg.sub.b"]]


def test_no_import_circle_in_src():
    assert circles(import_graph(SRC)) == []


def test_checkpoint_formats_never_import_the_detector():
    graph = import_graph(SRC)
    assert not {m for m in graph if m.startswith("napari_anonavila.checkpoint")
                if "napari_anonavila.detector" in graph[m]}


@pytest.mark.parametrize("view", ["heatmap", "significant", "top_k", "explain", "review_states", "rank",
                                  "calibrated_summary", "slide_scores", "geometry"])
def test_each_derived_view_of_a_result_is_defined_once(view):
    pattern = re.compile(rf"^[ \t]+def {view}\(", re.M)
    where = [p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py") if pattern.search(p.read_text("utf-8"))]
    assert where in ([], ["result.py"]), where
