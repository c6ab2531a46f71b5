"""The inputs of the pinned training case, built the same way by the fixture script and by the test.

A tiny open_clip model (the demo architecture, weights drawn with numpy so they do not depend on torch's
initialisers), 40 normal training patches and 12 centroid patches as PNG files. The training patches lie one per
folder down a chain (``train/p000.png``, ``train/d/p001.png``, ``train/d/d/p002.png``, ...), so that ``os.walk``
lists them in the same order on every file system: the authors' DataLoader shuffles that order.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "src" / "napari_anonavila" / "backends" / "configs" / "anonavila-demo.json"
MODEL = "anonavila-demo"
SETTINGS = {"seed": 42, "batch_size": 8, "accumulate": 3, "epochs": 2, "lr": 1e-3}
N_TRAIN, N_VAL = 40, 12


def write_weights(path: Path) -> Path:
    """The demo architecture's tensors, each filled from a seeded numpy generator; logit scale log(1/0.07)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    model = open_clip.CLIP(**json.loads(CONFIG.read_text()))
    rng = np.random.default_rng(20251017)
    state = {}
    for name, t in model.state_dict().items():
        values = np.asarray(rng.standard_normal(tuple(t.shape)) * 0.05, dtype=np.float32)
        if name.endswith(("ln_1.weight", "ln_2.weight", "ln_final.weight", "ln_pre.weight", "ln_post.weight")):
            values += 1.0
        state[name] = torch.from_numpy(values)
    state["logit_scale"] = torch.tensor(math.log(1 / 0.07), dtype=torch.float32)
    save_file(state, str(path))
    return path


def _patch(rng: np.random.Generator) -> np.ndarray:
    base = rng.integers(120, 230, size=3)
    img = np.clip(base + rng.normal(0, 25, (48, 48, 3)), 0, 255)
    return img.astype(np.uint8)


def write_patches(root: Path) -> tuple[Path, Path]:
    """``root/train`` (the chain of 40) and ``root/val`` (12 flat); returns the two folders."""
    from PIL import Image

    rng = np.random.default_rng(7)
    train, val = root / "train", root / "val"
    folder = train
    for i in range(N_TRAIN):
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_patch(rng)).save(folder / f"p{i:03d}.png")
        folder = folder / "d"
    val.mkdir(parents=True, exist_ok=True)
    for i in range(N_VAL):
        Image.fromarray(_patch(rng)).save(val / f"v{i:03d}.png")
    return train, val
