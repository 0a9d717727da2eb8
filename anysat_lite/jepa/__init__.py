"""JEPA pretraining: masks -> context/target encoders -> predictor -> latent losses."""

from .ema import ema_update, make_target, momentum_at
from .losses import latent_loss, mil_nce, mil_nce_reference
from .masks import (
    Masks,
    MultiBlockMaskSampler,
    RandomMaskSampler,
    SingleBlockMaskSampler,
    build_mask_sampler,
    context_overlaps,
    context_statistics,
    drop_dates,
    masks_to_grid,
    modality_mask,
    shift_bands,
)
from .model import JEPA, normalise_targets
from .monitors import collapse_monitors, collapse_warnings, sensor_alignment
from .predictor import Predictor

__all__ = [
    "JEPA",
    "Masks",
    "MultiBlockMaskSampler",
    "RandomMaskSampler",
    "SingleBlockMaskSampler",
    "Predictor",
    "build_mask_sampler",
    "collapse_monitors",
    "collapse_warnings",
    "context_overlaps",
    "context_statistics",
    "drop_dates",
    "ema_update",
    "latent_loss",
    "make_target",
    "masks_to_grid",
    "mil_nce",
    "mil_nce_reference",
    "normalise_targets",
    "modality_mask",
    "momentum_at",
    "sensor_alignment",
    "shift_bands",
]
