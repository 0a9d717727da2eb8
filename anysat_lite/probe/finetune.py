"""Full fine-tuning: encoder + linear head on the tile (cls) output, trained end to end."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..data.datasets import collate
from ..data.normalization import NormStats
from .features import select_sensors

__all__ = ["finetune"]


def finetune(
    encoder: nn.Module,
    train: Dataset,
    stats: NormStats,
    patch_size: int,
    sensors: Sequence[str],
    num_classes: int,
    epochs: int = 5,
    lr: float = 1e-4,
    batch_size: int = 16,
    seed: int = 0,
    device="cpu",
) -> nn.Module:
    """Return a fine-tuned copy ``f`` with ``f(x) -> logits [B, K]`` (the input encoder is untouched)."""
    torch.manual_seed(seed)
    model = _Classifier(copy.deepcopy(encoder), num_classes, patch_size).to(device)
    opt = torch.optim.AdamW(
        [{"params": model.encoder.parameters(), "lr": lr}, {"params": model.head.parameters(), "lr": lr * 10}],
        weight_decay=0.01,
    )
    g = torch.Generator().manual_seed(seed)
    loader = DataLoader(train, batch_size=batch_size, shuffle=True, collate_fn=collate, generator=g)
    model.train()
    for _ in range(epochs):
        for batch in loader:
            x = {k: v.to(device) for k, v in stats.apply(select_sensors(batch, sensors)).items()}
            loss = F.cross_entropy(model(x), batch["label"].to(device).long())
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


class _Classifier(nn.Module):
    def __init__(self, encoder: nn.Module, num_classes: int, patch_size: int):
        super().__init__()
        self.encoder, self.patch_size = encoder, patch_size
        self.head = nn.Sequential(nn.LayerNorm(encoder.embed_dim), nn.Linear(encoder.embed_dim, num_classes))

    def forward(self, x):
        return self.head(self.encoder(x, self.patch_size, output="tile"))
