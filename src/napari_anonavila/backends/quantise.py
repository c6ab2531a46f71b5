"""int8 on a CPU: the image tower's linear layers quantised dynamically (int8 weights per channel, activations
quantised per batch), through torch's oneDNN/FBGEMM kernels (VNNI and AMX where the CPU has them), the attention's
fused input projection included; its output projection stays float32 (quantised as well, it moved the scores of a
real slide outside the agreement ``auto`` requires). The text tower stays float32, so the term embeddings are
float32's exactly."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["int8_available", "int8_image_tower"]


def int8_image_tower(model: torch.nn.Module, tower: Sequence[str]) -> torch.nn.Module:
    """``model`` with the linear layers of its submodules ``tower`` (by attribute name) in dynamic int8, the input
    projections of its ``nn.MultiheadAttention`` layers included (see :class:`_ProjectedAttention`).

    Raises ValueError when the model has none of ``tower`` or this torch lacks dynamic quantisation."""
    missing = [name for name in tower if not hasattr(model, name)]
    if missing:
        raise ValueError(f"int8: this model has no image tower named {', '.join(missing)}; use float32")
    if not int8_available():  # a future torch without the eager dynamic path
        raise ValueError(f"int8 needs torch's dynamic quantisation (torch.ao.quantization), which torch "
                         f"{torch.__version__} lacks; use float32")
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch marks the eager path deprecated; it is what runs the int8 kernels here
        warnings.simplefilter("ignore")
        for name in tower:  # by exact type: attention's output projection (a Linear subclass) stays float32
            holder = torch.nn.Sequential(getattr(model, name))  # a tower that is itself one Linear is swapped too
            _project_attention(holder)
            setattr(model, name, quantize_dynamic(holder, {torch.nn.Linear}, dtype=torch.qint8)[0])
    return model


def int8_available() -> bool:
    """Whether this torch has the dynamic quantisation int8 runs on."""
    try:
        from torch.ao.quantization import quantize_dynamic  # noqa: F401
    except ImportError:
        return False
    return True


class _ProjectedAttention(torch.nn.Module):
    """``nn.MultiheadAttention`` with its fused input projection as a plain ``Linear`` layer, so that dynamic
    quantisation reaches it (in the fused module it is a raw parameter: 28% of an int8 ViT-B/16's time stayed
    float32). The output projection is the module's own, which quantisation leaves float32: quantised too, it cost
    rank agreement with float32 (Spearman 0.9945 and top-10 9/10 on a real Ki-67 slide, against 0.9980 and 10/10
    with it float32; docs/benchmarks.md). Self-attention without masks (a ViT's blocks) runs the projections and
    ``scaled_dot_product_attention``; any other call (cross-attention, masks, attention weights) runs
    ``F.multi_head_attention_forward`` on the projections' weights (dequantised when quantised)."""

    def __init__(self, mha: torch.nn.MultiheadAttention) -> None:
        super().__init__()
        d, self.heads, self.batch_first = mha.embed_dim, mha.num_heads, mha.batch_first
        self.qkv, self.out = torch.nn.Linear(d, 3 * d), mha.out_proj
        with torch.no_grad():
            self.qkv.weight.copy_(mha.in_proj_weight)
            self.qkv.bias.copy_(mha.in_proj_bias)

    @staticmethod
    def replaces(m: torch.nn.Module) -> bool:
        """Whether ``m`` is a plain fused multi-head attention this class computes exactly (no extra key/value bias,
        no zero attention, no dropout)."""
        return (type(m) is torch.nn.MultiheadAttention and m._qkv_same_embed_dim and m.in_proj_bias is not None
                and m.out_proj.bias is not None and m.bias_k is None and not m.add_zero_attn and m.dropout == 0.0)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if not (key is query and value is query and key_padding_mask is None and attn_mask is None
                and not need_weights and not is_causal):
            return self._general(query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights,
                                 is_causal)
        x = query if self.batch_first else query.transpose(0, 1)  # (N, L, D)
        n, length, d = x.shape
        q, k, v = self.qkv(x).view(n, length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, length, d)
        o = self.out(o)
        return (o if self.batch_first else o.transpose(0, 1)), None

    def _general(self, query, key, value, key_padding_mask, need_weights, attn_mask, average, is_causal):
        if self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        (w_in, b_in), (w_out, b_out) = _float_weights(self.qkv), _float_weights(self.out)
        o, weights = F.multi_head_attention_forward(
            query, key, value, w_in.shape[1], self.heads, w_in, b_in, None, None, False, 0.0, w_out, b_out,
            training=False, key_padding_mask=key_padding_mask, need_weights=need_weights, attn_mask=attn_mask,
            average_attn_weights=average, is_causal=is_causal)
        return (o.transpose(0, 1) if self.batch_first else o), weights


def _float_weights(linear: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """A linear layer's weight and bias in float32, whether it is a ``Linear`` or a dynamically quantised one."""
    w, b = linear.weight, linear.bias
    w, b = (w() if callable(w) else w), (b() if callable(b) else b)
    return (w.dequantize() if w.is_quantized else w), b


def _project_attention(module: torch.nn.Module) -> None:
    """Swap, in place, every multi-head attention under ``module`` that :class:`_ProjectedAttention` computes."""
    for name, child in module.named_children():
        if _ProjectedAttention.replaces(child):
            setattr(module, name, _ProjectedAttention(child))
        else:
            _project_attention(child)

