"""Evaluation metrics, written out so that each one can be checked by hand.

* :func:`overall_accuracy` — share of correct predictions.
* :func:`f1_scores` — per-class F1 from the confusion matrix, averaged ``macro`` (plain mean
  over classes present in targets or predictions) and ``weighted`` (by class support).
* :func:`multilabel_f1` — F1 over (sample, class) decisions: ``micro`` and ``macro``.
* :func:`mean_iou` — per-class IoU ``TP / (TP + FP + FN)`` over pixels, mean over classes present.
* :func:`bootstrap_interval` — a 95 % percentile-bootstrap interval of any of them over test items.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["confusion_matrix", "overall_accuracy", "f1_scores", "multilabel_f1", "mean_iou", "bootstrap_interval"]


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = None) -> Tensor:
    """``C[i, j]`` = number of items of true class ``i`` predicted as ``j``."""
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    return torch.bincount(target * num_classes + pred, minlength=num_classes**2).view(num_classes, num_classes)


def overall_accuracy(pred: Tensor, target: Tensor) -> float:
    return (pred.reshape(-1) == target.reshape(-1)).float().mean().item()


def f1_scores(pred: Tensor, target: Tensor, num_classes: int) -> dict[str, float]:
    cm = confusion_matrix(pred, target, num_classes).double()
    tp = cm.diag()
    support = cm.sum(1)
    predicted = cm.sum(0)
    denom = support + predicted
    f1 = torch.where(denom > 0, 2 * tp / denom.clamp_min(1), torch.zeros_like(tp))
    present = denom > 0
    return {"macro": f1[present].mean().item(),
            "weighted": (f1 * support).sum().item() / max(support.sum().item(), 1)}


def multilabel_f1(pred: Tensor, target: Tensor) -> dict[str, float]:
    """``pred``, ``target``: ``[N, K]`` booleans."""
    p, t = pred.bool(), target.bool()
    tp = (p & t).sum(0).double()
    fp = (p & ~t).sum(0).double()
    fn = (~p & t).sum(0).double()
    micro = (2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum()).clamp_min(1)).item()
    denom = 2 * tp + fp + fn
    present = denom > 0
    macro = (2 * tp[present] / denom[present]).mean().item() if present.any() else 0.0
    return {"micro": micro, "macro": macro}


def mean_iou(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = None) -> float:
    cm = confusion_matrix(pred, target, num_classes, ignore_index).double()
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    present = union > 0
    return (tp[present] / union[present]).mean().item()


def bootstrap_interval(metric, pred: Tensor, target: Tensor, n_boot: int = 1000, level: float = 0.95,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of ``metric(pred, target)`` over the test items (axis 0).

    The test set is resampled with replacement ``n_boot`` times (the same resamples for every
    encoder when ``seed`` is the same, so intervals of different encoders are comparable); the
    interval holds the central ``level`` share of the resampled metric values.  It measures how
    much the number depends on *which* test tiles were drawn, not the variation between
    training runs.
    """
    g = torch.Generator().manual_seed(seed)
    n = pred.shape[0]
    values = torch.tensor([metric(pred[i], target[i]) for i in torch.randint(n, (n_boot, n), generator=g)],
                          dtype=torch.float64)
    tail = (1 - level) / 2
    return float(values.quantile(tail)), float(values.quantile(1 - tail))
