"""Reader for FLAIR (#2) on its official on-disk layout, as the AnySat code reads it.

Layout under ``root`` (the folder the official configs call ``data_dir/FLAIR/``)::

    flair-2_centroids_sp_to_patch.json   {"IMG_000123.tif": [row, col], ...}  centroid of each aerial tile
                                         in its Sentinel-2 super-patch, in super-patch pixels
    splits.json                          {"train": [domain, ...], "val": [...], "test": [...]}
    flair_aerial_train/<domain>/<area>/.../IMG_<n>.tif      train + val tiles
    flair_sen_train/<domain>/<area>/.../*data.npy, *products.txt, *masks.npy
    flair_labels_train/<domain>/<area>/.../MSK_<n>.tif
    flair_2_aerial_test/ flair_2_sen_test/ flair_2_labels_test/   the same for the test domains
    NORM_aerial-flair_patch.json, NORM_s2_patch.json              (optional) official statistics

Each area (``<domain>/<area>``) has one Sentinel-2 super-patch shared by all its aerial tiles:
``*data.npy [T, 10, Hs, Ws]`` (bands B2 B3 B4 B5 B6 B7 B8 B8A B11 B12), ``*products.txt`` (one
product name per date; characters 11:19 are its ``YYYYMMDD``) and ``*masks.npy`` (cloud/snow
probabilities, which the official code lists but never reads; nor does this reader).

An item, as the official ``FLAIR.__getitem__`` + transform return it (``classif=False``, the
GeoPlex and semantic-segmentation setting):

* ``aerial-flair [5, 500, 500]`` float32: the 0.2 m tile (R, G, B, NIR, elevation; 512 x 512 px
  on disk) cropped to 500 x 500 px: a random crop for ``split="train"`` (official train transform
  and GeoPlex pretraining), the centre crop ``[6:506, 6:506]`` otherwise (official test transform
  of ``configs/dataset/FLAIR.yaml``; GeoPlex's validation takes a random 500 px crop there, this
  reader the centre, so that validation losses are comparable between runs: README, "Deviations");
  ``crop="none"`` keeps the 512 px (the official fine-tuning
  config ``FLAIR_AnySat_FT_SemSeg`` evaluates with the identity transform).
* ``s2 [T, 10, 10, 10]`` float32: the super-patch cropped to 10 x 10 px (100 m) around the tile's
  centroid, ``[X-5:X+5, Y-5:Y+5]`` (official ``crop_s2=True``).  Note that the aerial crop and the
  Sentinel-2 crop are not re-centred on each other (the official code does the same).
* ``s2_dates [T]`` int64: day-of-year (``tm_yday``, 1..366) of each product date; this is what the
  released AnySat weights received for FLAIR.  No ``s2_mask``: every date is a real acquisition.
* ``segmentation [500, 500]`` int64: the mask cropped like the aerial tile; FLAIR codes 1..12 become
  classes 0..11 and codes 13..19 are merged into class 12 ("other") as the official
  ``labels[labels > 13] = 13; labels - 1``.  A code 0 (absent from FLAIR) becomes void ``-1``.

All dates are kept by default (GeoPlex pretraining).  ``temporal_dropout`` reproduces the
official per-item date dropout of the stand-alone FLAIR configs (train split only: keep
``int(T * (1 - p))`` random dates); ``max_dates`` caps the number of dates (a random subset).
Kept dates stay in chronological order (the official code keeps a random order; the L-TAE
attention pooling over dates is invariant to it).  Randomness (dates, crops) is a pure function
of ``(seed, epoch, index)``: call :meth:`set_epoch` to draw new crops each epoch.

Values are raw (uint8 aerial, Sentinel-2 reflectance x 1e4); normalise with
:func:`official_norm_stats` (the official ``NORM_<sensor>_patch.json`` files) or
:func:`per_tile_norm_stats` (the official formula).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
import torch
from torch.utils.data import Dataset

from ..errors import MissingFileError
from .normalization import NormStats, read_norm_files
from .readers import (
    check_option,
    check_root,
    check_sensors,
    check_split,
    check_temporal_dropout,
    choose_dates,
    doy,
    item_rng,
    read_json,
    read_text,
)

__all__ = ["FLAIRDataset", "CLASSES", "official_norm_stats"]

CLASSES = (
    "building",
    "pervious surface",
    "impervious surface",
    "bare soil",
    "water",
    "coniferous",
    "deciduous",
    "brushwood",
    "vineyard",
    "herbaceous vegetation",
    "agricultural land",
    "plowed land",
    "other",
)


def _tile_id(path: Path) -> int:
    """``IMG_000123.tif`` / ``MSK_000123.tif`` -> 123 (the official sort key)."""
    return int(path.stem.split("_")[-1])


def official_norm_stats(root: str | Path, sensors: Sequence[str] | None = None) -> NormStats:
    """The official FLAIR statistics (``NORM_aerial-flair_patch.json``, ``NORM_s2_patch.json`` under ``root``)."""
    return read_norm_files(root, FLAIRDataset.sensors if sensors is None else sensors)


# --- the reader -----------------------------------------------------------------------------
class FLAIRDataset(Dataset):
    """FLAIR tiles of one split (see the module docstring for layout, item and conventions).

    Args:
        root: the FLAIR folder (holding ``splits.json``).
        split: ``"train"``, ``"val"`` (train folders, val domains) or ``"test"`` (``flair_2_*_test`` folders).
        sensors: subset of ``("aerial-flair", "s2")`` (default both).
        max_dates: cap on the number of Sentinel-2 dates (random subset), ``None`` = all (official).
        seed: seed of the random crops and date subsets.
        crop: ``"random"``, ``"center"`` or ``"none"`` for the 512 px aerial tile and its mask;
            default ``"random"`` on the train split, ``"center"`` otherwise.
        temporal_dropout: official fraction of dates dropped on the train split (stand-alone FLAIR configs: 0.7).
    """

    name: str = "flair"
    sensors: tuple[str, ...] = ("aerial-flair", "s2")
    classes: tuple[str, ...] = CLASSES
    tile_m: float = 100.0
    tasks: tuple[str, ...] = ("segmentation",)

    centroids_file = "flair-2_centroids_sp_to_patch.json"
    splits_file = "splits.json"
    folders = {
        "train": ("flair_aerial_train", "flair_sen_train", "flair_labels_train"),
        "test": ("flair_2_aerial_test", "flair_2_sen_test", "flair_2_labels_test"),
    }
    aerial_px, crop_px, s2_px = 512, 500, 10
    n_codes = 13  # FLAIR codes above 13 are merged into code 13 ("other")

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        sensors: Sequence[str] | None = None,
        max_dates: int | None = None,
        seed: int = 0,
        crop: str | None = None,
        temporal_dropout: float = 0.0,
    ):
        self.root = check_root("FLAIR", root)
        self.split = check_split(type(self), split)
        self.sensors = check_sensors(type(self), sensors)
        self.max_dates, self.seed, self.epoch = max_dates, seed, 0
        self.crop = crop or ("random" if split == "train" else "center")
        check_option(
            type(self), "crop", self.crop, lambda v: v in ("random", "center", "none"), "random, center or none"
        )
        check_temporal_dropout(type(self), temporal_dropout)
        self.temporal_dropout = temporal_dropout
        self.keep_fraction = 1 - temporal_dropout if split == "train" and temporal_dropout else None
        for f in (self.splits_file, self.centroids_file):
            if not (self.root / f).is_file():
                raise MissingFileError(
                    f"FLAIR: {self.root / f} not found; expected the official FLAIR-2 folder "
                    f"(splits.json, {self.centroids_file}, flair_aerial_train/...) as root"
                )
        domains = read_json(
            self.root / self.splits_file, 'the FLAIR-2 domains of each split {"train": [domain, ...], ...}'
        )
        if split not in domains:
            raise KeyError(f"FLAIR: {self.root / self.splits_file} has no {split!r} list (keys: {list(domains)})")
        centroids = read_json(
            self.root / self.centroids_file, 'the FLAIR-2 centroid of each aerial tile {"IMG_<n>.tif": [row, col], ...}'
        )
        aerial_dir, sen_dir, label_dir = (self.root / d for d in self.folders["test" if split == "test" else "train"])
        self.images: list[Path] = []
        self.masks: list[Path] = []
        self.sp_data: list[Path] = []
        self.sp_products: list[Path] = []
        self.centroids: list[tuple[int, int]] = []
        for domain in domains[split]:
            if not (aerial_dir / domain).is_dir():
                raise MissingFileError(
                    f"FLAIR: domain folder {aerial_dir / domain} not found (listed in "
                    f"{self.splits_file} for {split!r}); check the download is complete"
                )
            for area in sorted(p.name for p in (aerial_dir / domain).iterdir() if p.is_dir()):
                imgs = sorted((aerial_dir / domain / area).rglob("IMG*.tif"), key=_tile_id)
                msks = sorted((label_dir / domain / area).rglob("MSK*.tif"), key=_tile_id)
                data = sorted((sen_dir / domain / area).rglob("*data.npy"))
                prods = sorted((sen_dir / domain / area).rglob("*products.txt"))
                if len(data) != 1 or len(prods) != 1:
                    raise MissingFileError(
                        f"FLAIR: expected one *data.npy and one *products.txt under "
                        f"{sen_dir / domain / area}, found {len(data)} and {len(prods)}"
                    )
                if [_tile_id(p) for p in imgs] != [_tile_id(p) for p in msks]:
                    raise MissingFileError(
                        f"FLAIR: tiles of {aerial_dir / domain / area} and masks of "
                        f"{label_dir / domain / area} differ; "
                        "expected one MSK_<n>.tif per IMG_<n>.tif"
                    )
                for p in imgs:
                    if p.name not in centroids:
                        raise KeyError(f"FLAIR: {p.name} has no centroid in {self.root / self.centroids_file}")
                    self.centroids.append(tuple(int(v) for v in centroids[p.name]))
                self.images += imgs
                self.masks += msks
                self.sp_data += data * len(imgs)
                self.sp_products += prods * len(imgs)
        self.names = [p.stem for p in self.images]

    def __len__(self) -> int:
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        """Draw new random crops / date subsets (they are a function of ``(seed, epoch, index)``)."""
        self.epoch = int(epoch)

    @staticmethod
    def read_dates(products: Path) -> np.ndarray:
        """``*products.txt`` -> day-of-year ``[T]`` (characters 11:19 of each line are ``YYYYMMDD``)."""
        lines = [
            ln for ln in read_text(products, "the Sentinel-2 product names, one a line").splitlines() if ln.strip()
        ]
        return np.array([doy(dt.datetime.strptime(ln[11:19], "%Y%m%d").date()) for ln in lines], dtype=np.int64)

    def _window(self, rng: np.random.Generator) -> tuple[int, int, int]:
        """Top, left and side (px) of the aerial crop."""
        if self.crop == "none":
            return 0, 0, self.aerial_px
        if self.crop == "center":
            off = (self.aerial_px - self.crop_px) // 2
            return off, off, self.crop_px
        top, left = rng.integers(0, self.aerial_px - self.crop_px + 1, size=2)
        return int(top), int(left), self.crop_px

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = item_rng(self.seed, self.epoch, i)
        top, left, side = self._window(rng)
        out: dict[str, torch.Tensor] = {}
        if "aerial-flair" in self.sensors:
            with rasterio.open(self.images[i]) as src:
                img = src.read()
            if img.shape != (5, self.aerial_px, self.aerial_px):
                raise ValueError(f"FLAIR: {self.images[i]} has shape {img.shape}, expected (5, 512, 512)")
            out["aerial-flair"] = torch.from_numpy(img[:, top : top + side, left : left + side].astype(np.float32))
        if "s2" in self.sensors:
            x, y = self.centroids[i]
            h = self.s2_px // 2
            sp = np.load(self.sp_data[i], mmap_mode="r")
            if x - h < 0 or y - h < 0 or x + h > sp.shape[2] or y + h > sp.shape[3]:
                raise ValueError(
                    f"FLAIR: centroid {(x, y)} of {self.images[i].name} is within {h} px of the edge of "
                    f"{self.sp_data[i]} ({sp.shape[2]} x {sp.shape[3]} px); expected a 10 x 10 px window"
                )
            dates = self.read_dates(self.sp_products[i])
            if len(dates) != sp.shape[0]:
                raise ValueError(
                    f"FLAIR: {self.sp_products[i]} lists {len(dates)} dates, "
                    f"{self.sp_data[i]} has {sp.shape[0]}; expected one product name per date"
                )
            keep = choose_dates(len(dates), rng, self.max_dates, self.keep_fraction)
            out["s2"] = torch.from_numpy(np.asarray(sp[keep, :, x - h : x + h, y - h : y + h], dtype=np.float32))
            out["s2_dates"] = torch.from_numpy(dates[keep])
        with rasterio.open(self.masks[i]) as src:
            codes = src.read(1).astype(np.int64)[top : top + side, left : left + side]
        out["segmentation"] = torch.from_numpy(np.minimum(codes, self.n_codes) - 1)  # 0 -> -1 (void)
        return out
