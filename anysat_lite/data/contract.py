"""The sample contract: what a model input looks like, and a validator with precise errors.

The input format is the official AnySat one, a dict of tensors::

    {
      "aerial":   [B, C, H, W]          single-date imagery
      "s2":       [B, T, C, H, W]       time series
      "s2_dates": [B, T]                day-of-year of each date (integers, 0..period-1)
      "s2_mask":  [B, T]  (optional)    True/1 where the date is valid
      ...
    }

Every sensor must cover the same ground extent (``pixels x GSD`` equal, MODIS excepted,
which is summarised as one token per tile).  Tiles need not be square.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch

from ..sensors import SENSORS, Sensor

__all__ = ["SampleError", "SampleInfo", "validate_sample", "split_key", "check_patch_size", "random_sample"]

_SUFFIXES = ("dates", "mask")


class SampleError(ValueError):
    """An input sample does not follow the contract; the message names sensor, expected and received values."""


@dataclass
class SampleInfo:
    """What :func:`validate_sample` learnt about a valid sample."""

    batch: int
    extent_m: tuple[float, float] | None  # (height, width) in metres, None if only one-token sensors
    sensors: list[str] = field(default_factory=list)  # in input order
    n_dates: dict[str, int] = field(default_factory=dict)


def split_key(key: str) -> tuple[str, str | None]:
    """``"s2_dates" -> ("s2", "dates")``, ``"s2" -> ("s2", None)``."""
    if "_" in key:
        name, suffix = key.rsplit("_", 1)
        return name, suffix
    return key, None


def _shape(t) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def validate_sample(x: Mapping, registry: Mapping[str, Sensor] | None = None, check_values: bool = True) -> SampleInfo:
    """Check a sample dict against the contract and return its :class:`SampleInfo`.

    Raises :class:`SampleError` naming the sensor, what was expected and what was received.
    ``check_values`` also checks that values are finite and dates in range (one pass over the data).
    """
    registry = SENSORS if registry is None else registry
    if not isinstance(x, Mapping) or not x:
        raise SampleError("a sample must be a non-empty dict {sensor: tensor, sensor_dates: tensor, ...}")
    sensors, batch = [], None
    for key, value in x.items():
        name, suffix = split_key(key)
        if name not in registry:
            raise SampleError(f"{key!r}: unknown sensor {name!r}; known sensors: {', '.join(registry)} "
                              "(register new ones with anysat_lite.register_sensor)")
        if suffix is not None and suffix not in _SUFFIXES:
            raise SampleError(f"{key!r}: unknown suffix {suffix!r}; expected '<sensor>', '<sensor>_dates' or '<sensor>_mask'")
        if not torch.is_tensor(value):
            raise SampleError(f"{key!r}: expected a torch.Tensor, got {type(value).__name__}")
        if value.dim() == 0:
            raise SampleError(f"{key!r}: expected a batched tensor, got a scalar")
        if batch is None:
            batch = value.shape[0]
        elif value.shape[0] != batch:
            raise SampleError(f"{key!r}: batch size {value.shape[0]} differs from the batch size {batch} of the other keys")
        if suffix is None:
            sensors.append(name)
    if not sensors:
        raise SampleError(f"no sensor tensor in the sample (keys: {list(x)})")

    info = SampleInfo(batch=batch, extent_m=None, sensors=sensors)
    extents: list[tuple[str, float, float]] = []
    for name in sensors:
        s = registry[name]
        t = x[name]
        if t.dim() != s.input_rank:
            raise SampleError(f"{name}: expected a {s.input_rank}-D tensor {s.layout} ({s.kind}), got shape {_shape(t)}")
        if not t.is_floating_point():
            raise SampleError(f"{name}: expected a floating-point tensor, got dtype {t.dtype}")
        c_axis = 2 if s.is_series else 1
        if t.shape[c_axis] != s.n_bands:
            raise SampleError(f"{name}: expected {s.n_bands} bands ({', '.join(s.bands)}) on axis {c_axis} of "
                              f"{s.layout}, got {t.shape[c_axis]} (shape {_shape(t)})")
        H, W = t.shape[-2:]
        if not s.one_token_per_tile and (H % s.subpatch_px or W % s.subpatch_px):
            raise SampleError(f"{name}: height and width must be multiples of its {s.subpatch_px}-pixel sub-patch "
                              f"({s.subpatch_m:g} m at {s.gsd:g} m GSD), got {H}x{W} px")
        if check_values:
            _check_finite(name, t)
        if s.is_series:
            _check_series_extras(x, s, t, check_values)
            info.n_dates[name] = t.shape[1]
        elif f"{name}_dates" in x or f"{name}_mask" in x:
            raise SampleError(f"{name}: single-date sensor takes no '{name}_dates' / '{name}_mask'")
        if not s.one_token_per_tile:
            extents.append((name, H * s.gsd, W * s.gsd))
    for key in x:
        name, suffix = split_key(key)
        if suffix is not None and name not in sensors:
            raise SampleError(f"{key!r} given without the {name!r} tensor itself")
    if extents:
        ref = extents[0]
        for name, eh, ew in extents[1:]:
            if abs(eh - ref[1]) > 1e-3 or abs(ew - ref[2]) > 1e-3:
                raise SampleError(
                    f"{name}: ground extent {eh:g} x {ew:g} m (pixels x GSD) differs from {ref[0]}'s "
                    f"{ref[1]:g} x {ref[2]:g} m; all sensors must cover the same area "
                    f"(expected {name} to be {ref[1] / registry[name].gsd:g} x {ref[2] / registry[name].gsd:g} px "
                    f"at {registry[name].gsd:g} m GSD)")
        info.extent_m = (ref[1], ref[2])
    return info


def _check_finite(name: str, t: torch.Tensor) -> None:
    """Raise if ``t`` holds NaN or inf.  A NaN or inf anywhere makes the sum non-finite, so one
    reduction settles the common case; the element-wise test runs only when the sum is not
    finite (a NaN/inf, or a sum that overflowed)."""
    if torch.isfinite(t.sum(dtype=torch.float32)):  # t is floating point (checked before)
        return
    bad = (~torch.isfinite(t)).sum().item()
    if bad:
        raise SampleError(f"{name}: {bad} non-finite values (NaN/inf); fill or mask them before the model")


def _check_series_extras(x: Mapping, s: Sensor, t: torch.Tensor, check_values: bool) -> None:
    B, T = t.shape[:2]
    key = f"{s.name}_dates"
    if key not in x:
        raise SampleError(f"{s.name}: time series needs '{key}' [B, T] = [{B}, {T}] (day-of-year), not found")
    d = x[key]
    if tuple(d.shape) != (B, T):
        raise SampleError(f"{key}: expected shape [B, T] = [{B}, {T}], got {_shape(d)}")
    if check_values:
        if d.is_floating_point() and not torch.equal(d, d.round()):
            raise SampleError(f"{key}: dates must be whole days-of-year, got fractional values")
        lo, hi = d.min().item(), d.max().item()
        if lo < 0 or hi > s.doy_period - 1:
            raise SampleError(f"{key}: day-of-year must lie in [0, {s.doy_period - 1}], got values in [{lo:g}, {hi:g}]")
    mkey = f"{s.name}_mask"
    if mkey in x:
        m = x[mkey]
        if tuple(m.shape) != (B, T):
            raise SampleError(f"{mkey}: expected shape [B, T] = [{B}, {T}] (True = valid date), got {_shape(m)}")
        if check_values and not bool((m.bool().any(dim=1)).all()):
            raise SampleError(f"{mkey}: every sample needs at least one valid date")


def check_patch_size(patch_m, extent_m: tuple[float, float]) -> tuple[int, int]:
    """Patch grid ``(h, w)`` for a patch of ``patch_m`` metres over a tile of ``extent_m`` metres.

    The patch size must be a positive multiple of 10 m that divides both sides of the tile.
    """
    if isinstance(patch_m, float) and patch_m.is_integer():
        patch_m = int(patch_m)
    if not isinstance(patch_m, int) or isinstance(patch_m, bool) or patch_m <= 0 or patch_m % 10:
        raise SampleError(f"patch size must be a positive multiple of 10 m, got {patch_m!r}")
    H, W = extent_m
    h, w = H / patch_m, W / patch_m
    if abs(h - round(h)) > 1e-6 or abs(w - round(w)) > 1e-6 or round(h) < 1 or round(w) < 1:
        raise SampleError(f"patch size {patch_m} m does not divide the tile of {H:g} x {W:g} m; "
                          f"choose a divisor of both sides that is a multiple of 10 m")
    return int(round(h)), int(round(w))


def random_sample(sensors, extent_m: float | tuple[float, float] = 60, batch: int = 2, n_dates: int = 3,
                  generator: torch.Generator | None = None, registry: Mapping[str, Sensor] | None = None) -> dict:
    """Random tensors that satisfy the contract: ``sensors`` over ``extent_m`` metres (a side or ``(H, W)``).

    Handy for shapes, benchmarks and tests; dates are sorted random days-of-year, one-token-per-tile
    sensors get a single pixel.
    """
    registry = SENSORS if registry is None else registry
    H, W = (extent_m, extent_m) if isinstance(extent_m, (int, float)) else extent_m
    x = {}
    for name in sensors:
        s = registry[name]
        hw = (1, 1) if s.one_token_per_tile else (int(round(H / s.gsd)), int(round(W / s.gsd)))
        if s.is_series:
            x[name] = torch.randn(batch, n_dates, s.n_bands, *hw, generator=generator)
            x[f"{name}_dates"] = torch.randint(1, 366, (batch, n_dates), generator=generator).sort(dim=1).values
        else:
            x[name] = torch.randn(batch, s.n_bands, *hw, generator=generator)
    return x
