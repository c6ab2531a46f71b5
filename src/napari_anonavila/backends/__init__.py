"""VLM backends behind one interface, addressed by a spec string (see :class:`BackendSpec`).

``get_backend("demo")``, ``get_backend("conch")`` (local Hugging Face cache), ``get_backend("conch:/file")``,
``get_backend("open_clip:ViT-B-16@/w.safetensors")``, ``get_backend("open_clip:hf-hub:ORG/NAME")``,
``get_backend("hf_clip:/folder")``. Nothing reaches the network unless ``allow_download=True``. New kinds
register with :func:`register_backend`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .base import PRECISIONS, BackendSpec, VLMBackend, resolve_device, sha256_file

__all__ = ["PRECISIONS", "BackendSpec", "VLMBackend", "get_backend", "list_backends", "register_backend",
           "resolve_device", "sha256_file"]

BackendFactory = Callable[..., VLMBackend]  # (spec, device, *, precision, allow_download) -> VLMBackend


def _open_clip(spec: BackendSpec, device: torch.device, **kw) -> VLMBackend:
    from .open_clip import OpenClipBackend

    return OpenClipBackend(spec, device, **kw)


def _conch(spec: BackendSpec, device: torch.device, **kw) -> VLMBackend:
    from .conch import ConchBackend

    return ConchBackend(spec, device, **kw)


def _hf_clip(spec: BackendSpec, device: torch.device, **kw) -> VLMBackend:
    from .hf_clip import HFClipBackend

    return HFClipBackend(spec, device, **kw)


def _demo(spec: BackendSpec, device: torch.device, **kw) -> VLMBackend:
    from .demo import DEMO_MODEL, demo_weights
    from .open_clip import OpenClipBackend

    backend = OpenClipBackend(BackendSpec("open_clip", DEMO_MODEL, str(demo_weights())), device, **kw)
    backend.spec = spec
    backend.description = "demo (random weights, no pathology knowledge)"
    return backend


_REGISTRY: dict[str, BackendFactory] = {"demo": _demo, "open_clip": _open_clip, "conch": _conch, "hf_clip": _hf_clip}


def list_backends() -> list[str]:
    """Names of the registered backend kinds."""
    return sorted(_REGISTRY)


def register_backend(kind: str, factory: BackendFactory) -> None:
    """Add a backend kind; ``factory(spec, device, *, precision, allow_download)`` returns a :class:`VLMBackend`."""
    _REGISTRY[kind] = factory


def get_backend(spec: str | BackendSpec, device: str | torch.device | None = None, *, precision: str = "float32",
                allow_download: bool = False) -> VLMBackend:
    """Build the backend a spec names, on ``device`` (default: CUDA, MPS or CPU), in ``precision``.

    ``precision`` is float32 by default on every device (the authors' choice; scores are about 1e-5..1e-3);
    ``tf32``, ``bfloat16`` and ``float16`` trade exactness for speed; ``auto`` picks by the hardware
    (:func:`.hardware.choose_precision`; the backend's ``precision_reason`` says why). ``allow_download`` lets a
    missing Hugging Face cache entry be fetched; without it nothing reaches the network.
    """
    from .hardware import choose_precision

    spec = BackendSpec.parse(spec) if isinstance(spec, str) else spec
    if spec.kind not in _REGISTRY:
        raise ValueError(f"unknown backend kind {spec.kind!r}; known: {', '.join(list_backends())}")
    if precision not in ("auto", *PRECISIONS):
        raise ValueError(f"unknown precision {precision!r}; use auto, {', '.join(PRECISIONS)}")
    dev = resolve_device(device)
    precision, why = choose_precision(precision, dev.type)
    backend = _REGISTRY[spec.kind](spec, dev, precision=precision, allow_download=allow_download)
    backend.precision_reason = why
    return backend
