"""Latent losses of AnySat pretraining.

* :func:`latent_loss`: smooth-L1 between predicted and (layer-normed, gradient-stopped)
  target embeddings of the masked patches.
* :func:`mil_nce`: AnySat's cross-modal contrastive term (MIL-NCE, tau 0.1).  Every patch
  token of every modality is an anchor; the same location's tokens in the *other*
  modalities are its positives; all tokens are in the denominator except those of the
  same tile and modality.  The loss is summed over anchors and divided by their number.

Scope of the MIL-NCE negatives under DistributedDataParallel (``jepa.contrastive_scope``):

* ``local`` (the official code): each process compares its own ``L = M b N`` tokens
  (``b`` tiles per process); the cost per process is ``L^2`` similarities, whatever the
  number of processes, and the loss depends on how the batch is split.
* ``global``: tokens are gathered from every process first (:func:`gather_with_grad`), so
  the value equals the single-process one on the same global batch; each process computes
  the ``(world L)^2`` similarities of the global batch -- ``world^2`` times the local cost,
  growing with the square of the global batch -- and one all-gather of ``[b, M, N, D]``
  tokens (and an all-reduce of their gradient) per step.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from ..kernels import block_masked_logsumexp

__all__ = ["latent_loss", "mil_nce", "mil_nce_reference", "gather_with_grad"]


def latent_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Smooth-L1 (beta 1) between predictions and layer-normed targets, both ``[n_t, B, Kt, D]``
    (target blocks, tiles, patches per block, width), averaged over every element."""
    return F.smooth_l1_loss(pred.float(), target.float())


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0; the backward sums the gradient over processes and keeps this rank's rows.

    Every process computes the same loss on the gathered tensor, so summing gives ``world``
    times the gradient, which DDP's gradient averaging brings back to the single-process value.
    """

    @staticmethod
    def forward(ctx, x):
        world = dist.get_world_size()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.n = dist.get_rank(), x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` (same shape on every process) along dim 0, with gradients; identity without DDP."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


def mil_nce_reference(tokens: Tensor, tau: float = 0.1) -> Tensor:
    """Textbook form of :func:`mil_nce` on one process: ``tokens [B, M, N, D]`` -> scalar, through the whole
    ``[L, L]`` similarity matrix of the ``L = M B N`` tokens (memory ``O(L^2)``; for reading and tests).

    Rows are (sensor, tile, patch).  The positives of a row are the same patch of the same tile in the other
    ``M - 1`` sensors; its denominator is every token except those of its own (sensor, tile) block.
    """
    B, M, N, D = tokens.shape
    if M < 2:
        return tokens.new_zeros(())
    z = F.normalize(tokens.float(), dim=-1).transpose(0, 1).reshape(M * B * N, D)
    s = z @ z.T / tau  # [L, L]
    sensor = torch.arange(M, device=z.device).repeat_interleave(B * N)
    tile = torch.arange(B, device=z.device).repeat_interleave(N).repeat(M)
    patch = torch.arange(N, device=z.device).repeat(M * B)
    same_tile, same_sensor = tile[:, None] == tile[None], sensor[:, None] == sensor[None]
    positive = same_tile & ~same_sensor & (patch[:, None] == patch[None])  # M - 1 per row
    in_denominator = ~(same_tile & same_sensor)
    log_numerator = torch.logsumexp(s.masked_fill(~positive, float("-inf")), dim=1)
    log_denominator = torch.logsumexp(s.masked_fill(~in_denominator, float("-inf")), dim=1)
    return (log_denominator - log_numerator).mean()


def mil_nce(tokens: Tensor, tau: float = 0.1, distributed: bool = True) -> Tensor:
    """``tokens [B, M, N, D]`` (patch tokens per modality, ``M >= 2``) -> scalar loss.

    The denominator runs over every pair of the ``L = M B N`` tokens except those of the same
    (modality, tile) block (:func:`~anysat_lite.kernels.block_masked_logsumexp`); the numerator
    only needs the ``M - 1`` positives of each anchor, computed as ``[B, N, M, M]`` similarities.
    :func:`mil_nce_reference` is the same loss through the whole ``[L, L]`` matrix.
    """
    if distributed:
        tokens = gather_with_grad(tokens)
    B, M, N, D = tokens.shape
    if M < 2:
        return tokens.new_zeros(())
    with torch.autocast(tokens.device.type, enabled=False):
        z = F.normalize(tokens.to(torch.promote_types(tokens.dtype, torch.float32)), dim=-1)  # [B, M, N, D]
        flat = z.transpose(0, 1).reshape(M * B * N, D)  # modality-major rows
        denominator = block_masked_logsumexp(flat, N, tau).view(M, B, N)
        same_place = torch.einsum("bmnd,bknd->bnmk", z, z) / tau  # [B, N, M, M]
        same_place = same_place.masked_fill(torch.eye(M, dtype=torch.bool, device=z.device), float("-inf"))
        numerator = torch.logsumexp(same_place, dim=3).permute(2, 0, 1)  # [M, B, N]
        return (denominator - numerator).mean()
