"""Downstream evaluation: frozen-feature probes (linear, kNN, dense), fine-tuning, metrics, reports."""

from .features import encode_dataset, raw_pixel_features
from .knn import knn_predict
from .linear import train_linear
from .metrics import f1_scores, mean_iou, multilabel_f1, overall_accuracy
from .run import format_table, run_probe

__all__ = [
    "encode_dataset",
    "raw_pixel_features",
    "knn_predict",
    "train_linear",
    "f1_scores",
    "mean_iou",
    "multilabel_f1",
    "overall_accuracy",
    "run_probe",
    "format_table",
]
