"""CONCH backend (Lu et al., Nature Medicine 2024): ``conch_ViT-B-16``, 448 px, 512-d embeddings.

The CONCH code comes from the optional ``conch-fork`` package (CC BY-NC-ND 4.0), never vendored here. Its
weights come from one local file: CONCH's own ``pytorch_model.bin``, or an authors' Ano-NAViLa checkpoint that
holds all of CONCH under ``VLM.*`` (so that file alone is a complete detector); or, with the spec ``conch``,
from ``MahmoodLab/CONCH`` in the local Hugging Face cache. Files are read with ``torch.load(weights_only=True)``,
so a weights file can never run code, and nothing reaches the network.
"""

from __future__ import annotations

import json
import warnings
from importlib import resources

import torch

from ..errors import BackendUnavailableError, CheckpointError
from .base import BackendSpec, VLMBackend, require_file, sha256_file
from .conch_tokens import cached_tokenizer

__all__ = ["CONCH_REPO", "ConchBackend", "build_conch_model", "conch_state"]

_HINT = "install the extra: pip install 'napari-anonavila[conch]'"
CONCH_REPO = "MahmoodLab/CONCH"


def _conch():
    """conch-fork's model and transform modules (its import of timm's deprecated paths warns: not ours to show)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            from conch.open_clip_custom import coca_model, transform
    except ImportError as err:
        raise BackendUnavailableError(f"the conch backend needs the conch-fork package ({err}); {_HINT}") from err
    return coca_model, transform


def build_conch_model() -> torch.nn.Module:
    """The CONCH architecture with random weights, from the package's own model config."""
    coca_model, _ = _conch()
    cfg_text = (resources.files("conch.open_clip_custom") / "model_configs" / "conch_ViT-B-16.json").read_text()
    cfg = json.loads(cfg_text)
    cfg.pop("custom_text", None)
    return coca_model.CoCa(**cfg)


def conch_state(obj, where: str) -> dict[str, torch.Tensor]:
    """CONCH's state dict out of a loaded file: CONCH's own layout, or ``VLM.*`` of an authors' checkpoint."""
    state = obj.get("model_state", obj.get("state_dict", obj)) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{where}: not CONCH weights (no state dictionary)")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if any(k.startswith("VLM.") for k in state):
        state = {k[4:]: v for k, v in state.items() if k.startswith("VLM.")}
    return state


class ConchBackend(VLMBackend):
    """CONCH with weights from a local file, an in-memory state dict, or the local Hugging Face cache."""

    description = "CONCH (conch_ViT-B-16)"

    def __init__(self, spec: BackendSpec, device: torch.device, *, precision: str = "float32",
                 state: dict | None = None, weights_sha256: str | None = None, allow_download: bool = False) -> None:
        coca_model, transform = _conch()
        from conch.open_clip_custom.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

        if state is None:
            if spec.weights:
                weights = require_file(spec.weights, "conch backend", "pass CONCH's pytorch_model.bin or an authors' "
                                       "Ano-NAViLa checkpoint (.pth) that holds CONCH")
            else:
                from .hub import hub_file

                weights = hub_file(CONCH_REPO, "pytorch_model.bin", allow_download=allow_download,
                                   what="conch backend", hint="the repository is gated: accept its licence on "
                                   "huggingface.co first, or pass conch:/path/to/pytorch_model.bin")
            try:
                state = conch_state(torch.load(weights, map_location="cpu", weights_only=True), str(weights))
            except CheckpointError:
                raise
            except Exception as err:  # torch raises many types for bad files
                raise CheckpointError(f"{weights}: not valid CONCH weights ({type(err).__name__}: {err})") from err
            weights_sha256 = sha256_file(weights)
        where = spec.weights or CONCH_REPO
        model = build_conch_model()
        try:
            coca_model.resize_pos_embed(state, model)
            missing = model.load_state_dict(state, strict=False).missing_keys
        except KeyError as err:
            raise CheckpointError(f"{where}: not CONCH weights; tensor {err} is missing") from err
        except Exception as err:  # shape mismatches and the like
            raise CheckpointError(f"{where}: not valid CONCH weights ({type(err).__name__}: {err})") from err
        if missing:
            raise CheckpointError(f"{where}: not CONCH weights; {len(missing)} tensors missing, e.g. {missing[:3]}")
        self._tokenizer = cached_tokenizer()
        tf = transform.image_transform(model.visual.image_size, mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD)
        super().__init__(spec, model, tf, device, weights_sha256, precision=precision)

    def _encode_image_raw(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels, proj_contrast=True, normalize=False)

    def token_ids(self, prompts: list[str]) -> list[list[int]]:
        return self._tokenizer(prompts).tolist()

    def _encode_text_raw(self, prompts: list[str]) -> torch.Tensor:
        # the authors' ids under any transformers version (conch_tokens.py says why this is not conch's tokenize())
        return self.model.encode_text(self._tokenizer(prompts).to(self.device), normalize=False)
