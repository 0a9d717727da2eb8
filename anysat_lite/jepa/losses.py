"""Latent losses of AnySat pretraining.

* :func:`latent_loss`: smooth-L1 between predicted and (layer-normed, gradient-stopped)
  target embeddings of the masked patches.
* :func:`mil_nce`: AnySat's cross-modal contrastive term (MIL-NCE, tau 0.1).  Every patch
  token of every modality is an anchor; the same location's tokens in the *other*
  modalities are its positives; all tokens are in the denominator except those of the
  same tile and modality.  The loss is summed over anchors and divided by their number.
  Under DistributedDataParallel, tokens are gathered from every process first, so the
  value equals the single-process one on the same global batch.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

__all__ = ["latent_loss", "mil_nce", "gather_with_grad"]


def latent_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Smooth-L1 (beta 1) averaged over every element."""
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
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` (same shape on every process) along dim 0, with gradients; identity without DDP."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


def mil_nce(tokens: Tensor, tau: float = 0.1, distributed: bool = True) -> Tensor:
    """``tokens [B, M, N, D]`` (patch tokens per modality, ``M >= 2``) -> scalar loss."""
    if distributed:
        tokens = gather_with_grad(tokens)
    B, M, N, D = tokens.shape
    if M < 2:
        return tokens.new_zeros(())
    z = F.normalize(tokens.float().permute(1, 0, 2, 3).reshape(M * B * N, D), dim=-1)  # modality-major
    logits = (z @ z.t()) / tau                                                     # [L, L]
    group = torch.arange(M * B, device=z.device).repeat_interleave(N)               # (modality, tile) of a token
    logits = logits.masked_fill(group[:, None] == group[None, :], float("-inf"))
    tile = group % B
    loc = torch.arange(N, device=z.device).repeat(M * B)
    positive = (tile[:, None] == tile[None, :]) & (loc[:, None] == loc[None, :]) & (group[:, None] != group[None, :])
    denominator = torch.logsumexp(logits, dim=1)
    numerator = torch.logsumexp(logits.masked_fill(~positive, float("-inf")), dim=1)
    return (denominator - numerator).mean()
