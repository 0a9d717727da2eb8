"""Evaluation metrics, written out so that each one can be checked by hand.

* :func:`overall_accuracy` — share of correct predictions.
* :func:`f1_scores` — per-class F1 from the confusion matrix, averaged ``macro`` (plain mean
  over classes present in targets or predictions) and ``weighted`` (by class support).
* :func:`multilabel_f1` — F1 over (sample, class) decisions: ``micro`` and ``macro``.
* :func:`mean_iou` — per-class IoU ``TP / (TP + FP + FN)`` over pixels, mean over classes present.
* :func:`bootstrap_interval` — a 95 % percentile-bootstrap interval of any of them over test items;
  :func:`per_item_confusion` and :func:`multilabel_item_counts` let it resample a metric of counts
  (OA, F1, mIoU: :func:`accuracy_from_confusion`, :func:`f1_from_confusion`,
  :func:`micro_f1_from_counts`, :func:`miou_from_confusion`) by summing per-item counts instead of
  recomputing the metric from the predictions of every resample.

The metrics of the official AnySat evaluation (``src/models/metrics/metrics.py`` of the official
repository), computed from counts so that a test split is scored batch by batch:

* :func:`multilabel_decision` — the official multi-label decision: ``sigmoid(logit) > 0.5``.
* :func:`multilabel_counts`, :func:`multiclass_counts` — per-class ``TP``, ``FP``, ``FN`` ``[3, K]``.
* :func:`f1_from_counts` — per-class F1 and its ``macro`` (mean over *all* ``K`` classes, 0 for a class
  never present nor predicted, as the official ``sum(f1) / len(f1)``), ``weighted`` (by support
  ``TP + FN``) and ``micro`` averages.
* :func:`miou_from_confusion` — the official IoU: the rows and columns of ``ignore_classes`` zeroed
  in the confusion matrix, then the mean over the classes whose IoU is defined.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "confusion_matrix",
    "overall_accuracy",
    "f1_scores",
    "multilabel_f1",
    "mean_iou",
    "per_item_confusion",
    "accuracy_from_confusion",
    "f1_from_confusion",
    "multilabel_item_counts",
    "micro_f1_from_counts",
    "bootstrap_interval",
    "multilabel_decision",
    "multilabel_counts",
    "multiclass_counts",
    "f1_from_counts",
    "miou_from_confusion",
]


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = None) -> Tensor:
    """``C[i, j]`` = number of items of true class ``i`` predicted as ``j``."""
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    return torch.bincount(target * num_classes + pred, minlength=num_classes**2).view(num_classes, num_classes)


def overall_accuracy(pred: Tensor, target: Tensor) -> float:
    return (pred.reshape(-1) == target.reshape(-1)).float().mean().item()


def accuracy_from_confusion(cm: Tensor) -> float:
    """Overall accuracy of a confusion matrix: its diagonal over its total."""
    return (cm.diag().sum() / cm.sum().clamp_min(1)).item()


def f1_scores(pred: Tensor, target: Tensor, num_classes: int) -> dict[str, float]:
    return f1_from_confusion(confusion_matrix(pred, target, num_classes))


def f1_from_confusion(cm: Tensor) -> dict[str, float]:
    """Per-class F1 of a confusion matrix ``[K, K]``, averaged ``macro`` and ``weighted`` (see :func:`f1_scores`).

    ``macro`` is the mean over the classes present in the targets or the predictions (a class the
    scored split never shows leaves it unchanged); the official protocol's :func:`f1_from_counts`
    averages all ``K`` classes, an absent one counting as 0.
    """
    cm = cm.double()
    tp = cm.diag()
    support = cm.sum(1)
    predicted = cm.sum(0)
    denom = support + predicted
    f1 = torch.where(denom > 0, 2 * tp / denom.clamp_min(1), torch.zeros_like(tp))
    present = denom > 0
    return {"macro": f1[present].mean().item(), "weighted": (f1 * support).sum().item() / max(support.sum().item(), 1)}


def multilabel_item_counts(pred: Tensor, target: Tensor) -> Tensor:
    """Per-item ``(TP, FP, FN)`` over the classes ``[N, 3]`` of ``[N, K]`` booleans (their sum gives the micro F1)."""
    p, t = pred.bool(), target.bool()
    return torch.stack([(p & t).sum(1), (p & ~t).sum(1), (~p & t).sum(1)], dim=1)


def micro_f1_from_counts(tp_fp_fn: Tensor) -> float:
    """Micro F1 ``2 TP / (2 TP + FP + FN)`` of summed ``(TP, FP, FN)``."""
    tp, fp, fn = tp_fp_fn.double().unbind(-1)
    return (2 * tp / (2 * tp + fp + fn).clamp_min(1)).item()


def multilabel_f1(pred: Tensor, target: Tensor) -> dict[str, float]:
    """``pred``, ``target``: ``[N, K]`` booleans."""
    p, t = pred.bool(), target.bool()
    tp = (p & t).sum(0).double()
    fp = (p & ~t).sum(0).double()
    fn = (~p & t).sum(0).double()
    micro = micro_f1_from_counts(torch.stack([tp.sum(), fp.sum(), fn.sum()]))
    denom = 2 * tp + fp + fn
    present = denom > 0
    macro = (2 * tp[present] / denom[present]).mean().item() if present.any() else 0.0
    return {"micro": micro, "macro": macro}


def per_item_confusion(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = None) -> Tensor:
    """One confusion matrix per item: ``[N, ...]`` maps -> ``[N, K, K]``, summing to :func:`confusion_matrix`."""
    n = pred.shape[0]
    pred, target = pred.reshape(n, -1).long(), target.reshape(n, -1).long()
    item = torch.arange(n).unsqueeze(1).expand_as(target)
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target, item = pred[keep], target[keep], item[keep]
    k2 = num_classes * num_classes
    flat = item * k2 + target * num_classes + pred
    return torch.bincount(flat.reshape(-1), minlength=n * k2).view(n, num_classes, num_classes)


def mean_iou(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = None) -> float:
    """Mean over the classes present in targets or predictions of ``TP / (TP + FP + FN)``."""
    return miou_from_confusion(confusion_matrix(pred, target, num_classes, ignore_index))["miou"]


def bootstrap_interval(
    metric,
    pred: Tensor,
    target: Tensor,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    counts: tuple[Tensor, object] | None = None,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of ``metric(pred, target)`` over the test items (axis 0).

    The test set is resampled with replacement ``n_boot`` times (the same resamples for every
    encoder when ``seed`` is the same, so intervals of different encoders are comparable); the
    interval holds the central ``level`` share of the resampled metric values.  It measures how
    much the number depends on *which* test tiles were drawn, not the variation between
    training runs.

    ``counts = (per_item, of_sum)`` gives the same interval faster for a metric that only depends
    on summed counts: ``per_item [N, ...]`` (e.g. :func:`per_item_confusion`) and ``of_sum``, the
    metric of their sum (e.g. the ``miou`` of :func:`miou_from_confusion`), applied to the sum of
    each resample's items (the same draws as without ``counts``).
    """
    g = torch.Generator().manual_seed(seed)
    n = pred.shape[0]
    draws = torch.randint(n, (n_boot, n), generator=g)
    if counts is None:
        values = torch.tensor([metric(pred[i], target[i]) for i in draws], dtype=torch.float64)
    else:
        per_item, of_sum = counts
        times = torch.zeros(n_boot, n, dtype=torch.float64).scatter_add_(
            1, draws, torch.ones(n_boot, n, dtype=torch.float64)
        )
        sums = (times @ per_item.reshape(n, -1).double()).view(n_boot, *per_item.shape[1:])  # each resample's sum
        values = torch.tensor([of_sum(s) for s in sums], dtype=torch.float64)
    tail = (1 - level) / 2
    return float(values.quantile(tail)), float(values.quantile(1 - tail))


# --- the official evaluation's metrics, from counts ---------------------------------------------------
def multilabel_decision(logits: Tensor) -> Tensor:
    """Official multi-label decision ``[N, K]`` logits -> bool: ``sigmoid(logit) > 0.5``, i.e. ``logit > 0``.

    The official metric (torchmetrics ``F1Score(task="multilabel")``, threshold 0.5) applies the sigmoid
    only when some value of the batch lies outside ``[0, 1]``; a batch whose logits all lie inside it is
    thresholded at 0.5 as it is.  That rule is kept here, so that scores match batch for batch.
    """
    inside = bool(((logits >= 0) & (logits <= 1)).all())
    return logits > 0.5 if inside else logits > 0


def multilabel_counts(pred: Tensor, target: Tensor) -> Tensor:
    """``pred``, ``target`` ``[N, K]`` (bool or 0/1) -> ``[3, K]`` int64: per-class TP, FP, FN."""
    p, t = pred.bool(), target.bool()
    return torch.stack([(p & t).sum(0), (p & ~t).sum(0), (~p & t).sum(0)]).long()


def multiclass_counts(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """Class ids ``pred``, ``target`` ``[N]`` -> ``[3, K]`` int64: per-class TP, FP, FN (one-vs-rest)."""
    cm = confusion_matrix(pred, target, num_classes)
    tp = cm.diag()
    return torch.stack([tp, cm.sum(0) - tp, cm.sum(1) - tp]).long()


def f1_from_counts(counts: Tensor) -> dict:
    """Per-class F1 ``2 TP / (2 TP + FP + FN)`` from ``counts [3, K]`` (TP, FP, FN) and its averages.

    Returns ``{"per_class": [K], "macro", "weighted", "micro"}``: ``macro`` is the mean over all ``K``
    classes, a class with no TP, FP nor FN counting as 0 (the official ``sum(f1) / len(f1)`` of
    torchmetrics' per-class scores); ``weighted`` weighs each class by its support ``TP + FN`` (the
    official ``F1_Score_weighted``); ``micro`` pools the counts of all classes.
    """
    tp, fp, fn = counts.double()
    denom = 2 * tp + fp + fn
    f1 = torch.where(denom > 0, 2 * tp / denom.clamp_min(1), torch.zeros_like(tp))
    support = tp + fn
    pooled = 2 * tp.sum() + fp.sum() + fn.sum()
    return {
        "per_class": f1.tolist(),
        "macro": f1.mean().item(),
        "weighted": (f1 * support).sum().item() / support.sum().item() if support.sum() > 0 else 0.0,
        "micro": (2 * tp.sum() / pooled).item() if pooled > 0 else 0.0,
    }


def miou_from_confusion(cm: Tensor, ignore_classes=()) -> dict:
    """Mean IoU of a confusion matrix ``cm [K, K]`` (``cm[i, j]``: pixels of true class ``i`` predicted ``j``).

    As the official ``IoU`` metric: the rows and columns of ``ignore_classes`` are zeroed (pixels of
    that true class, and pixels predicted as it, leave the count), ``IoU_k = TP / (TP + FP + FN)``,
    and the mean runs over the classes whose IoU is defined (``TP + FP + FN > 0``).  Returns
    ``{"miou", "per_class": [K] (NaN where undefined), "accuracy"}``.
    """
    cm = cm.double().clone()
    for k in ignore_classes:
        cm[k, :] = 0
        cm[:, k] = 0
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))
    defined = ~iou.isnan()
    total = cm.sum()
    return {
        "miou": iou[defined].mean().item() if defined.any() else float("nan"),
        "per_class": iou.tolist(),
        "accuracy": (tp.sum() / total).item() if total > 0 else float("nan"),
    }
