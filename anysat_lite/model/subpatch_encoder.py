"""Shared sub-patch transformer: summarises the sub-patches of each patch into one token.

The same weights serve every sensor.  Input: the sub-patch sequences of many patches
``[M, g*g, D]``; a learned cls token is prepended, 2-D sin-cos positions in metres
(sub-patch index x sub-patch size) are added, and pre-norm blocks with iRPE attention
(LayerNorm eps 1e-5) run over the sequence.  Output: the cls token ``[M, D]`` = the
patch token of this sensor, and the sub-patch tokens ``[M, g*g, D]`` (used by
``output="dense"``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..kernels import block_first_token
from .blocks import Block, init_transformer_weights, rescale_residual_branches
from .irpe import add_prefix, euclidean_buckets, grid_coords
from .posenc import grid_sincos_2d

__all__ = ["SubPatchEncoder"]


class SubPatchEncoder(nn.Module):
    """``depth`` iRPE blocks shared by every sensor: sub-patches ``[M, g*g, D]`` -> patch tokens ``[M, D]``."""

    def __init__(self, dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0):
        super().__init__()
        self.dim = dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        rates = torch.linspace(0, drop_path, depth).tolist()
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, mlp_ratio, norm_eps=1e-5, drop_path=r, rpe=True) for r in rates
        )
        self.norm = nn.LayerNorm(dim)
        init_transformer_weights(self)
        rescale_residual_branches(self.blocks)
        self._cache: dict = {}

    def _grid(self, g: int, spacing_m: float, device) -> tuple[Tensor, Tensor]:
        """Position codes ``[1 + g*g, D]`` (zero for cls) and iRPE buckets ``[1 + g*g, 1 + g*g]``."""
        key = (g, float(spacing_m), str(device))
        if key not in self._cache:
            pos = grid_sincos_2d(self.dim, g, g, spacing_m, device=device)
            pos = torch.cat([pos.new_zeros(1, self.dim), pos])
            coords = grid_coords(g, g, device=device)
            buckets = add_prefix(euclidean_buckets(coords, coords), 1, 1)
            self._cache[key] = (pos, buckets)
        return self._cache[key]

    def embed(self, x: Tensor, g: int, spacing_m: float) -> tuple[Tensor, Tensor]:
        """The blocks' input: ``x [M, g*g, D]`` -> ``[cls, x] + positions`` ``[M, 1 + g*g, D]``, and the iRPE
        bucket ids ``[1 + g*g, 1 + g*g]`` of the sub-patch grid (sub-patches ``spacing_m`` metres apart)."""
        M, L, D = x.shape
        if L != g * g:
            raise ValueError(f"sub-patch encoder: expected {g}x{g}={g * g} sub-patches per patch, got {L}")
        pos, buckets = self._grid(g, spacing_m, x.device)  # [1 + g*g, D], [1 + g*g, 1 + g*g]
        return torch.cat([self.cls_token.expand(M, -1, -1).to(x.dtype), x], dim=1) + pos.to(x.dtype), buckets

    def forward(
        self, x: Tensor, g: int, spacing_m: float, keep_subpatches: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        """``x [M, g*g, D]`` -> (patch tokens ``[M, D]``, sub-patch tokens ``[M, g*g, D]`` or ``None``).

        Without ``keep_subpatches`` only the cls token leaves the encoder, so the last block
        runs for that token alone (:func:`~anysat_lite.kernels.block_first_token`).
        """
        x, buckets = self.embed(x, g, spacing_m)
        for blk in self.blocks[:-1]:
            x = blk(x, buckets)  # [M, 1 + g*g, D]
        if keep_subpatches:
            x = self.norm(self.blocks[-1](x, buckets))
            return x[:, 0], x[:, 1:]
        return self.norm(block_first_token(self.blocks[-1], x, buckets))[:, 0], None
