"""Make ``conch_token_ids.json``: CONCH token ids of the default prompts, by the authors' own tokenize() call.

Run once, in an environment like the authors' (transformers 4.x, conch-fork, torch, pandas), never in ours:

    python -m venv /tmp/tf4 && /tmp/tf4/bin/pip install 'transformers>=4.57,<5' pandas torch conch-fork
    /tmp/tf4/bin/python tests/data/make_conch_token_ids.py ../shared/data/words tests/data/conch_token_ids.json

The prompts are read as the authors' ``word_Dataset`` reads them (``pandas.read_csv(path)[header]``) from their
CSVs, and tokenised with ``conch.open_clip_custom.tokenize(get_tokenizer(), prompts)``, exactly the call in their
``models/backbone.py``. A few edge-case prompts (case, accents, spacing, a prompt past the 127-token limit) are
added so that normalisation and truncation are pinned too. Rows are stored without their trailing ``<pad>`` (0)
ids; each pads to 128.
"""

from __future__ import annotations

import hashlib
import json
import sys
from importlib import metadata
from pathlib import Path

EDGE_CASES = [
    "An Image Showing GERMINAL Center",
    "an image showing café-au-lait naïve cells",
    "  an image showing leading spaces",
    "an image showing  two  spaces\tand a tab",
    "an image showing 3.5 mm nodes, (CD20+) / [Ki-67]",
    "an image showing " + " ".join(f"term{i}" for i in range(200)),
]


def main(words: str, out: str) -> None:
    import pandas as pd
    import transformers
    from conch.open_clip_custom import get_tokenizer, tokenize
    from conch.open_clip_custom.custom_tokenizer import DEFAULT_TOKENIZER, TOKENIZER_DIR

    if int(transformers.__version__.split(".")[0]) >= 5:
        sys.exit(f"run this with transformers 4.x, as the authors did (found {transformers.__version__})")
    rows = []
    for pool, header in (("normal", "Normal"), ("abnormal", "Abnormal")):
        prompts = list(pd.read_csv(Path(words) / f"{pool}_words.csv")[header])
        rows += [(pool, p) for p in prompts]
    rows += [("edge", p) for p in EDGE_CASES]
    ids = tokenize(get_tokenizer(), [p for _, p in rows])
    assert ids.shape == (len(rows), 128) and (ids[:, -1] == 0).all()
    entries = []
    for (pool, prompt), row in zip(rows, ids.tolist(), strict=True):
        while row and row[-1] == 0:
            row.pop()
        entries.append({"pool": pool, "prompt": prompt, "ids": row})
    tok_file = TOKENIZER_DIR / DEFAULT_TOKENIZER
    doc = {
        "made_by": "tests/data/make_conch_token_ids.py: conch.open_clip_custom.tokenize(get_tokenizer(), prompts)",
        "versions": {name: metadata.version(name) for name in ("transformers", "tokenizers", "conch-fork", "pandas")},
        "tokenizer_file": DEFAULT_TOKENIZER,
        "tokenizer_file_sha256": hashlib.sha256(tok_file.read_bytes()).hexdigest(),
        "context_length": 128,
        "pad_id": 0,
        "entries": entries,
    }
    head = json.dumps({**doc, "entries": None}, indent=1, ensure_ascii=False).rsplit("null", 1)
    lines = ",\n  ".join(json.dumps(e, ensure_ascii=False) for e in entries)  # one prompt a line
    Path(out).write_text(f"{head[0]}[\n  {lines}\n ]{head[1]}\n", encoding="utf-8")
    print(f"wrote {len(entries)} prompts' ids to {out}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
