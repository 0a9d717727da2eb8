"""Frozen features for probing: encoder outputs over a dataset, and raw-pixel baselines."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..data.datasets import collate
from ..data.normalization import NormStats
from ..sensors import SENSORS

__all__ = ["encode_dataset", "raw_pixel_features", "targets_of", "select_sensors"]


def select_sensors(batch: dict, sensors: Sequence[str]) -> dict:
    """The keys of ``batch`` that belong to ``sensors`` (tensors, dates, masks); targets are dropped."""
    keep = set(sensors)
    return {k: v for k, v in batch.items() if k.split("_")[0] in keep and k.split("_")[0] in SENSORS}


@torch.no_grad()
def encode_dataset(encoder, dataset: Dataset, stats: NormStats, patch_size: int, sensors: Sequence[str],
                   output: str = "tile", output_modality: str | None = None, batch_size: int = 32,
                   device="cpu", progress: bool = False) -> Tensor:
    """Encoder outputs for every item: ``[N, D]`` (tile), ``[N, h, w, D]`` (patch) or ``[N, Hs, Ws, 2D]`` (dense)."""
    from tqdm import tqdm

    encoder.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    out = []
    for batch in tqdm(loader, disable=not progress, desc=f"encode P={patch_size} {'+'.join(sensors)}", leave=False):
        x = {k: v.to(device) for k, v in stats.apply(select_sensors(batch, sensors)).items()}
        out.append(encoder(x, patch_size, output=output, output_modality=output_modality).float().cpu())
    return torch.cat(out)


def raw_pixel_features(dataset: Dataset, sensors: Sequence[str], batch_size: int = 64) -> Tensor:
    """Baseline features: per-band mean and std of every sensor over space (and time) -> ``[N, F]``."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    feats = []
    for batch in loader:
        parts = []
        for s in sensors:
            x = batch[s].float()
            band = 2 if SENSORS[s].is_series else 1
            x = x.movedim(band, -1).reshape(x.shape[0], -1, x.shape[band])
            parts += [x.mean(1), x.std(1)]
        feats.append(torch.cat(parts, dim=1))
    return torch.cat(feats)


def targets_of(dataset: Dataset, key: str) -> Tensor:
    """Stack one target (``label``, ``multilabel``, ``segmentation``) over a dataset."""
    return torch.stack([torch.as_tensor(dataset[i][key]) for i in range(len(dataset))])
