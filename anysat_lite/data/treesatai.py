"""TreeSatAI-TS: the official-layout dataset reader and a per-tile reader of loose files.

**The official layout** (the folder the official configs call ``data_dir/TreeSat/``), read by
:class:`TreeSatAITSDataset` exactly as the official ``TreeSAT`` dataset class reads it::

    train_filenames.lst, val_filenames.lst, test_filenames.lst   one tile file name per line ("<stem>.tif")
    labels/TreeSatBA_v9_60m_multi_labels.json                    {"<stem>.tif": [["Abies", 0.71], ...]}
    aerial/<stem>.tif          0.2 m colour-infrared aerial, 304 x 304 px, bands NIR G B R
    sentinel/<stem>.h5         sen-2-data [T, 10, 6, 6] + sen-2-products, sen-1-asc-products, ...
    s1-asc/<stem>.pth          a torch tensor [T, 3, 6, 6] (VV, VH, VV/VH) of the ascending S1 series
    NORM_<sensor>_patch.json   (optional) the official normalisation statistics
    s1/60m/, s2/60m/, ...      other TreeSatAI folders, never read

An item (no batch axis), as the official ``TreeSAT.__getitem__`` + transform returns it for the
GeoPlex modalities ``aerial``, ``s2``, ``s1-asc``:

* ``aerial [4, 300, 300]`` float32: the 304 px tile cropped to 300 x 300 px (60 m) at a random
  offset (the official ``RandomCrop(300)`` of both its train and test transforms); ``crop="center"``
  takes pixels ``2:302`` instead.
* ``s2 [T, 10, 6, 6]`` float32 (bands B2 B3 B4 B5 B6 B7 B8 B8A B11 B12) and ``s2_dates [T]`` int64;
  ``s1-asc [T, 2, 6, 6]`` float32 (the first two channels, VV and VH, of ``s1-asc/<stem>.pth``)
  and ``s1-asc_dates [T]``.  Dates are the day of the year, 1..366 (``tm_yday``; 1 January = 1),
  of the ``YYYYMMDD`` at the start of field 2 (S2) or field 4 (S1) of each product name split on
  ``_``: the values the released AnySat weights received for TreeSatAI-TS.  (The official README
  says 1 January = 0; its code, used here, gives 1.)  Every date is kept (no ``_mask``): the
  official reader never reads ``sen-2-masks``.
* ``multilabel [15]`` float32: the genera whose area share in the label file is above 0.07
  (strictly, the official ``filter_labels_by_threshold``); tiles with no such genus are left out
  of the split, as the official reader does.  ``label`` int64: the genus with the largest share
  (not used by the official code; for single-label probes).

Values are raw; standardise them with :func:`official_norm_stats`.

**Loose files**: :class:`TreeSatAITS` reads tiles given as ``<stem>.tif`` + ``<stem>.h5`` in one
folder (like ``data/treesatai_ts_sample``) or in ``aerial/`` + ``sentinel/`` sub-folders, with a
genus label parsed from the tile name; it is the reader of the notebooks and the demo.
"""

from __future__ import annotations

import datetime as dt
import numbers
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import rasterio
import torch
from torch.utils.data import Dataset

from ..errors import MissingFileError, UnknownNameError, UserError, did_you_mean
from .io import date_from_name
from .normalization import NormStats, per_tile_norm_stats, read_norm_files
from .readers import (
    check_option,
    check_root,
    check_sensors,
    check_split,
    check_temporal_dropout,
    choose_dates,
    item_rng,
    read_json,
    read_text,
)

__all__ = [
    "TreeSatAITSDataset",
    "TreeSatAITS",
    "CLASSES",
    "read_products",
    "products_to_doy",
    "official_norm_stats",
    "compute_norm_stats",
]

CLASSES = (
    "Abies",
    "Acer",
    "Alnus",
    "Betula",
    "Cleared",
    "Fagus",
    "Fraxinus",
    "Larix",
    "Picea",
    "Pinus",
    "Populus",
    "Prunus",
    "Pseudotsuga",
    "Quercus",
    "Tilia",
)
_SERIES = {"s2": "sen-2", "s1-asc": "sen-1-asc"}  # registered sensor -> prefix of its .h5 datasets


def products_to_doy(products, field: int) -> np.ndarray:
    """Product names -> day-of-year ``[T]`` (1..366) as the official reader parses them: the first
    8 characters of field ``field`` of the name split on ``_`` are ``YYYYMMDD`` (S2: field 2, S1: field 4)."""
    out = []
    for p in products:
        name = p.decode() if isinstance(p, bytes) else str(p)
        parts = name.split("_")
        try:
            out.append(dt.datetime.strptime(parts[field][:8], "%Y%m%d").timetuple().tm_yday)
        except (IndexError, ValueError):
            raise ValueError(
                f"product name {name!r}: expected YYYYMMDD at the start of field {field} "
                "(split on '_'), as in 'S2A_MSIL2A_20200102T...' or 'S1A_IW_GRDH_1SDV_20200103T...'"
            ) from None
    return np.asarray(out, dtype=np.int64)


def read_products(names) -> np.ndarray:
    """Product names (bytes or str) -> day-of-year ``[T]`` (1-based, ``tm_yday``) of their first ``YYYYMMDD``."""
    out = []
    for n in names:
        n = n.decode() if isinstance(n, bytes) else str(n)
        out.append(date_from_name(n).timetuple().tm_yday)
    return np.asarray(out, dtype=np.int64)


class TreeSatAITSDataset(Dataset):
    """TreeSatAI-TS tiles of one official split (layout and item in the module docstring).

    Args:
        root: the TreeSatAI-TS folder (holding ``train_filenames.lst``).
        split: ``"train"``, ``"val"`` or ``"test"`` (the official lists).
        sensors: subset of ``("aerial", "s2", "s1-asc")`` (default all three, the GeoPlex modalities).
        max_dates: cap on the dates of each series (a random subset); ``None`` = all (official).
        seed: seed of the random crops and date subsets (with the epoch and the index, see
            :func:`~anysat_lite.data.readers.item_rng`).
        crop: ``"random"`` (official, every split) or ``"center"`` (pixels 2:302).
        threshold: area share a genus must exceed to be a label (official 0.07).
        temporal_dropout: official fraction of dates dropped on the train split (0 in all official configs).
        s1_from_h5: read VV, VH from ``sen-1-asc-data`` of the ``.h5`` file instead of ``s1-asc/<stem>.pth``
            (the same values, for copies without the ``s1-asc/`` folder).
    """

    name: str = "treesatai-ts"
    sensors: tuple[str, ...] = ("aerial", "s2", "s1-asc")
    classes: tuple[str, ...] = CLASSES
    tile_m: float = 60.0
    tasks: tuple[str, ...] = ("multilabel", "label")

    labels_file = "labels/TreeSatBA_v9_60m_multi_labels.json"
    folders = {"aerial": "aerial", "sentinel": "sentinel", "s1-asc": "s1-asc"}
    aerial_px, crop_px = 304, 300
    s2_field, s1_field = 2, 4  # field of the product name holding the date

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        sensors: Sequence[str] | None = None,
        max_dates: int | None = None,
        seed: int = 0,
        crop: str = "random",
        threshold: float = 0.07,
        temporal_dropout: float = 0.0,
        s1_from_h5: bool = False,
    ):
        self.root = check_root("TreeSatAI-TS", root)
        self.split = check_split(type(self), split)
        self.sensors = check_sensors(type(self), sensors)
        check_option(type(self), "crop", crop, lambda v: v in ("random", "center"), "random or center")
        check_option(
            type(self), "threshold", threshold, lambda v: 0 <= v < 1, "an area share in [0, 1) (official 0.07)"
        )
        check_temporal_dropout(type(self), temporal_dropout)
        self.max_dates, self.seed, self.epoch, self.crop = max_dates, seed, 0, crop
        self.temporal_dropout, self.s1_from_h5 = temporal_dropout, s1_from_h5
        lst = self.root / f"{split}_filenames.lst"
        if not lst.is_file():
            raise MissingFileError(
                f"TreeSatAI-TS: {lst} not found; expected the official TreeSatAI-TS folder "
                "(train/val/test_filenames.lst, labels/, aerial/, sentinel/, s1-asc/) as root"
            )
        labels_path = self.root / self.labels_file
        if not labels_path.is_file():
            raise MissingFileError(
                f"TreeSatAI-TS: {labels_path} not found; expected the official multi-label "
                "file of TreeSatAI under labels/"
            )
        needed = ["sentinel"] + [s for s in ("aerial",) if s in self.sensors]
        needed += ["s1-asc"] if "s1-asc" in self.sensors and not s1_from_h5 else []
        for key in needed:
            if not (self.root / self.folders[key]).is_dir():
                hint = " (or pass s1_from_h5=True)" if key == "s1-asc" else ""
                raise MissingFileError(
                    f"TreeSatAI-TS: folder {self.root / self.folders[key]} not found; the official "
                    f"reader reads {self.folders[key]}/<tile>{hint}"
                )
        listed = [ln.strip() for ln in read_text(lst, "the tile names of the split, one a line").splitlines()]
        listed = [name for name in listed if name]
        shares = read_json(labels_path, 'the genus shares of each tile {"<tile>.tif": [["Abies", 0.71], ...], ...}')
        self.names: list[str] = []
        multilabels, labels = [], []
        for name in listed:
            if name not in shares:
                raise KeyError(f"TreeSatAI-TS: {name} (listed in {lst.name}) has no entry in {labels_path}")
            y = np.zeros(len(CLASSES), dtype=np.float32)
            best, best_share = None, -1.0
            for genus, share in shares[name]:
                if genus not in CLASSES:
                    raise ValueError(
                        f"TreeSatAI-TS: {name}: genus {genus!r} in {labels_path.name} is not one of {CLASSES}"
                    )
                if share > threshold:
                    y[CLASSES.index(genus)] = 1.0
                    if share > best_share:
                        best, best_share = genus, share
            if best is None:  # official: a tile without a genus above the threshold is left out
                continue
            self.names.append(name)
            multilabels.append(y)
            labels.append(CLASSES.index(best))
        if not self.names:
            raise ValueError(
                f"TreeSatAI-TS: no tile of {lst} has a genus share above {threshold} in {labels_path.name}"
            )
        self.multilabels = np.stack(multilabels)
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.names)

    def set_epoch(self, epoch: int) -> None:
        """Draw new random crops / date subsets (they are a function of ``(seed, epoch, index)``)."""
        self.epoch = int(epoch)

    def _file(self, folder: str, name: str, suffix: str) -> Path:
        path = self.root / self.folders[folder] / (Path(name).stem + suffix)
        if not path.is_file():
            raise MissingFileError(f"TreeSatAI-TS: {path} not found (tile {name} of {self.split}_filenames.lst)")
        return path

    def _keep(self, n: int, rng: np.random.Generator) -> np.ndarray:
        keep_fraction = 1 - self.temporal_dropout if self.split == "train" and self.temporal_dropout else None
        return choose_dates(n, rng, self.max_dates, keep_fraction)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        name, rng = self.names[i], item_rng(self.seed, self.epoch, i)
        out: dict[str, torch.Tensor] = {}
        if "aerial" in self.sensors:
            with rasterio.open(self._file("aerial", name, ".tif")) as src:
                img = src.read()
            H, W = img.shape[1:]
            c = self.crop_px
            if H < c or W < c:
                raise ValueError(
                    f"TreeSatAI-TS: aerial/{name} is {H} x {W} px; expected at least {c} x {c} px "
                    f"({self.aerial_px} x {self.aerial_px} px in TreeSatAI)"
                )
            if self.crop == "random":
                top, left = int(rng.integers(0, H - c + 1)), int(rng.integers(0, W - c + 1))
            else:
                top, left = (H - c) // 2, (W - c) // 2
            out["aerial"] = torch.from_numpy(img[:, top : top + c, left : left + c].astype(np.float32))
        series = [s for s in ("s2", "s1-asc") if s in self.sensors]
        if series:
            with h5py.File(self._file("sentinel", name, ".h5"), "r") as f:
                if "s2" in series:
                    s2 = np.asarray(f["sen-2-data"], dtype=np.float32)
                    s2_dates = products_to_doy(f["sen-2-products"][()], self.s2_field)
                if "s1-asc" in series:
                    s1_dates = products_to_doy(f["sen-1-asc-products"][()], self.s1_field)
                    if self.s1_from_h5:
                        s1 = np.asarray(f["sen-1-asc-data"], dtype=np.float32)[:, :2]
            if "s1-asc" in series and not self.s1_from_h5:
                s1 = torch.load(self._file("s1-asc", name, ".pth"), map_location="cpu", weights_only=True)
                s1 = np.asarray(s1[:, :2], dtype=np.float32)
            for s in series:
                x, dates = (s2, s2_dates) if s == "s2" else (s1, s1_dates)
                if len(x) != len(dates):
                    raise ValueError(
                        f"TreeSatAI-TS: tile {name}: {s} has {len(x)} images but {len(dates)} product "
                        "dates; expected one date per image"
                    )
                keep = self._keep(len(x), rng)
                out[s] = torch.from_numpy(np.ascontiguousarray(x[keep]))
                out[f"{s}_dates"] = torch.from_numpy(dates[keep])
        out["multilabel"] = torch.from_numpy(self.multilabels[i].copy())
        out["label"] = torch.tensor(self.labels[i])
        return out


def official_norm_stats(root: str | Path, sensors: Sequence[str] | None = None) -> NormStats:
    """The official TreeSatAI-TS statistics under ``root``: ``NORM_<sensor>_patch.json``
    (``{"mean": [C], "std": [C]}``).

    The official reader standardises each sensor with them (``(x - mean) / std`` per band); when a
    file is missing it computes it on the split it reads first, as :func:`compute_norm_stats` does.
    """
    return read_norm_files(root, TreeSatAITSDataset.sensors if sensors is None else sensors)


def compute_norm_stats(root: str | Path, sensors: Sequence[str] | None = None, seed: int = 0) -> NormStats:
    """Statistics computed the official way on the train split (per-tile means of per-band means and stds)."""
    return per_tile_norm_stats(TreeSatAITSDataset(root, "train", sensors=sensors, seed=seed))


class TreeSatAITS:
    """TreeSatAI-TS tiles given as loose files: ``<stem>.tif`` + ``<stem>.h5`` in ``root`` itself or in
    ``root/aerial`` + ``root/sentinel`` (or ``root/sentinel-ts``), never in deeper folders (the
    ``s1/60m``, ``s2/60m`` single-date GeoTIFFs of TreeSatAI share the tile names).

    Args:
        root: folder holding the tiles.
        labels_json: optional TreeSatAI multi-label file.
        cloud_threshold: a S2 date is valid when its mean cloud and snow probabilities are below this (%).
    """

    CLASSES = CLASSES
    tif_folders = (".", "aerial")
    h5_folders = (".", "sentinel", "sentinel-ts")

    def __init__(self, root: str | Path, labels_json: str | Path | None = None, cloud_threshold: float = 50.0):
        self.root = check_root("TreeSatAI-TS", root)
        if not self.root.is_dir():
            raise MissingFileError(
                f"TreeSatAI-TS: folder {self.root} not found; expected a folder of <tile>.tif + "
                "<tile>.h5 files (or aerial/ + sentinel/ sub-folders)"
            )
        tifs = {p.stem: p for d in self.tif_folders for p in sorted((self.root / d).glob("*.tif"))}
        h5s = {p.stem: p for d in self.h5_folders for p in sorted((self.root / d).glob("*.h5"))}
        self.names = sorted(set(tifs) & set(h5s))
        if not self.names:
            raise MissingFileError(
                f"no TreeSatAI-TS tile (<name>.tif + <name>.h5) in {self.root} or its "
                f"{', '.join(self.tif_folders[1:] + self.h5_folders[1:])} sub-folders"
            )
        self._tif, self._h5 = tifs, h5s
        self.cloud_threshold = cloud_threshold
        self.multilabels = (
            read_json(labels_json, 'the genus shares of each tile {"<tile>.tif": [["Abies", 0.71], ...], ...}')
            if labels_json
            else None
        )

    def __len__(self) -> int:
        return len(self.names)

    def label(self, name: str) -> int:
        genus = name.split("_")[0]
        if genus not in CLASSES:
            raise ValueError(f"{name}: genus {genus!r} is not a TreeSatAI class {CLASSES}")
        return CLASSES.index(genus)

    def multilabel(self, name: str) -> np.ndarray:
        y = np.zeros(len(CLASSES), dtype=bool)
        if self.multilabels is not None and f"{name}.tif" in self.multilabels:
            for genus, _share in self.multilabels[f"{name}.tif"]:
                y[CLASSES.index(genus)] = True
        else:
            y[self.label(name)] = True
        return y

    def _check_name(self, name) -> None:
        """Refuse a tile this reader does not hold (a :class:`UnknownNameError`, also a ``KeyError``)."""
        if isinstance(name, str) and name in self._tif:
            return
        some = ", ".join(map(repr, self.names[:3])) + (", ..." if len(self.names) > 3 else "")
        got = f"{name!r}" if isinstance(name, str) else f"{name!r} ({type(name).__name__})"
        raise UnknownNameError(
            f"TreeSatAI-TS: tile {got} not in {self.root}; {did_you_mean(name, self.names)}expected the name of one "
            f"of its {len(self.names)} tiles ({some}); pass a name from reader.names, e.g. reader.names[0]"
        )

    def read(self, name: str) -> dict:
        """All data of one tile as numpy arrays (no batch axis).

        Keys: ``aerial [4, 300, 300]`` float32 (crop 2:302 of the GeoTIFF), ``s2 [T, 10, 6, 6]``,
        ``s2_dates [T]`` (day-of-year), ``s2_cloud``/``s2_snow [T]`` (mean probability, %),
        ``s2_mask [T]`` (valid dates), ``s1-asc [T, 2, 6, 6]`` + dates,
        ``s1 [T, 3, 6, 6]`` (ascending VV, VH, VV/VH as the official demo) + dates,
        ``label`` (genus index), ``multilabel [15]``, ``gsd``/``crs``/``transform`` of the aerial.
        """
        self._check_name(name)
        out: dict = {}
        with rasterio.open(self._tif[name]) as src:
            img = src.read().astype(np.float32)
            if img.shape[1] < 302 or img.shape[2] < 302:
                raise ValueError(f"{self._tif[name]}: expected 304 x 304 px, got {img.shape[1]} x {img.shape[2]}")
            out["aerial"] = img[:, 2:302, 2:302]
            out["crs"], out["transform"], out["gsd"] = src.crs.to_wkt(), tuple(src.transform)[:6], abs(src.transform.a)
        with h5py.File(self._h5[name], "r") as f:
            for key, prefix in _SERIES.items():
                if f"{prefix}-data" not in f:
                    continue
                out[key] = np.asarray(f[f"{prefix}-data"], dtype=np.float32)
                out[f"{key}_dates"] = read_products(f[f"{prefix}-products"][()])
            if "sen-2-masks" in f:
                masks = np.asarray(f["sen-2-masks"], dtype=np.float32)
                out["s2_snow"] = masks[:, 0].mean(axis=(1, 2))
                out["s2_cloud"] = masks[:, 1].mean(axis=(1, 2))
                out["s2_mask"] = (out["s2_cloud"] < self.cloud_threshold) & (out["s2_snow"] < self.cloud_threshold)
        if "s1-asc" in out:
            asc = out["s1-asc"]
            out["s1"] = np.concatenate([asc, asc[:, :1] / np.maximum(asc[:, 1:2], 1e-6)], axis=1)
            out["s1_dates"] = out["s1-asc_dates"]
        out["label"] = self.label(name)
        out["multilabel"] = self.multilabel(name)
        return out

    def sample(
        self,
        name: str,
        sensors: Sequence[str] = ("aerial", "s2", "s1-asc"),
        max_dates: int | None = None,
        valid_only: bool = True,
    ) -> dict[str, torch.Tensor]:
        """A batch-of-one model sample with the given sensors (dates evenly sub-sampled to ``max_dates``).

        ``sensors``: a list, or one sensor's name (as the dataset readers take it); ``max_dates``: ``None`` (all
        dates) or a whole number >= 1.
        """
        if max_dates is not None and (
            isinstance(max_dates, bool) or not isinstance(max_dates, numbers.Integral) or max_dates < 1
        ):
            raise UserError(
                f"TreeSatAI-TS: max_dates={max_dates!r}: expected None (all dates) or a whole number >= 1; "
                "e.g. max_dates=24"
            )
        sensors = (sensors,) if isinstance(sensors, str) else tuple(sensors)
        raw = self.read(name)
        sample: dict[str, torch.Tensor] = {}
        for s in sensors:
            held = [k for k in ("aerial", "s2", "s1-asc", "s1") if k in raw]
            if s not in held:
                raise UnknownNameError(
                    f"{name}: sensor {s!r} not in this tile; {did_you_mean(s, held)}expected some of "
                    f"{', '.join(held)}; e.g. sensors=['aerial', 's2']"
                )
            x = raw[s]
            if s == "aerial":
                sample[s] = torch.from_numpy(x)[None]
                continue
            idx = np.arange(len(x))
            if s == "s2" and valid_only and raw["s2_mask"].any():
                idx = idx[raw["s2_mask"]]
            if max_dates is not None and len(idx) > max_dates:
                idx = idx[np.linspace(0, len(idx) - 1, max_dates).round().astype(int)]
            sample[s] = torch.from_numpy(x[idx])[None]
            sample[f"{s}_dates"] = torch.from_numpy(raw[f"{s}_dates"][idx])[None]
        return sample
