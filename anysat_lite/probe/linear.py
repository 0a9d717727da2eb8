"""Linear probe on frozen features (single- or multi-label), trained full-batch with AdamW."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LinearProbe", "train_linear"]


class LinearProbe(nn.Module):
    """Standardise features with training statistics, then one linear layer."""

    def __init__(self, mean: Tensor, std: Tensor, num_classes: int):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.fc = nn.Linear(mean.numel(), num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc((x - self.mean) / self.std)


def train_linear(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    multilabel: bool = False,
    epochs: int = 100,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> LinearProbe:
    """Fit a :class:`LinearProbe` on ``x [N, F]``, ``y [N]`` (class ids) or ``[N, K]`` (multi-label)."""
    torch.manual_seed(seed)
    x = x.float()
    probe = LinearProbe(x.mean(0), x.std(0, correction=0).clamp_min(1e-6), num_classes)
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        logits = probe(x)
        loss = (
            F.binary_cross_entropy_with_logits(logits, y.float()) if multilabel else F.cross_entropy(logits, y.long())
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    return probe.eval()
