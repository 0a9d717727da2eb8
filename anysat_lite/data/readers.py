"""Helpers every dataset reader shares: the item random generator, date subsets, argument checks, day-of-year.

A reader's random choices (crops, date subsets, temporal dropout) are a pure function of
``(seed, epoch, index)`` (:func:`item_rng`); pretraining sets the epoch from the training step
(see :mod:`anysat_lite.data.pipeline`), so a resumed run reads the same items.  The
normalisation helpers (``read_norm_files``, ``per_tile_norm_stats``) live in
:mod:`anysat_lite.data.normalization`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np

__all__ = ["SPLITS", "item_rng", "choose_dates", "check_sensors", "check_split", "doy"]

SPLITS = ("train", "val", "test")


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random generator of one item read: a pure function of ``(seed, epoch, index)``."""
    return np.random.default_rng([int(seed), int(epoch), int(index)])


def choose_dates(
    n: int, rng: np.random.Generator, max_dates: int | None = None, keep_fraction: float | None = None
) -> np.ndarray:
    """Indices of the dates kept out of ``n``, sorted (chronological order of the file).

    ``keep_fraction``: keep ``int(n * keep_fraction)`` random dates (at least one), the official
    TreeSatAI/FLAIR temporal dropout; ``max_dates`` then caps the count with a random subset (the
    official PASTIS cap).  The official code keeps the random order; the L-TAE pools the dates
    with attention and is invariant to their order, so sorting them changes nothing downstream.
    """
    idx = np.arange(n)
    if keep_fraction is not None and keep_fraction < 1:
        idx = np.sort(rng.permutation(idx)[: max(1, int(n * keep_fraction))])
    if max_dates is not None and len(idx) > max_dates:
        idx = np.sort(rng.choice(idx, size=max_dates, replace=False))
    return idx


def check_sensors(cls, sensors) -> tuple[str, ...]:
    """The requested sensors, checked against what the reader ``cls`` can return."""
    if sensors is None:
        return tuple(cls.sensors)
    sensors = (sensors,) if isinstance(sensors, str) else tuple(sensors)
    bad = [s for s in sensors if s not in cls.sensors]
    if bad or not sensors:
        raise ValueError(f"{cls.__name__}: sensors must be a non-empty subset of {cls.sensors}, got {sensors}")
    return sensors


def check_split(cls, split: str, splits: Sequence[str] = SPLITS) -> str:
    """``split`` if it is one of ``splits``, else a ``ValueError`` naming them."""
    if split not in splits:
        raise ValueError(f"{cls.__name__}: split must be one of {tuple(splits)}, got {split!r}")
    return split


def doy(date: dt.date) -> int:
    """Day-of-year, 1..366 (Python's ``tm_yday``, what the official readers feed the model)."""
    return date.timetuple().tm_yday
