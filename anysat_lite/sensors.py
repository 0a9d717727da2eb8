"""Sensor registry: the facts AnySat needs about every sensor it can ingest.

A sensor is either *single-date imagery* (``kind="image"``, input ``[B, C, H, W]``) or a
*time series* (``kind="series"``, input ``[B, T, C, H, W]`` plus ``<name>_dates`` ``[B, T]``
in whole days: day-of-year, or days since the dataset's origin).  The tokenizer cuts every sensor
into **sub-patches** of ``subpatch_px`` pixels, i.e. ``subpatch_m = subpatch_px * gsd`` metres on the ground;
a patch of ``P`` metres then holds ``(P / subpatch_m) ** 2`` sub-patches.

The eleven sensors of the official AnySat release are registered at import time with
the numbers of its configuration (``hubconf.get_default_config`` and the GeoPlex
training configs).  Add your own with :func:`register_sensor`::

    from anysat_lite import register_sensor
    register_sensor("planetscope", gsd=3.0, bands=("B", "G", "R", "NIR"), kind="image",
                    subpatch_px=10)   # 30 m sub-patches

A model built afterwards (or ``model.add_sensor("planetscope")``) gets a projector for it.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Literal

from .errors import UnknownNameError, UserError, did_you_mean

__all__ = ["Sensor", "SENSORS", "register_sensor", "get_sensor", "check_sensor_names", "UnknownSensorError"]


@dataclass(frozen=True)
class Sensor:
    """Static facts about one sensor.

    Attributes:
        name: key used in the input dict (``"s2"``, ``"aerial"``...).
        gsd: ground sampling distance in metres per pixel.
        bands: band names, in the order of the channel axis.
        kind: ``"image"`` (single date, conv+MLP projector) or ``"series"`` (L-TAE projector).
        subpatch_px: pixels per sub-patch side (image: conv kernel = stride; series: 1,
            or the number of pixels pooled by ``reduce_scale`` semantics, see below).
        doy_period: period ``T`` of the day-of-year sinusoidal encoding (series only).
        in_norm: GroupNorm on the L-TAE input features (the official S2 projector uses it).
        dropout: dropout inside the projector (official training configs: 0.0 for S2 and Landsat 8,
            0.2 otherwise; ``hubconf.py`` gives Landsat 8 0.2, which acts only in training).
        one_token_per_tile: the sensor is summarised by a single token for the whole tile
            (MODIS at 250 m); it is exempt from the common-extent check.
        description: free text shown in notebooks and errors.
    """

    name: str
    gsd: float
    bands: tuple[str, ...]
    kind: Literal["image", "series"]
    subpatch_px: int = 1
    doy_period: int = 367
    in_norm: bool = False
    dropout: float = 0.2
    one_token_per_tile: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        def bad(field: str, expected: str, got, example: str) -> ValueError:
            return ValueError(f"sensor {self.name!r}: {field} must be {expected}, got {got!r}; e.g. {field}={example}")

        def integer(v) -> bool:
            return isinstance(v, numbers.Integral) and not isinstance(v, bool)

        if self.kind not in ("image", "series"):
            raise bad("kind", "'image' or 'series'", self.kind, "'series'")
        if not isinstance(self.gsd, numbers.Real) or not math.isfinite(self.gsd) or self.gsd <= 0:
            raise bad("gsd", "a finite number of metres > 0", self.gsd, "10.0")
        if not integer(self.subpatch_px) or self.subpatch_px < 1:
            raise bad("subpatch_px", "an integer >= 1", self.subpatch_px, "1")
        if not integer(self.doy_period) or self.doy_period < 1:
            raise bad("doy_period", "an integer >= 1 (days)", self.doy_period, "367 (official)")
        if not isinstance(self.dropout, numbers.Real) or not 0 <= self.dropout < 1:
            raise bad("dropout", "in [0, 1)", self.dropout, "0.2 (official)")
        if not self.bands or not all(isinstance(b, str) and b for b in self.bands):
            raise bad("bands", "a non-empty list of band names", self.bands, "['B', 'G', 'R']")
        if any(ch in self.name for ch in "._") or not self.name:
            raise ValueError(f"sensor name {self.name!r} may not be empty or contain '.' or '_'")

    @property
    def n_bands(self) -> int:
        return len(self.bands)

    @property
    def is_series(self) -> bool:
        return self.kind == "series"

    @property
    def subpatch_m(self) -> float:
        """Side of one sub-patch on the ground, in metres."""
        return self.subpatch_px * self.gsd

    @property
    def input_rank(self) -> int:
        """Rank of the input tensor: 4 (``[B, C, H, W]``) or 5 (``[B, T, C, H, W]``)."""
        return 5 if self.is_series else 4

    @property
    def layout(self) -> str:
        return "[B, T, C, H, W]" if self.is_series else "[B, C, H, W]"


SENSORS: dict[str, Sensor] = {}


def register_sensor(name: str, gsd: float, bands, kind: str, *, overwrite: bool = False, **facts) -> Sensor:
    """Register a sensor at run time and return it.

    ``facts`` are the optional :class:`Sensor` fields (``subpatch_px``, ``doy_period``,
    ``in_norm``, ``dropout``, ``one_token_per_tile``, ``description``).  Registering an
    existing name raises unless ``overwrite=True``.
    """
    if name in SENSORS and not overwrite:
        raise ValueError(f"sensor {name!r} is already registered (pass overwrite=True to replace it)")
    fields = [f for f in Sensor.__dataclass_fields__ if f not in ("name", "gsd", "bands", "kind")]
    unknown = [k for k in facts if k not in fields]
    if unknown:
        raise ValueError(f"sensor {name!r}: unknown fact {unknown[0]!r}; expected some of {', '.join(fields)}")
    if isinstance(bands, str):
        raise ValueError(
            f"sensor {name!r}: bands must be a list of band names, got the string {bands!r}; e.g. bands=[{bands!r}]"
        )
    # plain Python numbers (NumPy scalars are accepted and converted; the checks are Sensor's own)
    gsd = float(gsd) if isinstance(gsd, numbers.Real) and not isinstance(gsd, bool) else gsd
    for key, kind_of in (
        ("subpatch_px", numbers.Integral),
        ("doy_period", numbers.Integral),
        ("dropout", numbers.Real),
    ):
        if isinstance(facts.get(key), kind_of) and not isinstance(facts[key], bool):
            facts[key] = (int if kind_of is numbers.Integral else float)(facts[key])
    sensor = Sensor(name=name, gsd=gsd, bands=tuple(bands), kind=kind, **facts)
    SENSORS[name] = sensor
    return sensor


class UnknownSensorError(UnknownNameError):
    """A sensor name that is not registered (also a ``KeyError``, as before)."""


def get_sensor(name: str) -> Sensor:
    """The registered sensor ``name``; raises :class:`UnknownSensorError` (a ``UserError`` and a ``KeyError``)
    naming the registered sensors, and the closest one to a misspelt name."""
    if isinstance(name, str) and name in SENSORS:
        return SENSORS[name]
    if not isinstance(name, str):
        raise UnknownSensorError(
            f"expected a sensor name (a string), got {name!r} ({type(name).__name__}); "
            f"give one of the registered sensors: {', '.join(SENSORS)}"
        )
    hint = did_you_mean(name, SENSORS, cutoff=0.5 if len(name) <= 3 else 0.6)
    raise UnknownSensorError(
        f"unknown sensor {name!r}; {hint}registered sensors: {', '.join(SENSORS)} "
        "(register new ones with anysat_lite.register_sensor)"
    )


def check_sensor_names(sensors) -> None:
    """Refuse a string where a list of sensor names is expected, and an unknown name (:func:`get_sensor`)."""
    if isinstance(sensors, str):
        raise UserError(f"sensors: expected a list of sensor names, got the string {sensors!r}; e.g. [{sensors!r}]")
    for s in sensors:
        get_sensor(s)


# --- the official AnySat sensors -------------------------------------------------------
_S2 = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
_OFFICIAL = [
    # TreeSatAI's colour-infrared orthophotos store NIR, G, B, R (its documentation; in the data the first band is
    # the brightest over forest, and the official demo's normalisation means are 151, 93, 85, 81).
    dict(
        name="aerial",
        gsd=0.2,
        bands=("NIR", "G", "B", "R"),
        kind="image",
        subpatch_px=10,
        description="VHR colour-infrared aerial orthophoto (TreeSatAI, 0.2 m)",
    ),
    dict(
        name="aerial-flair",
        gsd=0.2,
        bands=("R", "G", "B", "NIR", "ELEV"),
        kind="image",
        subpatch_px=10,
        description="FLAIR aerial orthophoto + elevation (0.2 m)",
    ),
    dict(
        name="spot",
        gsd=1.0,
        bands=("R", "G", "B"),
        kind="image",
        subpatch_px=10,
        description="SPOT 6-7 pansharpened (PASTIS-HD, 1 m)",
    ),
    dict(
        name="naip",
        gsd=1.25,
        bands=("R", "G", "B", "NIR"),
        kind="image",
        subpatch_px=8,
        description="NAIP aerial (S2NAIP, 1.25 m)",
    ),
    dict(
        name="s2",
        gsd=10.0,
        bands=_S2,
        kind="series",
        in_norm=True,
        dropout=0.0,
        description="Sentinel-2 L2A time series (10 m)",
    ),
    dict(
        name="s1-asc",
        gsd=10.0,
        bands=("VV", "VH"),
        kind="series",
        description="Sentinel-1 ascending-orbit backscatter time series (10 m)",
    ),
    dict(
        name="s1",
        gsd=10.0,
        bands=("VV", "VH", "VV/VH"),
        kind="series",
        description="Sentinel-1 backscatter with VV/VH ratio (10 m)",
    ),
    dict(
        name="alos",
        gsd=30.0,
        bands=("HH", "HV", "HH/HV"),
        kind="series",
        description="ALOS-2 PALSAR-2 time series (30 m)",
    ),
    dict(
        name="l7",
        gsd=30.0,
        bands=("B1", "B2", "B3", "B4", "B5", "B7"),
        kind="series",
        description="Landsat 7 time series (30 m)",
    ),
    dict(
        name="l8",
        gsd=10.0,
        bands=tuple(f"B{i}" for i in range(1, 12)),
        kind="series",
        doy_period=366,
        dropout=0.0,
        description="Landsat 8 time series resampled to 10 m",
    ),
    dict(
        name="modis",
        gsd=250.0,
        bands=tuple(f"B{i}" for i in range(1, 8)),
        kind="series",
        one_token_per_tile=True,
        description="MODIS time series (250 m), one token per tile",
    ),
]
for _facts in _OFFICIAL:
    register_sensor(**_facts)
OFFICIAL_SENSORS: tuple[str, ...] = tuple(f["name"] for f in _OFFICIAL)
