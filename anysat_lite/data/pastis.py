"""Reader for PASTIS-HD on its official on-disk layout, as the AnySat code reads it.

Layout under ``root`` (the folder the official configs call ``data_dir/PASTIS-R/``)::

    metadata.geojson        one feature per patch: ID_PATCH, Fold (1..5), dates-S2, dates-S1A, ...
                            ({"0": 20180924, "1": 20181001, ...}, or that object as a JSON string)
    DATA_S2/S2_<id>.npy     [T, 10, 128, 128] Sentinel-2 (B2 B3 B4 B5 B6 B7 B8 B8A B11 B12)
    DATA_S1A/S1A_<id>.npy   [T, 3, 128, 128] Sentinel-1 ascending (VV, VH, VV/VH)
    DATA_SPOT/PASTIS_SPOT6_RVB_1M00_2019/SPOT6_RVB_1M00_2019_<id>.tif   [3, 1280, 1280] SPOT 6 at 1 m
    ANNOTATIONS/TARGET_<id>.npy   [3, 128, 128]; channel 0 holds the semantic classes 0..19
    NORM_<sensor>_patch.json      (optional) official statistics, one entry per fold

Splits are the official folds: train = folds 1, 2, 3; val = fold 4; test = fold 5 (GeoPlex
and the PASTIS configs), patches in the order of ``metadata.geojson`` within each fold, folds
in that order.  An item (no batch axis), as the official ``PASTIS.__getitem__`` returns it for
the GeoPlex modalities ``spot``, ``s2``, ``s1`` (no crop; ``nb_split = 1``):

* ``spot [3, 1280, 1280]`` float32 (R, G, B at 1 m).
* ``s2 [T, 10, 128, 128]`` float32 and ``s2_dates [T]`` int64; ``s1 [T, 3, 128, 128]`` float32
  (from ``DATA_S1A``) and ``s1_dates [T]``.  **Dates are days since 2018-09-01** (the official
  ``reference_date``), taken from ``dates-S2`` / ``dates-S1A`` in the order of the metadata
  entries: 0 on 1 September 2018, above 365 for the acquisitions of autumn 2019 that end the
  series.  They are not days of the year: this is what the released AnySat weights received for
  PASTIS, and the L-TAE's sinusoidal date code is defined for any value.
* ``multilabel [18]`` float32: the official classification target, the crop classes 1..18
  present anywhere in the patch (background 0 and void 19 removed).
* ``segmentation [128, 128]`` int64: channel 0 of the target, classes 0..18 (background and the
  18 crops), the void class 19 mapped to -1 (the official loss gives class 19 zero weight and the
  official IoU drops the last class, which is the same as ignoring it).

Date cap: the official train split keeps ``temporal_dropout = 20`` random dates of each series
(every date on val and test); ``max_dates="official"`` reproduces that, an integer caps every
split, ``None`` keeps all dates.  Kept dates stay in chronological order.  Randomness is a pure
function of ``(seed, epoch, index)``.  Values are raw; standardise with :func:`official_norm_stats`.
"""

from __future__ import annotations

import datetime as dt
import json
import numbers
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
import torch
from torch.utils.data import Dataset

from ..errors import MissingFileError, UserError
from .normalization import NormStats, per_tile_norm_stats, read_norm_files
from .readers import check_option, check_root, check_sensors, check_split, choose_dates, item_rng, read_json

__all__ = ["PastisHDDataset", "CLASSES", "days_since", "official_norm_stats", "compute_norm_stats"]

CLASSES = (
    "Background",
    "Meadow",
    "Soft winter wheat",
    "Corn",
    "Winter barley",
    "Winter rapeseed",
    "Spring barley",
    "Sunflower",
    "Grapevine",
    "Beet",
    "Winter triticale",
    "Winter durum wheat",
    "Fruits, vegetables, flowers",
    "Potatoes",
    "Leguminous fodder",
    "Soybeans",
    "Orchard",
    "Mixed cereal",
    "Sorghum",
)
VOID = 19  # "Void label" in the PASTIS targets
REFERENCE_DATE = dt.date(2018, 9, 1)


def days_since(dates, reference: dt.date = REFERENCE_DATE) -> np.ndarray:
    """``YYYYMMDD`` values (int or str) -> days since ``reference`` ``[T]`` int64 (negative before it)."""
    out = []
    for d in dates:
        s = str(d)
        try:
            out.append((dt.date(int(s[:4]), int(s[4:6]), int(s[6:8])) - reference).days)
        except ValueError:
            raise ValueError(f"PASTIS date {d!r}: expected YYYYMMDD (e.g. 20180924)") from None
    return np.asarray(out, dtype=np.int64)


class PastisHDDataset(Dataset):
    """PASTIS-HD patches of one split (layout, item and conventions in the module docstring).

    Args:
        root: the PASTIS-HD folder (holding ``metadata.geojson``).
        split: ``"train"`` (folds 1-3), ``"val"`` (fold 4) or ``"test"`` (fold 5).
        sensors: subset of ``("spot", "s2", "s1")`` (default all three, the GeoPlex modalities).
        max_dates: ``"official"`` (20 random dates per series on the train split, all on val/test),
            an integer (cap on every split) or ``None`` (all dates).
        seed: seed of the date subsets (with the epoch and the index).
        folds: override the folds of ``split`` (e.g. ``(1, 2, 3, 4, 5)``).
    """

    name: str = "pastis-hd"
    sensors: tuple[str, ...] = ("spot", "s2", "s1")
    classes: tuple[str, ...] = CLASSES
    multilabel_classes: tuple[str, ...] = CLASSES[1:]
    tile_m: float = 1280.0  # the instance's value is read from its first patch (the fixtures are smaller)
    tasks: tuple[str, ...] = ("multilabel", "segmentation")

    metadata_file = "metadata.geojson"
    folds_of = {"train": (1, 2, 3), "val": (4,), "test": (5,)}
    official_max_dates = 20  # GeoPlex and configs/dataset/Pastis.yaml: temporal_dropout: 20 on the train split
    # sensor -> (folder, file prefix, metadata key of its dates)
    series_files = {"s2": ("DATA_S2", "S2", "dates-S2"), "s1": ("DATA_S1A", "S1A", "dates-S1A")}
    spot_file = "DATA_SPOT/PASTIS_SPOT6_RVB_1M00_2019/SPOT6_RVB_1M00_2019_{}.tif"

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        sensors: Sequence[str] | None = None,
        max_dates: int | str | None = "official",
        seed: int = 0,
        folds: Sequence[int] | None = None,
    ):
        self.root = check_root("PASTIS-HD", root)
        self.split = check_split(type(self), split)
        self.sensors = check_sensors(type(self), sensors)
        if max_dates == "official":
            max_dates = self.official_max_dates if split == "train" else None
        if max_dates is not None and (isinstance(max_dates, (str, bool)) or int(max_dates) < 1):
            raise ValueError(
                f"PastisHDDataset: max_dates must be 'official', a positive integer or None, got {max_dates!r}"
            )
        self.max_dates, self.seed, self.epoch = max_dates, seed, 0
        every = sorted({f for fs in self.folds_of.values() for f in fs})
        official = "; ".join(f"{k} {', '.join(map(str, v))}" for k, v in self.folds_of.items())
        check_option(
            type(self),
            "folds",
            folds,
            lambda v: v is None or (len(v) > 0 and all(isinstance(f, numbers.Integral) and f in every for f in v)),
            f"fold numbers among {every} (official: {official})",
        )
        self.folds = tuple(folds) if folds is not None else self.folds_of[split]
        meta = self.root / self.metadata_file
        if not meta.is_file():
            raise MissingFileError(
                f"PASTIS-HD: {meta} not found; expected the official PASTIS-HD folder "
                "(metadata.geojson, DATA_S2/, DATA_S1A/, DATA_SPOT/, ANNOTATIONS/) as root"
            )
        doc = read_json(meta, "the PASTIS-HD patches as a GeoJSON FeatureCollection")
        features = doc.get("features")
        if not isinstance(features, list):
            got = f"'features' of type {type(features).__name__}" if "features" in doc else f"the keys {list(doc)}"
            raise UserError(
                f"PASTIS-HD: {meta}: expected a GeoJSON FeatureCollection with a 'features' list, got {got}; "
                "re-download or restore the file"
            )
        props = [f["properties"] for f in features]
        for key in ("ID_PATCH", "Fold"):
            if props and key not in props[0]:
                raise KeyError(f"PASTIS-HD: {meta} features have no {key!r} property (found: {', '.join(props[0])})")
        rows = [p for f in self.folds for p in props if int(p["Fold"]) == f]
        if not rows:
            have = sorted({int(p["Fold"]) for p in props})
            raise UserError(
                f"PASTIS-HD: {meta}: no patch of fold(s) {list(self.folds)} ({split}), expected some; the file has "
                f"folds {have}: choose among them (options.folds), or restore the file"
            )
        self.names = [str(p["ID_PATCH"]) for p in rows]
        self.dates: dict[str, list[np.ndarray]] = {}
        for s in self.sensors:
            if s in self.series_files:
                key = self.series_files[s][2]
                self.dates[s] = [days_since(self._date_values(p, key, meta)) for p in rows]
        for s in self.sensors:
            folder = self.root / (Path(self.spot_file).parts[0] if s == "spot" else self.series_files[s][0])
            if not folder.is_dir():
                raise MissingFileError(f"PASTIS-HD: folder {folder} not found; the official reader reads {s!r} there")
        self.tile_m = self._side_m(self.sensors[0], self.names[0])

    def _side_m(self, sensor: str, pid: str) -> float:
        """Width in metres of one patch (1280 m in PASTIS-HD), from the header of one of its files."""
        if sensor == "spot":
            with rasterio.open(self._path(self.spot_file.format(pid))) as src:
                return float(src.width * abs(src.transform.a))
        folder, prefix, _ = self.series_files[sensor]
        return 10.0 * np.load(self._path(f"{folder}/{prefix}_{pid}.npy"), mmap_mode="r").shape[-1]

    @staticmethod
    def _date_values(props: dict, key: str, meta: Path) -> list:
        if key not in props:
            raise KeyError(f"PASTIS-HD: patch {props['ID_PATCH']} of {meta} has no {key!r} property")
        d = props[key]
        if isinstance(d, str):
            try:
                d = json.loads(d)
            except json.JSONDecodeError as e:
                raise UserError(
                    f"PASTIS-HD: patch {props['ID_PATCH']} of {meta}: {key!r} is not valid JSON ({e.msg}); "
                    'expected {"0": YYYYMMDD, ...}; re-download or restore the file'
                ) from None
        return list(d.values())  # the order of the metadata entries, as the official reader takes it

    def __len__(self) -> int:
        return len(self.names)

    def set_epoch(self, epoch: int) -> None:
        """Draw new date subsets (they are a function of ``(seed, epoch, index)``)."""
        self.epoch = int(epoch)

    def _path(self, rel: str) -> Path:
        path = self.root / rel
        if not path.is_file():
            raise MissingFileError(f"PASTIS-HD: {path} not found (listed in {self.metadata_file})")
        return path

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        pid, rng = self.names[i], item_rng(self.seed, self.epoch, i)
        out: dict[str, torch.Tensor] = {}
        for s in self.sensors:
            if s == "spot":
                with rasterio.open(self._path(self.spot_file.format(pid))) as src:
                    out[s] = torch.from_numpy(src.read().astype(np.float32))
                continue
            folder, prefix, _ = self.series_files[s]
            x = np.load(self._path(f"{folder}/{prefix}_{pid}.npy"), mmap_mode="r")
            dates = self.dates[s][i]
            if len(x) != len(dates):
                raise ValueError(
                    f"PASTIS-HD: {folder}/{prefix}_{pid}.npy has {len(x)} dates, {self.metadata_file} "
                    f"lists {len(dates)}; expected one date per image"
                )
            keep = choose_dates(len(x), rng, self.max_dates)
            out[s] = torch.from_numpy(np.asarray(x[keep], dtype=np.float32))
            out[f"{s}_dates"] = torch.from_numpy(dates[keep])
        target = np.load(self._path(f"ANNOTATIONS/TARGET_{pid}.npy"))[0].astype(np.int64)
        present = np.unique(target)
        present = present[(present >= 1) & (present < VOID)]
        multilabel = np.zeros(len(self.multilabel_classes), dtype=np.float32)
        multilabel[present - 1] = 1.0
        out["multilabel"] = torch.from_numpy(multilabel)
        out["segmentation"] = torch.from_numpy(np.where(target == VOID, -1, target))
        return out


def official_norm_stats(
    root: str | Path, sensors: Sequence[str] | None = None, folds: Sequence[int] = (1, 2, 3)
) -> NormStats:
    """The official PASTIS statistics: ``NORM_<sensor>_patch.json`` under ``root`` hold ``{"Fold_k": {"mean": [C],
    "std": [C]}}``; the official reader averages the entries of the folds it reads (so its val split, fold 4,
    is standardised with fold 4's statistics: pass ``folds=dataset.folds`` to do the same).
    """
    return read_norm_files(root, PastisHDDataset.sensors if sensors is None else sensors, folds=folds)


def compute_norm_stats(
    root: str | Path, sensors: Sequence[str] | None = None, folds: Sequence[int] = (1, 2, 3)
) -> NormStats:
    """Statistics computed the official way (per-tile means of per-band means and stds) over ``folds``,
    with every date.  (The official ``compute_norm_vals`` means this; as written it loops over the
    columns of its metadata table instead of its patches, and writes the same values for every fold.)"""
    return per_tile_norm_stats(PastisHDDataset(root, "train", sensors=sensors, max_dates=None, folds=folds))
