"""CONCH backend (Lu et al., Nature Medicine 2024): ``conch_ViT-B-16``, 448 px, 512-d embeddings.

The CONCH code comes from the optional ``conch-fork`` package (CC BY-NC-ND 4.0), never vendored here; its
weights are gated and must be a local file (``pytorch_model.bin``). The state dict is read with
``torch.load(weights_only=True)``, so a weights file can never run code.
"""

from __future__ import annotations

import json
from importlib import resources

import torch
import torch.nn.functional as F

from ..errors import BackendUnavailableError, CheckpointError
from .base import BackendSpec, VLMBackend, require_file, sha256_file

__all__ = ["ConchBackend", "build_conch_model"]

_HINT = "install the extra: pip install 'napari-anonavila[conch]'"


def _conch():
    try:
        from conch.open_clip_custom import coca_model, custom_tokenizer, transform
    except ImportError as err:
        raise BackendUnavailableError(f"the conch backend needs the conch-fork package ({err}); {_HINT}") from err
    return coca_model, custom_tokenizer, transform


def build_conch_model() -> torch.nn.Module:
    """The CONCH architecture with random weights, from the package's own model config."""
    coca_model, _, _ = _conch()
    cfg_text = (resources.files("conch.open_clip_custom") / "model_configs" / "conch_ViT-B-16.json").read_text()
    cfg = json.loads(cfg_text)
    cfg.pop("custom_text", None)
    return coca_model.CoCa(**cfg)


class ConchBackend(VLMBackend):
    """CONCH with weights from a local file."""

    description = "CONCH (conch_ViT-B-16)"

    def __init__(self, spec: BackendSpec, device: torch.device) -> None:
        coca_model, custom_tokenizer, transform = _conch()
        from conch.open_clip_custom.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

        weights = require_file(spec.weights, "conch backend",
                               "download CONCH's pytorch_model.bin (gated, CC BY-NC-ND) and pass conch:/path/to/it")
        model = build_conch_model()
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state)
            state = {k.removeprefix("module."): v for k, v in state.items()}
            coca_model.resize_pos_embed(state, model)
            missing = model.load_state_dict(state, strict=False).missing_keys
        except KeyError as err:
            raise CheckpointError(f"{weights}: not CONCH weights; tensor {err} is missing") from err
        except Exception as err:  # torch raises many types for bad files
            raise CheckpointError(f"{weights}: not valid CONCH weights ({err})") from err
        if missing:
            raise CheckpointError(f"{weights}: not CONCH weights; {len(missing)} tensors missing, e.g. {missing[:3]}")
        self._tokenizer = custom_tokenizer.get_tokenizer()
        tf = transform.image_transform(model.visual.image_size, mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD)
        super().__init__(spec, model, tf, device, sha256_file(weights))

    def _encode_image_raw(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels, proj_contrast=True, normalize=False)

    def _encode_text_raw(self, prompts: list[str]) -> torch.Tensor:
        # conch-fork's tokenize() uses batch_encode_plus, gone in transformers 5; same settings, called directly.
        tok = self._tokenizer(prompts, max_length=127, add_special_tokens=True, return_token_type_ids=False,
                              truncation=True, padding="max_length", return_tensors="pt")
        ids = F.pad(tok["input_ids"], (0, 1), value=self._tokenizer.pad_token_id)
        return self.model.encode_text(ids.to(self.device), normalize=False)
