"""Learning-rate and weight-decay schedules (I-JEPA style): linear warm-up then cosine."""

from __future__ import annotations

import math

__all__ = ["lr_at", "cosine"]


def cosine(step: int, total: int, start: float, end: float) -> float:
    """Cosine interpolation from ``start`` (step 0) to ``end`` (step ``total``)."""
    t = min(max(step / max(total, 1), 0.0), 1.0)
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * t))


def lr_at(step: int, total: int, lr: float, min_lr: float, warmup: int) -> float:
    """Linear warm-up from ``min_lr`` to ``lr`` over ``warmup`` steps, then cosine down to ``min_lr``."""
    if warmup > 0 and step < warmup:
        return min_lr + (lr - min_lr) * step / warmup
    return cosine(step - warmup, max(total - warmup, 1), lr, min_lr)
