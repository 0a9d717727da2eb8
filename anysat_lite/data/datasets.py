"""Torch datasets over the embedded world and TreeSatAI-TS, collation, and multi-dataset batch plans.

Items are dicts in the sample contract *without* the batch axis, plus targets::

    {"s2": [T, C, H, W], "s2_dates": [T], "aerial": [C, H, W], ...,
     "label": int, "multilabel": [K] bool, "segmentation": [h, w] (optional)}

:func:`collate` stacks them; :class:`BatchPlanner` decides, for every training step, which
dataset, patch size and tiles form the (global) batch, as a pure function of
``(seed, step)`` so that training resumes and shards across processes deterministically.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..sensors import SENSORS
from .normalization import NormStats
from .synthetic import CLASSES as WORLD_CLASSES, WorldSpec, load_world
from .treesatai import CLASSES as TREESAT_CLASSES, TreeSatAITS

__all__ = ["ArrayTileDataset", "TreeSatDataset", "DatasetBundle", "collate", "build_dataset", "BatchPlanner",
           "BatchPlan"]

TARGET_KEYS = ("label", "multilabel", "segmentation")


class ArrayTileDataset(Dataset):
    """Tiles stored as arrays ``{key: [N, ...]}`` (e.g. a synthetic world), restricted to ``indices``.

    Only ``sensors`` (and their dates/masks) are returned; uint8 imagery becomes float32.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], indices: Sequence[int], sensors: Sequence[str]):
        self.arrays, self.indices, self.sensors = arrays, np.asarray(indices), list(sensors)
        missing = [s for s in self.sensors if s not in arrays]
        if missing:
            raise KeyError(f"dataset has no {missing}; it has {[k for k in arrays if k in SENSORS]}")

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        j = int(self.indices[i])
        item: dict = {}
        for s in self.sensors:
            item[s] = torch.from_numpy(np.array(self.arrays[s][j], dtype=np.float32))
            for suffix in ("dates", "mask"):
                key = f"{s}_{suffix}"
                if key in self.arrays:
                    item[key] = torch.from_numpy(np.array(self.arrays[key][j]))
        for key in TARGET_KEYS:
            if key in self.arrays:
                item[key] = torch.from_numpy(np.array(self.arrays[key][j]))
        return item


class TreeSatDataset(Dataset):
    """TreeSatAI-TS tiles as items; each series is evenly sub-sampled to ``n_dates`` (so batches stack)."""

    def __init__(self, reader: TreeSatAITS, names: Sequence[str], sensors: Sequence[str], n_dates: int = 12):
        self.reader, self.names, self.sensors, self.n_dates = reader, list(names), list(sensors), n_dates

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> dict:
        name = self.names[i]
        sample = self.reader.sample(name, self.sensors, max_dates=self.n_dates)
        item = {k: v[0] for k, v in sample.items()}
        for s in self.sensors:
            if SENSORS[s].is_series and item[s].shape[0] < self.n_dates:  # repeat dates to a fixed length
                idx = torch.linspace(0, item[s].shape[0] - 1, self.n_dates).round().long()
                item[s], item[f"{s}_dates"] = item[s][idx], item[f"{s}_dates"][idx]
        item["label"] = torch.tensor(self.reader.label(name))
        item["multilabel"] = torch.from_numpy(self.reader.multilabel(name))
        return item


def collate(items: Sequence[Mapping]) -> dict:
    """Stack item dicts into a batch dict (every item must have the same keys and shapes)."""
    keys = items[0].keys()
    for it in items[1:]:
        if it.keys() != keys:
            raise ValueError(f"cannot batch items with different keys: {sorted(keys)} vs {sorted(it.keys())}")
    return {k: torch.stack([torch.as_tensor(it[k]) for it in items]) for k in keys}


@dataclass
class DatasetBundle:
    """A dataset ready for pretraining/probing: splits, sensors, patch sizes, class names, norm stats."""

    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    sensors: list[str]
    patch_sizes: list[int]
    classes: tuple[str, ...]
    stats: NormStats
    weight: float = 1.0
    tile_m: float = 60.0
    extra: dict = field(default_factory=dict)


def _stats_from(ds: Dataset, limit: int = 256) -> NormStats:
    idx = np.linspace(0, len(ds) - 1, min(limit, len(ds))).round().astype(int)
    return NormStats.from_samples(ds[int(i)] for i in np.unique(idx))


def build_dataset(spec, data_cfg) -> DatasetBundle:
    """Instantiate one :class:`~anysat_lite.config.DatasetSpec` (``synthetic`` or ``treesatai``)."""
    if spec.name == "synthetic" or spec.name.startswith("synthetic:"):
        sensors = tuple(spec.sensors or ("aerial", "s2", "s1-asc"))
        wspec = WorldSpec(n_tiles=data_cfg.n_tiles, tile_m=data_cfg.tile_m, sensors=sensors,
                          n_dates=data_cfg.n_dates, seed=data_cfg.seed)
        arrays = load_world(wspec, data_cfg.cache_dir)
        split = np.asarray(arrays["split"])
        parts = [ArrayTileDataset(arrays, np.flatnonzero(split == k), sensors) for k in range(3)]
        return DatasetBundle(spec.name, *parts, sensors=list(sensors), patch_sizes=list(spec.patch_sizes),
                             classes=WORLD_CLASSES, stats=_stats_from(parts[0]), weight=spec.weight,
                             tile_m=data_cfg.tile_m, extra={"world_spec": wspec})
    if spec.name == "treesatai":
        if not spec.path:
            raise ValueError("dataset 'treesatai' needs a path (data.datasets[i].path)")
        reader = TreeSatAITS(spec.path)
        sensors = list(spec.sensors or ("aerial", "s2", "s1-asc"))
        names = reader.names
        n = len(names)
        cut1, cut2 = max(1, int(0.6 * n)), max(1, int(0.8 * n))
        parts = [TreeSatDataset(reader, names[a:b] or names, sensors, data_cfg.n_dates)
                 for a, b in ((0, cut1), (cut1, cut2), (cut2, n))]
        return DatasetBundle("treesatai", *parts, sensors=sensors, patch_sizes=list(spec.patch_sizes),
                             classes=TREESAT_CLASSES, stats=_stats_from(parts[0]), weight=spec.weight, tile_m=60.0)
    raise KeyError(f"unknown dataset {spec.name!r}; use 'synthetic' or 'treesatai'")


@dataclass(frozen=True)
class BatchPlan:
    step: int
    dataset: int          # index into the bundles
    patch_size: int       # metres
    indices: tuple[int, ...]  # global batch (train split indices)

    def shard(self, rank: int, world: int) -> tuple[int, ...]:
        """This process's contiguous share of the global batch."""
        n = len(self.indices)
        if n % world:
            raise ValueError(f"global batch {n} is not divisible by {world} processes")
        k = n // world
        return self.indices[rank * k:(rank + 1) * k]


class BatchPlanner:
    """Step -> :class:`BatchPlan`: dataset drawn by weight, one patch size, tiles without replacement.

    As in GeoPlex pretraining, every batch comes from a single dataset and a single patch
    size; the plan depends only on ``(seed, step)``.
    """

    def __init__(self, bundles: Sequence[DatasetBundle], batch_size: int, seed: int = 0):
        self.bundles, self.batch_size, self.seed = list(bundles), batch_size, seed
        w = np.array([b.weight for b in self.bundles], dtype=np.float64)
        if (w <= 0).any():
            raise ValueError("dataset weights must be > 0")
        self.p = w / w.sum()

    def generator(self, step: int, stream: int = 0) -> torch.Generator:
        """A torch generator for ``(seed, step, stream)``: stream 0 data, 1 masks, 2 dates, 3 modalities."""
        state = np.random.SeedSequence([self.seed, step, stream]).generate_state(2, dtype=np.uint32)
        return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))

    def plan(self, step: int) -> BatchPlan:
        rng = np.random.default_rng([self.seed, step])
        d = int(rng.choice(len(self.bundles), p=self.p))
        b = self.bundles[d]
        P = int(rng.choice(b.patch_sizes))
        n = len(b.train)
        idx = rng.choice(n, size=self.batch_size, replace=self.batch_size > n)
        return BatchPlan(step, d, P, tuple(int(i) for i in idx))
