"""The text-embedding disk cache: one file per (model weights, precision), entries keyed by token ids.

An entry's key is a hash of the exact token ids the model reads, never of the prompt string, so a tokenizer that
changes with a library version can never be served another environment's embeddings. Each file carries a SHA-256
digest over its keys, prompts and embedding bytes; a file that does not verify (a flipped bit, swapped names, a
truncated write) is rebuilt after one warning.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["FORMAT", "load_text_cache", "save_text_cache", "token_key"]

FORMAT = "napari-anonavila/text-cache/2"
_MAX_FILE = 256 << 20  # a cache file beyond this is not ours (about 100,000 prompts at D=512 in float32 is 200 MB)


def token_key(ids: Sequence[int]) -> str:
    """The cache key of one prompt: SHA-256 of its token ids (as 64-bit little-endian integers)."""
    data = torch.tensor(list(ids), dtype=torch.int64).numpy().astype("<i8").tobytes()
    return hashlib.sha256(data).hexdigest()[:32]


def _digest(keys_json: str, prompts_json: str, embs: torch.Tensor) -> str:
    h = hashlib.sha256(FORMAT.encode())
    for part in (keys_json.encode(), prompts_json.encode(), embs.contiguous().numpy().astype("<f4").tobytes()):
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


def load_text_cache(path: Path, dim: int) -> dict[str, tuple[str, torch.Tensor]]:
    """key -> (prompt, embedding) from a cache file; {} when missing; a warning and {} when it does not verify."""
    from safetensors import safe_open

    if not path.is_file():
        return {}
    try:
        if path.stat().st_size > _MAX_FILE:
            raise ValueError(f"it is {path.stat().st_size} bytes, more than a text cache holds")
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            if meta.get("format") != FORMAT:
                raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT}")
            keys, prompts = json.loads(meta["keys"]), json.loads(meta["prompts"])
            embs = fh.get_tensor("embeddings")
        if embs.dtype != torch.float32 or embs.ndim != 2 or embs.shape != (len(keys), dim):
            raise ValueError(f"embeddings of {embs.dtype} {tuple(embs.shape)} for {len(keys)} keys of {dim} values")
        if not (isinstance(keys, list) and isinstance(prompts, list) and len(prompts) == len(keys)
                and all(isinstance(k, str) for k in keys) and all(isinstance(p, str) for p in prompts)):
            raise ValueError("its key or prompt list is damaged")
        if _digest(meta["keys"], meta["prompts"], embs) != meta.get("digest"):
            raise ValueError("its content digest does not match")
        if not torch.isfinite(embs).all() or (embs.norm(dim=1) - 1).abs().max() > 1e-3:
            raise ValueError("embeddings that are not finite unit vectors")
    except Exception as err:  # a damaged cache file fails in many ways; every one means: encode again
        warnings.warn(f"{path}: text-embedding cache does not verify ({err}); encoding the terms again",
                      UserWarning, stacklevel=4)
        return {}
    return {k: (p, e) for k, p, e in zip(keys, prompts, embs, strict=True)}


def save_text_cache(path: Path, cache: dict[str, tuple[str, torch.Tensor]]) -> None:
    """Write all entries with their digest, atomically; a read-only or full cache folder is not an error."""
    from safetensors.torch import save

    from .._atomic import atomic_write

    keys = list(cache)
    embs = torch.stack([cache[k][1] for k in keys]).float().contiguous()
    keys_json, prompts_json = json.dumps(keys), json.dumps([cache[k][0] for k in keys])
    data = save({"embeddings": embs}, metadata={"format": FORMAT, "keys": keys_json, "prompts": prompts_json,
                                                "digest": _digest(keys_json, prompts_json, embs)})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "wb") as fh:
            fh.write(data)
    except OSError:  # costs only re-encoding later
        pass
