"""Helpers every dataset reader shares: the item random generator, date subsets, argument checks, day-of-year,
and the checks of a dataset's folder and of the text and JSON files it holds.

A reader's random choices (crops, date subsets, temporal dropout) are a pure function of
``(seed, epoch, index)`` (:func:`item_rng`); pretraining sets the epoch from the training step
(see :mod:`anysat_lite.data.pipeline`), so a resumed run reads the same items.  The
normalisation helpers (``read_norm_files``, ``per_tile_norm_stats``) live in
:mod:`anysat_lite.data.normalization`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError, not_utf8

__all__ = [
    "SPLITS",
    "item_rng",
    "choose_dates",
    "check_sensors",
    "check_split",
    "check_root",
    "check_option",
    "check_temporal_dropout",
    "read_text",
    "read_json",
    "doy",
]

_RESTORE = "re-download or restore the file"
_JSON = {  # the JSON name of a parsed value's type
    dict: "object",
    list: "list",
    str: "string",
    bool: "true/false",
    int: "number",
    float: "number",
    type(None): "null",
}

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
    """The requested sensors, checked against what the reader ``cls`` can return (``None``: all of them)."""
    if sensors is None:
        return tuple(cls.sensors)
    sensors = (sensors,) if isinstance(sensors, str) else tuple(sensors)
    bad = [s for s in sensors if s not in cls.sensors]
    if bad or not sensors:
        raise UserError(
            f"{cls.__name__}: sensors={list(sensors)} (config: data.datasets[i].sensors): expected some of this "
            f"dataset's sensors ({', '.join(cls.sensors)}); choose among them, or leave it out for all"
        )
    return sensors


def check_option(cls, key: str, value, ok: Callable[[Any], bool], expected: str) -> None:
    """Refuse the option ``key`` = ``value`` of the reader ``cls`` unless ``ok(value)`` (a value it cannot even
    compare, e.g. a text for a number, is refused too): one line naming the option, as a Python argument and
    as the config's ``options.KEY``, what was ``expected`` and what was received."""
    try:
        good = bool(ok(value))
    except (TypeError, ValueError):
        good = False
    if not good:
        raise UserError(
            f"{cls.__name__}: {key}={value!r} (config: data.datasets options.{key}): expected {expected}; "
            "correct it, or leave it out for the default"
        )


def check_temporal_dropout(cls, temporal_dropout: float) -> float:
    """``temporal_dropout`` of the reader ``cls`` (the share of dates dropped on the train split), in [0, 1)."""
    check_option(cls, "temporal_dropout", temporal_dropout, lambda v: 0 <= v < 1, "a share in [0, 1)")
    return temporal_dropout


def check_split(cls, split: str, splits: Sequence[str] = SPLITS) -> str:
    """``split`` if it is one of ``splits``, else a one-line :class:`~anysat_lite.errors.UserError` naming them."""
    if split not in splits:
        raise UserError(f"{cls.__name__}: split={split!r}: expected one of {', '.join(splits)}; choose one of them")
    return split


def check_root(dataset: str, root: str | Path) -> Path:
    """``root`` as a ``Path``, refused when it names a file: a reader of ``dataset`` (e.g. ``"PASTIS-HD"``)
    reads the dataset's folder.  A missing folder is left to the reader, which names the file it looks for."""
    root = Path(root)
    if root.is_file():
        raise UserError(
            f"{dataset}: dataset path {root}: expected the dataset's folder, got a file; "
            f"give the folder that holds it ({root.parent})"
        )
    return root


def read_text(path: str | Path, what: str, fix: str = _RESTORE) -> str:
    """The text of the dataset file ``path`` (UTF-8), holding ``what`` (e.g. ``"the list of training tiles"``);
    a file that is not UTF-8 text is a :class:`~anysat_lite.errors.UserError` naming the file, ending in ``fix``."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(not_utf8(str(path), e, f"expected {what}; {fix}")) from None


def read_json(path: str | Path, what: str, kind: type = dict, fix: str = _RESTORE):
    """The JSON document of the dataset file ``path``, holding ``what`` (e.g. ``'{"train": [domain, ...]}'``).

    A file that is empty, not UTF-8 or not valid JSON, or whose document is not a ``kind`` (an object by
    default), is a :class:`~anysat_lite.errors.UserError` naming the file, the problem, ``what`` and ``fix``.
    """
    text = read_text(path, what, fix)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        reason = "the file is empty" if not text.strip() else f"{e.msg} at line {e.lineno}, column {e.colno}"
        raise UserError(f"{path}: not valid JSON ({reason}); expected {what}; {fix}") from None
    if not isinstance(doc, kind):
        raise UserError(f"{path}: expected {what} (a JSON {_JSON[kind]}), got a JSON {_JSON[type(doc)]}; {fix}")
    return doc


def doy(date: dt.date) -> int:
    """Day-of-year, 1..366 (Python's ``tm_yday``, what the official readers feed the model)."""
    return date.timetuple().tm_yday
