"""The input pipeline of pretraining: one dataset item per training step, read by DataLoader workers.

Item ``k`` of :class:`StepBatches` is everything step ``first + k`` needs from the data, for
this process::

    plan   = planner.plan(step)                     # dataset, patch size, tiles of the global batch
    items  = [read(tile) for tile in plan.shard(rank, world)]   # readers at epoch plan.epoch
    items  = [standardise(crop(item)) for item in items]
    batch  = collate(items)                         # series padded, <sensor>_mask on padded dates
    masks  = sampler(global batch, patch grid, generator(step)).shard(rows of this process)

Every piece is a pure function of ``(seed, step, rank, world)``, so any number of workers and
any prefetching give the same batches, and a run resumed at step ``s`` reads exactly what the
uninterrupted run read from step ``s`` on.  :func:`step_loader` wraps it in a
:class:`torch.utils.data.DataLoader` (workers, pinned memory, prefetching, persistent workers).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import UserError
from ..sensors import SENSORS
from .contract import SampleError, sensor_entries, validate_sample
from .datasets import BatchPlanner, DatasetBundle, collate

__all__ = ["StepBatches", "step_loader", "crop_item", "read_item"]


def _offset_unit(gsds: Sequence[float]) -> float:
    """The smallest offset in metres that is a whole number of pixels of every GSD (e.g. 10 m for 0.2 and 10 m)."""
    g = max(gsds)
    for k in range(1, 1001):
        u = k * g
        if all(abs(u / x - round(u / x)) < 1e-6 for x in gsds):
            return u
    raise ValueError(f"GSDs {sorted(set(gsds))} m have no common pixel grid to crop on")


def crop_item(item: dict, side_m: float, rng: np.random.Generator | None = None) -> dict:
    """Crop every spatial sensor of ``item`` (and a ``segmentation`` target) to ``side_m`` x ``side_m`` metres.

    The window is at a random offset drawn from ``rng`` (a whole number of pixels of every sensor),
    or centred when ``rng`` is ``None``.  One-token-per-tile sensors (MODIS) are left whole.
    """
    spatial = [k for k in item if k in SENSORS and not SENSORS[k].one_token_per_tile]
    if not spatial:
        return item
    first = SENSORS[spatial[0]]
    H_m, W_m = (n * first.gsd for n in item[spatial[0]].shape[-2:])
    if side_m > min(H_m, W_m) + 1e-6:
        raise SampleError(
            f"tile_m={side_m:g} m is larger than the {H_m:g} x {W_m:g} m tiles of this dataset; "
            "give a smaller data.datasets[i].tile_m or null"
        )
    unit = _offset_unit([SENSORS[k].gsd for k in spatial])
    n_top, n_left = int((H_m - side_m) // unit) + 1, int((W_m - side_m) // unit) + 1
    if rng is None:
        top, left = (n_top - 1) // 2 * unit, (n_left - 1) // 2 * unit
    else:
        top, left = int(rng.integers(n_top)) * unit, int(rng.integers(n_left)) * unit
    out = dict(item)
    grids = [(k, SENSORS[k].gsd) for k in spatial]
    if "segmentation" in item:
        grids.append(("segmentation", H_m / item["segmentation"].shape[-2]))
    for k, gsd in grids:
        px = side_m / gsd
        if abs(px - round(px)) > 1e-6:
            raise SampleError(
                f"tile_m={side_m:g} m is not a whole number of {k} pixels ({gsd:g} m); give a multiple of {gsd:g} m"
            )
        t, lft, n = round(top / gsd), round(left / gsd), round(px)
        out[k] = item[k][..., t : t + n, lft : lft + n]
    return out


def read_item(bundle: DatasetBundle, split: str, index: int, epoch: int, seed: int) -> dict:
    """Tile ``index`` of a bundle's split as the model takes it: read at ``epoch`` (readers with
    ``set_epoch`` draw their crops and date subsets from it), cropped to ``bundle.crop_m`` (random window on
    the train split, centred otherwise) and standardised with ``bundle.stats``; no batch axis."""
    ds = getattr(bundle, split)
    if hasattr(ds, "set_epoch"):
        ds.set_epoch(epoch)
    try:
        item = ds[index]
    except OSError as e:  # a file that is missing, truncated or unreadable (rasterio and h5py errors are OSErrors)
        raise UserError(
            f"dataset {bundle.name}, {split} split, item {index}: cannot be read ({' '.join(str(e).split())}); "
            "restore or re-download the file"
        ) from e
    if bundle.crop_m:
        rng = np.random.default_rng([seed, epoch, index, 1]) if split == "train" else None
        item = crop_item(item, bundle.crop_m, rng)
    return bundle.stats.apply(item, batched=False)


class StepBatches(Dataset):
    """Steps ``first, first + 1, ..., last - 1`` as dataset items (see the module docstring).

    Item: ``{"step", "dataset" (index), "name", "patch_size" (metres), "global_batch", "batch"
    (dict of tensors ``[b, ...]``, this process's ``b = global_batch / world`` rows), "masks"
    (:class:`~anysat_lite.jepa.masks.Masks` of those rows)}``.
    """

    def __init__(
        self,
        bundles: Sequence[DatasetBundle],
        planner: BatchPlanner,
        mask_sampler,
        first: int,
        last: int,
        rank: int = 0,
        world: int = 1,
        seed: int = 0,
    ):
        self.bundles, self.planner, self.sampler = list(bundles), planner, mask_sampler
        self.first, self.last, self.rank, self.world, self.seed = first, last, rank, world, seed

    def __len__(self) -> int:
        return max(self.last - self.first, 0)

    def __getitem__(self, k: int) -> dict:
        step = self.first + k
        plan = self.planner.plan(step)
        bundle = self.bundles[plan.dataset]
        split = self.planner.split
        items = [read_item(bundle, split, i, plan.epoch, self.seed) for i in plan.shard(self.rank, self.world)]
        batch = collate(items)
        info = validate_sample(sensor_entries(batch))
        if info.extent_m is not None and max(abs(e - bundle.tile_m) for e in info.extent_m) > 1e-3:
            raise SampleError(
                f"dataset {bundle.name}: items cover {info.extent_m[0]:g} x {info.extent_m[1]:g} m, "
                f"expected {bundle.tile_m:g} m tiles; give every tile the same size "
                "(data.datasets[i].tile_m crops them)"
            )
        B = len(plan.indices)
        b = B // self.world
        grid = (int(bundle.tile_m // plan.patch_size),) * 2
        masks = self.sampler(B, grid, self.planner.generator(step, 1)).shard(self.rank * b, (self.rank + 1) * b)
        return {
            "step": step,
            "dataset": plan.dataset,
            "name": bundle.name,
            "patch_size": plan.patch_size,
            "global_batch": B,
            "batch": batch,
            "masks": masks,
        }


def step_loader(
    data: StepBatches,
    num_workers: int = 0,
    pin_memory: bool = False,
    prefetch_factor: int = 2,
    persistent_workers: bool = True,
) -> DataLoader:
    """A :class:`~torch.utils.data.DataLoader` yielding the items of ``data`` in step order (no further
    batching: each item is a batch already).

    The loader gets its own generator: starting an iteration draws a seed for the workers, which
    must not come from the global generator that dropout uses (the draws would then depend on the
    loader being there).  The items use no worker randomness.
    """
    extra = dict(prefetch_factor=prefetch_factor, persistent_workers=persistent_workers) if num_workers else {}
    return DataLoader(
        data,
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
        generator=torch.Generator(),
        **extra,
    )
