"""VLM backends behind one interface, addressed by a spec string (see :class:`BackendSpec`).

``get_backend("demo")``, ``get_backend("open_clip:ViT-B-16@/w.safetensors")``,
``get_backend("conch:/path/pytorch_model.bin")``. New kinds register with :func:`register_backend`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .base import BackendSpec, VLMBackend, resolve_device, sha256_file

__all__ = ["BackendSpec", "VLMBackend", "get_backend", "list_backends", "register_backend", "resolve_device",
           "sha256_file"]

BackendFactory = Callable[[BackendSpec, torch.device], VLMBackend]


def _open_clip(spec: BackendSpec, device: torch.device) -> VLMBackend:
    from .open_clip import OpenClipBackend

    return OpenClipBackend(spec, device)


def _conch(spec: BackendSpec, device: torch.device) -> VLMBackend:
    from .conch import ConchBackend

    return ConchBackend(spec, device)


def _demo(spec: BackendSpec, device: torch.device) -> VLMBackend:
    from .demo import DEMO_MODEL, demo_weights
    from .open_clip import OpenClipBackend

    backend = OpenClipBackend(BackendSpec("open_clip", DEMO_MODEL, str(demo_weights())), device)
    backend.spec = spec
    backend.description = "demo (random weights, no pathology knowledge)"
    return backend


_REGISTRY: dict[str, BackendFactory] = {"demo": _demo, "open_clip": _open_clip, "conch": _conch}


def list_backends() -> list[str]:
    """Names of the registered backend kinds."""
    return sorted(_REGISTRY)


def register_backend(kind: str, factory: BackendFactory) -> None:
    """Add a backend kind; ``factory(spec, device)`` returns a :class:`VLMBackend`."""
    _REGISTRY[kind] = factory


def get_backend(spec: str | BackendSpec, device: str | torch.device | None = None) -> VLMBackend:
    """Build the backend a spec names, on ``device`` (default: CUDA, MPS or CPU)."""
    spec = BackendSpec.parse(spec) if isinstance(spec, str) else spec
    if spec.kind not in _REGISTRY:
        raise ValueError(f"unknown backend kind {spec.kind!r}; known: {', '.join(list_backends())}")
    return _REGISTRY[spec.kind](spec, resolve_device(device))
