"""The fast layers compute what the reference ``torch.nn`` / textbook forms compute (values and gradients)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from anysat_lite.model.blocks import _BiasedAttention, attention
from anysat_lite.model.irpe import ContextualRPE, add_prefix, euclidean_buckets, grid_coords
from anysat_lite.model.layers import MIN_GROUP, Dropout, GroupNorm


@pytest.mark.parametrize("channels,groups", [(64, 4), (128, 16), (96, 4), (8, 4)])
def test_groupnorm_matches_torch_on_2d_inputs(channels, groups):
    torch.manual_seed(0)
    ours, ref = GroupNorm(groups, channels), nn.GroupNorm(groups, channels)
    nn.init.normal_(ours.weight)
    nn.init.normal_(ours.bias)
    ref.load_state_dict(ours.state_dict())
    assert list(ours.state_dict()) == ["weight", "bias"]
    x = (torch.randn(300, channels) * 3 + 1).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    g = torch.randn(300, channels)
    y, y_ref = ours(x), ref(x_ref)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    y.backward(g)
    y_ref.backward(g)
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad)
    if channels // groups < MIN_GROUP:  # tiny groups use the reference kernel itself
        assert torch.equal(y, y_ref)


def test_groupnorm_other_ranks_and_wrong_width():
    ours, ref = GroupNorm(4, 16), nn.GroupNorm(4, 16)
    x = torch.randn(5, 16, 7)
    assert torch.equal(ours(x), ref(x))
    with pytest.raises(ValueError, match="expects 16 channels.*\\[5, 12\\]"):
        ours(torch.randn(5, 12))


def test_dropout_keeps_with_probability_1_minus_p_and_scales():
    torch.manual_seed(0)
    p = 0.2
    drop = Dropout(p)
    x = torch.rand(400, 500) + 0.5
    drop.eval()
    assert drop(x) is x
    drop.train()
    x.requires_grad_()
    y = drop(x)
    kept = y != 0
    n = kept.numel()
    frac = kept.float().mean().item()
    assert abs(frac - (1 - p)) < 5 * ((p * (1 - p) / n) ** 0.5)  # binomial: 5 standard deviations
    torch.testing.assert_close(y[kept], x.detach()[kept] / (1 - p))
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / (1 - p))
    # a new mask every call, same dtype as the input
    assert not torch.equal(drop(x) != 0, kept)
    assert drop(x.detach().bfloat16()).dtype == torch.bfloat16
    assert Dropout(0.0).train()(x) is x
    assert torch.count_nonzero(Dropout(1.0).train()(x)) == 0


def _rpe_case(B=3, H=4, g=5, d=8):
    torch.manual_seed(0)
    rpe = ContextualRPE(d)
    nn.init.normal_(rpe.weight)
    c = grid_coords(g, g)
    buckets = add_prefix(euclidean_buckets(c, c), 1, 1)           # [L, L], L = 1 + g*g
    q = torch.randn(B, H, 1 + g * g, d, requires_grad=True)
    return rpe, buckets, q


def test_rpe_shared_buckets_equal_per_sample_gather():
    rpe, buckets, q = _rpe_case()
    bias = rpe(q, buckets)                                          # one-hot matmul path
    gq, gw = torch.autograd.grad(bias.square().sum(), (q, rpe.weight))
    per_sample = buckets.expand(q.shape[0], -1, -1)                 # gather path
    bias_ref = rpe(q, per_sample)
    gq_ref, gw_ref = torch.autograd.grad(bias_ref.square().sum(), (q, rpe.weight))
    assert bias.shape == (q.shape[0], 1, q.shape[2], q.shape[2])
    torch.testing.assert_close(bias, bias_ref)
    torch.testing.assert_close(gq, gq_ref)
    torch.testing.assert_close(gw, gw_ref)
    # the textbook definition: bias[b, :, i, j] = q[b, 0, i] . W[:, bucket(i, j)]
    expected = torch.einsum("bid,dij->bij", q[:, 0], rpe.weight[0][:, buckets])
    torch.testing.assert_close(bias[:, 0], expected)


@pytest.mark.parametrize("d, budget, path", [(8, 2**20, "_BiasedAttention"), (8, 26 * 26 * 4, "_BiasedAttention"),
                                              (64, 2**20, "UnsafeViewBackward0")])
def test_attention_with_trainable_bias_matches_sdpa(monkeypatch, d, budget, path):
    """Chunked (narrow heads; one chunk or one sample per chunk) and explicit paths = PyTorch's SDPA."""
    monkeypatch.setattr(_BiasedAttention, "budget", budget)
    rpe, buckets, q = _rpe_case(d=d)
    k = torch.randn_like(q, requires_grad=True)
    v = torch.randn_like(q, requires_grad=True)
    bias = rpe(q * q.shape[-1] ** -0.5, buckets)
    out = attention(q, k, v, bias)                                  # bias needs a gradient
    assert path in type(out.grad_fn).__name__
    grads = torch.autograd.grad(out.square().sum(), (q, k, v, rpe.weight))
    bias = rpe(q * q.shape[-1] ** -0.5, buckets)
    out_ref = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # PyTorch's generic path
    grads_ref = torch.autograd.grad(out_ref.square().sum(), (q, k, v, rpe.weight))
    torch.testing.assert_close(out, out_ref)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("bias_heads", [1, 3])
def test_chunked_biased_attention_gradcheck(monkeypatch, bias_heads):
    monkeypatch.setattr(_BiasedAttention, "budget", 3 * 5 * 4 * 2)   # two samples per chunk, last one partial
    torch.manual_seed(0)
    q, k, v = (torch.randn(5, 3, 5, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    bias = torch.randn(5, bias_heads, 5, 4, dtype=torch.float64, requires_grad=True)
    k, v = k[:, :, :4].detach().requires_grad_(), v[:, :, :4].detach().requires_grad_()
    assert torch.autograd.gradcheck(_BiasedAttention.apply, (q, k, v, bias))


def test_chunked_biased_attention_keeps_token_major_layout(monkeypatch):
    """q, k, v as [B, H, L, d] views of a token-major projection -> output and gradients token-major too
    (merging heads and the projection's gradient need no copy), with the same values as the explicit form."""
    monkeypatch.setattr(_BiasedAttention, "budget", 3 * 7 * 7)         # several chunks
    torch.manual_seed(0)
    B, L, H, d = 5, 7, 3, 4
    qkv = torch.randn(B, L, 3, H, d, requires_grad=True)
    q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))
    bias = torch.randn(B, 1, L, L, requires_grad=True)
    out = _BiasedAttention.apply(q, k, v, bias)
    assert out.transpose(1, 2).is_contiguous()
    g = torch.randn_like(out)
    dq, dk, dv, db = torch.autograd.grad(out, (q, k, v, bias), g)
    assert all(t.transpose(1, 2).is_contiguous() for t in (dq, dk, dv)) and db.is_contiguous()
    ref = torch.softmax(q @ k.transpose(-2, -1) * d**-0.5 + bias, -1) @ v
    ref_grads = torch.autograd.grad(ref, (q, k, v, bias), g)
    torch.testing.assert_close(out, ref)
    for a, b in zip((dq, dk, dv, db), ref_grads):
        torch.testing.assert_close(a, b)
