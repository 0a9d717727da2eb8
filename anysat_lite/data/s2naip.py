"""Reader for S2NAIP-Urban in the layout the official AnySat code reads.

Layout under ``root`` (the folder the official configs call ``data_dir/S2NAIP-urban/``)::

    <split>_dict.json            {"name": [...], "s2_dates": [[YYYYMMDD, ...], ...], "s1_dates": ..., "l8_dates": ...}
    naip/<name>.png              NAIP, 512 x 512 px at 1.25 m, 4 channels (R, G, B, NIR)
    sentinel2/<name>_8.tif       [4 T, 64, 64]   B2 B3 B4 B8 of each date at 10 m (date-major)
    sentinel2/<name>_16.tif      [6 T, 32, 32]   B5 B6 B7 B8A B11 B12 of each date at 20 m
    sentinel1/<name>.tif         [2 T, 64, 64]   VV VH of each date at 10 m
    landsat/<name>_8.tif         [T, 64, 64]     one band at 10 m (the panchromatic band)
    landsat/<name>_16.tif        [10 T, 32, 32]  the ten other Landsat-8 bands at 20 m, in file order
    openstreetmap/<name>.geojson OpenStreetMap features in NAIP pixel coordinates
    NORM_<sensor>_patch.json     (optional) official statistics

with ``<split>`` in ``train``, ``val``, ``test``: a 640 m tile.  An item, as the official
``S2NAIP.__getitem__`` returns it (values as float32):

* ``naip [4, 512, 512]``: the PNG channels.
* ``s2 [T, 10, 64, 64]``: both files cast to int16 (as the official code does), the 20 m bands
  resized to 64 x 64 px like ``torchvision.transforms.Resize((64, 64), antialias=True)`` on an int16
  tensor (bilinear, half-pixel centres, then rounded back to int16), concatenated and reordered to
  B2 B3 B4 B5 B6 B7 B8 B8A B11 B12 (the registry's ``s2`` bands).
* ``l8 [T, 11, 64, 64]``: the ``_8`` band first, then the ten resized ``_16`` bands, int16-cast as
  above.  (The registry names the ``l8`` bands ``B1..B11``; the official channel order is this one.)
* ``s1 [T, 3, 64, 64]``: VV, VH and ``clip(VV / (VH + 1e-10), -1e4, 1e4)``.
* ``<sensor>_dates [T]`` int64: day-of-year (``tm_yday``, 1..366) of the split dict's dates,
  what the released weights received.  No ``_mask`` keys: every date is a real acquisition.
* ``segmentation [512, 512]`` int64 (only with ``labels=True``; needs OpenCV): the OpenStreetMap
  features rasterised as the official code does (polygons filled, lines 2 px thick, points as
  radius-1 discs, later features over earlier ones) into 6 classes: 0 background, 1 buildings and
  structures, 2 transport, 3 industry and energy, 4 water, 5 other.  No void pixels.

Dates: all by default (GeoPlex pretraining).  ``temporal_dropout`` is the official train-split
dropout of the stand-alone S2NAIP config (0.5: keep ``int(T / 2)`` random dates per series);
``max_dates`` caps each series (random subset).  Kept dates stay in chronological order;
randomness is a function of ``(seed, epoch, index)``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from ..errors import MissingFileError
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

__all__ = ["S2NAIPUrbanDataset", "CLASSES", "OSM_CLASS", "official_norm_stats", "resize_int16", "rasterise_osm"]

CLASSES = ("background", "buildings", "transport", "industry and energy", "water", "other")
OSM_CLASS = {  # OpenStreetMap category -> class index (official mapping; unlisted categories -> 5, "other")
    **dict.fromkeys(("building", "flagpole", "lighthouse", "obelisk", "observatory"), 1),
    **dict.fromkeys(
        ("aerialway_pylon", "airport", "gas_station", "helipad", "parking", "road", "runway", "taxiway"), 2
    ),
    **dict.fromkeys(
        (
            "chimney",
            "petroleum_well",
            "power_plant",
            "power_substation",
            "power_tower",
            "satellite_dish",
            "silo",
            "storage_tank",
            "wind_turbine",
            "works",
        ),
        3,
    ),
    **dict.fromkeys(("river", "fountain"), 4),
    "leisure": 5,
}
S2_ORDER = (0, 1, 2, 4, 5, 6, 3, 7, 8, 9)  # [B2 B3 B4 B8 | B5 B6 B7 B8A B11 B12] -> B2..B7 B8 B8A B11 B12


def official_norm_stats(root: str | Path, sensors: Sequence[str] | None = None) -> NormStats:
    """The official S2NAIP-Urban statistics (``NORM_<sensor>_patch.json`` under ``root``; 3 bands for s1)."""
    return read_norm_files(root, S2NAIPUrbanDataset.sensors if sensors is None else sensors)


def resize_int16(x: np.ndarray, side: int) -> np.ndarray:
    """``[N, h, w]`` int16 -> ``[N, side, side]`` int16, as torchvision's ``Resize(antialias=True)``
    does on an integer tensor: bilinear with half-pixel centres in float32, rounded, cast back."""
    t = torch.from_numpy(np.ascontiguousarray(x)).float()[None]
    out = F.interpolate(t, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
    return torch.round(out[0]).to(torch.int16).numpy()


def rasterise_osm(geojson: dict, side: int = 512) -> np.ndarray:
    """OpenStreetMap features (pixel coordinates) -> ``[side, side]`` uint8 class map, as the official code.

    A feature the official code would stop on (a line, point or polygon without coordinates, or
    coordinates OpenCV cannot draw; it then prints the error and keeps the map drawn so far) raises a
    ``ValueError`` naming the feature instead.  Empty multi-geometries and other geometry types are
    skipped, as the official code skips them; a feature without geometry is skipped too (where the
    official code stops drawing).
    """
    try:
        import cv2
    except ImportError:
        raise ImportError(
            "S2NAIP-Urban labels are rasterised with OpenCV as in the official code; "
            "pip install opencv-python-headless, or read the dataset with labels=False"
        ) from None
    image = np.zeros((side, side), dtype=np.uint8)

    def points(coords):
        return np.clip(np.array(coords, dtype=np.int32), 0, side - 1)

    for n, feature in enumerate(geojson.get("features", [])):
        category = (feature.get("properties") or {}).get("category")
        if not category:
            continue
        value = OSM_CLASS.get(category, 5)
        geometry = feature.get("geometry") or {}
        kind, coords = geometry.get("type"), geometry.get("coordinates") or []
        if kind in ("LineString", "Point", "Polygon", "MultiPolygon") and not coords:
            raise ValueError(
                f"OSM feature {n} ({category}, {kind}) has no coordinates; expected a GeoJSON geometry in NAIP "
                "pixel coordinates (the official reader stops drawing the map at such a feature)"
            )
        try:
            _draw(cv2, image, kind, coords, value, points)
        except cv2.error as e:
            raise ValueError(f"OSM feature {n} ({category}, {kind}): OpenCV cannot draw it ({e})") from None
    return image


def _draw(cv2, image: np.ndarray, kind: str, coords, value: int, points) -> None:
    """One OSM geometry onto ``image``, with the official code's rules."""
    if kind in ("LineString", "MultiLineString"):
        for line in [coords] if kind == "LineString" else coords:
            cv2.polylines(image, [points(line)], isClosed=False, color=value, thickness=2)
    elif kind in ("Polygon", "MultiPolygon") and len(coords[0]) > 0:
        # every ring is filled, holes included (as the official code does)
        for ring in coords if kind == "Polygon" else [r for poly in coords for r in poly]:
            cv2.fillPoly(image, [points(ring)], color=value)
    elif kind in ("Point", "MultiPoint"):
        for p in [coords] if kind == "Point" else coords:
            cv2.circle(image, tuple(int(v) for v in points(p)), radius=1, color=value, thickness=-1)


class S2NAIPUrbanDataset(Dataset):
    """S2NAIP-Urban tiles of one split (see the module docstring for layout, item and conventions).

    Args:
        root: the S2NAIP-Urban folder (holding ``train_dict.json``...).
        split: ``"train"``, ``"val"`` or ``"test"``.
        sensors: subset of ``("naip", "l8", "s2", "s1")`` (default all, as GeoPlex).
        max_dates: cap on the number of dates of each series (random subset), ``None`` = all (official).
        seed: seed of the date subsets.
        temporal_dropout: official fraction of dates dropped on the train split (stand-alone config: 0.5).
        labels: add the ``segmentation`` target (needs OpenCV).
    """

    name: str = "s2naip-urban"
    sensors: tuple[str, ...] = ("naip", "l8", "s2", "s1")
    classes: tuple[str, ...] = CLASSES
    tile_m: float = 640.0
    tasks: tuple[str, ...] = ("segmentation",)

    naip_px, sat_px, low_px = 512, 64, 32

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        sensors: Sequence[str] | None = None,
        max_dates: int | None = None,
        seed: int = 0,
        temporal_dropout: float = 0.0,
        labels: bool = False,
    ):
        self.root = check_root("S2NAIP-Urban", root)
        self.split = check_split(type(self), split)
        self.sensors = check_sensors(type(self), sensors)
        self.max_dates, self.seed, self.epoch = max_dates, seed, 0
        check_temporal_dropout(type(self), temporal_dropout)
        self.temporal_dropout, self.with_labels = temporal_dropout, labels
        self.keep_fraction = 1 - temporal_dropout if split == "train" and temporal_dropout else None
        if labels:
            rasterise_osm({})  # fail now, not in a worker, when OpenCV is missing
        path = self.root / f"{split}_dict.json"
        if not path.is_file():
            raise MissingFileError(
                f"S2NAIP-Urban: {path} not found; expected the official S2NAIP-urban folder "
                f"({split}_dict.json, naip/, sentinel1/, sentinel2/, landsat/, openstreetmap/)"
            )
        table = read_json(path, 'the tiles of the split {"name": [...], "s2_dates": [[YYYYMMDD, ...], ...], ...}')
        needed = ["name"] + [f"{s}_dates" for s in self.sensors if s != "naip"]
        missing = [k for k in needed if k not in table]
        if missing:
            raise KeyError(f"S2NAIP-Urban: {path} has no {missing}; expected keys {needed} (got {list(table)})")
        self.names: list[str] = list(table["name"])
        self.date_strings = {s: table[f"{s}_dates"] for s in self.sensors if s != "naip"}  # parsed when read
        for s, d in self.date_strings.items():
            if len(d) != len(self.names):
                raise ValueError(f"S2NAIP-Urban: {path}: {len(d)} '{s}_dates' lists for {len(self.names)} names")

    def __len__(self) -> int:
        return len(self.names)

    def set_epoch(self, epoch: int) -> None:
        """Draw new date subsets (they are a function of ``(seed, epoch, index)``)."""
        self.epoch = int(epoch)

    @staticmethod
    def parse_dates(days: Sequence[str]) -> np.ndarray:
        """``["20190614", ...]`` -> day-of-year ``[T]`` int64."""
        return np.array([doy(dt.datetime.strptime(str(d), "%Y%m%d").date()) for d in days], dtype=np.int64)

    def _read(self, path: Path, bands_per_date: int, side: int, n_dates: int) -> np.ndarray:
        """A date-major raster ``[bands_per_date * T, side, side]``, checked against the dict's dates."""
        if not path.is_file():
            raise MissingFileError(f"S2NAIP-Urban: {path} not found (tile listed in {self.split}_dict.json)")
        with rasterio.open(path) as src:
            data = src.read()
        if data.shape != (bands_per_date * n_dates, side, side):
            raise ValueError(
                f"S2NAIP-Urban: {path} has shape {data.shape}, expected ({bands_per_date} x {n_dates} "
                f"dates, {side}, {side})"
            )
        return data

    def read_sensor(self, i: int, sensor: str) -> np.ndarray:
        """All dates of one sensor of tile ``i`` as the official code builds them (see the module docstring)."""
        name, n = self.names[i], len(self.date_strings[sensor][i]) if sensor != "naip" else 0
        hi, lo = self.sat_px, self.low_px
        if sensor == "naip":
            path = self.root / "naip" / f"{name}.png"
            if not path.is_file():
                raise MissingFileError(f"S2NAIP-Urban: {path} not found (tile listed in {self.split}_dict.json)")
            return np.asarray(Image.open(path)).transpose(2, 0, 1).astype(np.float32)
        if sensor == "s1":
            x = self._read(self.root / "sentinel1" / f"{name}.tif", 2, hi, n).astype(np.float32).reshape(n, 2, hi, hi)
            ratio = np.clip(x[:, :1] / (x[:, 1:] + 1e-10), -1e4, 1e4)
            return np.concatenate([x, ratio], axis=1)
        folder, n_hi, n_lo = {"s2": ("sentinel2", 4, 6), "l8": ("landsat", 1, 10)}[sensor]
        x_hi = self._read(self.root / folder / f"{name}_8.tif", n_hi, hi, n).astype(np.int16).reshape(n, n_hi, hi, hi)
        x_lo = self._read(self.root / folder / f"{name}_16.tif", n_lo, lo, n).astype(np.int16)
        x = np.concatenate([x_hi, resize_int16(x_lo, hi).reshape(n, n_lo, hi, hi)], axis=1)
        return (x[:, list(S2_ORDER)] if sensor == "s2" else x).astype(np.float32)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = item_rng(self.seed, self.epoch, i)
        out: dict[str, torch.Tensor] = {}
        for s in self.sensors:
            x = self.read_sensor(i, s)
            if s != "naip":
                dates = self.parse_dates(self.date_strings[s][i])
                keep = choose_dates(len(dates), rng, self.max_dates, self.keep_fraction)
                x = x[keep]
                out[f"{s}_dates"] = torch.from_numpy(dates[keep])
            out[s] = torch.from_numpy(np.ascontiguousarray(x))
        if self.with_labels:
            path = self.root / "openstreetmap" / f"{self.names[i]}.geojson"
            if not path.is_file():
                raise MissingFileError(
                    f"S2NAIP-Urban: labels {path} not found (tile listed in {self.split}_dict.json); expected "
                    "openstreetmap/<name>.geojson for every tile, or read the dataset with labels=False"
                )
            geojson = read_json(path, "the tile's OpenStreetMap features, a GeoJSON FeatureCollection in NAIP pixels")
            try:
                labels = rasterise_osm(geojson, self.naip_px)
            except (ValueError, TypeError, IndexError, AttributeError) as e:
                raise ValueError(f"S2NAIP-Urban: labels {path}: {e}") from None
            out["segmentation"] = torch.from_numpy(labels.astype(np.int64))
        return out
