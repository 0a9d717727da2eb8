"""Dense (semantic segmentation) probe: a per-pixel linear layer on frozen ``output="dense"`` features.

Features ``[N, Hs, Ws, F]`` are classified per cell; logits are bilinearly upsampled to the
label grid ``[N, H, W]`` for the loss and the evaluation (mIoU at label resolution).  Pixels
labelled ``VOID`` (-1, the datasets' contract: PASTIS-HD's void, FLAIR's "no data") are left out
of the loss and of the scores.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .linear import LinearProbe, standardisation

__all__ = ["train_segmentation_probe", "predict_segmentation", "VOID"]

VOID = -1  # the label of pixels without a class in ``segmentation [H, W]`` targets


def _upsampled(cell_logits: Tensor, size) -> Tensor:
    """Per-cell logits ``[N, Hs, Ws, K]`` -> channel-first ``[N, K, H, W]`` on the label grid ``size``."""
    logits = cell_logits.permute(0, 3, 1, 2)
    if logits.shape[-2:] != tuple(size):
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    return logits


def _logits(probe: LinearProbe, feats: Tensor, size) -> Tensor:
    """Per-cell logits upsampled to ``size`` -> ``[N, K, H, W]``."""
    return _upsampled(probe(feats.float()), size)


def _loss(fc: torch.nn.Linear, standardized: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy of the per-cell logits of standardised features ``[n, Hs, Ws, F]`` against ``[n, H, W]``.

    Where the feature grid is the label grid the logits stay ``[n Hs Ws, K]`` rows (no upsampling
    and no channel-first copy; the same loss as :func:`_logits` then ``cross_entropy``).
    """
    logits = fc(standardized)  # [n, Hs, Ws, K]
    if logits.shape[1:3] == labels.shape[1:]:
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1).long(), ignore_index=VOID)
    return F.cross_entropy(_upsampled(logits, labels.shape[1:]), labels.long(), ignore_index=VOID)


def train_segmentation_probe(
    feats: Tensor,
    labels: Tensor,
    num_classes: int,
    epochs: int = 60,
    lr: float = 1e-2,
    batch_size: int = 64,
    seed: int = 0,
) -> LinearProbe:
    torch.manual_seed(seed)
    probe = LinearProbe(*standardisation(feats), num_classes)
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=1e-4)
    standardized = (feats.float() - probe.mean) / probe.std  # once, not at every step: the same values
    n = feats.shape[0]
    for _ in range(epochs):
        for i in torch.randperm(n).split(batch_size):
            loss = _loss(probe.fc, standardized[i], labels[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return probe.eval()


@torch.no_grad()
def predict_segmentation(probe: LinearProbe, feats: Tensor, size) -> Tensor:
    return _logits(probe, feats, size).argmax(1)
