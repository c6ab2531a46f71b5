"""CONCH's text tokens exactly as the authors' environment makes them, whatever ``transformers`` is installed.

The authors call conch's ``tokenize(get_tokenizer(), prompts)``: a ``PreTrainedTokenizerFast`` over the byte-level
BPE file ``conch_byte_level_bpe_uncased.json``, 127 tokens with ``<start_of_text>``/``<end_of_text>``, padded with
``<pad>`` and one more ``<pad>`` appended (128). The file's pre-tokenizer says ``add_prefix_space: true``, but
transformers 4.x's ``PreTrainedTokenizerFast`` overrides it with its own default, ``False``, and the authors' weights
were trained on those ids (``an`` = 294). transformers 5 keeps the file's ``True``, so every prompt would start with
``Ġan`` = 285 and every text embedding would move.

Here the same file is read with the ``tokenizers`` library and every setting that matters is set explicitly, so
the ids do not depend on the transformers version. ``tests/data/conch_token_ids.json`` pins the ids of the default
prompts, made once by the authors' own call under transformers 4.57 (``tests/data/make_conch_token_ids.py``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

__all__ = ["CONTEXT_LENGTH", "ConchTokenizer", "conch_tokenizer_file"]

CONTEXT_LENGTH = 128  # CONCH's text context; the last place is reserved (a <pad> the model replaces by <cls>)
_MAX_TOKENS = CONTEXT_LENGTH - 1
_PAD, _BOS, _EOS = "<pad>", "<start_of_text>", "<end_of_text>"


def conch_tokenizer_file() -> Path:
    """The tokenizer file inside the installed conch package (the authors' own file, never copied here)."""
    from importlib.util import find_spec

    spec = find_spec("conch")  # located, not imported: importing conch loads timm and torch
    if spec is None or not spec.submodule_search_locations:
        from ..errors import BackendUnavailableError

        raise BackendUnavailableError("CONCH's tokenizer needs the conch-fork package; install the extra: "
                                      "pip install 'napari-anonavila[conch]'")
    root = Path(next(iter(spec.submodule_search_locations)))
    return root / "open_clip_custom" / "tokenizers" / "conch_byte_level_bpe_uncased.json"


class ConchTokenizer:
    """Prompts -> (N, 128) int64 token ids, as ``conch.open_clip_custom.tokenize`` gives them under transformers 4.

    Pinned: NFD + strip accents + lowercase (the file's normaliser), byte-level pre-tokenisation *without* a prefix
    space, BPE, ``<start_of_text> ... <end_of_text>``, right truncation to 127 (the end token kept), right padding
    with ``<pad>`` to 127, then one more ``<pad>``.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        from tokenizers import Tokenizer, pre_tokenizers

        self.path = Path(path) if path is not None else conch_tokenizer_file()
        tok = Tokenizer.from_file(str(self.path))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
        self.pad_id = _token_id(tok, _PAD, self.path)
        for special in (_BOS, _EOS):
            _token_id(tok, special, self.path)
        tok.no_padding()
        tok.no_truncation()
        self._tok = tok

    def ids(self, prompts: list[str]) -> list[list[int]]:
        """Each prompt's ids before padding: start token, text (at most 125 tokens), end token."""
        out = []
        for enc in self._tok.encode_batch(list(prompts), add_special_tokens=True):
            ids = list(enc.ids)
            if len(ids) > _MAX_TOKENS:  # right truncation of the text; the template's end token is kept
                ids = [*ids[: _MAX_TOKENS - 1], ids[-1]]
            out.append(ids)
        return out

    def __call__(self, prompts: list[str]):
        """The model's input: (N, 128) int64, right-padded with ``<pad>``."""
        import torch

        rows = [ids + [self.pad_id] * (CONTEXT_LENGTH - len(ids)) for ids in self.ids(prompts)]
        return torch.tensor(rows, dtype=torch.long).reshape(len(rows), CONTEXT_LENGTH)


def _token_id(tok, token: str, path: Path) -> int:
    value = tok.token_to_id(token)
    if value is None:
        from ..errors import BackendUnavailableError

        raise BackendUnavailableError(f"{path}: CONCH's tokenizer file has no {token!r} token; reinstall conch-fork")
    return int(value)


@lru_cache(maxsize=4)
def cached_tokenizer(path: str | None = None) -> ConchTokenizer:
    """One tokenizer per file for the life of the process."""
    return ConchTokenizer(path)
