"""Datasets by name, and the helpers every dataset reader shares.

A config names a dataset and its root (``{name: pastis-hd, path: /data/PASTIS-R}``);
:func:`get_dataset` turns the name into the reader class.  The built-in readers are listed
as import strings (``"module:Class"``) and imported only when first asked for, so importing
this module stays cheap and a missing optional dependency of one reader does not break the
others.  Register your own class without editing the package::

    from anysat_lite.data.registry import register_dataset
    register_dataset("my-tiles", MyTiles)            # a class, or "my_package.tiles:MyTiles"

Every reader follows one interface (a :class:`torch.utils.data.Dataset`)::

    class XDataset(Dataset):
        name: str                  # registry key
        sensors: tuple[str, ...]   # sensors it can return (the instance attribute: those selected)
        classes: tuple[str, ...]   # class names of its labels
        tile_m: float              # side of a tile in metres, as read (after the official crop)
        tasks: tuple[str, ...]     # which of "label", "multilabel", "segmentation" items carry
        def __init__(self, root, split="train", sensors=None, max_dates=None, seed=0, **options): ...
        def __getitem__(self, i) -> dict: ...

Items have no batch axis and no strings (``dataset.names[i]`` is the tile id):
images ``[C, H, W]`` and series ``[T, C, H, W]`` float32 (``T`` may differ between items),
``<sensor>_dates [T]`` int64 (the values the released AnySat weights received for that
dataset), ``<sensor>_mask [T]`` bool (optional, True = valid date), and targets: ``label``
int64 scalar, ``multilabel [K]`` float32, ``segmentation [H, W]`` int64 with void = -1.
Random choices (crops, date subsets) are a pure function of ``(seed, epoch, index)``
(:func:`item_rng`); ``set_epoch`` draws new ones.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from .normalization import NormStats

__all__ = ["DATASETS", "register_dataset", "get_dataset", "dataset_names", "item_rng", "choose_dates",
           "check_sensors", "check_split", "read_norm_files", "per_tile_norm_stats"]

SPLITS = ("train", "val", "test")

# The readers of this package, imported on first use.
_BUILTIN: dict[str, str] = {
    "treesatai-ts": "anysat_lite.data.treesatai:TreeSatAITSDataset",
    "pastis-hd": "anysat_lite.data.pastis:PastisHDDataset",
    "flair": "anysat_lite.data.flair:FLAIRDataset",
    "planted": "anysat_lite.data.planted:PlantedDataset",
    "s2naip-urban": "anysat_lite.data.s2naip:S2NAIPUrbanDataset",
    "rasters": "anysat_lite.data.rasters:RastersDataset",
}

DATASETS: dict[str, type | str] = dict(_BUILTIN)
"""Registry: name -> reader class, or its ``"module:Class"`` import string until first use."""


def register_dataset(name: str, cls: type | str, *, overwrite: bool = False) -> None:
    """Register a reader class (or a ``"module:Class"`` import string) under ``name``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"dataset name must be a non-empty string, got {name!r}")
    if isinstance(cls, str):
        if cls.count(":") != 1:
            raise ValueError(f"dataset {name!r}: import string must look like 'package.module:Class', got {cls!r}")
    elif not callable(cls):
        raise TypeError(f"dataset {name!r}: expected a Dataset class or a 'module:Class' string, got {cls!r}")
    if name in DATASETS and not overwrite:
        raise ValueError(f"dataset {name!r} is already registered (pass overwrite=True to replace it)")
    DATASETS[name] = cls


def get_dataset(name: str) -> type:
    """The reader class registered under ``name`` (imported on first use)."""
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; registered: {', '.join(DATASETS)} "
                       "(add yours with anysat_lite.data.registry.register_dataset)")
    entry = DATASETS[name]
    if isinstance(entry, str):
        module, attr = entry.split(":")
        try:
            entry = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ImportError(f"dataset {name!r}: cannot import {DATASETS[name]!r} ({e}); "
                              "check the module is installed and defines that class") from e
        DATASETS[name] = entry
    return entry


def dataset_names() -> list[str]:
    return list(DATASETS)


# --- helpers shared by the readers ----------------------------------------------------------
def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random generator of one item read: a pure function of ``(seed, epoch, index)``."""
    return np.random.default_rng([int(seed), int(epoch), int(index)])


def choose_dates(n: int, rng: np.random.Generator, max_dates: int | None = None,
                 keep_fraction: float | None = None) -> np.ndarray:
    """Indices of the dates kept out of ``n``, sorted (chronological order of the file).

    ``keep_fraction``: keep ``int(n * keep_fraction)`` random dates (at least one), the official
    TreeSatAI/FLAIR temporal dropout; ``max_dates`` then caps the count with a random subset (the
    official PASTIS cap).  The official code keeps the random order; the L-TAE pools the dates
    with attention and is invariant to their order, so sorting them changes nothing downstream.
    """
    idx = np.arange(n)
    if keep_fraction is not None and keep_fraction < 1:
        idx = np.sort(rng.permutation(idx)[:max(1, int(n * keep_fraction))])
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
    if split not in splits:
        raise ValueError(f"{cls.__name__}: split must be one of {tuple(splits)}, got {split!r}")
    return split


def read_norm_files(root: str | Path, sensors: Sequence[str], folds: Sequence[int] | None = None) -> NormStats:
    """The official statistics ``NORM_<sensor>_patch.json`` under ``root``.

    A file holds ``{"mean": [C], "std": [C]}``, or one such entry per fold (``{"Fold_1": {...}, ...}``,
    PASTIS), of which the official reader averages those of the ``folds`` it reads.
    """
    out = {}
    for s in sensors:
        path = Path(root) / f"NORM_{s}_patch.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: official statistics of {s!r} not found; expected NORM_{s}_patch.json "
                                    f"in the dataset root, or compute them with per_tile_norm_stats(dataset)")
        d = json.loads(path.read_text())
        if "mean" not in d:
            if folds is None:
                raise ValueError(f"{path} holds per-fold statistics ({', '.join(d)}); pass the folds to average")
            missing = [f for f in folds if f"Fold_{f}" not in d]
            if missing:
                raise KeyError(f"{path}: no statistics for fold(s) {missing}; it has {', '.join(d)}")
            d = {k: np.mean([d[f"Fold_{f}"][k] for f in folds], axis=0).tolist() for k in ("mean", "std")}
        out[s] = d
    return NormStats.from_dict(out)


def per_tile_norm_stats(dataset, sensors: Sequence[str] | None = None, write_to: str | Path | None = None) -> NormStats:
    """Statistics computed the official way: per band, the mean over tiles of each tile's mean and of its
    standard deviation (unbiased, over dates and pixels).  Optionally written as ``NORM_<sensor>_patch.json``.

    The official code reads the items as its ``__getitem__`` returns them (crops and, on the train
    split, date subsets included); pass a dataset built with the same options to match.
    """
    sensors = list(dataset.sensors if sensors is None else sensors)
    means: dict[str, list[np.ndarray]] = {s: [] for s in sensors}
    stds: dict[str, list[np.ndarray]] = {s: [] for s in sensors}
    for i in range(len(dataset)):
        item = dataset[i]
        for s in sensors:
            x = item[s].double()
            x = x.transpose(0, 1).flatten(1) if x.dim() == 4 else x.flatten(1)  # [C, T*H*W] or [C, H*W]
            means[s].append(x.mean(dim=1).numpy())
            stds[s].append(x.std(dim=1).numpy())
    stats = {s: {"mean": np.mean(means[s], axis=0).tolist(), "std": np.mean(stds[s], axis=0).tolist()} for s in sensors}
    if write_to is not None:
        for s, v in stats.items():
            (Path(write_to) / f"NORM_{s}_patch.json").write_text(json.dumps(v, indent=4))
    return NormStats.from_dict(stats)
