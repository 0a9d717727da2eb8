"""Joint transformer over the tokens of all modalities (plus a tile-level cls token).

Input: the ``K`` patch tokens of each of the ``M`` modalities, ``[B, M*K, D]``, each already
carrying its patch position code.  A learned cls token (and a MODIS token when present) is
put in front: ``[B, P + M*K, D]`` with ``P`` prefix tokens.  Plain pre-norm ViT blocks
(LayerNorm eps 1e-6, as the official ``AnyModule``) let every token see every modality and
location (with ``attend_over="heads"``, the official flash-attn path, no token sees another: see
:mod:`.blocks`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .blocks import Block

__all__ = ["JointEncoder"]


class JointEncoder(nn.Module):
    """A cls token and ``depth`` pre-norm blocks (no relative position bias) over all modalities' tokens."""

    def __init__(
        self, dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0, drop_path=(), attend_over: str = "tokens"
    ):
        super().__init__()
        rates = list(drop_path) or [0.0] * depth
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, mlp_ratio, norm_eps=1e-6, drop_path=r, attend_over=attend_over) for r in rates[:depth]
        )

    def forward(self, tokens: Tensor, prefix: Tensor | None = None) -> Tensor:
        """``tokens [B, M*K, D]`` (+ ``prefix [B, p, D]``, e.g. MODIS) -> ``[B, 1 + p + M*K, D]``."""
        B = tokens.shape[0]
        parts = [self.cls_token.expand(B, -1, -1).to(tokens.dtype)]
        if prefix is not None:
            parts.append(prefix)
        x = torch.cat(parts + [tokens], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return x
