"""Collapse monitors: numbers that reveal a representation collapsing to a constant.

* ``std``: per-dimension standard deviation of the (layer-normed) target embeddings over
  all tokens of the batch, averaged over dimensions (-> 0 under collapse; ~1 when healthy).
* ``erank``: effective rank ``exp(H(p))`` of the embedding matrix, ``p`` = normalised
  singular values (RankMe); 1 = collapsed to a line, up to ``D``.
* ``cos``: mean cosine similarity between the tile embeddings of different tiles (-> 1).
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["collapse_monitors"]


@torch.no_grad()
def collapse_monitors(patch_embeddings: Tensor, tile_embeddings: Tensor) -> dict[str, float]:
    """``patch_embeddings [B, N, D]``, ``tile_embeddings [B, D]`` -> ``{"std", "erank", "cos"}``."""
    z = patch_embeddings.float().reshape(-1, patch_embeddings.shape[-1])
    std = z.std(dim=0).mean().item()
    s = torch.linalg.svdvals(z - z.mean(0, keepdim=True))
    p = s / s.sum().clamp_min(1e-12)
    erank = torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum()).item()
    t = torch.nn.functional.normalize(tile_embeddings.float(), dim=-1)
    B = t.shape[0]
    sim = t @ t.t()
    cos = ((sim.sum() - sim.diagonal().sum()) / max(B * (B - 1), 1)).item()
    return {"std": std, "erank": erank, "cos": cos}
