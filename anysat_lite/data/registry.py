"""Datasets by name: the built-in readers, user-registered classes, and where each lives under a data root.

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
(:func:`~anysat_lite.data.readers.item_rng`); ``set_epoch`` draws new ones.

A config may give one ``data.root`` instead of a path per dataset: a dataset is then looked for
in ``<root>/<folder>``, the folder of the official configs (``PASTIS-R``, ``TreeSat``...) or the
registry name with underscores (``pastis_hd``, as the test fixtures are laid out); see
:func:`dataset_root`.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from ..errors import MissingFileError

__all__ = [
    "DATASETS",
    "ALIASES",
    "FOLDERS",
    "register_dataset",
    "get_dataset",
    "dataset_names",
    "canonical_name",
    "dataset_root",
]

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

ALIASES: dict[str, str] = {"treesatai": "treesatai-ts"}
"""Older names still accepted in configs."""

FOLDERS: dict[str, str] = {
    "treesatai-ts": "TreeSat",
    "pastis-hd": "PASTIS-R",
    "flair": "FLAIR",
    "planted": "Planted",
    "s2naip-urban": "S2NAIP-urban",
}
"""Folder of each dataset under the official ``data_dir`` (``configs/dataset/GeoPlex.yaml``)."""


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


def canonical_name(name: str) -> str:
    """The registry name of ``name`` (``"treesatai"`` -> ``"treesatai-ts"``; other names unchanged)."""
    return ALIASES.get(name, name)


def get_dataset(name: str) -> type:
    """The reader class registered under ``name`` (imported on first use)."""
    name = canonical_name(name)
    if name not in DATASETS:
        raise KeyError(
            f"unknown dataset {name!r}; registered: {', '.join(DATASETS)} "
            "(add yours with anysat_lite.data.registry.register_dataset)"
        )
    entry = DATASETS[name]
    if isinstance(entry, str):
        module, attr = entry.split(":")
        try:
            entry = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ImportError(
                f"dataset {name!r}: cannot import {DATASETS[name]!r} ({e}); "
                "check the module is installed and defines that class"
            ) from e
        DATASETS[name] = entry
    return entry


def dataset_names() -> list[str]:
    return list(DATASETS)


def dataset_root(name: str, root: str | Path) -> Path:
    """The folder of dataset ``name`` under a data root: ``<root>/<official folder>`` (e.g. ``PASTIS-R``),
    else ``<root>/<name with '_' for '-'>`` (e.g. ``pastis_hd``), else ``<root>/<name>``."""
    name, root = canonical_name(name), Path(root)
    candidates = [FOLDERS[name]] if name in FOLDERS else []
    candidates += [name.replace("-", "_"), name]
    for c in candidates:
        if (root / c).exists():
            return root / c
    tried = ", ".join(dict.fromkeys(candidates))
    raise MissingFileError(
        f"dataset {name!r}: none of {tried} found in data.root={root}; put the dataset there "
        "or give its folder as data.datasets[i].path"
    )
