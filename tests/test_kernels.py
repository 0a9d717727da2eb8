"""Every fast kernel computes what its textbook form beside it computes: values and gradients."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from anysat_lite import kernels
from anysat_lite.config import model_config
from anysat_lite.data.contract import random_sample
from anysat_lite.model import AnySat
from anysat_lite.model.blocks import Block
from anysat_lite.model.irpe import ContextualRPE, add_prefix, euclidean_buckets, grid_coords


@pytest.fixture(autouse=True)
def _fast_kernels():
    """The fast forms are under test here, whatever ``ANYSAT_LITE_REFERENCE`` says."""
    with kernels.use_reference(False):
        yield


def _grads(out, inputs, seed=1):
    """Gradients of ``<out, g>`` for a fixed random ``g`` (so that every output element matters)."""
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return torch.autograd.grad(out, inputs, g, retain_graph=True)


def _assert_same(fast, ref, inputs, atol=1e-5, rtol=1e-5, grad_atol=1e-4):
    torch.testing.assert_close(fast, ref, atol=atol, rtol=rtol)
    for a, b in zip(_grads(fast, inputs), _grads(ref, inputs)):
        torch.testing.assert_close(a, b, atol=grad_atol, rtol=1e-4)


# --- the switch -----------------------------------------------------------------------------------


def test_use_reference_switches_and_restores():
    assert not kernels.reference_enabled()
    with kernels.use_reference():
        assert kernels.reference_enabled()
        with kernels.use_reference(False):
            assert not kernels.reference_enabled()
        assert kernels.reference_enabled()
    assert not kernels.reference_enabled()
    kernels.use_reference(True)  # called alone: switches until switched back
    try:
        assert kernels.reference_enabled()
    finally:
        kernels.use_reference(False)
    assert not kernels.reference_enabled()


@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), ("0", False), ("", False), ("False", False)])
def test_reference_switch_from_the_environment(monkeypatch, value, expected):
    monkeypatch.setenv(kernels.REFERENCE_ENV, value)
    assert kernels._reference_from_env() is expected


def test_bad_environment_value_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(kernels.REFERENCE_ENV, "yes")
    with pytest.raises(ValueError, match="ANYSAT_LITE_REFERENCE must be 0 or 1, got 'yes'"):
        kernels._reference_from_env()


def test_the_switch_selects_the_textbook_path():
    q, k, v = (torch.randn(2, 3, 5, 4, requires_grad=True) for _ in range(3))
    bias = torch.randn(2, 1, 5, 5, requires_grad=True)
    assert "ChunkedBiasedAttention" in type(kernels.attention(q, k, v, bias).grad_fn).__name__
    with kernels.use_reference():
        out = kernels.attention(q, k, v, bias)
    assert "ChunkedBiasedAttention" not in type(out.grad_fn).__name__
    torch.testing.assert_close(out, kernels.attention_reference(q, k, v, bias))


# --- attention ------------------------------------------------------------------------------------


def _qkv_bias(B=3, H=4, Lq=26, Lk=26, d=8, bias_heads=1, trained=True, dtype=torch.float32):
    torch.manual_seed(0)
    q = torch.randn(B, H, Lq, d, dtype=dtype, requires_grad=True)
    k = torch.randn(B, H, Lk, d, dtype=dtype, requires_grad=True)
    v = torch.randn(B, H, Lk, d, dtype=dtype, requires_grad=True)
    bias = torch.randn(B, bias_heads, Lq, Lk, dtype=dtype, requires_grad=trained)
    return q, k, v, bias


ATTENTION_CASES = {  # name: (arguments of _qkv_bias, chunk size or None, the fast form's path)
    "no bias": ({}, None, "ScaledDotProduct"),
    "constant bias": ({"trained": False}, None, "ScaledDotProduct"),
    "trained bias, one chunk": ({}, None, "ChunkedBiasedAttention"),
    "trained bias, one sample per chunk": ({}, 4 * 26 * 26, "ChunkedBiasedAttention"),
    "trained bias per head": ({"bias_heads": 4}, None, "ChunkedBiasedAttention"),
    "trained bias, cross-attention": ({"Lq": 7}, 4 * 7 * 26 * 2, "ChunkedBiasedAttention"),
    "trained bias, wide heads": ({"d": 64}, None, "UnsafeViewBackward"),  # the textbook form itself
}


@pytest.mark.parametrize("case", list(ATTENTION_CASES))
def test_attention_matches_the_textbook_form(monkeypatch, case):
    kw, chunk, path = ATTENTION_CASES[case]
    q, k, v, bias = _qkv_bias(**kw)
    if case == "no bias":
        bias = None
    if chunk is not None:
        monkeypatch.setattr(kernels, "ATTENTION_CHUNK", chunk)
    fast = kernels.attention(q, k, v, bias)
    assert path in type(fast.grad_fn).__name__
    inputs = [t for t in (q, k, v, bias) if t is not None and t.requires_grad]
    _assert_same(fast, kernels.attention_reference(q, k, v, bias), inputs)


@pytest.mark.parametrize("bias_heads", [1, 3])
def test_chunked_attention_gradcheck(monkeypatch, bias_heads):
    monkeypatch.setattr(kernels, "ATTENTION_CHUNK", 3 * 5 * 4 * 2)  # two samples per chunk, last one partial
    torch.manual_seed(0)
    q = torch.randn(5, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(5, 3, 4, 4, dtype=torch.float64, requires_grad=True) for _ in range(2))
    bias = torch.randn(5, bias_heads, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(kernels._ChunkedBiasedAttention.apply, (q, k, v, bias))


def test_chunked_attention_keeps_token_major_layout(monkeypatch):
    """q, k, v as [B, H, L, d] views of a token-major projection -> output and gradients token-major too
    (merging heads needs no copy), with the textbook values."""
    monkeypatch.setattr(kernels, "ATTENTION_CHUNK", 3 * 7 * 7)  # several chunks
    torch.manual_seed(0)
    B, L, H, d = 5, 7, 3, 4
    qkv = torch.randn(B, L, 3, H, d, requires_grad=True)
    q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))
    bias = torch.randn(B, 1, L, L, requires_grad=True)
    out = kernels._ChunkedBiasedAttention.apply(q, k, v, bias)
    assert out.transpose(1, 2).is_contiguous()
    dq, dk, dv, db = _grads(out, (q, k, v, bias))
    assert all(t.transpose(1, 2).is_contiguous() for t in (dq, dk, dv)) and db.is_contiguous()
    _assert_same(out, kernels.attention_reference(q, k, v, bias), (q, k, v, bias))


def test_chunked_attention_under_bf16_autocast():
    """Under autocast the projections arrive in bf16 and the bias in fp32: one compute dtype, gradients back in
    the inputs' dtypes, values as the textbook form computes them in bf16."""
    q, k, v, bias = _qkv_bias()
    qb, kb, vb = (t.detach().bfloat16().requires_grad_() for t in (q, k, v))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = kernels.attention(qb, kb, vb, bias)
    assert out.dtype == torch.bfloat16
    grads = _grads(out, (qb, kb, vb, bias))
    assert [g.dtype for g in grads] == [torch.bfloat16] * 3 + [torch.float32]
    ref = kernels.attention_reference(q, k, v, bias)
    torch.testing.assert_close(out.float(), ref, atol=0.1, rtol=0.05)


# --- a block's first token ------------------------------------------------------------------------


@pytest.mark.parametrize("rpe, training", [(True, False), (False, False), (True, True)])
def test_block_first_token_matches_the_whole_block(rpe, training):
    torch.manual_seed(0)
    block = Block(32, 4, drop_path=0.5 if training else 0.0, rpe=rpe).train(training)
    x = torch.randn(6, 10, 32, requires_grad=True)
    c = grid_coords(3, 3)
    buckets = add_prefix(euclidean_buckets(c, c), 1, 1) if rpe else None
    torch.manual_seed(1)  # drop path draws one mask per sample in both forms: the same draws
    fast = kernels.block_first_token(block, x, buckets)
    torch.manual_seed(1)
    ref = kernels.block_first_token_reference(block, x, buckets)
    assert fast.shape == (6, 1, 32)
    if training:
        assert (fast == x[:, :1]).all(-1).any()  # a dropped branch leaves the token unchanged
    _assert_same(fast, ref, [x, *block.parameters()])


# --- iRPE buckets ---------------------------------------------------------------------------------


@pytest.mark.parametrize("per_sample", [False, True])
def test_gather_buckets_matches_the_textbook_form(per_sample):
    torch.manual_seed(0)
    c = grid_coords(4, 4)
    buckets = add_prefix(euclidean_buckets(c, c.flip(0)), 1, 1)  # [17, 17], not symmetric
    if per_sample:
        buckets = torch.stack([buckets, buckets.t()])
    table = torch.randn(2, 17, 8, requires_grad=True)
    fast = kernels.gather_buckets(table, buckets)
    _assert_same(fast, kernels.gather_buckets_reference(table, buckets), [table])
    i, j = 5, 11
    b = buckets[1] if per_sample else buckets
    assert fast[1, i, j] == table[1, i, b[i, j]]  # the definition, one entry


def test_contextual_rpe_is_the_first_heads_query_times_the_bucket_column():
    torch.manual_seed(0)
    rpe = ContextualRPE(8)
    nn.init.normal_(rpe.weight)
    c = grid_coords(5, 5)
    buckets = add_prefix(euclidean_buckets(c, c), 1, 1)
    q = torch.randn(3, 4, 26, 8)
    expected = torch.einsum("bid,dij->bij", q[:, 0], rpe.weight[0][:, buckets])
    torch.testing.assert_close(rpe(q, buckets)[:, 0], expected)
    torch.testing.assert_close(rpe(q, buckets.expand(3, -1, -1))[:, 0], expected)


# --- projector convolution ------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 8, 10])
def test_blockwise_conv2d_is_the_strided_convolution(k):
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 16, kernel_size=k, stride=k, bias=False)
    x = torch.randn(2, 5, 3 * k, 4 * k, requires_grad=True)
    fast = kernels.blockwise_conv2d(x, conv.weight)
    assert fast.shape == (2, 3, 4, 16)
    _assert_same(fast, kernels.blockwise_conv2d_reference(x, conv.weight), [x, conv.weight])
    torch.testing.assert_close(fast, conv(x).permute(0, 2, 3, 1))  # what nn.Conv2d computes


# --- group norm and dropout -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, groups", [((300, 64), 4), ((300, 128), 16), ((300, 96), 4), ((300, 8), 4), ((40, 64, 7), 16)]
)
def test_group_norm_matches_the_textbook_form(shape, groups):
    torch.manual_seed(0)
    x = (torch.randn(shape) * 3 + 1).requires_grad_()
    weight, bias = torch.randn(shape[1], requires_grad=True), torch.randn(shape[1], requires_grad=True)
    fast = kernels.group_norm(x, groups, weight, bias, 1e-5)
    ref = kernels.group_norm_reference(x, groups, weight, bias, 1e-5)
    _assert_same(fast, ref, [x, weight, bias], grad_atol=1e-3)
    if len(shape) > 2 or shape[1] // groups < kernels.GROUP_NORM_MIN_GROUP:
        assert torch.equal(fast, ref)  # other ranks and tiny groups run the textbook kernel
    no_affine = kernels.group_norm(x, groups, None, None, 1e-5)
    torch.testing.assert_close(no_affine, F.group_norm(x, groups, eps=1e-5), atol=1e-5, rtol=1e-5)


def test_dropout_keeps_with_probability_1_minus_p_and_scales():
    torch.manual_seed(0)
    p = 0.2
    x = (torch.rand(400, 500) + 0.5).requires_grad_()
    y = kernels.dropout(x, p)
    kept = y != 0
    frac = kept.float().mean().item()
    assert abs(frac - (1 - p)) < 5 * ((p * (1 - p) / kept.numel()) ** 0.5)  # binomial: 5 standard deviations
    torch.testing.assert_close(y[kept], x.detach()[kept] / (1 - p))
    (g,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(g, kept.float() / (1 - p))
    ref = kernels.dropout_reference(x, p)  # same law, another stream: compare the statistics
    assert abs((ref != 0).float().mean().item() - frac) < 0.01
    torch.testing.assert_close(ref[ref != 0], x.detach()[ref != 0] / (1 - p))
    assert not torch.equal(kernels.dropout(x, p) != 0, kept)  # a new mask every call
    assert kernels.dropout(x.detach().bfloat16(), p).dtype == torch.bfloat16
    assert kernels.dropout(x, p, training=False) is x and kernels.dropout(x, 0.0) is x
    assert torch.count_nonzero(kernels.dropout(x, 1.0)) == 0


# --- batched calls --------------------------------------------------------------------------------


def test_batched_calls_equal_one_call_each():
    torch.manual_seed(0)
    lin = nn.Linear(4, 4)

    def fn(x, scale, keep):  # row-independent; a tuple with an optional second output
        y = lin(x) * scale
        return y.sum(1), (y if keep else None)

    xs = [torch.randn(n, 3, 4, requires_grad=True) for n in (2, 5, 3, 1)]
    calls = [(xs[0], (1.0, True)), (xs[1], (2.0, False)), (xs[2], (1.0, True)), (xs[3], (2.0, False))]
    n_calls = []

    def counted(x, *args):
        n_calls.append(x.shape[0])
        return fn(x, *args)

    fast = kernels.batched_calls(counted, calls)
    assert n_calls == [5, 6]  # one call per distinct argument tuple
    ref = kernels.batched_calls_reference(fn, calls)
    assert [o[1] is None for o in fast] == [False, True, False, True]
    for (a0, a1), (b0, b1) in zip(fast, ref):
        torch.testing.assert_close(a0, b0)
        if a1 is not None:
            torch.testing.assert_close(a1, b1)
    total_fast = sum(o[0].square().sum() for o in fast)
    total_ref = sum(o[0].square().sum() for o in ref)
    inputs = xs + [lin.weight]
    for a, b in zip(torch.autograd.grad(total_fast, inputs), torch.autograd.grad(total_ref, inputs)):
        torch.testing.assert_close(a, b)
    single = kernels.batched_calls(lambda x: x * 2, [(xs[0], ())])  # a plain tensor result
    torch.testing.assert_close(single[0], xs[0] * 2)


# --- contrastive denominator ----------------------------------------------------------------------


@pytest.mark.parametrize("budget", [2**21, 300, 450])  # one chunk; 10-row chunks; 15 rows, last chunk partial
def test_block_masked_logsumexp_matches_the_textbook_form(monkeypatch, budget):
    monkeypatch.setitem(kernels.LOGSUMEXP_CHUNK, "cpu", budget)
    torch.manual_seed(0)
    f = F.normalize(torch.randn(30, 4), dim=-1).requires_grad_()  # L = 30 rows, blocks of 5
    fast = kernels.block_masked_logsumexp(f, 5, 0.1)
    _assert_same(fast, kernels.block_masked_logsumexp_reference(f, 5, 0.1), [f])
    # row 7 (block 1) sums over the 25 rows of the other blocks
    others = torch.cat([f[:5], f[10:]])
    torch.testing.assert_close(fast[7], torch.logsumexp(others @ f[7] / 0.1, 0))


def test_block_masked_logsumexp_chunks_and_gradcheck(monkeypatch):
    monkeypatch.setitem(kernels.LOGSUMEXP_CHUNK, "cpu", 300)
    assert kernels._BlockMaskedLogSumExp._chunks(30, 5, torch.device("cpu"))[1] == 10
    f = torch.randn(12, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: kernels.block_masked_logsumexp(x, 4, 0.5), (f,))


# --- the whole encoder ----------------------------------------------------------------------------


def test_encoder_with_fast_and_textbook_kernels():
    """Outputs and every parameter's gradient agree, over every kernel the encoder uses: image and series
    projectors, grouped sensors, the cls-only last block, iRPE attention with a trained bias.  In float64 (float32
    rounding differs between the forms, and the L-TAE's small groups amplify it) and eval mode (no dropout draws)."""
    torch.manual_seed(0)
    model = AnySat(model_config("nano"), sensors=["aerial", "spot", "s2", "s1-asc"]).eval().double()
    x = random_sample(["aerial", "spot", "s2", "s1-asc"], 60, 2, 4, generator=torch.Generator().manual_seed(0))
    x = {k: v.double() if v.is_floating_point() else v for k, v in x.items()}
    params = list(model.parameters())
    results = []
    for reference in (False, True):
        with kernels.use_reference(reference):
            out = torch.cat([model(x, 20, "all").flatten(), model(x, 20, "dense").flatten()])
            results.append((out, torch.autograd.grad(out.square().sum(), params, allow_unused=True)))
    (fast, g_fast), (ref, g_ref) = results
    torch.testing.assert_close(fast, ref, atol=1e-12, rtol=1e-10)
    for (name, _), a, b in zip(model.named_parameters(), g_fast, g_ref):
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(a, b, atol=1e-11, rtol=1e-8, msg=name)
