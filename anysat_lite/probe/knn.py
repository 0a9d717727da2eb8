"""k-nearest-neighbour classification on frozen features (cosine similarity, similarity-weighted votes)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["knn_predict"]


@torch.no_grad()
def knn_predict(
    train_x: Tensor, train_y: Tensor, test_x: Tensor, num_classes: int, k: int = 10, temperature: float = 0.07
) -> Tensor:
    """Each test item votes with its ``k`` most cosine-similar training items, weight ``exp(sim / T)``.

    Features are standardised with the training mean and std first (as the linear probe does), so
    that no dimension dominates the similarity by its unit alone: raw per-band statistics mix
    reflectances, 8-bit aerial values and radar power.  Returns predicted class ids ``[N_test]``.
    """
    mu = train_x.float().mean(0, keepdim=True)
    sd = train_x.float().std(0, correction=0, keepdim=True).clamp_min(1e-6)
    a = F.normalize((train_x.float() - mu) / sd, dim=1)
    b = F.normalize((test_x.float() - mu) / sd, dim=1)
    sim = b @ a.t()
    k = min(k, a.shape[0])
    top, idx = sim.topk(k, dim=1)
    votes = torch.zeros(b.shape[0], num_classes)
    votes.scatter_add_(1, train_y[idx].long(), (top / temperature).exp())
    return votes.argmax(1)
