"""Per-sensor, per-band normalisation statistics (mean/std), computed from data.

Stats travel with datasets and checkpoints as plain nested lists, so a checkpoint can
normalise new data exactly as its training data was::

    stats = NormStats.from_samples(train_samples)   # {sensor: (mean[C], std[C])}
    x = stats.apply(sample)                           # (x - mean) / std on the band axis
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np
import torch

from ..sensors import SENSORS

__all__ = ["NormStats"]


def _band_axis(sensor: str, ndim: int, batched: bool) -> int:
    series = SENSORS[sensor].is_series
    return (2 if series else 1) if batched else (1 if series else 0)


@dataclass
class NormStats:
    """``stats[sensor] = (mean [C], std [C])`` in the sensor's native units."""

    stats: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)

    @classmethod
    def from_samples(cls, samples: Iterable[Mapping], batched: bool = False, min_std: float = 1e-6) -> "NormStats":
        """Running per-band mean/std over samples (``batched``: each item is ``[B, ...]``).

        ``*_mask`` keys flag invalid dates, which are left out.
        """
        acc: dict[str, list[np.ndarray]] = {}
        for s in samples:
            for key, value in s.items():
                if "_" in key or key not in SENSORS:
                    continue
                arr = np.asarray(value.float() if torch.is_tensor(value) else value, dtype=np.float64)
                ax = _band_axis(key, arr.ndim, batched)
                mask = s.get(f"{key}_mask")
                flat = np.moveaxis(arr, ax, -1)
                if mask is not None and SENSORS[key].is_series:
                    m = np.asarray(mask.bool() if torch.is_tensor(mask) else mask, dtype=bool)
                    flat = flat[m] if m.ndim == flat.ndim - 3 else flat
                flat = flat.reshape(-1, flat.shape[-1])
                a = acc.setdefault(key, [np.zeros(flat.shape[1]), np.zeros(flat.shape[1]), np.zeros(1)])
                a[0] += flat.sum(0)
                a[1] += (flat**2).sum(0)
                a[2] += flat.shape[0]
        out = {}
        for key, (s1, s2, n) in acc.items():
            mean = s1 / n
            std = np.sqrt(np.maximum(s2 / n - mean**2, 0.0))
            out[key] = (mean.tolist(), np.maximum(std, min_std).tolist())
        return cls(out)

    def apply(self, sample: Mapping, batched: bool = True) -> dict:
        """Return a copy of ``sample`` with every known sensor standardised (other keys untouched)."""
        out = dict(sample)
        for key, (mean, std) in self.stats.items():
            if key not in sample:
                continue
            x = sample[key]
            ax = _band_axis(key, x.dim(), batched)
            shape = [1] * x.dim()
            shape[ax] = -1
            m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(shape)
            s = torch.tensor(std, dtype=torch.float32, device=x.device).view(shape)
            out[key] = (x.float() - m).div_(s)
        return out

    def to_dict(self) -> dict:
        return {k: {"mean": list(m), "std": list(s)} for k, (m, s) in self.stats.items()}

    @classmethod
    def from_dict(cls, d: Mapping) -> "NormStats":
        return cls({k: (list(v["mean"]), list(v["std"])) for k, v in d.items()})
