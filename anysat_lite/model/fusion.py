"""Per-location fusion: one learned query per patch cross-attends to every modality token.

After the joint transformer, the sequence holds ``[cls, (MODIS), M x N modality tokens]``.
The fusion block builds ``1 + N`` queries (+1 for MODIS) as ``q_learned + position code``,
attends over all tokens with a contextual iRPE bias whose key positions repeat the patch
grid once per modality, and returns ``[cls, N fused patch tokens]``.  As in the official
``CrossBlockMulti`` the attention output **replaces** the input (no residual around the
attention), then a residual MLP follows.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..kernels import attention
from .blocks import MLP
from .irpe import ContextualRPE, add_prefix, euclidean_buckets
from .layers import DropPath

__all__ = ["FusionBlock", "fusion_buckets"]


def fusion_buckets(coords: Tensor, n_modalities: int, n_prefix: int) -> Tensor:
    """iRPE buckets between queries and keys: ``coords [(B,) K, 2]`` -> ``[(B,) P+K, P+M*K]``."""
    keys = coords.repeat(*([1] * (coords.dim() - 2)), n_modalities, 1)
    return add_prefix(euclidean_buckets(coords, keys), n_prefix, n_prefix)


class FusionAttention(nn.Module):
    """Cross-attention of the learned per-location queries to every token (keys and values from ``x``)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q_learned = nn.Parameter(torch.zeros(1, 1, dim))
        self.wk = nn.Linear(dim, dim, bias=qkv_bias)
        self.wv = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.rpe = ContextualRPE(self.head_dim)

    def heads(self, x: Tensor, query_pos: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries ``[B, H, P+K, d]`` (learned query + position code) and keys, values ``[B, H, L, d]`` of ``x``."""
        B, L, D = x.shape
        Lq = query_pos.shape[1]
        q = (self.q_learned.to(x.dtype) + query_pos.to(x.dtype)).expand(B, -1, -1)
        q = q.reshape(B, Lq, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(B, L, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(B, L, self.num_heads, self.head_dim).transpose(1, 2)
        return q, k, v

    def weights(self, x: Tensor, query_pos: Tensor, buckets: Tensor) -> Tensor:
        """For inspection: the weights ``[B, H, P+K, L]`` with which each query attends to the tokens of ``x``
        (``softmax(q k^T / sqrt(d) + bias)``, textbook form; :meth:`forward` computes the same with a fast kernel)."""
        q, k, _ = self.heads(x, query_pos)
        bias = self.rpe(q, buckets).to(q.dtype)
        return ((q * self.head_dim**-0.5) @ k.transpose(-2, -1) + bias).softmax(dim=-1)

    def forward(self, x: Tensor, query_pos: Tensor, buckets: Tensor, n_prefix: int) -> Tensor:
        """``x [B, L, D]``, ``query_pos [(B|1), P+K, D]``, ``buckets [(B,) P+K, L]`` -> ``[B, 1+K, D]``.

        ``P = n_prefix``; the output of a MODIS query (the second prefix token) is dropped.
        """
        B, L, D = x.shape
        Lq = query_pos.shape[1]
        q, k, v = self.heads(x, query_pos)
        bias = self.rpe(q, buckets).to(q.dtype)  # contextual on the *unscaled* queries (official)
        out = attention(q, k, v, bias).transpose(1, 2).reshape(B, Lq, D)
        if n_prefix > 1:
            out = torch.cat([out[:, :1], out[:, n_prefix:]], dim=1)
        return self.proj(out)


class FusionBlock(nn.Module):
    """``[B, P + M*K, D]`` -> ``[B, 1 + K, D]``: one fused token per location plus the tile (cls) token.

    ``P = n_prefix`` leading tokens (cls, and MODIS when present), ``M`` modalities, ``K`` locations.

    ``x = attn(norm1(x))`` (no residual: the queries are new tokens), then ``x + mlp(norm2(x))``.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = FusionAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLP(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, query_pos: Tensor, buckets: Tensor, n_prefix: int) -> Tensor:
        x = self.drop_path(self.attn(self.norm1(x), query_pos, buckets, n_prefix))
        return x + self.drop_path(self.mlp(self.norm2(x)))
