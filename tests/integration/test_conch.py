"""The CONCH backend through its real loading path: the architecture with seeded random weights, saved as a file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("conch.open_clip_custom", reason="needs the [conch] extra (conch-fork)")


@pytest.fixture(scope="module")
def conch_weights(tmp_path_factory):
    from napari_anonavila.backends.conch import build_conch_model

    torch.manual_seed(0)
    model = build_conch_model()
    path = tmp_path_factory.mktemp("conch") / "pytorch_model.bin"
    torch.save(model.state_dict(), path)
    return path


@pytest.mark.slow
def test_conch_backend_loads_and_embeds(conch_weights):
    from napari_anonavila.backends import get_backend

    b = get_backend(f"conch:{conch_weights}", device="cpu")
    assert (b.embed_dim, b.image_size) == (512, 448)
    img = b.embed_images([np.full((300, 300, 3), 200, np.uint8)])
    assert img.shape == (1, 512) and torch.allclose(img.norm(dim=1), torch.ones(1), atol=1e-5)
    txt = b.encode_texts(["an image showing lymphocytes", "an image showing tumor cells"])
    assert txt.shape == (2, 512) and not torch.allclose(txt[0], txt[1])
    assert b.logit_scale_exp == pytest.approx(1 / 0.07, rel=1e-4)  # CoCa's initial value, as saved


def test_conch_weights_of_another_model_are_refused(tmp_path):
    from napari_anonavila.backends import get_backend
    from napari_anonavila.errors import CheckpointError

    bad = tmp_path / "pytorch_model.bin"
    torch.save({"visual.proj": torch.zeros(2)}, bad)
    with pytest.raises(CheckpointError, match="not CONCH weights"):
        get_backend(f"conch:{bad}", device="cpu")


def test_missing_weights_file_is_a_one_line_error(tmp_path):
    from napari_anonavila.backends import get_backend
    from napari_anonavila.errors import BackendUnavailableError

    with pytest.raises(BackendUnavailableError, match="not found") as info:
        get_backend(f"conch:{tmp_path / 'nope.bin'}")
    assert "\n" not in str(info.value)
