"""Datasets of a config (the embedded world or a registered reader), collation, and multi-dataset batch plans.

Items are dicts in the sample contract *without* the batch axis, plus targets::

    {"s2": [T, C, H, W], "s2_dates": [T], "aerial": [C, H, W], ...,
     "label": int, "multilabel": [K], "segmentation": [h, w] (optional)}

:func:`build_dataset` turns one :class:`~anysat_lite.config.DatasetSpec` into a
:class:`DatasetBundle` (splits, sensors, patch sizes, normalisation statistics);
:func:`collate` stacks items, padding time series of different lengths (``<sensor>_mask``
flags the padded dates); :class:`BatchPlanner` decides, for every training step, which
dataset, patch size and tiles form the (global) batch, as a pure function of ``(seed, step)``
so that training resumes and shards across processes deterministically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import UserError, check_output_folder
from ..sensors import SENSORS
from .contract import KEY_SUFFIXES, split_key
from .normalization import NormStats, per_tile_norm_stats, read_norm_files
from .registry import canonical_name, dataset_root, get_dataset
from .synthetic import CLASSES as WORLD_CLASSES
from .synthetic import WorldSpec, load_world

__all__ = [
    "ArrayTileDataset",
    "DatasetBundle",
    "collate",
    "build_dataset",
    "BatchPlanner",
    "BatchPlan",
    "effective_batch_size",
]

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
            for suffix in KEY_SUFFIXES:
                key = f"{s}_{suffix}"
                if key in self.arrays:
                    item[key] = torch.from_numpy(np.array(self.arrays[key][j]))
        for key in TARGET_KEYS:
            if key in self.arrays:
                item[key] = torch.from_numpy(np.array(self.arrays[key][j]))
        return item


def _shape(t) -> str:
    return "[" + ", ".join(map(str, t.shape)) + "]"


def pad_series(batch: dict, lengths: Mapping[str, int]) -> dict:
    """Pad the series of a collated ``batch`` to ``lengths[sensor]`` dates: zeros for the images and the
    dates, ``False`` in ``<sensor>_mask`` (created, all ``True`` for the real dates, if absent)."""
    out = dict(batch)
    for s, T in lengths.items():
        x = batch[s]
        B, t = x.shape[:2]
        if t == T:
            continue
        extra = T - t
        out[s] = torch.cat([x, x.new_zeros(B, extra, *x.shape[2:])], dim=1)
        out[f"{s}_dates"] = torch.cat([batch[f"{s}_dates"], batch[f"{s}_dates"].new_zeros(B, extra)], dim=1)
        mask = batch.get(f"{s}_mask")
        mask = torch.ones(B, t, dtype=torch.bool) if mask is None else mask.bool()
        out[f"{s}_mask"] = torch.cat([mask, torch.zeros(B, extra, dtype=torch.bool)], dim=1)
    return out


def collate(items: Sequence[Mapping]) -> dict:
    """Stack item dicts into a batch dict.

    Every item must have the same keys.  Time series with different numbers of dates are padded
    at the end to the longest (zeros) and get ``<sensor>_mask [B, T]`` (``False`` on padded dates;
    the official PASTIS collate pads with zeros the same way, without a mask).  Series of equal
    length are stacked as they are.
    """
    if isinstance(items, Mapping) or not isinstance(items, Sequence) or not items:
        got = "one dict (an item or a batch)" if isinstance(items, Mapping) else repr(items)[:60]
        raise UserError(
            f"collate: expected a non-empty list of dataset items (dicts), got {got}; e.g. collate([ds[0], ds[1]]) "
            "(a batch, such as TreeSatAITS.sample's, needs no collate)"
        )
    keys = items[0].keys()
    for i, it in enumerate(items[1:], 1):
        if it.keys() != keys:
            only = sorted(set(keys) - set(it.keys())) or sorted(set(it.keys()) - set(keys))
            where = "item 0" if set(only) <= set(keys) else f"item {i}"
            raise UserError(
                f"collate: items 0 and {i} hold different keys ({only} only in {where}), expected the same keys "
                "in every item; batch items that hold the same sensors (one dataset, one data.datasets[i].sensors)"
            )
    series = [k for k in keys if k in SENSORS and SENSORS[k].is_series]
    lengths = {s: [int(it[s].shape[0]) for it in items] for s in series}
    ragged = {s: max(n) for s, n in lengths.items() if len(set(n)) > 1}
    out = {}
    for k in keys:
        name, suffix = split_key(k)
        values = [torch.as_tensor(it[k]) for it in items]
        if name in ragged:
            T = ragged[name]
            if suffix == "mask":
                values = [v.bool() for v in values]
            values = [torch.cat([v, v.new_zeros(T - v.shape[0], *v.shape[1:])]) for v in values]
        elif len({tuple(v.shape) for v in values}) > 1:
            shapes = sorted({_shape(v) for v in values})
            raise UserError(
                f"collate: {k!r} has shapes {', '.join(shapes[:3])} in different items, expected one shape; give "
                "every tile the same size (data.datasets[i].tile_m crops them)"
            )
        out[k] = torch.stack(values)
    for s, T in ragged.items():
        valid = torch.stack([torch.arange(T) < n for n in lengths[s]])
        out[f"{s}_mask"] = out[f"{s}_mask"] & valid if f"{s}_mask" in out else valid
    return out


@dataclass
class DatasetBundle:
    """A dataset ready for pretraining/probing: splits, sensors, patch sizes, class names, norm stats.

    ``val`` / ``test`` are ``None`` when the dataset has no such split (e.g. a manifest listing only
    training tiles); ``absent`` then says why, in the reader's words (a missing list file, or an
    error reading it, which the messages about the missing split repeat).  ``batch_size`` is the
    dataset's global batch (``None``: ``train.batch_size``); ``crop_m`` crops every item to that
    side (metres) before batching.
    """

    name: str
    train: Dataset
    val: Dataset | None
    test: Dataset | None
    sensors: list[str]
    patch_sizes: list[int]
    classes: tuple[str, ...]
    stats: NormStats
    weight: float = 1.0
    tile_m: float = 60.0
    batch_size: int | None = None
    crop_m: float | None = None
    absent: dict[str, str] = field(default_factory=dict)  # split -> why the reader gave none


def _spread(n: int, limit: int) -> list[int]:
    """Up to ``limit`` indices spread evenly over ``range(n)`` (all of them when ``limit`` is 0)."""
    if limit <= 0 or limit >= n:
        return list(range(n))
    return [int(i) for i in np.unique(np.linspace(0, n - 1, limit).round().astype(int))]


def _stats(spec, ds: Dataset, sensors: Sequence[str], root: Path | None, limit: int) -> NormStats:
    """The statistics ``spec.norm`` asks for (see :class:`~anysat_lite.config.DatasetSpec`)."""
    indices = _spread(len(ds), limit)
    if spec.norm == "pixels":
        return NormStats.from_samples(ds[i] for i in indices)
    have = [
        s for s in sensors if spec.norm == "official" and root is not None and (root / f"NORM_{s}_patch.json").is_file()
    ]
    stats = read_norm_files(root, have, folds=getattr(ds, "folds", None)).stats if have else {}
    rest = [s for s in sensors if s not in have]
    if rest:
        stats |= per_tile_norm_stats(ds, rest, indices=indices).stats
    return NormStats(stats)


def _split(cls, root, split: str, kwargs: dict, absent: dict[str, str]) -> Dataset | None:
    """One split of a reader, or ``None`` when the reader cannot give it (validation and test only; the
    reason goes into ``absent[split]``, for the messages that need the split)."""
    try:
        return cls(root, split, **kwargs)
    except (ValueError, KeyError, FileNotFoundError) as e:
        if split == "train":
            raise
        absent[split] = str(e).strip("'\"")
        return None


# reader arguments the config sets itself, with the key that sets them
_SET_BY_CONFIG = {
    "root": "data.datasets[i].path or data.root",
    "split": "probe.split",
    "sensors": "data.datasets[i].sensors",
    "seed": "data.seed",
    "max_dates": "data.datasets[i].max_dates",
}
# reader options that, when true, give items the trainer and the probes cannot read, and where they belong
_PROTOCOL_ONLY = {
    "pixel_masks": "true adds <sensor>_valid keys, which only the paper's protocol reads: anysat-lite probe --official",
}


def _check_options(name: str, cls: type, options: Mapping) -> dict:
    """``data.datasets[i].options`` of the reader ``cls``, checked against its arguments and their types
    (converted where harmless, e.g. ``0`` for a number); the ones the config sets itself are refused."""
    import inspect
    import typing

    from ..config import coerce_reader_option

    for key in options:
        if key in _SET_BY_CONFIG:
            raise UserError(
                f"config data.datasets options.{key} ({name}): set by the config itself, expected it out of "
                f"options; remove it (set it with {_SET_BY_CONFIG[key]})"
            )
    params = inspect.signature(cls.__init__).parameters
    if not options or any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return dict(options)
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    accepted = [k for k, p in params.items() if k not in _SET_BY_CONFIG and k != "self" and p.kind in kinds]
    unknown = [k for k in options if k not in accepted]
    if unknown:
        raise UserError(
            f"config data.datasets options ({name}): unknown option(s) {', '.join(map(str, unknown))}; "
            f"{cls.__name__} takes {', '.join(accepted) or 'none'}; remove or correct them"
        )
    try:
        hints = typing.get_type_hints(cls.__init__)
    except (NameError, TypeError):  # annotations that do not resolve (a registered reader's): left to the reader
        hints = {}
    checked = {}
    for key, value in options.items():
        where = f"data.datasets options.{key} ({name})"
        checked[key] = coerce_reader_option(where, value, hints[key], cls.__name__) if key in hints else value
        if key in _PROTOCOL_ONLY and checked[key] is True:
            raise UserError(f"config {where}: expected false or left out, got true ({_PROTOCOL_ONLY[key]}); remove it")
    return checked


def build_dataset(spec, data_cfg) -> DatasetBundle:
    """Instantiate one :class:`~anysat_lite.config.DatasetSpec`: the embedded world (``synthetic``) or a
    reader of the registry, read from ``spec.path`` or from its folder under ``data_cfg.root``."""
    common = dict(
        patch_sizes=list(spec.patch_sizes), weight=spec.weight, batch_size=spec.batch_size, crop_m=spec.tile_m
    )
    if spec.name == "synthetic" or spec.name.startswith("synthetic:"):
        sensors = tuple(spec.sensors or WorldSpec.sensors)
        wspec = WorldSpec(
            n_tiles=data_cfg.n_tiles,
            tile_m=data_cfg.tile_m,
            sensors=sensors,
            n_dates=data_cfg.n_dates,
            seed=data_cfg.seed,
        )
        if data_cfg.cache_dir and not Path(data_cfg.cache_dir).is_dir():  # a read-only cache may hold the world
            check_output_folder("data.cache_dir", data_cfg.cache_dir)  # a file on its path, or no folder made
        arrays = load_world(wspec, data_cfg.cache_dir)
        split = np.asarray(arrays["split"])
        parts = [ArrayTileDataset(arrays, np.flatnonzero(split == k), sensors) for k in range(3)]
        return DatasetBundle(
            spec.name,
            *parts,
            sensors=list(sensors),
            classes=WORLD_CLASSES,
            stats=_stats(spec, parts[0], sensors, None, data_cfg.norm_samples),
            tile_m=spec.tile_m or data_cfg.tile_m,
            **common,
        )
    cls = get_dataset(spec.name)
    if spec.path:
        root = Path(spec.path)
    elif data_cfg.root:
        root = dataset_root(spec.name, data_cfg.root)
    else:
        raise ValueError(f"dataset {spec.name!r} needs data.datasets[i].path or data.root")
    options = _check_options(spec.name, cls, spec.options or {})
    kwargs = dict(sensors=spec.sensors, seed=data_cfg.seed, **options)
    train = cls(root, "train", max_dates=spec.max_dates, **kwargs)
    absent: dict[str, str] = {}
    val, test = (_split(cls, root, s, dict(kwargs, max_dates=None), absent) for s in ("val", "test"))
    sensors = list(train.sensors)
    norm_root = root if root.is_dir() else root.parent  # a manifest's folder
    return DatasetBundle(
        canonical_name(spec.name),
        train,
        val,
        test,
        sensors=sensors,
        classes=tuple(train.classes),
        stats=_stats(spec, train, sensors, norm_root, data_cfg.norm_samples),
        tile_m=float(spec.tile_m or train.tile_m),
        absent=absent,
        **common,
    )


def effective_batch_size(wanted: int, n: int, world: int = 1) -> int:
    """The global batch of a dataset with ``n`` tiles: at most ``n`` (a batch never repeats a tile), a
    multiple of the ``world`` processes, and at least one tile per process (then drawn with replacement)."""
    b = min(wanted, n)
    b -= b % world
    return max(b, world)


@dataclass(frozen=True)
class BatchPlan:
    step: int
    dataset: int  # index into the bundles
    patch_size: int  # metres
    indices: tuple[int, ...]  # global batch (indices into the split)
    epoch: int = 0  # the readers' epoch of this batch (see pipeline.StepBatches)

    def shard(self, rank: int, world: int) -> tuple[int, ...]:
        """This process's contiguous share of the global batch."""
        n = len(self.indices)
        if n % world:
            raise ValueError(f"global batch {n} is not divisible by {world} processes")
        k = n // world
        return self.indices[rank * k : (rank + 1) * k]


class BatchPlanner:
    """Step -> :class:`BatchPlan`; every batch comes from a single dataset and a single patch size.

    ``mixing="weighted"``: each step draws a dataset by weight, then one of its patch sizes, then
    tiles without replacement; the reader epoch is the step.  ``mixing="official"`` follows the
    official multi-dataset loader (``MultiBatchDataLoader``): an epoch is one shuffled pass over
    every dataset's split, cut into full batches (``drop_last``); each step draws a dataset by
    weight among those with batches left, takes its next batch and draws a patch size; the epoch
    ends when every dataset is exhausted or after ``epoch_steps`` steps.  Both are pure functions
    of ``(seed, step)`` (``salt`` separates independent streams, e.g. validation batches).

    ``batch_size`` is the global batch of bundles without their own; batches are capped at the
    split's size and rounded to a multiple of ``world`` (:func:`effective_batch_size`).
    """

    def __init__(
        self,
        bundles: Sequence[DatasetBundle],
        batch_size: int,
        seed: int = 0,
        mixing: str = "weighted",
        world: int = 1,
        split: str = "train",
        epoch_steps: int | None = None,
        salt: int = 0,
    ):
        self.bundles, self.seed, self.mixing, self.split, self.salt = list(bundles), seed, mixing, split, salt
        self.world = world
        if mixing not in ("weighted", "official"):
            raise ValueError(f"mixing must be 'weighted' or 'official', got {mixing!r}")
        w = np.array([b.weight for b in self.bundles], dtype=np.float64)
        if (w <= 0).any():
            raise ValueError("dataset weights must be > 0")
        self.weights = w
        self.p = w / w.sum()
        self.wanted = [b.batch_size or batch_size for b in self.bundles]
        self.sizes = [len(getattr(b, split)) for b in self.bundles]
        self.batch_sizes = [effective_batch_size(b, n, world) for b, n in zip(self.wanted, self.sizes)]
        # full batches per epoch (official drop_last); a split smaller than the processes still gives one
        self.per_epoch = [max(n // b, int(0 < n < b)) for n, b in zip(self.sizes, self.batch_sizes)]
        self.epoch_steps = sum(self.per_epoch)
        if epoch_steps is not None:
            self.epoch_steps = min(self.epoch_steps, epoch_steps)
        self._epochs: dict[int, list[tuple[int, int, tuple[int, ...]]]] = {}

    def generator(self, step: int, stream: int = 0) -> torch.Generator:
        """A torch generator for ``(seed, step, stream)``: 1 masks, 2 dates, 3 modalities, 4 views."""
        key = [self.seed, step, stream] + ([self.salt] if self.salt else [])
        state = np.random.SeedSequence(key).generate_state(2, dtype=np.uint32)
        return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))

    def adjusted(self) -> list[str]:
        """Lines naming the datasets whose batch differs from the configured one (and why)."""
        rows = zip(self.bundles, self.wanted, self.batch_sizes, self.sizes)
        return [
            f"dataset {b.name}: batch {w} -> {e} (its {self.split} split has {n} tile(s); {self.world} process(es))"
            for b, w, e, n in rows
            if w != e
        ]

    def plan(self, step: int) -> BatchPlan:
        if self.mixing == "official":
            if self.epoch_steps == 0:
                raise ValueError(
                    f"no dataset has a full batch on its {self.split} split: sizes {self.sizes}, "
                    f"batches {self.batch_sizes}"
                )
            epoch, k = divmod(step, self.epoch_steps)
            d, P, idx = self._epoch(epoch)[k]
            return BatchPlan(step, d, P, idx, epoch)
        rng = np.random.default_rng([self.seed, step, self.salt] if self.salt else [self.seed, step])
        d = int(rng.choice(len(self.bundles), p=self.p))
        P = int(rng.choice(self.bundles[d].patch_sizes))
        n, B = self.sizes[d], self.batch_sizes[d]
        idx = rng.choice(n, size=B, replace=B > n)
        return BatchPlan(step, d, P, tuple(int(i) for i in idx), step)

    def _epoch(self, epoch: int) -> list[tuple[int, int, tuple[int, ...]]]:
        """The batches of one epoch of the official mixing (cached)."""
        if epoch not in self._epochs:
            rng = np.random.default_rng([self.seed, epoch, self.salt, 1])
            order = [
                np.random.default_rng([self.seed, epoch, self.salt, 2, d]).permutation(n)
                for d, n in enumerate(self.sizes)
            ]
            left = list(self.per_epoch)
            used = [0] * len(self.bundles)
            batches = []
            while len(batches) < self.epoch_steps:
                avail = [d for d in range(len(self.bundles)) if left[d] > 0]
                w = self.weights[avail]
                d = int(avail[rng.choice(len(avail), p=w / w.sum())])
                B = self.batch_sizes[d]
                idx = order[d][used[d] * B : (used[d] + 1) * B]
                if len(idx) < B:  # fewer tiles than processes: with replacement
                    idx = rng.choice(self.sizes[d], size=B, replace=True)
                used[d] += 1
                left[d] -= 1
                batches.append((d, int(rng.choice(self.bundles[d].patch_sizes)), tuple(int(i) for i in idx)))
            self._epochs = {epoch: batches}  # one epoch at a time is all a run needs
        return self._epochs[epoch]
