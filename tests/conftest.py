"""Shared fixtures: offline tiny models, the ../shared data folder, synthetic slides."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ANONAVILA_SHARED", REPO.parent / "shared")) / "data"


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test with the reason when it is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"needs the shared test data at {p} (../shared beside the checkout)")
    return p


@pytest.fixture(scope="session", autouse=True)
def _isolated(tmp_path_factory):
    """No hub access, and every on-disk cache in this run's own folder: a run never reads an earlier run's files."""
    home = tmp_path_factory.mktemp("home")
    os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "ANONAVILA_CACHE": str(home / "anonavila"),
                       "XDG_CACHE_HOME": str(home / "cache"), "HF_HOME": str(home / "hf")})


NETWORK_ATTEMPTS: list = []  # every refused connection of this test run, for tests that assert there were none
_LOOPBACK = {"127.0.0.1", "localhost", "::1", ""}


@pytest.fixture(scope="session", autouse=True)
def _no_network():
    """No test in this process reaches the network: a connection to anything but this machine (the dask cluster's
    loopback sockets, Unix sockets for the X server) fails loudly and is recorded."""
    connect = socket.socket.connect

    def guarded(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and str(address[0]) not in _LOOPBACK:
            NETWORK_ATTEMPTS.append(address)
            raise RuntimeError(f"a test tried to reach the network ({address})")
        return connect(self, address)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", guarded)
        yield


@pytest.fixture
def no_network() -> list:
    """The connections refused during this test, as they happen (the guard itself is suite-wide)."""
    NETWORK_ATTEMPTS.clear()
    return NETWORK_ATTEMPTS


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A tiny open_clip model (the demo architecture, another seed), saved as a user's weights file would be."""
    from napari_anonavila.backends.demo import write_demo_weights

    return write_demo_weights(tmp_path_factory.mktemp("weights") / "tiny.safetensors", seed=7)


@pytest.fixture(scope="session")
def tiny_backend(tiny_weights):
    """The tiny model loaded through the same open_clip path as a user's weights."""
    from napari_anonavila.backends import get_backend

    return get_backend(f"open_clip:anonavila-demo@{tiny_weights}", device="cpu")


@pytest.fixture(scope="session")
def demo_backend():
    from napari_anonavila.backends import get_backend

    return get_backend("demo", device="cpu")


@pytest.fixture(scope="session")
def sample_slides(tmp_path_factory):
    """Synthetic normal and planted-anomaly slides (2048 px, 0.5 um/px) with their ground truth."""
    from napari_anonavila.sample import write_sample_slides

    return write_sample_slides(tmp_path_factory.mktemp("sample"), size=2048, n_anomalies=3, seed=3)


@pytest.fixture(scope="session")
def fitted_on_sample(sample_slides, demo_backend):
    """A demo-backend detector fitted on the normal synthetic slide."""
    from napari_anonavila.detector import Detector
    from napari_anonavila.grid import make_grid
    from napari_anonavila.pipeline import iter_slide_embeddings
    from napari_anonavila.progress import drain
    from napari_anonavila.slide import open_slide
    from napari_anonavila.training import TrainConfig

    det = Detector.create(demo_backend)
    with open_slide(sample_slides.normal) as s:
        embs = drain(iter_slide_embeddings(s, make_grid(s, patch_px=128), demo_backend, det.backend_id))
    det.fit(embs, config=TrainConfig(epochs=20, batch_size=32, accumulate=1))
    return det
