"""On a CPU the image encoder runs its forward passes side by side, one thread each (less CPU time than threads
sharing every pass): the embeddings are those of one pass at a time, in the batch's order, gradients stay off, and
torch's thread count is restored even when a pass fails."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def backend(tiny_weights):
    from napari_anonavila.backends import get_backend

    return get_backend(f"open_clip:anonavila-demo@{tiny_weights}", device="cpu")


def _images(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (96, 96, 3), dtype=np.uint8) for _ in range(n)]


def _watch(backend) -> list[tuple[str, int, int, bool]]:
    """(thread name, torch threads, images, gradients on) of every forward pass of the image tower."""
    seen: list[tuple[str, int, int, bool]] = []
    backend.model.visual.register_forward_hook(
        lambda _m, args, _out: seen.append((threading.current_thread().name, torch.get_num_threads(), len(args[0]),
                                            torch.is_grad_enabled())))
    return seen


def test_streams_give_the_embeddings_of_one_pass_at_a_time_in_order(backend, two_threads):
    pixels = backend.preprocess(_images(21))
    seen = _watch(backend)
    streamed = backend.encode_images(pixels)
    passes = list(seen)
    assert torch.get_num_threads() == 2  # restored
    assert sum(n for _, _, n, _ in passes) == 21 and max(n for _, _, n, _ in passes) <= backend.micro_batch
    assert len(passes) % 2 == 0  # a multiple of the streams: they finish together
    assert {name.split("_")[0] for name, _, _, _ in passes} == {"anonavila-encoder"}
    assert len({name for name, _, _, _ in passes}) == 2 and {t for _, t, _, _ in passes} == {1}
    assert not any(grad for _, _, _, grad in passes)

    backend.cpu_streams = False
    seen.clear()
    plain = backend.encode_images(pixels)
    assert {name for name, _, _, _ in seen} == {threading.current_thread().name}
    singles = torch.cat([backend.encode_images(pixels[i : i + 1]) for i in range(len(pixels))])
    torch.testing.assert_close(streamed, plain, rtol=0, atol=1e-6)
    torch.testing.assert_close(streamed, singles, rtol=0, atol=1e-6)


def test_one_thread_or_one_pass_runs_on_the_calling_thread(backend, two_threads):
    seen = _watch(backend)
    backend.encode_images(backend.preprocess(_images(backend.micro_batch)))  # one pass: nothing to run beside it
    torch.set_num_threads(1)
    backend.encode_images(backend.preprocess(_images(20)))
    assert {name for name, _, _, _ in seen} == {threading.current_thread().name}


def test_a_failing_pass_raises_and_restores_the_thread_count(backend, two_threads):
    def broken(_m, args):
        if len(args[0]) and threading.current_thread().name.startswith("anonavila-encoder"):
            raise RuntimeError("a pass failed")

    backend.model.visual.register_forward_pre_hook(broken)
    with pytest.raises(RuntimeError, match="a pass failed"):
        backend.encode_images(backend.preprocess(_images(20)))
    assert torch.get_num_threads() == 2
