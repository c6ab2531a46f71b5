"""open_clip backend: an open_clip architecture with a local weights file, or an ``hf-hub:ORG/NAME`` model
(QuiltNet, BiomedCLIP, ...) from the local Hugging Face cache, offline."""

from __future__ import annotations

import torch

from ..errors import BackendUnavailableError, CheckpointError
from .base import BackendSpec, VLMBackend, require_file, sha256_file

__all__ = ["OpenClipBackend"]

_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


class OpenClipBackend(VLMBackend):
    """A CLIP-style model built by open_clip. Weights are loaded with safetensors or ``weights_only`` torch."""

    description = "open_clip model"

    def __init__(self, spec: BackendSpec, device: torch.device, *, precision: str = "float32",
                 allow_download: bool = False) -> None:
        import open_clip

        from .demo import register_demo_config
        from .hub import hub_snapshot, offline

        register_demo_config()
        if spec.model.startswith("hf-hub:"):
            folder = hub_snapshot(spec.model.removeprefix("hf-hub:"), ("open_clip_config.json", _WEIGHTS),
                                  allow_download=allow_download, what=str(spec))
            weights = next(folder / w for w in _WEIGHTS if (folder / w).is_file())
            name = f"local-dir:{folder}"
            try:
                with offline():  # a text tower from transformers (BiomedCLIP) is read from the cache as well
                    model, _, transform = open_clip.create_model_and_transforms(name, weights_only=True)
                    self._tokenizer = open_clip.get_tokenizer(name)
            except Exception as err:  # missing tokenizer files, bad weights: many types
                raise BackendUnavailableError(f"{spec}: could not build it from the local cache ({type(err).__name__}: "
                                              f"{str(err).splitlines()[0] if str(err) else ''})") from err
        else:
            if spec.model not in open_clip.list_models():
                raise BackendUnavailableError(
                    f"{spec}: open_clip has no model named {spec.model!r} (see open_clip.list_models())"
                )
            weights = require_file(spec.weights, str(spec), "pass the path of a local weights file")
            try:
                model, _, transform = open_clip.create_model_and_transforms(
                    spec.model, pretrained=str(weights), weights_only=True)
            except Exception as err:  # torch and safetensors raise many types for bad files
                raise CheckpointError(f"{weights}: not valid {spec.model} weights ({err})") from err
            self._tokenizer = open_clip.get_tokenizer(spec.model)
        super().__init__(spec, model, transform, device, sha256_file(weights), precision=precision)

    def _encode_image_raw(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)

    def token_ids(self, prompts: list[str]) -> list[list[int]]:
        return self._tokenizer(prompts).tolist()

    def _encode_text_raw(self, prompts: list[str]) -> torch.Tensor:
        return self.model.encode_text(self._tokenizer(prompts).to(self.device))
