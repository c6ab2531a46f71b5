"""A ViT-B-16 open_clip model with seeded random weights, saved once, for benchmarks of real-sized encoders."""

from __future__ import annotations

import tempfile
from pathlib import Path


def vit_b16_weights() -> Path:
    import open_clip
    import torch
    from safetensors.torch import save_file

    path = Path(tempfile.gettempdir()) / "anonavila-bench-vit-b-16-seed0.safetensors"
    if not path.is_file():
        torch.manual_seed(0)
        model = open_clip.create_model("ViT-B-16", pretrained=None)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path
