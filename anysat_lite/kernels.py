"""Fast kernels, each beside its textbook form.

The model and loss files (:mod:`anysat_lite.model`, :mod:`anysat_lite.jepa.losses`) call the
functions of this module and read like the paper.  Each function here has a *fast* form,
tuned for the CPU and used by default, and a *textbook* form, ``<name>_reference``, written
as the equation says.  The tests (``tests/test_kernels.py``) compare the two, values and
gradients, and the parity tests with the official code pass with either.

==============================  =======================================  =============================================
kernel                          textbook form                            fast form
==============================  =======================================  =============================================
:func:`attention`               ``softmax(q k^T / sqrt(d) + bias) v``    PyTorch's SDPA when the bias is constant;
                                                                         chunks of the batch when the bias is trained
:func:`block_first_token`       ``block(x)[:, :1]``                      the queries of token 0 only
:func:`gather_buckets`          ``table.gather(-1, buckets)``            a one-hot matmul for buckets shared by all
                                                                         samples
:func:`blockwise_conv2d`        ``conv2d(x, weight, stride=k)``          one matmul over the ``k x k`` pixel blocks
:func:`group_norm`              ``F.group_norm``                         a layer norm over ``[N, G, C/G]`` (2-D input)
:func:`dropout`                 ``F.dropout``                            the mask from uniforms (another stream)
:func:`batched_calls`           ``[fn(x, *a) for x, a in calls]``        one call per distinct ``a``
:func:`block_masked_logsumexp`  masked ``logsumexp`` of ``f f^T / tau``  chunks of rows; no ``[L, L]`` matrix kept
==============================  =======================================  =============================================

**The switch.**  Set ``ANYSAT_LITE_REFERENCE=1`` in the environment (read at import) to run
every kernel in its textbook form, or switch from Python::

    from anysat_lite import kernels
    kernels.use_reference(True)            # from now on
    with kernels.use_reference():          # inside the block only
        out = model(x, 20)

The textbook forms give the same values to float rounding; :func:`dropout` draws its mask
from another random stream, with the same distribution.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "REFERENCE_ENV",
    "use_reference",
    "reference_enabled",
    "attention",
    "attention_reference",
    "block_first_token",
    "block_first_token_reference",
    "gather_buckets",
    "gather_buckets_reference",
    "blockwise_conv2d",
    "blockwise_conv2d_reference",
    "group_norm",
    "group_norm_reference",
    "dropout",
    "dropout_reference",
    "batched_calls",
    "batched_calls_reference",
    "block_masked_logsumexp",
    "block_masked_logsumexp_reference",
]

REFERENCE_ENV = "ANYSAT_LITE_REFERENCE"


def _reference_from_env() -> bool:
    value = os.environ.get(REFERENCE_ENV, "0").strip().lower()
    if value not in ("", "0", "1", "false", "true"):
        raise ValueError(
            f"{REFERENCE_ENV} must be 0 or 1, got {value!r}; set it to 1 for the textbook kernels "
            "or unset it for the fast ones"
        )
    return value in ("1", "true")


_REFERENCE = _reference_from_env()


def reference_enabled() -> bool:
    """Whether the kernels run in their textbook form."""
    return _REFERENCE


class use_reference:
    """Run every kernel in its textbook form (``True``) or its fast form (``False``).

    Called alone it switches for the rest of the process; used as a context manager it
    switches inside the ``with`` block and restores the previous setting afterwards.
    """

    def __init__(self, on: bool = True):
        global _REFERENCE
        self._previous = _REFERENCE
        _REFERENCE = bool(on)

    def __enter__(self) -> use_reference:
        return self

    def __exit__(self, *exc) -> None:
        global _REFERENCE
        _REFERENCE = self._previous


# --- attention ----------------------------------------------------------------------------------------------------

ATTENTION_CHUNK = 2**20  # score elements per chunk of the chunked attention (tests shrink it)
ATTENTION_CHUNK_MAX_HEAD_DIM = 32


def attention_reference(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None, dropout: float = 0.0) -> Tensor:
    """``softmax(q k^T / sqrt(d) + bias) v`` for ``q [B, H, Lq, d]``, ``k, v [B, H, Lk, d]``, ``bias [B, 1|H, Lq, Lk]``.

    ``dropout`` (a probability) is applied to the attention weights.  Returns ``[B, H, Lq, d]``.
    """
    scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-2, -1))
    if bias is not None:
        scores = scores + bias
    weights = scores.softmax(dim=-1)
    if dropout > 0:
        weights = F.dropout(weights, dropout)
    return torch.matmul(weights, v)


def attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None, dropout: float = 0.0) -> Tensor:
    """Fast form of :func:`attention_reference` (same arguments and result).

    * constant bias (or none): :func:`torch.nn.functional.scaled_dot_product_attention`;
    * trained bias (the iRPE table), narrow heads (``d <= 32``) on the CPU, no dropout:
      :class:`_ChunkedBiasedAttention`;
    * otherwise the textbook form (SDPA's generic CPU path is slower than it when the bias
      needs a gradient).
    """
    if _REFERENCE:
        return attention_reference(q, k, v, bias, dropout)
    if bias is None or not bias.requires_grad:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout)
    if (
        dropout == 0.0
        and q.device.type == "cpu"
        and q.shape[-1] <= ATTENTION_CHUNK_MAX_HEAD_DIM
        and bias.dim() == 4
        and bias.shape[0] == q.shape[0]
        and bias.shape[1] in (1, q.shape[1])
    ):
        return _ChunkedBiasedAttention.apply(q, k, v, bias)
    return attention_reference(q, k, v, bias, dropout)


def _empty_like_layout(t: Tensor, shape: Sequence[int] | None = None) -> Tensor:
    """Uninitialised tensor shaped like ``t`` (or ``shape``, same rank) with ``t``'s dimension order in memory."""
    shape = t.shape if shape is None else shape
    order = sorted(range(t.dim()), key=lambda i: -t.stride(i))  # outermost dimension first
    return t.new_empty([shape[i] for i in order]).permute([order.index(i) for i in range(t.dim())])


class _ChunkedBiasedAttention(torch.autograd.Function):
    """Attention with a trained bias, a chunk of samples at a time; nothing of size ``[B, H, Lq, Lk]`` is kept.

    Forward and backward loop over chunks of the batch of at most :data:`ATTENTION_CHUNK`
    score elements, small enough to stay in the CPU cache.  The backward recomputes the
    chunk's attention weights ``w = softmax(s)`` (one extra ``q k^T``) instead of storing them.
    With ``o = w v`` and incoming gradient ``g``:

    * ``dv = w^T g``, ``dw = g v^T``;
    * softmax backward: ``ds = w * (dw - rowsum(dw * w))``, where ``rowsum(dw * w) = rowsum(g * o)``
      (a sum over ``d`` instead of over ``Lk``, as in FlashAttention);
    * ``dbias = ds`` (summed over heads when the bias broadcasts over them),
      ``dq = ds k / sqrt(d)``, ``dk = ds^T q / sqrt(d)``.

    Outputs and gradients are laid out in memory like the inputs: ``q, k, v`` given as
    ``[B, H, L, d]`` views of token-major ``[B, L, H, d]`` projections get token-major
    results, so merging the heads afterwards needs no copy.
    """

    @staticmethod
    def _chunks(q: Tensor, k: Tensor):
        B, H, Lq, _ = q.shape
        n = max(1, ATTENTION_CHUNK // (H * Lq * k.shape[2]))
        return ((s, min(B, s + n)) for s in range(0, B, n))

    @staticmethod
    def _weights(q_scaled: Tensor, k: Tensor, bias: Tensor) -> Tensor:
        return torch.matmul(q_scaled, k.transpose(-2, -1)).add_(bias).softmax(dim=-1)

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
        # One compute dtype (that of q: bf16 when the qkv projection ran under autocast), autocast off
        # inside, so that the forward and the recomputation in the backward see the same numbers.
        ctx.dtypes = (k.dtype, v.dtype, bias.dtype)  # the gradients go back in the inputs' dtypes
        with torch.autocast("cpu", enabled=False):
            k, v, b = k.to(q.dtype), v.to(q.dtype), bias.to(q.dtype)
            scale = q.shape[-1] ** -0.5
            out = _empty_like_layout(q, (*q.shape[:3], v.shape[-1]))
            for s, e in _ChunkedBiasedAttention._chunks(q, k):
                out[s:e] = torch.matmul(_ChunkedBiasedAttention._weights(q[s:e] * scale, k[s:e], b[s:e]), v[s:e])
        ctx.save_for_backward(q, k, v, b, out)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        q, k, v, bias, out = ctx.saved_tensors
        scale = q.shape[-1] ** -0.5
        dq, dk, dv, dbias = (_empty_like_layout(t) for t in (q, k, v, bias))
        with torch.autocast("cpu", enabled=False):
            grad_out = grad_out.to(q.dtype)
            for s, e in _ChunkedBiasedAttention._chunks(q, k):
                qs, g = q[s:e] * scale, grad_out[s:e]
                w = _ChunkedBiasedAttention._weights(qs, k[s:e], bias[s:e])  # [b, H, Lq, Lk]
                dv[s:e] = torch.matmul(w.transpose(-2, -1), g)
                rowsum = (g * out[s:e]).sum(dim=-1, keepdim=True)  # [b, H, Lq, 1]
                ds = torch.matmul(g, v[s:e].transpose(-2, -1)).sub_(rowsum).mul_(w)
                dbias[s:e] = ds.sum(dim=1, keepdim=True) if bias.shape[1] == 1 else ds
                dq[s:e] = torch.matmul(ds, k[s:e]).mul_(scale)
                dk[s:e] = torch.matmul(ds.transpose(-2, -1), qs)
        kt, vt, bt = ctx.dtypes
        return dq, dk.to(kt), dv.to(vt), dbias.to(bt)


def block_first_token_reference(block: nn.Module, x: Tensor, buckets: Tensor | None = None) -> Tensor:
    """A transformer block's output at token 0: ``block(x, buckets)[:, :1]``, ``[B, L, D] -> [B, 1, D]``."""
    return block(x, buckets)[:, :1]


def block_first_token(block: nn.Module, x: Tensor, buckets: Tensor | None = None) -> Tensor:
    """Fast form of :func:`block_first_token_reference` for a :class:`~anysat_lite.model.blocks.Block`.

    Token 0 is the only query: its keys and values still come from every token, but the
    queries, attention rows and MLP of the other tokens are skipped.
    """
    if _REFERENCE:
        return block_first_token_reference(block, x, buckets)
    attn = block.attn
    B, L, D = x.shape
    H, d = attn.num_heads, attn.head_dim
    h = block.norm1(x)
    w, b = attn.qkv.weight, attn.qkv.bias  # rows: [queries; keys; values]
    q = F.linear(h[:, :1], w[:D], None if b is None else b[:D]).view(B, 1, H, d).transpose(1, 2)
    k, v = (t.transpose(1, 2) for t in F.linear(h, w[D:], None if b is None else b[D:]).view(B, L, 2, H, d).unbind(2))
    x0 = x[:, :1] + block.drop_path(attn.attend(q, k, v, None if buckets is None else buckets[..., :1, :]))
    return x0 + block.drop_path(block.mlp(block.norm2(x0)))


# --- relative position bias -----------------------------------------------------------------------------------------


def gather_buckets_reference(table: Tensor, buckets: Tensor) -> Tensor:
    """``out[b, i, j] = table[b, i, buckets[(b,) i, j]]``.

    ``table [B, Lq, R]``, ``buckets [(B,) Lq, Lk]`` (long, in ``[0, R)``) -> ``[B, Lq, Lk]``.
    """
    if buckets.dim() == 2:
        buckets = buckets.expand(table.shape[0], -1, -1)
    return torch.gather(table, -1, buckets)


def gather_buckets(table: Tensor, buckets: Tensor) -> Tensor:
    """Fast form of :func:`gather_buckets_reference`.

    When every sample shares the buckets (``[Lq, Lk]``), ``out[b, i, j] = sum_r table[b, i, r] *
    [buckets[i, j] = r]``: one batched matmul with a one-hot tensor (exact: the other terms
    are zeros), whose backward is a matmul too instead of a scattered add.
    """
    if _REFERENCE or buckets.dim() != 2:
        return gather_buckets_reference(table, buckets)
    onehot = F.one_hot(buckets, table.shape[-1]).to(table.dtype)  # [Lq, Lk, R]
    return torch.einsum("bir,ijr->bij", table, onehot)


# --- projector convolution ------------------------------------------------------------------------------------------


def blockwise_conv2d_reference(x: Tensor, weight: Tensor) -> Tensor:
    """Convolution with kernel = stride, no bias, channels last: ``x [B, C, H, W]``, ``weight [D, C, k, k]``
    -> ``[B, H/k, W/k, D]`` (one output per non-overlapping ``k x k`` block of pixels)."""
    return F.conv2d(x, weight, stride=weight.shape[-1]).permute(0, 2, 3, 1)


def blockwise_conv2d(x: Tensor, weight: Tensor) -> Tensor:
    """Fast form of :func:`blockwise_conv2d_reference`: the blocks are cut out by a reshape and
    multiplied by the flattened kernel in one matmul."""
    if _REFERENCE:
        return blockwise_conv2d_reference(x, weight)
    B, C, H, W = x.shape
    k = weight.shape[-1]
    blocks = x.reshape(B, C, H // k, k, W // k, k).permute(0, 2, 4, 1, 3, 5).reshape(B, H // k, W // k, C * k * k)
    return F.linear(blocks, weight.reshape(weight.shape[0], -1))


# --- normalisation and dropout --------------------------------------------------------------------------------------

GROUP_NORM_MIN_GROUP = 4
"""Groups of fewer channels keep the textbook kernel: the statistics of 2-3 values are ill-conditioned,
and matching PyTorch's rounding there keeps the parity fixtures closest."""


def group_norm_reference(
    x: Tensor, num_groups: int, weight: Tensor | None, bias: Tensor | None, eps: float = 1e-5
) -> Tensor:
    """Group normalisation of ``x [N, C, *]``: each sample's ``C / G`` channels (times the other axes)
    of a group are normalised to zero mean and unit variance, then scaled and shifted per channel."""
    return F.group_norm(x, num_groups, weight, bias, eps)


def group_norm(x: Tensor, num_groups: int, weight: Tensor | None, bias: Tensor | None, eps: float = 1e-5) -> Tensor:
    """Fast form of :func:`group_norm_reference`: a 2-D input ``[N, C]`` is normalised as a layer norm over
    ``[N, G, C/G]`` followed by the per-channel affine (the same statistics)."""
    if _REFERENCE or x.dim() != 2 or x.shape[1] // num_groups < GROUP_NORM_MIN_GROUP:
        return group_norm_reference(x, num_groups, weight, bias, eps)
    N, C = x.shape
    y = F.layer_norm(x.view(N, num_groups, C // num_groups), (C // num_groups,), eps=eps).view(N, C)
    if weight is not None:
        y = y * weight
    return y + bias if bias is not None else y


def dropout_reference(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Zero each element with probability ``p`` and scale the others by ``1 / (1 - p)`` (training only)."""
    return F.dropout(x, p, training)


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Fast form of :func:`dropout_reference` on the CPU: the mask is ``floor(u + 1 - p)`` of uniforms ``u``
    (1 with probability ``1 - p``), scaled.  Same distribution, another random stream; other devices
    use ``F.dropout``."""
    if _REFERENCE or x.device.type != "cpu":
        return dropout_reference(x, p, training)
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    keep = 1.0 - p
    mask = torch.rand(x.shape, device=x.device).add_(keep).floor_().mul_(1.0 / keep)
    return x * mask.to(x.dtype)


# --- batching independent calls -------------------------------------------------------------------------------------


def batched_calls_reference(fn: Callable, calls: Sequence[tuple[Tensor, tuple]]) -> list:
    """``[fn(x, *args) for x, args in calls]``."""
    return [fn(x, *args) for x, args in calls]


def batched_calls(fn: Callable, calls: Sequence[tuple[Tensor, tuple]]) -> list:
    """Fast form of :func:`batched_calls_reference`: calls with equal ``args`` run as one call on their
    inputs concatenated along dim 0, and the results are split back.

    ``fn`` must treat the rows (dim 0) of ``x`` independently and return a tensor, or a tuple of
    tensors (or ``None``), with one row per input row.  Used to run the sensors that share a
    sub-patch grid through the sub-patch encoder together.
    """
    if _REFERENCE:
        return batched_calls_reference(fn, calls)
    groups: dict[tuple, list[int]] = {}
    for i, (_, args) in enumerate(calls):
        groups.setdefault(tuple(args), []).append(i)
    results: list = [None] * len(calls)
    for args, members in groups.items():
        xs = [calls[i][0] for i in members]
        sizes = [x.shape[0] for x in xs]
        out = fn(torch.cat(xs), *args)
        parts = [[None] * len(xs) if t is None else t.split(sizes) for t in (out if isinstance(out, tuple) else (out,))]
        for j, i in enumerate(members):
            results[i] = tuple(p[j] for p in parts) if isinstance(out, tuple) else parts[0][j]
    return results


# --- contrastive loss ------------------------------------------------------------------------------------------------

LOGSUMEXP_CHUNK = {"cuda": 2**26, "cpu": 2**21}  # elements of one [rows, L] chunk per device type (tests shrink it)


def block_masked_logsumexp_reference(f: Tensor, n: int, tau: float) -> Tensor:
    """``lse_i = log sum_j exp(<f_i, f_j> / tau)`` over the ``j`` outside ``i``'s block of ``n`` consecutive rows.

    ``f [L, D]`` (``L`` a multiple of ``n``) -> ``[L]``.
    """
    L = f.shape[0]
    block = torch.arange(L, device=f.device) // n
    s = (f @ f.t()) / tau  # [L, L]
    return torch.logsumexp(s.masked_fill(block[:, None] == block[None, :], float("-inf")), dim=1)


def block_masked_logsumexp(f: Tensor, n: int, tau: float) -> Tensor:
    """Fast form of :func:`block_masked_logsumexp_reference`: rows in chunks (:class:`_BlockMaskedLogSumExp`),
    memory ``O(chunk x L)`` instead of ``O(L^2)``."""
    if _REFERENCE:
        return block_masked_logsumexp_reference(f, n, tau)
    return _BlockMaskedLogSumExp.apply(f, n, tau)


class _BlockMaskedLogSumExp(torch.autograd.Function):
    """Chunked :func:`block_masked_logsumexp_reference`; the ``[L, L]`` similarity matrix is never stored.

    Rows are processed in chunks of whole blocks; the backward recomputes each chunk (one
    extra matmul).  With ``W_ij = g_i softmax_j(s_i) / tau`` (``g`` the incoming gradient),
    ``df = W f + W^T f``: two matmuls per chunk.
    """

    @staticmethod
    def _chunks(L: int, n: int, device) -> tuple[range, int]:
        budget = LOGSUMEXP_CHUNK.get(device.type, LOGSUMEXP_CHUNK["cuda"])
        rows = max(n, budget // max(L, 1) // n * n)  # whole blocks per chunk
        return range(0, L, rows), rows

    @staticmethod
    def _logits(f: Tensor, r0: int, r1: int, n: int, tau: float) -> Tensor:
        s = (f[r0:r1] @ f.t()).mul_(1.0 / tau)  # [R, L]
        g0, g1 = r0 // n, r1 // n
        s.view(g1 - g0, n, -1, n)[:, :, g0:g1].diagonal(dim1=0, dim2=2).fill_(float("-inf"))
        return s

    @staticmethod
    def forward(ctx, f: Tensor, n: int, tau: float) -> Tensor:
        L = f.shape[0]
        out = f.new_empty(L)
        starts, rows = _BlockMaskedLogSumExp._chunks(L, n, f.device)
        for r0 in starts:
            r1 = min(r0 + rows, L)
            out[r0:r1] = torch.logsumexp(_BlockMaskedLogSumExp._logits(f, r0, r1, n, tau), dim=1)
        ctx.save_for_backward(f, out)
        ctx.n, ctx.tau = n, tau
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        f, out = ctx.saved_tensors
        n, tau = ctx.n, ctx.tau
        L = f.shape[0]
        grad = torch.zeros_like(f)
        starts, rows = _BlockMaskedLogSumExp._chunks(L, n, f.device)
        for r0 in starts:
            r1 = min(r0 + rows, L)
            # softmax weights of the chunk's rows, times the incoming gradient and 1/tau
            w = _BlockMaskedLogSumExp._logits(f, r0, r1, n, tau).sub_(out[r0:r1, None]).exp_()
            w.mul_(grad_out[r0:r1, None] / tau)
            grad[r0:r1] += w @ f  # d/d f_i of <f_i, f_j>
            grad += w.t() @ f[r0:r1]  # d/d f_j of <f_i, f_j>
        return grad, None, None
