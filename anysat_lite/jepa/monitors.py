"""Collapse monitors: numbers that reveal a representation collapsing to a constant.

* ``std``: per-dimension standard deviation of the (layer-normed) target embeddings over
  all tokens of the batch, averaged over dimensions.  -> 0 under collapse.  It is at most about
  1: each layer-normed token has mean square 1 over its dimensions, so the per-dimension
  variances average to at most 1, and reach it only when every dimension averages to zero over
  the tokens (no component common to all tokens) with the same spread in every dimension.  A
  freshly initialised AnySat is far below that, because all its tokens share a large common
  component: about 0.33-0.45 at step 0 of the CPU demo's synthetic tiles, lower (0.13-0.16) on
  pure-noise inputs.  So a low ``std`` alone does not mean collapse: watch it fall.
* ``erank``: effective rank ``exp(H(p))`` of the embedding matrix ``[tokens, D]``, ``p`` = its
  normalised singular values (RankMe, Garrido et al. 2023); 1 when every token is the same vector
  (or lies on one line), up to ``D``.  Not centred, as in RankMe: a common component shared by all
  tokens counts as one direction, so the rank falls when that component dominates.
* ``cos``: mean cosine similarity between the tile embeddings of different tiles (-> 1).
* ``place_cos``: mean cosine similarity between the target embeddings of two places (patches)
  of the same tile, averaged over the tiles.  Not a collapse warning: near 1 it says that the
  targets of a tile are nearly one vector, so the predictor has one summary per tile to
  regress at every masked place rather than what is there (the demo's case: docs/seeds.md,
  "Inside the fusion").  Absent when a tile has a single patch.

:func:`collapse_warnings` turns them into messages when they cross the thresholds of
:class:`~anysat_lite.config.JEPAConfig` (``warn_std``, ``warn_erank``, ``warn_cos``).

:func:`sensor_alignment` measures what MIL-NCE is for: how close the tokens of two sensors at
the same place are, against any two places.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["collapse_monitors", "collapse_warnings", "sensor_alignment"]


@torch.no_grad()
def collapse_monitors(patch_embeddings: Tensor, tile_embeddings: Tensor) -> dict[str, float]:
    """``patch_embeddings [B, N, D]``, ``tile_embeddings [B, D]`` -> ``{"std", "erank", "cos", "place_cos"}``."""
    z = patch_embeddings.float().reshape(-1, patch_embeddings.shape[-1])
    std = z.std(dim=0).mean().item()
    s = torch.linalg.svdvals(z)
    p = s / s.sum().clamp_min(1e-12)
    erank = torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum()).item()
    t = torch.nn.functional.normalize(tile_embeddings.float(), dim=-1)
    B = t.shape[0]
    sim = t @ t.t()
    cos = ((sim.sum() - sim.diagonal().sum()) / max(B * (B - 1), 1)).item()
    out = {"std": std, "erank": erank, "cos": cos}
    N = patch_embeddings.shape[1]
    if N > 1:  # sum over ordered pairs i != j of u_i . u_j = |sum_i u_i|^2 - N, per tile
        u = torch.nn.functional.normalize(patch_embeddings.float(), dim=-1)
        pairs = u.sum(1).pow(2).sum(-1) - N  # [B]
        out["place_cos"] = (pairs.sum() / (B * N * (N - 1))).clamp(-1.0, 1.0).item()  # rounding can pass 1
    return out


def collapse_warnings(
    monitors: dict[str, float], min_std: float = 0.1, min_erank: float = 3.0, max_cos: float = 0.95
) -> dict[str, str]:
    """``{monitor: message}`` for every monitor beyond its threshold (empty when healthy)."""
    out = {}
    if "std" in monitors and monitors["std"] < min_std:
        out["std"] = f"target std per dimension {monitors['std']:.3f} < {min_std:g}"
    if "erank" in monitors and monitors["erank"] < min_erank:
        out["erank"] = f"effective rank {monitors['erank']:.1f} < {min_erank:g}"
    if "cos" in monitors and monitors["cos"] > max_cos:
        out["cos"] = f"tile cosine similarity {monitors['cos']:.3f} > {max_cos:g}"
    return out


@torch.no_grad()
def sensor_alignment(tokens: Tensor, sensors: list[str]) -> dict[str, float]:
    """Mean cosine similarity of per-sensor patch tokens ``[B, M, N, D]`` (MIL-NCE's input).

    Returns ``{"a~b": ...}`` for every pair of the ``M`` sensors (same tile, same patch: MIL-NCE's
    positives) and ``"any two places"``: sensor ``a`` against sensor ``b`` over every pair of
    (tile, patch), averaged over the sensor pairs (mostly negatives).  Aligned sensors have pair
    values well above the last one.
    """
    z = torch.nn.functional.normalize(tokens.float(), dim=-1)
    M = z.shape[1]
    out, anywhere = {}, []
    for i in range(M):
        for j in range(i + 1, M):
            out[f"{sensors[i]}~{sensors[j]}"] = (z[:, i] * z[:, j]).sum(-1).mean().item()
            anywhere.append(z[:, i].flatten(0, 1).mean(0) @ z[:, j].flatten(0, 1).mean(0))
    out["any two places"] = torch.stack(anywhere).mean().item() if anywhere else float("nan")
    return out
