"""Frozen features for probing: encoder outputs over a dataset, and raw-pixel baselines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..data.contract import sensor_entries
from ..data.datasets import collate
from ..data.normalization import NormStats
from ..errors import UserError, check_device
from ..sensors import SENSORS, check_sensor_names

__all__ = ["encode_dataset", "raw_pixel_features", "raw_pixel_dense_features", "targets_of", "select_sensors"]


def select_sensors(batch: dict, sensors: Sequence[str]) -> dict:
    """The keys of ``batch`` that belong to ``sensors`` (tensors, dates, masks); targets are dropped.

    Refused: a string instead of a list, an unknown sensor name (with the closest registered one), and a
    sensor the batch does not hold.
    """
    check_sensor_names(sensors)  # an unknown name: one line with the closest registered one ('S2' -> 's2')
    held = [k for k in batch if k in SENSORS]
    lacking = [s for s in sensors if s not in batch]
    if lacking:
        raise UserError(
            f"sensors: {lacking[0]!r} is not in the batch, expected sensors it holds ({', '.join(held) or 'none'}); "
            "choose among them"
        )
    return sensor_entries(batch, sensors)


@torch.no_grad()
def encode_dataset(
    encoder,
    dataset: Dataset,
    stats: NormStats,
    patch_size: int,
    sensors: Sequence[str],
    output: str | tuple[str, ...] = "tile",
    output_modality: str | None = None,
    batch_size: int = 32,
    device="cpu",
    progress: bool = False,
) -> Tensor | dict[str, Tensor]:
    """Encoder outputs for every item: ``[N, D]`` (tile), ``[N, h, w, D]`` (patch) or ``[N, Hs, Ws, 2D]`` (dense).

    A tuple of outputs (e.g. ``("tile", "dense")``) returns ``{name: tensor}`` from one pass over the data.
    ``device`` (cpu, cuda, cuda:N or mps) is where the batches go; the encoder must be there too.  ``stats``:
    :class:`NormStats` or the dict of :meth:`NormStats.to_dict`.
    """
    from tqdm import tqdm

    device = check_device("device", device)
    if isinstance(stats, Mapping):  # {sensor: {mean, std}}, as encoder.norm_stats[DATASET] or stats.to_dict()
        stats = NormStats.from_dict(stats)
    if not isinstance(stats, NormStats):
        raise UserError(
            f"stats: expected NormStats or a dict {{sensor: {{mean, std}}}}, got {type(stats).__name__}; give the "
            "statistics the encoder was trained with: bundle.stats, or NormStats.from_dict(encoder.norm_stats[DATASET])"
        )
    encoder.eval()
    names = (output,) if isinstance(output, str) else tuple(output)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    out: dict[str, list[Tensor]] = {name: [] for name in names}
    for batch in tqdm(loader, disable=not progress, desc=f"encode P={patch_size} {'+'.join(sensors)}", leave=False):
        x = {k: v.to(device) for k, v in stats.apply(select_sensors(batch, sensors)).items()}
        y = encoder(x, patch_size, output=output, output_modality=output_modality)
        y = {output: y} if isinstance(output, str) else y
        for name in names:
            out[name].append(y[name].float().cpu())
    cat = {name: torch.cat(parts) for name, parts in out.items()}
    return cat[output] if isinstance(output, str) else cat


def _valid_dates(batch: dict, sensor: str) -> Tensor:
    """``[B, T]`` float weights: 1 for the dates a series may use (its ``_mask``, all dates without one)."""
    x = batch[sensor]
    m = batch.get(f"{sensor}_mask")
    return torch.ones(x.shape[:2]) if m is None else m.float()


def _masked_moments(x: Tensor, w: Tensor, dims: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """Weighted mean and (population) std of ``x`` over ``dims``; ``w`` (0/1) broadcasts against ``x``."""
    w = w.expand_as(x)
    n = w.sum(dims, keepdim=True).clamp_min(1e-12)
    mean = (w * x).sum(dims, keepdim=True) / n
    std = ((w * (x - mean) ** 2).sum(dims, keepdim=True) / n).sqrt()
    return mean.squeeze(dims), std.squeeze(dims)


def raw_pixel_features(dataset: Dataset, sensors: Sequence[str], batch_size: int = 64) -> Tensor:
    """Baseline features: per-band mean and std of every sensor over space (and valid dates) -> ``[N, F]``.

    Dates flagged invalid by a series' ``_mask`` (clouds) are left out, as the encoder leaves them out.
    """
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    feats = []
    for batch in loader:
        parts = []
        for s in sensors:
            x = batch[s].float()
            if SENSORS[s].is_series:  # [B, T, C, H, W]
                w = _valid_dates(batch, s)[:, :, None, None, None]
                mean, std = _masked_moments(x, w, (1, 3, 4))
            else:  # [B, C, H, W]
                mean, std = x.mean((2, 3)), x.std((2, 3), correction=0)
            parts += [mean, std]
        feats.append(torch.cat(parts, dim=1))
    return torch.cat(feats)


def raw_pixel_dense_features(dataset: Dataset, sensor: str, grid: tuple[int, int]) -> Tensor:
    """Dense baseline on a ``grid`` (the label raster) -> ``[N, h, w, 2C]``.

    Images: per-band mean and std of the pixels inside each cell.  Series: per-pixel mean and
    std over the valid dates, averaged over the cell's pixels; a sensor coarser than the grid
    (S2 pixels of 10 m on a 2 m label grid) is repeated onto it (nearest neighbour).
    """
    h, w = grid
    out = []
    for batch in DataLoader(dataset, batch_size=64, shuffle=False, collate_fn=collate):
        x = batch[sensor].float()
        if SENSORS[sensor].is_series:
            mean, std = _masked_moments(x, _valid_dates(batch, sensor)[:, :, None, None, None], (1,))
            f = torch.cat([mean, std], dim=1)  # [B, 2C, H, W]
            cells = F.adaptive_avg_pool2d(f, grid) if f.shape[-2] >= h else F.interpolate(f, size=grid)
        else:
            C, H, W = x.shape[1:]
            if H % h or W % w:
                raise ValueError(f"{sensor}: {H} x {W} px do not split into the {h} x {w} label grid")
            blocks = x.reshape(x.shape[0], C, h, H // h, w, W // w)
            cells = torch.cat([blocks.mean((3, 5)), blocks.std((3, 5), correction=0)], dim=1)
        out.append(cells.permute(0, 2, 3, 1))
    return torch.cat(out)


def targets_of(dataset: Dataset, key: str) -> Tensor:
    """Stack one target (``label``, ``multilabel``, ``segmentation``) over a dataset."""
    return torch.stack([torch.as_tensor(dataset[i][key]) for i in range(len(dataset))])
