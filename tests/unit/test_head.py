"""The head against a straightforward per-image float64 formulation of METHOD.md."""

from __future__ import annotations

import math

import pytest
import torch

from napari_anonavila.head import MLP, contrastive_loss, text_augmented_embeddings


def reference_embeddings(v, tn, ta, s, mlp):
    """Per image, per term, in float64: u_k = rho([v; exp(w_k) t_k]), h = mean_k u_k (METHOD.md)."""
    mlp64 = MLP(mlp.dim).double()
    mlp64.load_state_dict({k: t.double() for k, t in mlp.state_dict().items()})
    outs = []
    for text in (tn, ta):
        hs = []
        for i in range(v.shape[0]):
            vi = v[i].double()
            cos = torch.stack([torch.dot(vi, t.double()) / (vi.norm() * t.double().norm()) for t in text])
            w = torch.softmax(s * cos, dim=0)
            us = [mlp64(torch.cat([vi, math.exp(w[k]) * text[k].double()])) for k in range(text.shape[0])]
            hs.append(torch.stack(us).mean(0))
        outs.append(torch.stack(hs))
    return outs


def reference_loss(hn, ha):
    hn, ha = hn.double(), ha.double()
    b = hn.shape[0]

    def cos(a, c):
        return float(torch.dot(a, c) / (a.norm() * c.norm()))

    pairs = [(i, j) for i in range(b) for j in range(i + 1, b)]
    s_nn = sum(math.exp(cos(hn[i], hn[j])) for i, j in pairs) / len(pairs)
    s_aa = sum(math.exp(cos(ha[i], ha[j])) for i, j in pairs) / len(pairs)
    s_na = sum(math.exp(cos(hn[i], ha[j])) for i in range(b) for j in range(b)) / b**2
    return -math.log((s_nn + s_aa) / (s_nn + s_aa + s_na))


def _unit(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(*shape, generator=g), dim=-1)


def test_mlp_matches_paper_size_and_keys():
    mlp = MLP(512)
    assert sum(p.numel() for p in mlp.parameters()) == 689_024
    assert list(mlp.state_dict()) == [f"linear{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias")]
    assert mlp(torch.zeros(3, 1024)).shape == (3, 128)


@pytest.mark.parametrize("dim", [0, 6, -4])
def test_mlp_rejects_bad_dim(dim):
    with pytest.raises(ValueError, match="multiple of 4"):
        MLP(dim)


@pytest.mark.parametrize(("dim", "n_n", "n_a", "b", "scale"), [(512, 92, 48, 5, 100.0), (16, 3, 2, 4, 14.3)])
def test_batched_equals_per_image_float64(dim, n_n, n_a, b, scale):
    torch.manual_seed(dim)
    mlp = MLP(dim)
    v, tn, ta = _unit(b, dim, seed=1), _unit(n_n, dim, seed=2), _unit(n_a, dim, seed=3)
    h_n, h_a = text_augmented_embeddings(v, tn, ta, scale, mlp)
    r_n, r_a = reference_embeddings(v, tn, ta, scale, mlp)
    assert h_n.shape == (b, dim // 4)
    assert torch.allclose(h_n.double(), r_n, atol=1e-5, rtol=0)
    assert torch.allclose(h_a.double(), r_a, atol=1e-5, rtol=0)


def test_batch_composition_does_not_change_embeddings():
    torch.manual_seed(0)
    mlp = MLP(32)
    v, tn, ta = _unit(9, 32, seed=4), _unit(5, 32, seed=5), _unit(4, 32, seed=6)
    full = text_augmented_embeddings(v, tn, ta, 50.0, mlp)[0]
    perm = torch.randperm(9)
    part = text_augmented_embeddings(v[perm][:4], tn, ta, 50.0, mlp)[0]
    assert torch.allclose(full[perm][:4], part, atol=1e-6)


def test_loss_by_hand_b2_identical_and_opposite():
    # h_N equal for both images, h_A opposite to h_N: S_NN = S_AA = e, S_NA = e^-1.
    hn = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    ha = -hn
    expected = -math.log(2 * math.e / (2 * math.e + math.exp(-1)))
    assert contrastive_loss(hn, ha).item() == pytest.approx(expected, rel=1e-6)
    # orthogonal pools: S_NA = 1
    ha = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    assert contrastive_loss(hn, ha).item() == pytest.approx(-math.log(2 * math.e / (2 * math.e + 1)), rel=1e-6)


def test_loss_matches_reference_on_random_batch():
    hn, ha = torch.randn(7, 8), torch.randn(7, 8)
    assert contrastive_loss(hn, ha).item() == pytest.approx(reference_loss(hn, ha), rel=1e-5)


def test_loss_needs_two_images():
    with pytest.raises(ValueError, match="at least 2"):
        contrastive_loss(torch.randn(1, 4), torch.randn(1, 4))


def test_loss_is_differentiable_and_positive():
    mlp = MLP(16)
    v, tn, ta = _unit(6, 16, seed=7), _unit(3, 16, seed=8), _unit(3, 16, seed=9)
    loss = contrastive_loss(*text_augmented_embeddings(v, tn, ta, 10.0, mlp))
    loss.backward()
    assert loss.item() > 0
    assert mlp.linear1.weight.grad is not None
    assert torch.isfinite(mlp.linear1.weight.grad).all()
