"""Reader for PLANTED (Pazos-Outón et al., 2024) in the layout the official AnySat code reads.

Layout under ``root`` (the folder the official configs call ``data_dir/Planted/``)::

    <split>/labels2.json                       {"<id>": class index 0..39, ...}  (the split's items, in order)
    <split>/<id>/<id>_<sensor>.npz             arr_0 [T, H, W, C]   the time series
    <split>/<id>/<id>_<sensor>_mask.npz        arr_0 [T, H, W, 1 or C]   pixel validity (1 = valid)
    <split>/<id>/<id>_<sensor>_timestamp.npz   arr_0 [T]   acquisition times, ms since 1970-01-01 UTC
    NORM_<sensor>_patch.json                   (optional) official statistics

with ``<split>`` in ``train``, ``val``, ``test`` and ``<sensor>`` in ``s2`` (10 m, 12 x 12 px, 10 bands),
``s1`` (10 m, VV VH), ``l7`` (30 m, 4 x 4 px, 6 bands), ``alos`` (30 m, HH HV), ``modis`` (250 m,
one pixel, 7 bands): a 120 m tile.

An item, as the official ``Planted.__getitem__`` returns it (``density_sampling=False``, the
GeoPlex setting):

* ``<sensor> [T, C, H, W]`` float32: the array with its channel axis moved before the pixels;
  ``s1`` and ``alos`` get a third band, the ratio ``band0 / (band1 + 1e-10)`` clipped to
  ``[-1e4, 1e4]`` (registry bands ``VV, VH, VV/VH`` and ``HH, HV, HH/HV``).
* ``<sensor>_dates [T]`` int64: day-of-year (``tm_yday``, 1..366) of each timestamp, what the
  released weights received.  The official code converts the timestamps in the machine's local
  time zone; this reader uses UTC (the two agree on a UTC machine).
* ``label`` int64: the class index of ``labels2.json`` (the official code one-hot encodes it;
  the fine-tuning loss is a cross-entropy).

Pixel validity.  The official model fills the *normalised* values of invalid pixels with its
projector's ``pad_parameter`` (0 at initialisation), without masking the temporal attention, and
its pretraining loss ignores tokens without any valid pixel.  The sample contract has no
per-pixel mask, so by default invalid pixels keep their stored values.  Two options:

* ``fill_invalid=stats`` replaces invalid values by the band means of ``stats`` (a
  :class:`~anysat_lite.data.normalization.NormStats`, normally :func:`official_norm_stats`), so
  that after standardisation with the same statistics they are exactly 0, the official pad value
  at initialisation (the released ``pad_parameter`` may have moved from 0 in training);
* ``pixel_masks=True`` adds ``<sensor>_valid [T, 1 or C, H, W]`` bool to the item.  This key is
  not part of the sample contract: remove it before the model.

Dates: all by default (GeoPlex pretraining).  ``temporal_dropout`` is the official train-split
dropout of the stand-alone PLANTED configs (0.3: keep ``int(T * 0.7)`` random dates, but
``int(T * 0.9)`` for ALOS); ``max_dates`` caps each series (random subset).  Kept dates stay in
chronological order; randomness is a function of ``(seed, epoch, index)``.

The stand-alone official configs sample training items by class (``density_sampling=True``:
a class drawn with probability proportional to the square root of its frequency, then a random
item of it); :meth:`PlantedDataset.density_weights` gives the per-item weights of that scheme for a
``WeightedRandomSampler``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import MissingFileError, UserError
from .normalization import NormStats, read_norm_files
from .readers import (
    check_root,
    check_sensors,
    check_split,
    check_temporal_dropout,
    choose_dates,
    doy,
    item_rng,
    read_json,
)

__all__ = ["PlantedDataset", "CLASSES", "official_norm_stats", "doy_from_milliseconds"]

CLASSES = (
    "Elaeis guineensis",
    "Pinus taeda",
    "Pinus rigida",
    "Pinus koraiensis",
    "Pinus densiflora",
    "Abies sachalinensis",
    "Pinus elliottii",
    "Shorea robusta",
    "Castanea crenata",
    "Pseudotsuga menziesii",
    "Eucalyptus globulus",
    "Pinus radiata",
    "Robinia pseudoacacia",
    "Pinus thunbergii",
    "Pinus echinata",
    "Thea sinensis",
    "Betula pendula",
    "Hevea brasiliensis",
    "Picea glehnii",
    "Quercus acutissima",
    "Eucalyptus nitens",
    "Cocos nucifera",
    "Anacardium occidentale",
    "Zelkova serrata",
    "Acer pictum",
    "Prunus serrulata",
    "Prunus dulcis",
    "Picea jezoensis",
    "Quercus variabilis",
    "Fraxinus rhynchophylla",
    "Ginkgo biloba",
    "Pasania edulis",
    "Dendropanax morbiferus",
    "Machilus thunbergii",
    "Cryptomeria japonica",
    "Acacia melanoxylon",
    "Malus pumila",
    "Picea mariana",
    "Cornus controversa",
    "Theobroma cacao",
)


def doy_from_milliseconds(ms) -> np.ndarray:
    """Milliseconds since 1970-01-01 UTC -> day-of-year ``[T]`` (1..366) of the UTC date."""
    return np.array(
        [doy(dt.datetime.fromtimestamp(float(m) / 1000, tz=dt.timezone.utc)) for m in np.ravel(ms)], dtype=np.int64
    )


def official_norm_stats(root: str | Path, sensors: Sequence[str] | None = None) -> NormStats:
    """The official PLANTED statistics (``NORM_<sensor>_patch.json`` under ``root``; 3 bands for s1 and alos)."""
    return read_norm_files(root, PlantedDataset.sensors if sensors is None else sensors)


class PlantedDataset(Dataset):
    """PLANTED tiles of one split (see the module docstring for layout, item and conventions).

    Args:
        root: the PLANTED folder (holding ``train/``, ``val/``, ``test/``).
        split: ``"train"``, ``"val"`` or ``"test"``.
        sensors: subset of ``("s2", "s1", "l7", "alos", "modis")`` (default all, as GeoPlex).
        max_dates: cap on the number of dates of each series (random subset), ``None`` = all (official).
        seed: seed of the date subsets.
        temporal_dropout: official fraction of dates dropped on the train split (stand-alone configs: 0.3).
        fill_invalid: statistics whose band means replace invalid pixels (see the module docstring).
        pixel_masks: add ``<sensor>_valid`` pixel-validity masks to the items.
        allow_pickle: let ``np.load`` unpickle Python objects stored in the ``.npz`` files (the official
            reader does; loading a pickle can run code, so only for files you trust).  Off by default:
            PLANTED's arrays are numeric, and a file that holds objects is refused with this fix.
    """

    name: str = "planted"
    sensors: tuple[str, ...] = ("s2", "s1", "l7", "alos", "modis")
    classes: tuple[str, ...] = CLASSES
    tile_m: float = 120.0
    tasks: tuple[str, ...] = ("label",)

    labels_file = "labels2.json"
    ratio_sensors = ("s1", "alos")  # get a third band, band0 / band1
    alos_keep = 0.9  # official: ALOS keeps 90 % of its dates whenever temporal dropout is on

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        sensors: Sequence[str] | None = None,
        max_dates: int | None = None,
        seed: int = 0,
        temporal_dropout: float = 0.0,
        fill_invalid: NormStats | None = None,
        pixel_masks: bool = False,
        allow_pickle: bool = False,
    ):
        self.root = check_root("PLANTED", root)
        self.split = check_split(type(self), split)
        self.sensors = check_sensors(type(self), sensors)
        self.max_dates, self.seed, self.epoch = max_dates, seed, 0
        check_temporal_dropout(type(self), temporal_dropout)
        self.temporal_dropout = temporal_dropout
        if fill_invalid is not None:
            missing = [s for s in self.sensors if s not in fill_invalid.stats]
            if missing:
                raise KeyError(
                    f"PlantedDataset: fill_invalid has no statistics for {missing}; "
                    f"expected all of {self.sensors} (e.g. official_norm_stats(root))"
                )
        self.fill_invalid, self.pixel_masks, self.allow_pickle = fill_invalid, pixel_masks, allow_pickle
        self.folder = self.root / split
        labels = self.folder / self.labels_file
        if not labels.is_file():
            raise MissingFileError(
                f"PLANTED: {labels} not found; expected the official PLANTED folder with "
                f"train/, val/, test/ each holding {self.labels_file} and one folder per tile"
            )
        table = read_json(labels, 'the class index of each tile of the split {"<id>": 0..39, ...}')
        self.names = list(table)
        self.labels = np.array([int(v) for v in table.values()], dtype=np.int64)
        bad = self.labels[(self.labels < 0) | (self.labels >= len(CLASSES))]
        if len(bad):
            raise ValueError(f"PLANTED: {labels} holds class {bad[0]}, expected indices 0..{len(CLASSES) - 1}")

    def __len__(self) -> int:
        return len(self.names)

    def set_epoch(self, epoch: int) -> None:
        """Draw new date subsets (they are a function of ``(seed, epoch, index)``)."""
        self.epoch = int(epoch)

    def density_weights(self) -> np.ndarray:
        """Per-item sampling weights ``[N]`` of the official class-density sampling (summing to 1):
        ``P(item) = sqrt(f_c) / sum_c' sqrt(f_c') / n_c`` for an item of class ``c`` with ``n_c`` items
        and frequency ``f_c = n_c / N``."""
        counts = np.bincount(self.labels, minlength=len(CLASSES)).astype(np.float64)
        class_p = np.sqrt(counts / len(self.labels))
        class_p /= class_p.sum()
        return class_p[self.labels] / counts[self.labels]

    def _load(self, name: str, suffix: str) -> np.ndarray:
        path = self.folder / name / f"{name}_{suffix}.npz"
        if not path.is_file():
            raise MissingFileError(
                f"PLANTED: {path} not found; expected <id>_<sensor>.npz, _mask.npz and "
                f"_timestamp.npz for every sensor of tile {name}"
            )
        try:
            with np.load(path, allow_pickle=self.allow_pickle) as f:
                return f["arr_0"]
        except ValueError as e:
            if "allow_pickle" not in str(e):
                raise
            raise UserError(
                f"PLANTED: {path} holds Python objects, not a numeric array; loading it would unpickle them "
                "(which can run code): if you trust the file, pass options: {allow_pickle: true} in its "
                "data.datasets entry (probe --official: --allow-pickle)"
            ) from None

    def read_sensor(self, name: str, sensor: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All dates of one sensor: values ``[T, C, H, W]`` float32 (ratio band added), validity
        ``[T, 1 or C, H, W]`` bool and day-of-year ``[T]``."""
        x = self._load(name, sensor).transpose(0, 3, 1, 2)
        if not np.issubdtype(x.dtype, np.floating):
            x = x.astype(np.float32)  # the official torch code divides integers in float32
        if sensor in self.ratio_sensors:
            ratio = np.clip(x[:, :1] / (x[:, 1:2] + 1e-10), -1e4, 1e4)
            x = np.concatenate([x[:, :2], ratio], axis=1)
        valid = self._load(name, f"{sensor}_mask").transpose(0, 3, 1, 2).astype(bool)
        dates = doy_from_milliseconds(self._load(name, f"{sensor}_timestamp"))
        if (
            not (len(x) == len(valid) == len(dates))
            or valid.shape[1] not in (1, x.shape[1])
            or valid.shape[2:] != x.shape[2:]
        ):
            raise ValueError(
                f"PLANTED: tile {name}, {sensor}: data {x.shape}, mask {valid.shape} and {len(dates)} "
                f"timestamps disagree; expected [T, C, H, W], [T, 1 or C, H, W] and [T]"
            )
        return x.astype(np.float32), valid, dates

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = item_rng(self.seed, self.epoch, i)
        name = self.names[i]
        out: dict[str, torch.Tensor] = {}
        for s in self.sensors:
            x, valid, dates = self.read_sensor(name, s)
            keep_fraction = None
            if self.split == "train" and self.temporal_dropout > 0:
                keep_fraction = self.alos_keep if s == "alos" else 1 - self.temporal_dropout
            keep = choose_dates(len(dates), rng, self.max_dates, keep_fraction)
            x, valid = x[keep], valid[keep]
            if self.fill_invalid is not None:
                mean = np.asarray(self.fill_invalid.stats[s][0], dtype=np.float32)[None, :, None, None]
                x = np.where(valid, x, mean)
            out[s] = torch.from_numpy(np.ascontiguousarray(x))
            out[f"{s}_dates"] = torch.from_numpy(dates[keep])
            if self.pixel_masks:
                out[f"{s}_valid"] = torch.from_numpy(np.ascontiguousarray(valid))
        out["label"] = torch.tensor(self.labels[i])
        return out
