"""open_clip backend: any open_clip architecture with a local weights file, or an ``hf-hub:`` id."""

from __future__ import annotations

import torch

from ..errors import BackendUnavailableError, CheckpointError
from .base import BackendSpec, VLMBackend, require_file, sha256_file

__all__ = ["OpenClipBackend"]


class OpenClipBackend(VLMBackend):
    """A CLIP-style model built by open_clip. Weights are loaded with safetensors or ``weights_only`` torch."""

    description = "open_clip model"

    def __init__(self, spec: BackendSpec, device: torch.device) -> None:
        import open_clip

        from .demo import register_demo_config

        register_demo_config()
        if spec.model.startswith("hf-hub:"):
            try:
                model, _, transform = open_clip.create_model_and_transforms(spec.model)
            except Exception as err:  # network or hub errors come in many types
                raise BackendUnavailableError(
                    f"{spec}: could not load from the Hugging Face hub ({err}); download the weights and use "
                    "'open_clip:MODEL@/path/weights'"
                ) from err
            digest = None
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
            digest = sha256_file(weights)
        self._tokenizer = open_clip.get_tokenizer(spec.model)
        super().__init__(spec, model, transform, device, digest)

    def _encode_image_raw(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)

    def _encode_text_raw(self, prompts: list[str]) -> torch.Tensor:
        return self.model.encode_text(self._tokenizer(prompts).to(self.device))
