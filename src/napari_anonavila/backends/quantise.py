"""int8 on a CPU: the image tower's linear layers quantised dynamically (int8 weights per channel, activations
quantised per batch), through torch's oneDNN/FBGEMM kernels (VNNI and AMX where the CPU has them). The text tower
stays float32, so the term embeddings are float32's exactly."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch

__all__ = ["int8_available", "int8_image_tower"]


def int8_image_tower(model: torch.nn.Module, tower: Sequence[str]) -> torch.nn.Module:
    """``model`` with the linear layers of its submodules ``tower`` (by attribute name) in dynamic int8.

    Linear layers fused into attention (``nn.MultiheadAttention``'s input projection) stay float32 on this path.
    Raises ValueError when the model has none of ``tower`` or this torch lacks dynamic quantisation."""
    missing = [name for name in tower if not hasattr(model, name)]
    if missing:
        raise ValueError(f"int8: this model has no image tower named {', '.join(missing)}; use float32")
    if not int8_available():  # a future torch without the eager dynamic path
        raise ValueError(f"int8 needs torch's dynamic quantisation (torch.ao.quantization), which torch "
                         f"{torch.__version__} lacks; use float32")
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch marks the eager path deprecated; it is what runs the int8 kernels here
        warnings.simplefilter("ignore")
        for name in tower:  # by exact type: attention's own output projection (a Linear subclass) is left alone
            holder = torch.nn.Sequential(getattr(model, name))  # a tower that is itself one Linear is swapped too
            setattr(model, name, quantize_dynamic(holder, {torch.nn.Linear}, dtype=torch.qint8)[0])
    return model


def int8_available() -> bool:
    """Whether this torch has the dynamic quantisation int8 runs on."""
    try:
        from torch.ao.quantization import quantize_dynamic  # noqa: F401
    except ImportError:
        return False
    return True
