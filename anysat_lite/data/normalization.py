"""Per-sensor, per-band normalisation statistics (mean/std), computed from data.

Stats travel with datasets and checkpoints as plain nested lists, so a checkpoint can
normalise new data exactly as its training data was::

    stats = NormStats.from_samples(train_samples)   # {sensor: (mean[C], std[C])}
    x = stats.apply(sample)                           # (x - mean) / std on the band axis

Three sources of statistics (``data.datasets[i].norm`` in the config):

* :func:`read_norm_files` -- the official ``NORM_<sensor>_patch.json`` files of a dataset root;
* :func:`per_tile_norm_stats` -- computed as the official readers compute those files (per band,
  the mean over tiles of each tile's mean and standard deviation);
* :meth:`NormStats.from_samples` -- the pooled mean and standard deviation of every pixel.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import MissingFileError, UserError
from ..files import write_text_atomic
from ..sensors import SENSORS
from .readers import read_json

__all__ = ["NormStats", "read_norm_files", "per_tile_norm_stats"]


def _band_axis(sensor: str, ndim: int, batched: bool) -> int:
    series = SENSORS[sensor].is_series
    return (2 if series else 1) if batched else (1 if series else 0)


@dataclass
class NormStats:
    """``stats[sensor] = (mean [C], std [C])`` in the sensor's native units."""

    stats: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)

    @classmethod
    def from_samples(cls, samples: Iterable[Mapping], batched: bool = False, min_std: float = 1e-6) -> NormStats:
        """Running per-band mean/std over samples (``batched``: each item is ``[B, ...]``).

        ``*_mask`` keys flag invalid dates, which are left out.  Refused: one sample instead of a list of
        them, no sensor tensor at all, and a tensor whose rank or band count is not its sensor's (read as
        ``[C, H, W]`` / ``[T, C, H, W]``, or with ``batched=True`` as ``[B, C, H, W]`` / ``[B, T, C, H, W]``).
        """
        if isinstance(samples, Mapping):
            raise UserError(
                "NormStats.from_samples: expected a list of samples, got one sample (a dict); wrap it in a list: "
                "NormStats.from_samples([sample], batched=True)"
            )
        acc: dict[str, list[np.ndarray]] = {}
        n_samples = 0
        for s in samples:
            n_samples += 1
            if not isinstance(s, Mapping):
                raise UserError(
                    f"NormStats.from_samples: expected samples that are dicts {{sensor: tensor, ...}}, got a "
                    f"{type(s).__name__}; give a list of sample dicts, e.g. [dataset[i] for i in range(100)]"
                )
            for key, value in s.items():
                if key not in SENSORS:  # "<sensor>_dates" / "_mask" keys are not sensors
                    continue
                arr = np.asarray(value.float() if torch.is_tensor(value) else value, dtype=np.float64)
                ax = _band_axis(key, arr.ndim, batched)
                _check_layout(key, arr.shape, batched)
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
        if not acc:
            raise UserError(
                "NormStats.from_samples: expected samples holding sensor tensors, got "
                + (f"{n_samples} sample(s) without any" if n_samples else "no samples")
                + f" (keys must be registered sensors: {', '.join(SENSORS)}); give the training samples, "
                "e.g. NormStats.from_samples([sample], batched=True)"
            )
        out = {}
        for key, (s1, s2, n) in acc.items():
            mean = s1 / n
            std = np.sqrt(np.maximum(s2 / n - mean**2, 0.0))
            out[key] = (mean.tolist(), np.maximum(std, min_std).tolist())
        return cls(out)

    def apply(self, sample: Mapping, batched: bool = True) -> dict:
        """Return a copy of ``sample`` with every sensor standardised (dates, masks, targets untouched).

        A sensor of ``sample`` that the statistics lack is refused: it would stay raw.
        """
        lacking = [k for k in sample if k in SENSORS and k not in self.stats]
        if lacking:
            have = ", ".join(self.stats) or "no sensor"
            raise UserError(
                f"{lacking[0]}: no normalisation statistics for it (expected statistics for every sensor of the "
                f"sample, these have {have}), it would stay raw; compute statistics that include it: "
                f"NormStats.from_samples(samples, batched=True) over samples holding {lacking[0]}, or leave "
                f"{lacking[0]} out of the sample"
            )
        out = dict(sample)
        for key, (mean, std) in self.stats.items():
            if key not in sample:
                continue
            x = sample[key]
            ax = _band_axis(key, x.dim(), batched)
            shape = [1] * x.dim()
            shape[ax] = -1
            if x.shape[ax] != len(mean):
                how = "batched, [B, ...]" if batched else "one item, no batch axis"
                raise UserError(
                    f"{key}: {x.shape[ax]} bands on axis {ax} of {list(x.shape)} (read as {how}), expected "
                    f"{len(mean)}, the band count of its normalisation statistics; give {key} with those bands"
                    + ("" if not batched else ", or pass batched=False for one item without the batch axis")
                )
            m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(shape)
            s = torch.tensor(std, dtype=torch.float32, device=x.device).view(shape)
            out[key] = (x.float() - m).div_(s)
        return out

    def to_dict(self) -> dict:
        return {k: {"mean": list(m), "std": list(s)} for k, (m, s) in self.stats.items()}

    @classmethod
    def from_dict(cls, d: Mapping) -> NormStats:
        """``{sensor: {"mean": [C], "std": [C]}}`` (what :meth:`to_dict` and the encoder sidecars hold)."""
        if not isinstance(d, Mapping):
            raise UserError(
                f"normalisation statistics: expected a mapping {{sensor: {{mean, std}}}}, got {type(d).__name__}; "
                "restore the file they came from (an encoder's .json sidecar, NORM_*.json)"
            )
        for sensor, v in d.items():
            if not isinstance(v, Mapping) or not {"mean", "std"} <= set(v):
                got = sorted(v) if isinstance(v, Mapping) else type(v).__name__
                raise UserError(
                    f"normalisation statistics of {sensor}: expected a mapping with mean and std (one value per "
                    f"band), got {got}; restore the file they came from (an encoder's .json sidecar, NORM_*.json)"
                )
            problem = _band_problem(v["mean"], v["std"])
            if problem:
                raise UserError(
                    f"normalisation statistics of {sensor}: expected one mean and one std > 0 per band, {problem}; "
                    "restore the file they came from (an encoder's .json sidecar, NORM_*.json)"
                )
        return cls({k: ([float(a) for a in v["mean"]], [float(a) for a in v["std"]]) for k, v in d.items()})


def _check_layout(sensor: str, shape: tuple[int, ...], batched: bool) -> None:
    """Refuse a tensor of ``sensor`` whose rank or band count is not the sensor's, read with or without the batch
    axis (``batched``): statistics over the wrong axis would normalise per date or per sample."""
    s = SENSORS[sensor]
    rank = s.input_rank - (not batched)
    layout = s.layout if batched else s.layout.replace("B, ", "")
    ax = _band_axis(sensor, len(shape), batched)
    if len(shape) == rank and shape[ax] == s.n_bands:
        return
    fix = (
        "pass batched=True for samples with the batch axis"
        if not batched
        else "pass batched=False for items without the batch axis"
    )
    got = f"a {len(shape)}-D tensor" + (f" with {shape[ax]} on axis {ax}" if len(shape) > ax else "")
    raise UserError(
        f"NormStats.from_samples: {sensor} of shape {list(shape)}: expected {layout} with its {s.n_bands} bands "
        f"({', '.join(s.bands)}) on axis {ax} (batched={batched}), got {got}; {fix}"
    )


def _band_problem(mean, std) -> str:
    """What is wrong with the per-band statistics ``mean``, ``std`` (``""``: nothing), for a message."""
    try:
        m, sd = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
    except (TypeError, ValueError):
        return f"got values that are not numbers (mean {str(mean)[:40]}, std {str(std)[:40]})"
    if m.ndim != 1 or sd.ndim != 1:
        return f"got a mean of shape {list(m.shape)} and a std of shape {list(sd.shape)}, not two lists of numbers"
    if sd.shape != m.shape or not m.size:
        return f"got {m.size} mean(s) and {sd.size} std(s)"
    bad = np.flatnonzero(~(np.isfinite(sd) & (sd > 0)) | ~np.isfinite(m))
    if bad.size:
        return f"got mean {m[bad[0]]:g} and std {sd[bad[0]]:g} for band {bad[0]}"
    return ""


def read_norm_files(root: str | Path, sensors: Sequence[str], folds: Sequence[int] | None = None) -> NormStats:
    """The official statistics ``NORM_<sensor>_patch.json`` under ``root``.

    A file holds ``{"mean": [C], "std": [C]}``, or one such entry per fold (``{"Fold_1": {...}, ...}``,
    PASTIS), of which the official reader averages those of the ``folds`` it reads.
    """
    out = {}
    for s in sensors:
        path = Path(root) / f"NORM_{s}_patch.json"
        if not path.is_file():
            raise MissingFileError(
                f"{path}: official statistics of {s!r} not found; expected NORM_{s}_patch.json "
                f"in the dataset root, or compute them with per_tile_norm_stats(dataset)"
            )
        d = read_json(path, f'the official statistics of {s!r} ({{"mean": [...], "std": [...]}}, or one such per fold)')
        if "mean" not in d:
            if folds is None:
                raise UserError(
                    f"{path}: holds per-fold statistics ({', '.join(d)}), expected the folds to average (those the "
                    "reader reads); pass them: read_norm_files(..., folds=[1, 2, 3])"
                )
            missing = [f for f in folds if f"Fold_{f}" not in d]
            if missing:
                raise UserError(
                    f"{path}: no statistics for fold(s) {list(missing)}, expected Fold_{missing[0]} among its entries "
                    f"({', '.join(d)}); read only folds the file has, or restore the file"
                )
            d = {k: np.mean([d[f"Fold_{f}"][k] for f in folds], axis=0).tolist() for k in ("mean", "std")}
        out[s] = d
    return NormStats.from_dict(out)


def per_tile_norm_stats(
    dataset,
    sensors: Sequence[str] | None = None,
    write_to: str | Path | None = None,
    indices: Sequence[int] | None = None,
) -> NormStats:
    """Statistics computed the official way: per band, the mean over tiles of each tile's mean and of its
    standard deviation (unbiased, over dates and pixels).  Optionally written as ``NORM_<sensor>_patch.json``.

    The official code reads the items as its ``__getitem__`` returns them (crops and, on the train
    split, date subsets included); pass a dataset built with the same options to match.  ``indices``
    restricts the tiles (default: all, as the official code).  ``*_mask`` keys flag padded or
    invalid dates, which are left out, and a tile without a valid date of a sensor is left out of that sensor's
    statistics: our addition (the official readers' items carry no masks, so their statistics are unchanged).
    """
    sensors = list(dataset.sensors if sensors is None else sensors)
    means: dict[str, list[np.ndarray]] = {s: [] for s in sensors}
    stds: dict[str, list[np.ndarray]] = {s: [] for s in sensors}
    for i in range(len(dataset)) if indices is None else indices:
        item = dataset[int(i)]
        for s in sensors:
            x = item[s].double()
            if x.dim() == 4 and f"{s}_mask" in item:
                x = x[item[f"{s}_mask"].bool()]
                if not len(x):  # no valid date in this tile: nothing to average in
                    continue
            x = x.transpose(0, 1).flatten(1) if x.dim() == 4 else x.flatten(1)  # [C, T*H*W] or [C, H*W]
            means[s].append(x.mean(dim=1).numpy())
            stds[s].append(x.std(dim=1).numpy())
    where = f"{{}} statistics over the tiles of {type(dataset).__name__}"
    empty = [s for s in sensors if not means[s]]
    if empty:
        s = empty[0]
        raise UserError(
            f"{where.format(s)}: no tile has a valid date of {s} (every {s}_mask false), expected at least one; "
            f"give tiles with valid {s} dates, or leave {s} out of the sensors"
        )
    stats = {s: {"mean": np.mean(means[s], axis=0).tolist(), "std": np.mean(stds[s], axis=0).tolist()} for s in sensors}
    for s, v in stats.items():
        problem = _band_problem(v["mean"], v["std"])
        if problem:
            raise UserError(
                f"{where.format(s)} ({len(means[s])}): expected a std > 0 per band, {problem} (a band constant over "
                "every tile, NaN values, or tiles of one pixel); normalise with data.datasets[i].norm: pixels (the "
                f"std floored at 1e-6) or official (its NORM_{s}_patch.json), or give tiles whose values vary"
            )
    if write_to is not None:
        for s, v in stats.items():
            write_text_atomic(Path(write_to) / f"NORM_{s}_patch.json", json.dumps(v, indent=4))
    return NormStats.from_dict(stats)
