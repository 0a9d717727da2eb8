"""Small layers: ``torch.nn`` modules whose forward calls a :mod:`~anysat_lite.kernels` function, and DropPath.

* :class:`Dropout`: ``nn.Dropout`` computed by :func:`~anysat_lite.kernels.dropout`.
* :class:`GroupNorm`: ``nn.GroupNorm`` computed by :func:`~anysat_lite.kernels.group_norm`.
* :class:`DropPath`: stochastic depth (drop a sample's whole residual branch).

State-dict keys are those of the ``torch.nn`` classes, so checkpoints do not change.
"""

from __future__ import annotations

from torch import Tensor, nn

from .. import kernels

__all__ = ["Dropout", "GroupNorm", "DropPath"]


class Dropout(nn.Dropout):
    """``nn.Dropout(p)``: zero each element with probability ``p``, scale the rest by ``1 / (1 - p)``; ``inplace`` is
    ignored."""

    def forward(self, x: Tensor) -> Tensor:
        return kernels.dropout(x, self.p, self.training)


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm(num_groups, num_channels)`` on ``[N, C, *]`` inputs."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2 or x.shape[1] != self.num_channels:
            raise ValueError(
                f"GroupNorm expects {self.num_channels} channels on dim 1, got input of shape {list(x.shape)}"
            )
        return kernels.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch of a sample with probability ``p`` (training only).

    ``x [B, ...]`` -> ``x * keep_b / (1 - p)`` with ``keep_b ~ Bernoulli(1 - p)`` drawn per sample.
    """

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)
