"""Hugging Face ``CLIPModel`` backend (PLIP and similar pathology CLIPs): a saved model folder, or ``ORG/NAME``
from the local Hugging Face cache, read by ``transformers`` offline (``local_files_only``)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import BackendUnavailableError, CheckpointError
from .base import BackendSpec, VLMBackend, sha256_file

__all__ = ["HFClipBackend"]

_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def _field(size, key: str):
    """A field of an image processor's size: a dict (transformers 4) or a SizeDict (5), or a bare number."""
    if isinstance(size, (int, float)):
        return int(size)
    value = size.get(key) if hasattr(size, "get") else getattr(size, key, None)
    return int(value) if value else None


def _image_transform(processor):
    """The processor's resize (shortest side, bicubic), centre crop and normalisation, as a torchvision transform."""
    from torchvision import transforms as T

    size = _field(processor.size, "shortest_edge") or _field(processor.size, "height")
    crop = (_field(processor.crop_size, "height"), _field(processor.crop_size, "width"))
    return T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(crop), T.ToTensor(),
                      T.Normalize(processor.image_mean, processor.image_std)])


class HFClipBackend(VLMBackend):
    """A ``transformers`` CLIPModel with its tokenizer and image processor, from local files only."""

    description = "Hugging Face CLIPModel"
    image_tower = ("vision_model", "visual_projection")

    def __init__(self, spec: BackendSpec, device: torch.device, *, precision: str = "float32",
                 allow_download: bool = False) -> None:
        try:
            from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel
        except ImportError as err:
            raise BackendUnavailableError(f"{spec}: needs the transformers package ({err}); pip install "
                                          "'napari-anonavila[conch]' (which brings it)") from err
        from .hub import hub_snapshot, offline

        folder = Path(spec.model).expanduser()
        if folder.is_dir():
            weights = next((folder / w for w in _WEIGHTS if (folder / w).is_file()), None)
            if weights is None:
                raise BackendUnavailableError(f"{spec}: no {' or '.join(_WEIGHTS)} in {folder}")
        else:
            folder = hub_snapshot(spec.model, (_WEIGHTS, "config.json", ("tokenizer.json", "vocab.json"),
                                               "preprocessor_config.json"), allow_download=allow_download,
                                  what=str(spec))
            weights = next(folder / w for w in _WEIGHTS if (folder / w).is_file())
        try:
            with offline():
                model = CLIPModel.from_pretrained(folder, local_files_only=True, use_safetensors=weights.suffix
                                                  == ".safetensors")
                self._tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
                processor = CLIPImageProcessor.from_pretrained(folder, local_files_only=True)
        except OSError as err:
            raise BackendUnavailableError(f"{spec}: incomplete model folder {folder} ({str(err).splitlines()[0]})") \
                from err
        except Exception as err:  # wrong architecture, damaged weights: many types
            raise CheckpointError(f"{spec}: not a CLIPModel ({type(err).__name__}: {err})") from err
        self._size = _field(processor.crop_size, "height")
        self._max_len = int(getattr(model.config.text_config, "max_position_embeddings", 77))
        super().__init__(spec, model, _image_transform(processor), device, sha256_file(weights), precision=precision)

    def _input_size(self) -> int:
        return self._size

    def _encode_image_raw(self, pixels: torch.Tensor) -> torch.Tensor:
        return _features(self.model.get_image_features(pixel_values=pixels))

    def token_ids(self, prompts: list[str]) -> list[list[int]]:
        return [list(r) for r in self._tokenizer(prompts, truncation=True, max_length=self._max_len)["input_ids"]]

    def _encode_text_raw(self, prompts: list[str]) -> torch.Tensor:
        tok = self._tokenizer(prompts, padding=True, truncation=True, max_length=self._max_len, return_tensors="pt")
        return _features(self.model.get_text_features(input_ids=tok["input_ids"].to(self.device),
                                                      attention_mask=tok["attention_mask"].to(self.device)))


def _features(out) -> torch.Tensor:
    """transformers 4 returns the projected features; 5 may return an output object holding them."""
    if isinstance(out, torch.Tensor):
        return out
    for name in ("pooler_output", "image_embeds", "text_embeds"):
        value = getattr(out, name, None)
        if isinstance(value, torch.Tensor):
            return value
    raise CheckpointError("the CLIPModel returned no feature tensor")
