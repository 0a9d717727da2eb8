"""Image relative position encoding (iRPE, Wu et al. 2021) as AnySat uses it.

Configuration fixed by AnySat: *euclidean* method, *contextual* mode, on *keys*, one
table shared by all heads, ratio 1.9 (alpha=1.9, beta=3.8, gamma=15.2).  The Euclidean
distance between two tokens of a grid is bucketed by a piecewise log function into
``2*int(beta)+1 = 7`` buckets; prefix tokens (cls, MODIS) use an extra bucket (8 in all).
The attention bias is ``bias[b, h, i, j] = q[b, 0, i] . W[:, bucket(i, j)]``.

Note ``q[b, 0]``: the official implementation gathers the bias table with an index whose
head axis has size 1, so *every head receives the bias computed from the first head's
queries*.  The released weights were trained that way, and the parity fixtures confirm
it (using each head's own queries moves the outputs by ~1e-2), so we keep it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..kernels import gather_buckets

__all__ = [
    "ALPHA",
    "BETA",
    "GAMMA",
    "NUM_BUCKETS",
    "PREFIX_BUCKET",
    "grid_coords",
    "euclidean_buckets",
    "add_prefix",
    "ContextualRPE",
]

RATIO = 1.9
ALPHA, BETA, GAMMA = 1.0 * RATIO, 2.0 * RATIO, 8.0 * RATIO
PREFIX_BUCKET = 2 * int(BETA) + 1  # 7: bucket of cls / MODIS tokens
NUM_BUCKETS = PREFIX_BUCKET + 1  # 8


def grid_coords(rows: int, cols: int, device=None) -> Tensor:
    """Row-major ``(row, col)`` coordinates of a grid -> ``[rows*cols, 2]``."""
    r, c = torch.meshgrid(torch.arange(rows, device=device), torch.arange(cols, device=device), indexing="ij")
    return torch.stack([r, c], dim=-1).reshape(-1, 2)


@torch.no_grad()
def euclidean_buckets(coords_q: Tensor, coords_k: Tensor) -> Tensor:
    """Bucket ids of every query/key pair: ``[..., Lq, 2], [..., Lk, 2] -> long [..., Lq, Lk]`` in ``[3, 6]``."""
    diff = (coords_q[..., :, None, :] - coords_k[..., None, :, :]).float()
    dist = diff.square().sum(-1).sqrt().round()
    far = ALPHA + torch.log(dist.clamp(min=ALPHA) / ALPHA) / math.log(GAMMA / ALPHA) * (BETA - ALPHA)
    idx = torch.where(dist > ALPHA, far.round().clamp(max=BETA), dist)
    return idx.long() + int(BETA)


def add_prefix(buckets: Tensor, n_query: int, n_key: int) -> Tensor:
    """Pad a bucket matrix ``[..., Lq, Lk]`` with ``n_query`` leading rows / ``n_key`` columns of the prefix bucket."""
    if n_query == 0 and n_key == 0:
        return buckets
    *lead, lq, lk = buckets.shape
    out = buckets.new_full((*lead, lq + n_query, lk + n_key), PREFIX_BUCKET)
    out[..., n_query:, n_key:] = buckets
    return out


class ContextualRPE(nn.Module):
    """Contextual RPE on keys: ``q [B, H, Lq, d], buckets [(B,) Lq, Lk] -> bias [B, 1, Lq, Lk]``.

    The bias comes from the first head's queries and broadcasts over heads (official behaviour).
    """

    def __init__(self, head_dim: int, num_buckets: int = NUM_BUCKETS):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, head_dim, num_buckets))
        nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(self, q: Tensor, buckets: Tensor) -> Tensor:
        table = q[:, 0] @ self.weight[0].to(q.dtype)  # [B, Lq, n_buckets]: q_i . W[:, r] for every r
        return gather_buckets(table, buckets)[:, None]  # bias[b, 0, i, j] = table[b, i, bucket(i, j)]
