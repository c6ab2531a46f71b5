"""Term pools: the normal and abnormal prompts, read from the authors' CSV layout or plain text."""

from __future__ import annotations

import csv
import io
import os
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ._atomic import atomic_write, check_writable
from ._cells import safe_cell
from .errors import TermPoolError

__all__ = ["DEFAULT_DOMAIN", "DEFAULT_TEMPLATE", "TermPools", "check_template", "dedupe", "load_pool", "save_pool",
           "strip_template"]

DEFAULT_TEMPLATE = "an image showing {}"
DEFAULT_DOMAIN = "lymph-node"  # the shipped pools: the authors' lymph-node metastasis terms
_CSV_HEADERS = {"normal", "abnormal"}


def _key(prompt: str) -> str:
    """Comparison key: case- and whitespace-insensitive."""
    return " ".join(prompt.casefold().split())


def check_template(template: str) -> str:
    """A prompt template with exactly one ``{}`` for the term and no other braces; else TermPoolError."""
    if template.count("{}") != 1 or template.replace("{}", "").count("{") or template.replace("{}", "").count("}"):
        raise TermPoolError(f"prompt template {template!r} must hold exactly one '{{}}' for the term and no other "
                            "braces, e.g. 'an image showing {}'")
    return template


def strip_template(prompt: str, template: str) -> str | None:
    """The term inside ``prompt`` made with ``template``, or None when the prompt does not follow it."""
    prefix, _, suffix = template.partition("{}")
    ok = prompt.startswith(prefix) and prompt.endswith(suffix) and len(prompt) > len(prefix) + len(suffix)
    return prompt[len(prefix) : len(prompt) - len(suffix)] if ok else None


def dedupe(prompts: list[str], *, source: str = "term pool") -> list[str]:
    """Drop blank prompts and case-/space-insensitive duplicates (first wins), warn by name; the prompts kept are
    unchanged, byte for byte (a trailing space is a token to CONCH's tokenizer)."""
    seen: dict[str, str] = {}
    dupes: list[str] = []
    for p in prompts:
        if not p.strip():
            continue
        k = _key(p)
        if k in seen:
            dupes.append(p)
        else:
            seen[k] = p
    if dupes:
        warnings.warn(
            f"{source}: dropped {len(dupes)} duplicate term(s) (case- and space-insensitive): "
            + "; ".join(repr(d) for d in dupes),
            UserWarning,
            stacklevel=3,
        )
    return list(seen.values())


def _decode(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise TermPoolError(f"{path}: cannot read term file ({err.strerror or err})") from err
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise TermPoolError(f"{path}: term file is not UTF-8 text (byte {err.start})") from err


def _parse_csv(text: str, path: Path, kind: str | None = None) -> list[str]:
    try:  # newline="" lets the csv module handle CRLF, LF and bare CR line ends
        rows = [r for r in csv.reader(io.StringIO(text, newline="")) if any(c.strip() for c in r)]
    except csv.Error as err:
        raise TermPoolError(f"{path}: malformed CSV ({err})") from err
    if not rows or rows[0][0].strip().casefold() not in _CSV_HEADERS:
        found = rows[0][0].strip()[:40] if rows else "nothing"
        raise TermPoolError(
            f"{path}: expected the authors' CSV layout with a header line 'Normal' or 'Abnormal', found {found!r}"
        )
    header = rows[0][0].strip().casefold()
    if kind is not None and header != kind:
        raise TermPoolError(f"{path}: its header says {rows[0][0].strip()!r}, but it was given as the {kind} pool; "
                            "swap --normal-terms and --abnormal-terms")
    bad = [i + 2 for i, r in enumerate(rows[1:]) if len([c for c in r if c.strip()]) > 1]
    if bad:
        raise TermPoolError(f"{path}: rows {bad[:5]} have more than one column; quote prompts that hold commas")
    return [_unprotected(r[0]) for r in rows[1:]]


def _unprotected(cell: str) -> str:
    """A cell as written before spreadsheet protection (``safe_cell``): the apostrophe before = + - @ comes off."""
    return cell[1:] if len(cell) > 1 and cell[0] == "'" and cell[1] in "=+-@\t\r" else cell


def load_pool(path: str | os.PathLike, *, template: str = DEFAULT_TEMPLATE, kind: str | None = None) -> list[str]:
    """Read one pool as full prompts.

    ``.csv`` files follow the authors' layout (header ``Normal``/``Abnormal``, one full prompt a row). Any
    other file is plain text: one term a line, ``#`` starts a comment line, and ``template`` makes the prompt.
    Prompts are kept exactly as written, surrounding spaces included: the authors' released weights were
    trained on prompts with trailing spaces, which CONCH's tokenizer encodes. Duplicates are dropped with a
    warning; an empty pool raises :class:`TermPoolError`. With ``kind`` ("normal" or "abnormal"), a CSV whose header
    names the other pool is refused.
    """
    path = Path(path)
    text = _decode(path)
    if path.suffix.lower() == ".csv":
        prompts = _parse_csv(text, path, kind)
    else:
        check_template(template)
        lines = text.splitlines()  # line ends go; every other character, spaces included, is the term
        prompts = [template.format(ln) for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    prompts = dedupe(prompts, source=str(path))
    if not prompts:
        raise TermPoolError(f"{path}: the term pool is empty")
    return prompts


def save_pool(
    prompts: list[str], path: str | os.PathLike, *, kind: str, template: str = DEFAULT_TEMPLATE,
    overwrite: bool = False,
) -> Path:
    """Write one pool: ``.csv`` in the authors' layout, anything else as plain terms (template removed)."""
    path = check_writable(path, overwrite=overwrite)
    if path.suffix.lower() == ".csv":
        with atomic_write(path, newline="", encoding="utf-8") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow([kind.capitalize()])
            w.writerows([safe_cell(p)] for p in prompts)  # a prompt never becomes a spreadsheet formula
        return path
    lines = [strip_template(p, template) for p in prompts]
    bad = [p for p, ln in zip(prompts, lines, strict=True) if ln is None]
    if bad:
        raise TermPoolError(f"prompt {bad[0]!r} does not follow template {template!r}; save as .csv instead")
    with atomic_write(path, encoding="utf-8") as fh:
        fh.write("".join(ln + "\n" for ln in lines))
    return path


@dataclass(frozen=True)
class TermPools:
    """The two prompt pools, normal and abnormal, as full prompts."""

    normal: tuple[str, ...]
    abnormal: tuple[str, ...]
    template: str = DEFAULT_TEMPLATE
    source: str = field(default="", compare=False)
    domain: str = field(default="", compare=False)  # what tissue the terms describe, for people to read
    duplicates_allowed: bool = False  # imported pools are used as stored, duplicates included

    def __post_init__(self) -> None:
        check_template(self.template)
        for name in ("normal", "abnormal"):
            pool = getattr(self, name)
            if not pool:
                raise TermPoolError(f"the {name} term pool is empty")
            if len({_key(p) for p in pool}) != len(pool) and not self.duplicates_allowed:
                raise TermPoolError(f"the {name} term pool has duplicates; build it with TermPools.from_lists")

    @classmethod
    def from_lists(cls, normal: list[str], abnormal: list[str], *, template: str = DEFAULT_TEMPLATE,
                   source: str = "") -> TermPools:
        """Build from prompt lists, dropping duplicates with a warning."""
        return cls(tuple(dedupe(list(normal), source=f"{source or 'normal pool'}")),
                   tuple(dedupe(list(abnormal), source=f"{source or 'abnormal pool'}")), template, source)

    @classmethod
    def from_files(cls, normal: str | os.PathLike, abnormal: str | os.PathLike, *,
                   template: str = DEFAULT_TEMPLATE) -> TermPools:
        """Read both pools (CSV or plain text each)."""
        return cls(tuple(load_pool(normal, template=template, kind="normal")),
                   tuple(load_pool(abnormal, template=template, kind="abnormal")), template, f"{normal}, {abnormal}")

    @classmethod
    def default(cls) -> TermPools:
        """The authors' lymph-node pools shipped in the package (92 normal, 48 abnormal)."""
        words = resources.files("napari_anonavila") / "words"
        with resources.as_file(words / "normal.txt") as n, resources.as_file(words / "abnormal.txt") as a:
            pools = cls.from_files(n, a)
        return cls(pools.normal, pools.abnormal, DEFAULT_TEMPLATE, "default lymph-node pools", DEFAULT_DOMAIN)

    def terms(self, kind: str) -> list[str]:
        """The pool's terms for display: the template removed where it applies, surrounding spaces trimmed."""
        return [(strip_template(p, self.template) or p).strip() for p in getattr(self, kind)]

    def describe(self) -> str:
        """For people: the pools' domain and sizes, e.g. 'lymph-node terms (92 normal / 48 abnormal)'."""
        return f"{self.domain or 'custom'} terms ({len(self.normal)} normal / {len(self.abnormal)} abnormal)"

    def to_dict(self) -> dict:
        return {"normal": list(self.normal), "abnormal": list(self.abnormal), "template": self.template,
                "domain": self.domain, "duplicates_allowed": self.duplicates_allowed}

    @classmethod
    def from_dict(cls, d: dict) -> TermPools:
        return cls(tuple(map(str, d["normal"])), tuple(map(str, d["abnormal"])),
                   str(d.get("template", DEFAULT_TEMPLATE)), domain=str(d.get("domain", "")),
                   duplicates_allowed=bool(d.get("duplicates_allowed", False)))
