"""The demo backend: a tiny open_clip architecture with seeded random weights.

It carries NO pathology knowledge. It exists so that the demo, the napari sample and the tests run
anywhere, offline and in seconds. Its weights are generated once, deterministically, saved as a
safetensors file in the user cache, and then loaded through the same open_clip path as a user's weights.
"""

from __future__ import annotations

import os
from functools import cache
from importlib import resources
from pathlib import Path

import torch

from ..userfiles import cache_dir

__all__ = ["DEMO_MODEL", "DEMO_NOTICE", "cache_dir", "demo_weights", "register_demo_config", "write_demo_weights"]

DEMO_MODEL = "anonavila-demo"
DEMO_NOTICE = (
    "The 'demo' backend is a tiny model with random weights: it carries NO pathology knowledge. Its scores "
    "show the pipeline working, not tissue abnormality. For real use pass CONCH weights from a local path, "
    "e.g. --backend conch:/path/to/pytorch_model.bin (pip install 'napari-anonavila[conch]')."
)
_SEED = 20250101


@cache
def register_demo_config() -> None:
    """Make ``anonavila-demo`` known to open_clip (its architecture is data, as open_clip's configs are)."""
    import open_clip

    with resources.as_file(resources.files("napari_anonavila.backends") / "configs") as cfg_dir:
        open_clip.add_model_config(cfg_dir)


def write_demo_weights(path: str | os.PathLike, seed: int = _SEED) -> Path:
    """Build the demo architecture with seeded random weights and save them as safetensors."""
    import open_clip
    from safetensors.torch import save

    from .._atomic import atomic_write

    register_demo_config()
    torch.manual_seed(seed)
    model = open_clip.CLIP(**open_clip.get_model_config(DEMO_MODEL))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    with atomic_write(path, "wb") as fh:
        fh.write(save(state))
    return path


def demo_weights() -> Path:
    """The demo weights file in the cache, written on first use."""
    path = cache_dir() / f"{DEMO_MODEL}-seed{_SEED}.safetensors"
    if not path.is_file():
        write_demo_weights(path)
    return path
