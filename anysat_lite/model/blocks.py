"""Transformer building blocks shared by the sub-patch encoder, the joint encoder and the predictor.

Pre-norm ViT blocks (``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``) with multi-head attention
``softmax(q k^T / sqrt(d) + bias) v`` (:func:`~anysat_lite.kernels.attention`).  An optional
contextual iRPE (:mod:`.irpe`) makes the bias depend on the queries and the token grid.
Parameter names (``qkv``, ``proj``, ``mlp.fc1``...) follow timm, as the official code does.

**Attention over heads** (``attend_over="heads"``) reproduces the official joint transformer and
predictor run with flash-attn (``flash_attn=True``, the default of the official configs and of
``torch.hub.load``): the official ``Attention`` hands ``flash_attn_func`` its queries, keys and values as
``[B, H, L, d]``, where that function reads ``[batch, sequence, heads, d]``.  So each token attends over its
own ``H`` heads, taken as a sequence, and no token sees another:

    out[b, h, l] = sum_h' softmax_h'(q[b, h, l] . k[b, h', l] / sqrt(d)) v[b, h', l]

Without flash-attn (``flash_attn=False``, the official README's choice) the same module attends over the
tokens, as here by default; the official parity fixtures and the released weights' evaluation in this
package use that path (docs/reproduction.md, "Known differences").
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import ATTEND_OVER
from ..kernels import attention
from .irpe import ContextualRPE
from .layers import Dropout, DropPath

__all__ = ["MLP", "SelfAttention", "Block", "init_transformer_weights", "rescale_residual_branches"]


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
    computed from the *scaled* queries, as in the official ``RPEAttention``.  ``attend_over="heads"``: the
    official flash-attn call's attention across each token's heads (module docstring).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        rpe: bool = False,
        attend_over: str = "tokens",
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by {num_heads} heads")
        if attend_over not in ATTEND_OVER:
            raise ValueError(f"attend_over={attend_over!r}: expected one of {', '.join(ATTEND_OVER)}")
        if rpe and attend_over != "tokens":
            raise ValueError(f"attend_over={attend_over!r} with iRPE: expected 'tokens' (its bias is per token pair)")
        self.attend_over = attend_over
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = attn_drop
        self.proj_drop = Dropout(proj_drop)
        self.rpe = ContextualRPE(self.head_dim) if rpe else None

    def heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``x [B, L, D]`` -> queries, keys, values ``[B, H, L, d]`` (``H`` heads of ``d = D / H`` channels)."""
        B, L, D = x.shape
        qkv = self.qkv(x).view(B, L, 3, self.num_heads, self.head_dim)
        q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))  # each [B, H, L, d]
        return q, k, v

    def forward(self, x: Tensor, buckets: Tensor | None = None) -> Tensor:
        """``x [B, L, D]`` (+ ``buckets [(B,) L, L]`` with iRPE) -> ``[B, L, D]``."""
        return self.attend(*self.heads(x), buckets)

    def position_bias(self, q: Tensor, buckets: Tensor | None) -> Tensor | None:
        """The iRPE bias ``[B, 1, Lq, Lk]`` added to every head's scores (``None`` without iRPE).

        Computed from the *first* head's scaled queries ``q[:, :1]``, as the official code does (see :mod:`.irpe`).
        """
        if self.rpe is None:
            return None
        if buckets is None:
            raise ValueError("this attention uses iRPE: pass the bucket ids of the token grid")
        return self.rpe(q[:, :1] * self.scale, buckets).to(q.dtype)

    def weights(self, x: Tensor, buckets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """For inspection: ``softmax(q k^T / sqrt(d) + bias)`` ``[B, H, L, L]`` and the iRPE bias ``[B, 1, L, L]``
        (``None`` without iRPE), in the textbook form; :meth:`forward` computes the same with a fast kernel."""
        if self.attend_over != "tokens":
            raise ValueError(
                "attention weights: this block attends over each token's heads (attend_over='heads'), so it has "
                "no weights between tokens; inspect a model built with attend_over='tokens'"
            )
        q, k, _ = self.heads(x)
        bias = self.position_bias(q, buckets)
        scores = (q * self.scale) @ k.transpose(-2, -1)
        return (scores if bias is None else scores + bias).softmax(dim=-1), bias

    def attend(self, q: Tensor, k: Tensor, v: Tensor, buckets: Tensor | None = None) -> Tensor:
        """Attention from projected heads: ``q [B, H, Lq, d]``, ``k, v [B, H, L, d]`` -> ``[B, Lq, D]``."""
        drop = self.attn_drop if self.training else 0.0
        if self.attend_over == "heads":  # [B, L, H, d]: the heads of each token as its sequence (module docstring)
            out = attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), None, drop).transpose(1, 2)
        else:
            bias = self.position_bias(q, buckets)  # the first head's queries (see irpe)
            out = attention(q, k, v, bias, drop)  # [B, H, Lq, d]
        B, H, Lq, d = out.shape
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, Lq, H * d)))


class Block(nn.Module):
    """Pre-norm transformer block ``[B, L, D] -> [B, L, D]``: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        norm_eps: float = 1e-6,
        drop_path: float = 0.0,
        attn_drop: float = 0.0,
        rpe: bool = False,
        attend_over: str = "tokens",
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = SelfAttention(
            dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, rpe=rpe, attend_over=attend_over
        )
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = MLP(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def attention_weights(self, x: Tensor, buckets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """The attention weights ``[B, H, L, L]`` (and iRPE bias) this block computes on ``x [B, L, D]``."""
        return self.attn.weights(self.norm1(x), buckets)

    def forward(self, x: Tensor, buckets: Tensor | None = None) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), buckets))
        return x + self.drop_path(self.mlp(self.norm2(x)))


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
