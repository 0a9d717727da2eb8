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


class _BlockMaskedLogSumExp(torch.autograd.Function):
    """``lse_i = log sum_j exp(<f_i, f_j> / tau)`` over the ``j`` outside ``i``'s block of ``n`` rows.

    ``f [L, D]`` -> ``[L]``.  Rows are processed in chunks and the ``[L, L]`` similarity matrix is
    never stored: the backward recomputes each chunk (one extra matmul).  With
    ``W_ij = g_i softmax_j(s_i) / tau`` (``g`` the incoming gradient), ``df = W f + W^T f``: two
    matmuls per chunk.  Memory is ``O(chunk x L)`` instead of ``O(L^2)`` (the whole matrix is
    0.8 GB for 128 tiles x 3 sensors x 36 patches); on the CPU the chunk stays in cache, which
    with fewer passes over memory makes it ~5x faster than ``torch.logsumexp`` on the full matrix.
    """

    budget = {"cuda": 2**26, "cpu": 2**21}   # elements of one [rows, L] chunk (tests shrink it)

    @staticmethod
    def _chunks(L: int, n: int, device) -> tuple[range, int]:
        budget = _BlockMaskedLogSumExp.budget.get(device.type, 2**26)
        rows = max(n, budget // max(L, 1) // n * n)            # whole blocks per chunk
        return range(0, L, rows), rows

    @staticmethod
    def _logits(f: Tensor, r0: int, r1: int, n: int, tau: float) -> Tensor:
        s = (f[r0:r1] @ f.t()).mul_(1.0 / tau)                                          # [R, L]
        g0, g1 = r0 // n, r1 // n
        s.view(g1 - g0, n, -1, n)[:, :, g0:g1].diagonal(dim1=0, dim2=2).fill_(float("-inf"))
        return s

    @staticmethod
    def forward(ctx, f: Tensor, n: int, tau: float) -> Tensor:
        L = f.shape[0]
        out = f.new_empty(L)
        starts, rows = _BlockMaskedLogSumExp._chunks(L, n, f.device)
        for r0 in starts:
            r1 = min(r0 + rows, L)
            out[r0:r1] = torch.logsumexp(_BlockMaskedLogSumExp._logits(f, r0, r1, n, tau), dim=1)
        ctx.save_for_backward(f, out)
        ctx.n, ctx.tau = n, tau
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        f, out = ctx.saved_tensors
        n, tau = ctx.n, ctx.tau
        L = f.shape[0]
        grad = torch.zeros_like(f)
        starts, rows = _BlockMaskedLogSumExp._chunks(L, n, f.device)
        for r0 in starts:
            r1 = min(r0 + rows, L)
            # softmax weights of the chunk's rows, times the incoming gradient and 1/tau
            w = _BlockMaskedLogSumExp._logits(f, r0, r1, n, tau).sub_(out[r0:r1, None]).exp_()
            w.mul_(grad_out[r0:r1, None] / tau)
            grad[r0:r1] += w @ f           # d/d f_i of <f_i, f_j>
            grad += w.t() @ f[r0:r1]       # d/d f_j of <f_i, f_j>
        return grad, None, None


def mil_nce(tokens: Tensor, tau: float = 0.1, distributed: bool = True) -> Tensor:
    """``tokens [B, M, N, D]`` (patch tokens per modality, ``M >= 2``) -> scalar loss.

    The denominator runs over every pair of the ``L = M B N`` tokens except those of the same
    (modality, tile) block (:class:`_BlockMaskedLogSumExp`, chunked, never an ``[L, L]``
    matrix); the numerator only needs the ``M - 1`` positives of each anchor, computed as
    ``[B, N, M, M]`` similarities.
    """
    if distributed:
        tokens = gather_with_grad(tokens)
    B, M, N, D = tokens.shape
    if M < 2:
        return tokens.new_zeros(())
    with torch.autocast(tokens.device.type, enabled=False):
        z = F.normalize(tokens.to(torch.promote_types(tokens.dtype, torch.float32)), dim=-1)  # [B, M, N, D]
        flat = z.transpose(0, 1).reshape(M * B * N, D)                              # modality-major rows
        denominator = _BlockMaskedLogSumExp.apply(flat, N, tau).view(M, B, N)
        same_place = torch.einsum("bmnd,bknd->bnmk", z, z) / tau                    # [B, N, M, M]
        same_place = same_place.masked_fill(torch.eye(M, dtype=torch.bool, device=z.device), float("-inf"))
        numerator = torch.logsumexp(same_place, dim=3).permute(2, 0, 1)              # [M, B, N]
        return (denominator - numerator).mean()
