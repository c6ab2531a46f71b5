"""bfloat16 on a CPU: the weights themselves in bfloat16 (fast oneDNN kernels), not CPU autocast (slower than
float32); embeddings close to float32's, the logit scale exact, and a cache key of its own."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def _images(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (300, 300, 3), dtype=np.uint8) for _ in range(n)]


def _spec(kind, tiny_weights, tmp_path_factory):
    if kind == "open_clip":
        return f"open_clip:anonavila-demo@{tiny_weights}"
    pytest.importorskip("conch.open_clip_custom", reason="needs the [conch] extra (conch-fork)")
    from napari_anonavila.backends.conch import build_conch_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("conch-bf16") / "pytorch_model.bin"
    torch.save(build_conch_model().state_dict(), path)
    return f"conch:{path}"


@pytest.mark.parametrize("kind", ["open_clip", "conch"])
def test_bfloat16_on_cpu_casts_the_weights_and_stays_close_to_float32(kind, tiny_weights, tmp_path_factory):
    from napari_anonavila.backends import get_backend

    spec = _spec(kind, tiny_weights, tmp_path_factory)
    f32 = get_backend(spec, device="cpu")
    bf = get_backend(spec, device="cpu", precision="bfloat16")
    assert (f32.numerics, bf.numerics) == ("float32", "bfloat16-weights")
    assert {p.dtype for p in bf.model.parameters()} == {torch.bfloat16}
    assert bf.logit_scale_exp == f32.logit_scale_exp  # read before the cast
    a, b = f32.embed_images(_images()), bf.embed_images(_images())
    assert b.dtype == torch.float32 and torch.allclose(b.norm(dim=1), torch.ones(len(b)), atol=1e-5)
    cos = (a * b).sum(1)
    assert cos.min() > 0.99 and not torch.equal(a, b)  # bfloat16 really ran, and stayed close
    t32, tbf = f32.encode_texts(["tumor cells", "lymphocytes"]), bf.encode_texts(["tumor cells", "lymphocytes"])
    assert (t32 * tbf).sum(1).min() > 0.99
    assert f32._text_cache_path() != bf._text_cache_path()


@pytest.mark.parametrize("kind", ["open_clip", "conch"])
def test_int8_on_cpu_quantises_the_image_tower_only_and_stays_close_to_float32(kind, tiny_weights, tmp_path_factory):
    from napari_anonavila.backends import get_backend

    spec = _spec(kind, tiny_weights, tmp_path_factory)
    f32 = get_backend(spec, device="cpu")
    q = get_backend(spec, device="cpu", precision="int8")
    assert q.numerics == "int8-dynamic-image"
    dynamic = [m for m in q.model.visual.modules() if type(m).__module__.startswith("torch.ao.nn.quantized.dynamic")]
    assert dynamic and not any(type(m).__module__.startswith("torch.ao") for n, m in q.model.named_modules()
                               if not n.startswith("visual"))  # the text tower stays float32
    a, b = f32.embed_images(_images()), q.embed_images(_images())
    cos = (a * b).sum(1)
    assert cos.min() > 0.99 and not torch.equal(a, b)  # int8 really ran, and stayed close
    texts = ["tumor cells", "lymphocytes"]
    assert torch.equal(f32.encode_texts(texts), q.encode_texts(texts))  # term embeddings: float32's exactly
    assert f32._text_cache_path() != q._text_cache_path()


def test_int8_is_refused_off_the_cpu_and_auto_says_why(tiny_weights, monkeypatch):
    from napari_anonavila.backends import hardware

    def flags(*names):
        monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset(names))

    flags("avx2", "avx512f", "avx512_vnni")  # Ice Lake: VNNI, no bfloat16 hardware
    precision, why = hardware.choose_precision("auto", "cpu")
    assert precision == "int8" and "avx512_vnni" in why and "Spearman" in why
    flags("avx512_vnni", "amx_bf16", "amx_int8")  # Sapphire Rapids: bfloat16 hardware wins
    assert hardware.choose_precision("auto", "cpu")[0] == "bfloat16"
    flags("avx2", "fma")
    assert hardware.choose_precision("auto", "cpu")[0] == "float32"
    with pytest.warns(UserWarning, match="no int8 dot-product hardware"):
        hardware.choose_precision("int8", "cpu")
    assert hardware.choose_precision("auto", "cuda")[0] == "float32"
    with pytest.raises(ValueError, match="int8 runs on a CPU only"):
        hardware.choose_precision("int8", "cuda")
