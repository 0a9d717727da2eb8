"""A user's own GeoTIFFs as a dataset, listed tile by tile in a manifest (CSV or YAML).

Each tile is a set of co-located rasters: one GeoTIFF per single-date sensor (``aerial``,
``spot``...) and one GeoTIFF per date for a time series (``s2``, ``s1-asc``...).  Sensor names
are those of :mod:`anysat_lite.sensors` (register your own with ``register_sensor``).

CSV manifest, one row per file (``date`` empty for single-date sensors or taken from the file
name, ``split``: train, val or test, default ``train``; ``label`` is optional)::

    tile,split,label,sensor,date,path
    t0,train,forest,aerial,,t0/aerial.tif
    t0,train,forest,s2,2020-03-01,t0/s2_a.tif
    t0,train,forest,s2,,t0/s2_20200615.tif

YAML manifest, one entry per tile (``classes`` optional: it fixes the label indices)::

    classes: [crop, forest]
    tiles:
      - name: t0
        split: train
        label: forest
        rasters:
          aerial: t0/aerial.tif
          s2: [{path: t0/s2_a.tif, date: 2020-03-01}, t0/s2_20200615.tif]

Relative paths are relative to the manifest.  An item is what
:func:`~anysat_lite.data.io.rasters_to_sample` makes of the tile's rasters (every sensor
resampled to its registered GSD over the common extent, cropped to ``extent_m`` or to a size all
sub-patches divide), without the batch axis: images ``[C, H, W]``, series ``[T, C, H, W]`` with
``<sensor>_dates [T]`` int64, day-of-year 1..366 (the TreeSatAI-TS convention of the released
weights), plus ``label`` (int64 index into :attr:`classes`) when the manifest has labels.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from torch.utils.data import Dataset

from ..errors import MissingFileError, UserError, yaml_problem
from ..sensors import SENSORS
from .contract import sensor_entries, split_key, validate_sample
from .io import date_from_name, rasters_to_sample, read_geotiff, stack_time_series
from .readers import SPLITS, check_split, choose_dates, item_rng, read_text

__all__ = ["RastersDataset", "RasterTile", "read_manifest"]

MANIFEST_NAMES = ("manifest.csv", "manifest.yaml", "manifest.yml")
CSV_COLUMNS = ("tile", "sensor", "path")
_FORMAT = "format in the docstring of anysat_lite.data.rasters"


@dataclass
class RasterTile:
    """One tile of a manifest: ``files[sensor] = [(path, date or None), ...]`` (series sorted by date)."""

    name: str
    split: str = "train"
    label: str | None = None
    files: dict[str, list[tuple[Path, dt.date | None]]] = field(default_factory=dict)


def _date(value, path: Path, where: str) -> dt.date:
    if isinstance(value, dt.date):
        return value
    if value in (None, ""):
        try:
            return date_from_name(path.name)
        except ValueError:
            raise UserError(
                f"{where}: no date for {path.name}; give one (YYYY-MM-DD) or put YYYYMMDD in the file name"
            ) from None
    try:
        return (
            dt.date.fromisoformat(str(value))
            if "-" in str(value)
            else dt.datetime.strptime(str(value), "%Y%m%d").date()
        )
    except ValueError:
        raise UserError(f"{where}: date {value!r} of {path.name} is not YYYY-MM-DD or YYYYMMDD") from None


def _add(tile: RasterTile, sensor: str, path, date, base: Path, where: str) -> None:
    if sensor not in SENSORS:
        raise KeyError(
            f"{where}: unknown sensor {sensor!r}; known: {', '.join(SENSORS)} "
            "(register new ones with anysat_lite.register_sensor)"
        )
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise UserError(
            f"{where}: raster path {path!r} ({type(path).__name__}), expected the path of a GeoTIFF "
            f"(text, relative to the manifest) or {{path: ..., date: ...}}; correct the entry ({_FORMAT})"
        )
    path = Path(path)
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise MissingFileError(
            f"{where}: raster {path} not found; correct the path (relative paths start from the manifest's folder)"
        )
    files = tile.files.setdefault(sensor, [])
    if SENSORS[sensor].is_series:
        files.append((path, _date(date, path, where)))
    else:
        if files:
            raise UserError(
                f"{where}: tile {tile.name!r} lists {sensor!r} twice; a single-date sensor takes one raster"
            )
        files.append((path, None))


def _check_split(split: str, where: str) -> str:
    """The ``split`` of a manifest entry, refused unless it is one of :data:`~.readers.SPLITS`."""
    if split not in SPLITS:
        raise UserError(
            f"{where}: split {split!r}, expected {', '.join(SPLITS[:-1])} or {SPLITS[-1]}; correct the split"
        )
    return split


def _read_csv(path: Path, base: Path, tiles: dict[str, RasterTile]) -> None:
    """Add the tiles of the CSV manifest ``path`` (one row per raster) to ``tiles``."""
    text = read_text(path, "a CSV raster manifest", f"save it as UTF-8 text ({_FORMAT})")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(
                f"{path}: missing column(s) {missing}; expected at least {', '.join(CSV_COLUMNS)} "
                "(and optionally date, split, label)"
            )
        for row in reader:
            where = f"{path} line {reader.line_num}"
            extra = row.pop(None, [])  # values past the last column
            if any(v.strip() for v in extra):
                raise UserError(
                    f"{where}: {len(reader.fieldnames) + len(extra)} values, expected at most "
                    f"{len(reader.fieldnames)} ({', '.join(reader.fieldnames)}); quote a value that holds a comma"
                )
            value = {k: (v or "").strip() for k, v in row.items()}
            empty = [c for c in CSV_COLUMNS if not value[c]]
            if empty:
                raise UserError(
                    f"{where}: no {' / '.join(empty)}, expected a value in column(s) {', '.join(empty)} "
                    "on every line; fill them in"
                )
            name, label = value["tile"], value.get("label") or None
            split = _check_split(value.get("split") or "train", where)
            tile = tiles.setdefault(name, RasterTile(name, split, label))
            if (tile.split, tile.label) != (split, label):
                raise UserError(
                    f"{where}: tile {name!r} has split/label {split!r}/{label!r} here but "
                    f"{tile.split!r}/{tile.label!r} on an earlier line; give one per tile"
                )
            _add(tile, value["sensor"], value["path"], value.get("date", ""), base, where)
    except csv.Error as e:
        raise UserError(f"{path} line {reader.line_num}: not valid CSV ({e}); correct the line ({_FORMAT})") from None


def read_manifest(path: str | Path) -> tuple[list[RasterTile], tuple[str, ...] | None]:
    """Parse a CSV or YAML manifest into tiles (in manifest order) and its ``classes`` (YAML only, else None)."""
    path = Path(path)
    base, tiles, classes = path.parent, {}, None
    if path.suffix.lower() == ".csv":
        _read_csv(path, base, tiles)
    elif path.suffix.lower() in (".yaml", ".yml"):
        text = read_text(path, "a YAML raster manifest", f"save it as UTF-8 text ({_FORMAT})")
        try:
            doc = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise UserError(
                f"{path}: not valid YAML ({yaml_problem(e)}); expected a raster manifest; fix the file ({_FORMAT})"
            ) from None
        if not isinstance(doc, dict) or not isinstance(doc.get("tiles"), list):
            got = f"keys {', '.join(map(str, doc))}" if isinstance(doc, dict) else f"a {type(doc).__name__}"
            raise UserError(
                f"{path}: expected a mapping with a 'tiles' list (and optionally 'classes'), got {got}; "
                f"list the tiles under tiles: ({_FORMAT})"
            )
        if doc.get("classes") is not None and not isinstance(doc["classes"], list):
            raise UserError(
                f"{path}: classes {doc['classes']!r}, expected a list of class names; e.g. classes: [crop, forest]"
            )
        classes = tuple(str(c) for c in doc["classes"]) if doc.get("classes") is not None else None
        for n, entry in enumerate(doc["tiles"]):
            where = f"{path} tile #{n}"
            if not isinstance(entry, dict) or "name" not in entry or not isinstance(entry.get("rasters"), dict):
                raise UserError(
                    f"{where}: expected {{name: ..., rasters: {{sensor: path or [paths]}}, split?, label?}}"
                )
            name = str(entry["name"])
            if name in tiles:
                raise UserError(f"{where}: tile name {name!r} is used twice")
            label = entry.get("label")
            split = _check_split(str(entry.get("split", "train")), f"{where} ({name})")
            tile = tiles[name] = RasterTile(name, split, None if label is None else str(label))
            for sensor, value in entry["rasters"].items():
                for v in value if isinstance(value, list) else [value]:
                    p, d = (v.get("path"), v.get("date")) if isinstance(v, dict) else (v, None)
                    _add(tile, str(sensor), p, d, base, f"{where} ({name}) rasters.{sensor}")
    else:
        raise UserError(f"{path}: manifest must be .csv, .yaml or .yml, got {path.suffix!r}")
    for tile in tiles.values():
        for files in tile.files.values():
            files.sort(key=lambda f: f[1] or dt.date.min)
    if not tiles:
        raise UserError(f"{path}: the manifest lists no tile; add one entry per tile ({_FORMAT})")
    return list(tiles.values()), classes


class RastersDataset(Dataset):
    """The tiles of one split of a raster manifest (format and item in the module docstring).

    Args:
        root: the manifest file, or a folder holding ``manifest.csv`` / ``manifest.yaml``.
        split: the tiles whose ``split`` is this value.
        sensors: sensors to return (default: every sensor of the manifest); each tile must have them all.
        max_dates: cap on the dates of each series (a random subset, kept in order); ``None`` = all.
        seed: seed of the date subsets (with the epoch and the index).
        extent_m: crop every tile to this side (metres, or ``(height, width)``); default: the largest
            size every sub-patch divides.
    """

    name: str = "rasters"
    sensors: tuple[str, ...] = ()  # per manifest: set by __init__
    classes: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        sensors: Sequence[str] | None = None,
        max_dates: int | None = None,
        seed: int = 0,
        extent_m: float | tuple[float, float] | None = None,
    ):
        root = Path(root)
        if root.is_dir():
            found = [root / n for n in MANIFEST_NAMES if (root / n).is_file()]
            if not found:
                raise MissingFileError(
                    f"rasters: no {' / '.join(MANIFEST_NAMES)} in {root}; pass the manifest file "
                    "or a folder holding one (see anysat_lite.data.rasters for the format)"
                )
            root = found[0]
        elif not root.is_file():
            raise MissingFileError(
                f"rasters: manifest {root} not found; expected a .csv or .yaml manifest "
                "(see anysat_lite.data.rasters for the format)"
            )
        self.manifest = root
        tiles, classes = read_manifest(root)
        splits = sorted({t.split for t in tiles})
        self.split = check_split(type(self), split, splits)
        present = tuple(dict.fromkeys(s for t in tiles for s in t.files))
        self.sensors = present if sensors is None else tuple(sensors)
        unknown = [s for s in self.sensors if s not in present]
        if unknown or not self.sensors:
            raise UserError(
                f"rasters: sensors={list(self.sensors)} (config: data.datasets[i].sensors): expected some of the "
                f"sensors of {root.name} ({', '.join(present)}); choose among them, or leave it out for all"
            )
        labels = sorted({t.label for t in tiles if t.label is not None})
        self.classes = classes if classes is not None else tuple(labels)
        bad = [lab for lab in labels if lab not in self.classes]
        if bad:
            raise UserError(f"rasters: label(s) {bad} of {root.name} are not in its classes {self.classes}")
        self.tasks = ("label",) if labels else ()
        self.tiles = [t for t in tiles if t.split == split]
        for t in self.tiles:
            missing = [s for s in self.sensors if s not in t.files]
            if missing:
                raise UserError(
                    f"rasters: tile {t.name!r} of {root.name} has no {missing} raster; list them or "
                    f"choose sensors= among those every tile has"
                )
            if self.tasks and t.label is None:
                raise UserError(f"rasters: tile {t.name!r} of {root.name} has no label while others have one")
        self.names = [t.name for t in self.tiles]
        self.max_dates, self.seed, self.epoch, self.extent_m = max_dates, seed, 0, extent_m
        self._tile_m: float | None = None

    @property
    def tile_m(self) -> float:
        """Side of a tile in metres (``extent_m``, or the height of the first item's extent)."""
        if self._tile_m is None:
            if self.extent_m is not None:
                self._tile_m = float(self.extent_m if isinstance(self.extent_m, (int, float)) else self.extent_m[0])
            else:
                item = self[0]
                self._tile_m = validate_sample(
                    {k: v[None] for k, v in sensor_entries(item).items()}, check_values=False
                ).extent_m[0]
        return self._tile_m

    def __len__(self) -> int:
        return len(self.tiles)

    def set_epoch(self, epoch: int) -> None:
        """Draw new date subsets (they are a function of ``(seed, epoch, index)``)."""
        self.epoch = int(epoch)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        tile, rng = self.tiles[i], item_rng(self.seed, self.epoch, i)
        rasters = {}
        for s in self.sensors:
            files = tile.files[s]
            if SENSORS[s].is_series:
                keep = choose_dates(len(files), rng, self.max_dates)
                rasters[s] = stack_time_series([files[k][0] for k in keep], dates=[files[k][1] for k in keep])
            else:
                rasters[s] = read_geotiff(files[0][0])
        sample = rasters_to_sample(rasters, extent_m=self.extent_m)
        item = {k: v[0] for k, v in sample.items()}
        for k in item:
            if split_key(k)[1] == "dates":
                item[k] = item[k].long()
        if self.tasks:
            item["label"] = torch.tensor(self.classes.index(tile.label))
        return item
