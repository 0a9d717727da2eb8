"""Linear probe on frozen features: L2-regularised logistic regression, solved to convergence.

For standardised features ``z = (x - mu) / sigma`` (training statistics) the probe minimises the convex

    L(W, b) = mean_i loss(W z_i + b, y_i) + l2 / 2 * ||W||^2

with ``loss`` the softmax cross-entropy (single-label) or the per-class binary cross-entropy
(multi-label), by full-batch L-BFGS from ``W = 0``.  A convex objective solved to its optimum needs no
learning rate, epoch count or seed, so two feature sets are compared on what they hold, not on how
far an optimiser got: a fixed budget of gradient steps stops earlier on some features than on others.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LinearProbe", "train_linear", "standardisation"]


def standardisation(x: Tensor, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation ``[F]`` of each feature of ``x [..., F]`` over all other axes, in ``dtype``: the
    training statistics every probe standardises with (population std, floored at 1e-6 so that a
    constant feature becomes 0)."""
    flat = x.reshape(-1, x.shape[-1]).to(dtype)
    return flat.mean(0), flat.std(0, correction=0).clamp_min(1e-6)


class LinearProbe(nn.Module):
    """Standardise features with training statistics, then one linear layer."""

    def __init__(self, mean: Tensor, std: Tensor, num_classes: int):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.fc = nn.Linear(mean.numel(), num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc((x - self.mean) / self.std)


def _penalised_loss(logits: Tensor, y: Tensor, weight: Tensor, l2: float, multilabel: bool) -> Tensor:
    loss = F.binary_cross_entropy_with_logits(logits, y.float()) if multilabel else F.cross_entropy(logits, y.long())
    return loss + 0.5 * l2 * weight.square().sum()


def probe_objective(probe: LinearProbe, x: Tensor, y: Tensor, l2: float, multilabel: bool = False) -> Tensor:
    """The objective :func:`train_linear` minimises: mean loss on ``x [N, F]`` plus ``l2 / 2 * ||W||^2``."""
    return _penalised_loss(probe(x), y, probe.fc.weight, l2, multilabel)


def train_linear(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    multilabel: bool = False,
    l2: float = 1e-4,
    max_iter: int = 1000,
    tol: float = 1e-6,
) -> LinearProbe:
    """Fit a :class:`LinearProbe` on ``x [N, F]``, ``y [N]`` (class ids) or ``[N, K]`` (multi-label).

    Args:
        l2: weight of the L2 penalty on ``W`` (the bias is not penalised).
        max_iter: cap on L-BFGS iterations (each one or more full-batch passes); the solver stops
            before it once the largest gradient entry is below ``tol``.
    """
    x = x.float()
    probe = LinearProbe(*standardisation(x), num_classes)
    nn.init.zeros_(probe.fc.weight)
    nn.init.zeros_(probe.fc.bias)
    z = (x - probe.mean) / probe.std  # standardised once; the solver only sees the linear layer
    opt = torch.optim.LBFGS(
        probe.fc.parameters(),
        lr=1.0,
        max_iter=max_iter,
        history_size=100,
        tolerance_grad=tol,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = _penalised_loss(probe.fc(z), y, probe.fc.weight, l2, multilabel)
        loss.backward()
        return loss

    opt.step(closure)
    return probe.eval()
