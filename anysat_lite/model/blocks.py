"""Transformer building blocks shared by the sub-patch encoder, the joint encoder and the predictor.

Pre-norm ViT blocks (``x + attn(norm1(x))``, ``x + mlp(norm2(x))``) with attention computed
by :func:`torch.nn.functional.scaled_dot_product_attention`.  An optional contextual iRPE
adds a query-dependent bias, which SDPA takes as a float ``attn_mask``.
Parameter names (``qkv``, ``proj``, ``mlp.fc1``...) follow timm, as the official code does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .irpe import ContextualRPE
from .layers import DropPath, Dropout

__all__ = ["MLP", "SelfAttention", "Block", "attention"]


def attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None, dropout: float = 0.0) -> Tensor:
    """``softmax(q k^T / sqrt(d) + bias) v`` for ``[B, H, L, d]`` tensors (``bias [B, 1, Lq, Lk]``).

    SDPA handles the common case.  When the bias needs a gradient (the iRPE table is being
    trained) PyTorch's CPU SDPA falls back to a generic path; the explicit form below is
    faster, and for narrow heads (``d <= 32``, where the ``[L, L]`` scores dominate) the
    chunked :class:`_BiasedAttention` is faster still.
    """
    if bias is None or not bias.requires_grad:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout)
    if (dropout == 0.0 and q.device.type == "cpu" and q.shape[-1] <= _BiasedAttention.max_head_dim
            and bias.dim() == 4 and bias.shape[0] == q.shape[0] and bias.shape[1] in (1, q.shape[1])):
        return _BiasedAttention.apply(q, k, v, bias)
    scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-2, -1)).add_(bias)  # scale the small operand
    weights = scores.softmax(dim=-1)
    if dropout > 0:
        weights = F.dropout(weights, dropout)
    return torch.matmul(weights, v)


class _BiasedAttention(torch.autograd.Function):
    """Attention with a trainable bias, a chunk of samples at a time; nothing of size ``[B, H, L, L]`` is kept.

    Forward and backward loop over chunks of the batch whose scores fit in about 4 MB; the
    backward recomputes the chunk's softmax (one extra ``q k^T``) instead of storing it.  On
    the CPU with narrow heads the scores stay in cache: about 2x faster forward + backward than
    the explicit form at the CPU demo's sizes (``[128, 4, 226, 16]``), the same values
    operation for operation.  With ``d = 64`` the recomputation costs more than it saves.

    Each chunk's result is written straight into an output (and gradients) laid out in memory
    like its input: ``q, k, v`` given as ``[B, H, L, d]`` views of token-major ``[B, L, H, d]``
    projections get token-major results, so neither the merge of heads after the attention nor
    the gradient of the ``qkv`` projection needs a copy.
    """

    budget = 2**20       # score elements per chunk (tests shrink it)
    max_head_dim = 32

    @staticmethod
    def _chunks(q: Tensor, k: Tensor):
        B, H, Lq, _ = q.shape
        n = max(1, _BiasedAttention.budget // (H * Lq * k.shape[2]))
        return ((s, min(B, s + n)) for s in range(0, B, n))

    @staticmethod
    def _weights(qs: Tensor, k: Tensor, bias: Tensor) -> Tensor:
        return torch.matmul(qs, k.transpose(-2, -1)).add_(bias).softmax(dim=-1)

    @staticmethod
    def _like(t: Tensor, shape=None) -> Tensor:
        """Uninitialised tensor shaped like ``t`` (or ``shape``, same rank) with ``t``'s dimension order in memory."""
        shape = t.shape if shape is None else shape
        order = sorted(range(t.dim()), key=lambda i: -t.stride(i))          # outermost dimension first
        return t.new_empty([shape[i] for i in order]).permute([order.index(i) for i in range(t.dim())])

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
        # One compute dtype (that of q: bf16 when the qkv projection ran under autocast), autocast off
        # inside, so that the forward and the recomputation in the backward see the same numbers.
        ctx.dtypes = (k.dtype, v.dtype, bias.dtype)      # the gradients go back in the inputs' dtypes
        with torch.autocast("cpu", enabled=False):
            k, v, b = k.to(q.dtype), v.to(q.dtype), bias.to(q.dtype)
            scale = q.shape[-1] ** -0.5
            out = _BiasedAttention._like(q, (*q.shape[:3], v.shape[-1]))
            for s, e in _BiasedAttention._chunks(q, k):
                out[s:e] = torch.matmul(_BiasedAttention._weights(q[s:e] * scale, k[s:e], b[s:e]), v[s:e])
        ctx.save_for_backward(q, k, v, b)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        q, k, v, bias = ctx.saved_tensors
        scale = q.shape[-1] ** -0.5
        dq, dk, dv, dbias = (_BiasedAttention._like(t) for t in (q, k, v, bias))
        with torch.autocast("cpu", enabled=False):
            grad_out = grad_out.to(q.dtype)
            for s, e in _BiasedAttention._chunks(q, k):
                qs, g = q[s:e] * scale, grad_out[s:e]
                w = _BiasedAttention._weights(qs, k[s:e], bias[s:e])                   # [b, H, Lq, Lk]
                dv[s:e] = torch.matmul(w.transpose(-2, -1), g)
                dw = torch.matmul(g, v[s:e].transpose(-2, -1))
                ds = torch._softmax_backward_data(dw, w, -1, w.dtype)                 # what autograd calls
                dbias[s:e] = ds.sum(dim=1, keepdim=True) if bias.shape[1] == 1 else ds
                dq[s:e] = torch.matmul(ds, k[s:e]).mul_(scale)
                dk[s:e] = torch.matmul(ds.transpose(-2, -1), qs)
        kt, vt, bt = ctx.dtypes
        return dq, dk.to(kt), dv.to(vt), dbias.to(bt)


class MLP(nn.Module):
    """``Linear(dim, hidden) -> GELU -> Linear(hidden, dim)``."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class SelfAttention(nn.Module):
    """Multi-head self-attention ``[B, L, D] -> [B, L, D]``, optionally with a contextual iRPE bias.

    With ``rpe=True`` the forward needs ``buckets [(B,) L, L]`` (see :mod:`.irpe`); the bias is
    computed from the *scaled* queries, as in the official ``RPEAttention``.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, rpe: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = attn_drop
        self.proj_drop = Dropout(proj_drop)
        self.rpe = ContextualRPE(self.head_dim) if rpe else None

    def forward(self, x: Tensor, buckets: Tensor | None = None) -> Tensor:
        B, L, D = x.shape
        # [B, L, 3, H, d] split on its own axis, then [B, H, L, d] views: no copy either way in autograd
        q, k, v = (t.transpose(1, 2) for t in self.qkv(x).view(B, L, 3, self.num_heads, self.head_dim).unbind(2))
        return self._attend(q, k, v, buckets)

    def forward_first(self, x: Tensor, buckets: Tensor | None = None) -> Tensor:
        """Attention output of token 0 only, ``[B, L, D] -> [B, 1, D]`` (queries of the others are skipped)."""
        B, L, D = x.shape
        w, b = self.qkv.weight, self.qkv.bias
        q = F.linear(x[:, :1], w[:D], None if b is None else b[:D]).view(B, 1, self.num_heads, self.head_dim)
        k, v = (t.transpose(1, 2) for t in
                F.linear(x, w[D:], None if b is None else b[D:]).view(B, L, 2, self.num_heads, self.head_dim).unbind(2))
        return self._attend(q.transpose(1, 2), k, v, None if buckets is None else buckets[..., :1, :])

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, buckets: Tensor | None) -> Tensor:
        """``q [B, H, Lq, d]``, ``k, v [B, H, L, d]`` -> projected output ``[B, Lq, D]``."""
        bias = None
        if self.rpe is not None:
            if buckets is None:
                raise ValueError("this attention uses iRPE: pass the bucket ids of the token grid")
            bias = self.rpe(q[:, :1] * self.scale, buckets).to(q.dtype)  # the first head's queries (see irpe)
        out = attention(q, k, v, bias, self.attn_drop if self.training else 0.0)
        B, H, Lq, d = out.shape
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, Lq, H * d)))


class Block(nn.Module):
    """Pre-norm transformer block ``[B, L, D] -> [B, L, D]``.

    :meth:`forward_first` computes the same block for the first token only (keys and values
    still come from every token): enough when a stack's last block only feeds a cls output.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 norm_eps: float = 1e-6, drop_path: float = 0.0, attn_drop: float = 0.0, rpe: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = SelfAttention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, rpe=rpe)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = MLP(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, buckets: Tensor | None = None) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), buckets))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def forward_first(self, x: Tensor, buckets: Tensor | None = None) -> Tensor:
        """``[B, L, D] -> [B, 1, D]``: the block's output at token 0 only."""
        x0 = x[:, :1] + self.drop_path(self.attn.forward_first(self.norm1(x), buckets))
        return x0 + self.drop_path(self.mlp(self.norm2(x0)))


def init_transformer_weights(module: nn.Module, std: float = 0.02) -> None:
    """I-JEPA/AnySat initialisation: truncated-normal linear weights, zero biases, unit LayerNorms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def rescale_residual_branches(blocks) -> None:
    """Divide each block's output projections by ``sqrt(2 * layer)`` (I-JEPA ``fix_init_weight``)."""
    with torch.no_grad():
        for layer, blk in enumerate(blocks, start=1):
            blk.attn.proj.weight.div_((2.0 * layer) ** 0.5)
            blk.mlp.fc2.weight.div_((2.0 * layer) ** 0.5)
