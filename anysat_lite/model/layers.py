"""Drop-in replacements for three ``torch.nn`` layers, same function, faster on the CPU.

* :class:`Dropout` (CPU): ``nn.Dropout`` draws its mask with ``bernoulli_``, which is slow on the
  CPU (about 7 ns per element here).  We draw uniforms and turn them into the scaled
  keep-mask with two vectorised float ops: about 2.5x faster forward + backward.  The
  distribution is the same (keep with probability ``1 - p``, scale by ``1 / (1 - p)``);
  the random stream is not that of ``nn.Dropout``.
* :class:`GroupNorm`: ``nn.GroupNorm`` on ``[N, C]`` inputs (the L-TAE MLPs) computed as a
  layer norm over ``[N, G, C/G]`` plus the per-channel affine: the same statistics (to float
  rounding), about 2x faster forward + backward.  Other ranks use ``nn.GroupNorm`` unchanged.
* :class:`DropPath`: stochastic depth (drop a sample's whole residual branch).

State-dict keys are those of the ``torch.nn`` classes, so checkpoints do not change.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Dropout", "GroupNorm", "DropPath"]

# Groups of 2-3 channels (the first L-TAE layer at D = 64) keep the reference kernel: the
# statistics of so few values are ill-conditioned, and matching its rounding keeps the parity
# fixtures within 5e-5 (the layer-norm form, though closer to float64, moves them by 1.3e-4).
MIN_GROUP = 4


class Dropout(nn.Dropout):
    """``nn.Dropout`` with a faster mask (see module docstring); ``inplace`` is ignored."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":  # the CUDA kernel is fused and fast already
            return super().forward(x)
        if self.p == 1.0:
            return x * 0.0
        keep = 1.0 - self.p
        # u ~ U[0, 1) in fp32: floor(u + keep) is 1 with probability keep, else 0.
        mask = torch.rand(x.shape, device=x.device).add_(keep).floor_().mul_(1.0 / keep)
        return x * mask.to(x.dtype)


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm``; its ``[N, C]`` case runs as a layer norm over ``[N, G, C/G]``."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or self.num_channels // self.num_groups < MIN_GROUP:
            return super().forward(x)
        N, C = x.shape
        G = self.num_groups
        if C != self.num_channels:
            raise ValueError(f"GroupNorm expects {self.num_channels} channels, got input of shape {list(x.shape)}")
        y = F.layer_norm(x.view(N, G, C // G), (C // G,), eps=self.eps).view(N, C)
        return y * self.weight + self.bias if self.affine else y


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch of a sample with probability ``p`` (training only)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)
