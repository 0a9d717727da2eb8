"""JEPA predictor: from context embeddings, predict the target encoder's embeddings of masked patches.

As in I-JEPA / AnySat (``VisionTransformerPredictorMulti``): context tokens are mapped by a
linear layer and given their patch position codes; every target patch becomes a learned
mask token plus its position code; a cls token, the context and the mask tokens go through
``depth`` transformer blocks; the outputs at the mask tokens are projected back to the
encoder width.  One pass per target block (blocks are stacked along the batch).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..model.blocks import Block, init_transformer_weights, rescale_residual_branches

__all__ = ["Predictor"]


def gather_tokens(x: Tensor, idx: Tensor) -> Tensor:
    """``x [B, N, D]``, ``idx [B, K]`` -> ``[B, K, D]``."""
    return torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))


class Predictor(nn.Module):
    """``depth`` transformer blocks of width ``dim`` (the encoder's: AnySat's ``predictor_embed_dim``
    is its ``embed_dim``, so the encoder's position codes serve the predictor as they are).

    With ``attend_over="heads"`` (the official flash-attn path, :mod:`anysat_lite.model.blocks`) no token sees
    another, so each prediction is a function of its target's position alone, whatever the context.
    """

    def __init__(
        self, dim: int, depth: int = 4, num_heads: int = 16, mlp_ratio: float = 4.0, attend_over: str = "tokens"
    ):
        super().__init__()
        self.embed = nn.Linear(dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, mlp_ratio, norm_eps=1e-5, attend_over=attend_over) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, dim)
        init_transformer_weights(self)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        rescale_residual_branches(self.blocks)

    def forward(self, context: Tensor, pos: Tensor, context_idx: Tensor, target_idx: list[Tensor]) -> Tensor:
        """Predict target embeddings.

        Args:
            context: ``[B, Kc, D]`` context-encoder outputs at the context patches.
            pos: ``[N, D]`` patch position codes (the grid's, spacing ``P / 10``).
            context_idx: ``[B, Kc]`` their patch indices.
            target_idx: ``n_t`` tensors ``[B, Kt]`` of target patch indices.
        Returns:
            ``[n_t, B, Kt, D]`` predictions.
        """
        B, Kc, _ = context.shape
        n_t, Kt = len(target_idx), target_idx[0].shape[1]
        pos_b = pos[None].expand(B, -1, -1).to(context.dtype)
        x = self.embed(context) + gather_tokens(pos_b, context_idx)  # [B, Kc, D]
        tgt = torch.cat(target_idx, dim=0)  # [n_t*B, Kt]
        queries = self.mask_token.to(x.dtype) + gather_tokens(pos_b.repeat(n_t, 1, 1), tgt)
        x = torch.cat([self.cls_token.expand(n_t * B, -1, -1).to(x.dtype), x.repeat(n_t, 1, 1), queries], dim=1)
        for blk in self.blocks:
            x = blk(x)
        out = self.proj(self.norm(x[:, 1 + Kc :]))
        return out.view(n_t, B, Kt, -1)
