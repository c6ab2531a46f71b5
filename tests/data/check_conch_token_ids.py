"""Print, as JSON, how many of the pinned prompts each tokenizer gets wrong in the running environment.

Used by tests/integration/test_tokens.py under the installed transformers (5.x) and under transformers 4.x
(``.venv-tf4``, made by scripts/setup_tf4.sh). ``ours`` is the tokenizer the CONCH backend uses; ``conch_call``
is conch-fork's own ``tokenize(get_tokenizer(), prompts)``, the authors' call (it needs transformers < 5).
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path


def main(fixture: str) -> None:
    from importlib import metadata

    from napari_anonavila.backends.conch_tokens import ConchTokenizer

    doc = json.loads(Path(fixture).read_text(encoding="utf-8"))
    prompts = [e["prompt"] for e in doc["entries"]]
    want = [e["ids"] + [doc["pad_id"]] * (doc["context_length"] - len(e["ids"])) for e in doc["entries"]]
    ours = ConchTokenizer()(prompts).tolist()
    out = {"transformers": metadata.version("transformers"), "tokenizers": metadata.version("tokenizers"),
           "n": len(prompts), "ours_wrong": sum(a != b for a, b in zip(ours, want, strict=True))}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from conch.open_clip_custom import get_tokenizer, tokenize

            tok = get_tokenizer()
        # the same settings called directly (this project's code before it pinned the ids): runs on 4.x and 5.x
        direct = tok(prompts, max_length=127, add_special_tokens=True, return_token_type_ids=False,
                     truncation=True, padding="max_length")["input_ids"]
        out["direct_call_wrong"] = sum([*a, doc["pad_id"]] != b for a, b in zip(direct, want, strict=True))
        theirs = tokenize(tok, prompts).tolist()
        out["conch_call_wrong"] = sum(a != b for a, b in zip(theirs, want, strict=True))
    except Exception as err:  # transformers 5 has no batch_encode_plus: the authors' call cannot run there
        out["conch_call_error"] = f"{type(err).__name__}: {err}"
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
