"""int8's attention: the fused projections taken out of ``nn.MultiheadAttention`` compute what it computes."""

from __future__ import annotations

import pytest
import torch

from napari_anonavila.backends.quantise import _ProjectedAttention, int8_image_tower


def _mha(batch_first: bool) -> torch.nn.MultiheadAttention:
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(32, 4, batch_first=batch_first).eval()
    with torch.no_grad():  # non-zero biases: a dropped bias would show
        mha.in_proj_bias.normal_()
        mha.out_proj.bias.normal_()
    return mha


@pytest.mark.parametrize("batch_first", [True, False])
def test_projected_attention_is_multihead_attention_in_float(batch_first):
    mha = _mha(batch_first)
    ours = _ProjectedAttention(mha).eval()
    shape = (3, 7, 32) if batch_first else (7, 3, 32)
    x, ctx = torch.randn(shape), torch.randn((*shape[:1], 5, *shape[2:]) if batch_first else (5, 3, 32))
    mask = torch.zeros(7, 7, dtype=torch.bool)
    mask[:, -2:] = True  # the last two keys are not attended to
    with torch.inference_mode():
        calls = [  # self-attention (the fast path), cross-attention, a mask, attention weights asked for
            {"query": x, "key": x, "value": x, "need_weights": False},
            {"query": x, "key": ctx, "value": ctx, "need_weights": False},
            {"query": x, "key": x, "value": x, "need_weights": False, "attn_mask": mask},
            {"query": x, "key": x, "value": x, "need_weights": True},
        ]
        for kw in calls:
            want, want_w = mha(**kw)
            got, got_w = ours(**kw)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
            assert (got_w is None) == (want_w is None)
            if want_w is not None:
                torch.testing.assert_close(got_w, want_w, rtol=1e-5, atol=1e-5)


def test_int8_tower_quantises_the_attention_input_projection():
    mha = _mha(True)
    tower = torch.nn.Sequential(torch.nn.Linear(32, 32), mha)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = tower

    x = torch.randn(2, 9, 32)
    with torch.inference_mode():
        want = mha(tower[0](x), tower[0](x), tower[0](x), need_weights=False)[0]
    model = int8_image_tower(Model(), ("visual",))
    attn = model.visual[1]
    assert isinstance(attn, _ProjectedAttention)
    assert type(attn.qkv).__module__.startswith("torch.ao.nn.quantized.dynamic")  # the input projection: int8
    assert type(attn.out) is type(mha.out_proj) and attn.out.weight.dtype == torch.float32  # output: float32
    with torch.inference_mode():
        h = model.visual[0](x)
        got = attn(h, h, h, need_weights=False)[0]
        cross = attn(h, h[:, :4], h[:, :4], need_weights=False)[0]  # the general path on dequantised weights
    cos = torch.nn.functional.cosine_similarity(got.flatten(1), want.flatten(1))
    assert cos.min() > 0.99 and not torch.equal(got, want)  # int8 ran, and stayed close
    assert cross.shape == got.shape and torch.isfinite(cross).all()
