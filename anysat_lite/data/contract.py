"""The sample contract: what a model input looks like, and a validator with precise errors.

The input format is the official AnySat one, a dict of tensors::

    {
      "aerial":   [B, C, H, W]          single-date imagery
      "s2":       [B, T, C, H, W]       time series
      "s2_dates": [B, T]                day of each date (whole days >= 0; see below)
      "s2_mask":  [B, T]  (optional)    True/1 where the date is valid
      ...
    }

Dates are whole days counted from a dataset's origin: the day of the year (1..366) for most
datasets, days since 2018-09-01 for PASTIS (up to about 440: September 2018 to November 2019), as the
released weights received them.  The L-TAE's sinusoidal code of period ``doy_period`` is defined for
any value, so the contract refuses only negative, fractional and non-finite dates; dates above
:data:`LARGEST_USUAL_DATE` (1000) get a warning, once per key, as they are more likely YYYYMMDD or years.
Masks hold True/False (or 0/1) per date.

Every sensor must cover the same ground extent (``pixels x GSD`` equal, MODIS excepted,
which is summarised as one token per tile).  Tiles need not be square.
"""

from __future__ import annotations

import math
import numbers
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from ..errors import UserError, did_you_mean
from ..sensors import SENSORS, Sensor

__all__ = [
    "SampleError",
    "SampleInfo",
    "validate_sample",
    "split_key",
    "KEY_SUFFIXES",
    "sensor_entries",
    "check_patch_size",
    "patch_size_m",
    "prepare_input",
    "estimate_memory",
    "random_sample",
]

LARGEST_USUAL_DATE = 1000  # days; above it a date is more likely YYYYMMDD or a year (a warning, once per key)
_WARNED_DATES: set[str] = set()

KEY_SUFFIXES = ("dates", "mask")  # "<sensor>_<suffix>": the per-date entries that go with a time series


class SampleError(UserError):
    """An input sample does not follow the contract; the message names sensor, expected and received values."""


@dataclass
class SampleInfo:
    """What :func:`validate_sample` learnt about a valid sample."""

    batch: int
    extent_m: tuple[float, float] | None  # (height, width) in metres, None if only one-token sensors
    sensors: list[str] = field(default_factory=list)  # in input order
    n_dates: dict[str, int] = field(default_factory=dict)
    # largest magnitude of each sensor's values (filled by the value checks, ``check_values``)
    max_abs: dict[str, float] = field(default_factory=dict)


def split_key(key: str) -> tuple[str, str | None]:
    """``"s2_dates" -> ("s2", "dates")``, ``"s2" -> ("s2", None)``: the one parser of sample keys
    (sensor names never contain ``_``)."""
    if "_" in key:
        name, suffix = key.rsplit("_", 1)
        return name, suffix
    return key, None


def sensor_entries(x: Mapping, sensors: Mapping | Sequence | None = None) -> dict:
    """The entries of ``x`` that belong to ``sensors`` (default: every registered sensor): each sensor's
    tensor and its ``_dates`` / ``_mask``; targets (``label``...) and other keys are left out."""
    sensors = SENSORS if sensors is None else sensors
    for k in x:  # 'S2', 'S2_dates', 's1_asc' would be dropped silently
        tail = next((f"_{s}" for s in KEY_SUFFIXES if k.lower().endswith(f"_{s}")), "")
        base = k[: len(k) - len(tail)]
        meant = base.lower().replace("_", "-")
        if base not in SENSORS and meant in SENSORS:
            raise SampleError(
                f"{k!r}: not a sensor key (sensor names are lower case, with '-'); did you mean {meant + tail!r}?"
            )
    return {k: v for k, v in x.items() if split_key(k)[0] in sensors}


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
        if suffix is not None and suffix not in KEY_SUFFIXES:  # e.g. 's2_doy', or 's1_asc' for 's1-asc'
            keys = [*registry, *SENSORS, *(f"{name}_{k}" for k in KEY_SUFFIXES)]
            raise SampleError(
                f"{key!r}: unknown suffix {suffix!r}; {did_you_mean(key, keys)}expected '<sensor>', "
                "'<sensor>_dates' or '<sensor>_mask'"
            )
        if name not in registry:
            raise SampleError(
                f"{key!r}: unknown sensor {name!r}; {did_you_mean(name, registry)}known sensors: "
                f"{', '.join(registry)} (register new ones with anysat_lite.register_sensor)"
            )
        if not torch.is_tensor(value):
            raise SampleError(f"{key!r}: expected a torch.Tensor, got {type(value).__name__}")
        if value.dim() == 0:
            raise SampleError(f"{key!r}: expected a batched tensor, got a scalar")
        if batch is None:
            batch = value.shape[0]
            if batch == 0:
                raise SampleError(f"{key!r}: batch size 0 (shape {_shape(value)}); give at least one sample")
        elif value.shape[0] != batch:
            raise SampleError(
                f"{key!r}: batch size {value.shape[0]} differs from the batch size {batch} of the other keys"
            )
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
            fix = ""
            if t.dim() == s.input_rank - 1:  # one sample without the batch axis, or (a series) one date
                fix = f"; for one sample {s.layout.replace('B, ', '')}, add the batch axis: x[{name!r}][None]"
                fix += f"; for one date [B, C, H, W], the date axis: x[{name!r}][:, None]" if s.is_series else ""
            raise SampleError(
                f"{name}: expected a {s.input_rank}-D tensor {s.layout} ({s.kind}), got shape {_shape(t)}{fix}"
            )
        if not t.is_floating_point():
            raise SampleError(
                f"{name}: expected a floating-point tensor, got dtype {t.dtype}; convert it with "
                f"x[{name!r}].float() and standardise it with NormStats (e.g. "
                "NormStats.from_samples([x], batched=True).apply(x))"
            )
        c_axis = 2 if s.is_series else 1
        if t.shape[c_axis] != s.n_bands:
            raise SampleError(
                f"{name}: expected {s.n_bands} bands ({', '.join(s.bands)}) on axis {c_axis} of "
                f"{s.layout}, got {t.shape[c_axis]} (shape {_shape(t)})"
            )
        H, W = t.shape[-2:]
        if s.is_series and t.shape[1] == 0:
            raise SampleError(
                f"{name}: the time series has no dates (T = 0, shape {_shape(t)}); give at least "
                f"one date, or leave {name} out of the sample"
            )
        if H == 0 or W == 0:
            raise SampleError(
                f"{name}: empty image ({H}x{W} px, shape {_shape(t)}); give at least one sub-patch "
                f"({s.subpatch_px}x{s.subpatch_px} px)"
            )
        if not s.one_token_per_tile and (H % s.subpatch_px or W % s.subpatch_px):
            raise SampleError(
                f"{name}: height and width must be multiples of its {s.subpatch_px}-pixel sub-patch "
                f"({s.subpatch_m:g} m at {s.gsd:g} m GSD), got {H}x{W} px"
            )
        if check_values:
            info.max_abs[name] = _check_finite(name, t, x.get(f"{name}_mask") if s.is_series else None)
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
                    f"at {registry[name].gsd:g} m GSD)"
                )
        info.extent_m = (ref[1], ref[2])
    return info


def _check_finite(name: str, t: torch.Tensor, mask=None) -> float:
    """Raise if ``t`` holds NaN or inf, else return the largest magnitude of its values.

    One reduction and one read settle it: min and max propagate NaN and inf, and cannot overflow
    (a sum of large finite values can).  The element-wise count runs only for the message.
    ``mask`` (``<sensor>_mask`` of a series, if given) only words the message: the model replaces
    the values of masked dates, but the contract still refuses them, as other readers of the
    sample (statistics, pixel baselines) compute with them.
    """
    lo, hi = torch.aminmax(t)  # t is floating point (checked before)
    largest = torch.maximum(hi, -lo).item()
    if math.isfinite(largest):
        return largest
    bad = ~torch.isfinite(t)
    n_bad = int(bad.sum())
    masked = torch.is_tensor(mask) and tuple(mask.shape) == tuple(t.shape[:2])
    if masked and not bool((bad.flatten(2).any(dim=2) & mask.bool()).any()):
        raise SampleError(
            f"{name}: {n_bad} non-finite values (NaN/inf) in dates that '{name}_mask' flags invalid, expected "
            "finite values there too: masking a date does not remove its values; fill them, e.g. with 0 "
            "(the model replaces masked dates by its pad value)"
        )
    what = f"and flag their dates False in '{name}_mask' [B, T]" if t.dim() == 5 else "or crop them out"
    raise SampleError(
        f"{name}: {n_bad} non-finite values (NaN/inf), expected finite ones; fill them (e.g. with 0) {what}"
    )


def _check_series_extras(x: Mapping, s: Sensor, t: torch.Tensor, check_values: bool) -> None:
    B, T = t.shape[:2]
    key = f"{s.name}_dates"
    if key not in x:
        raise SampleError(
            f"{s.name}: time series needs '{key}' [B, T] = [{B}, {T}] (whole days, e.g. day-of-year), not found"
        )
    d = x[key]
    if tuple(d.shape) != (B, T):
        raise SampleError(f"{key}: expected shape [B, T] = [{B}, {T}], got {_shape(d)}")
    if check_values:
        if d.is_floating_point() and not bool(torch.isfinite(d).all()):
            bad = int((~torch.isfinite(d)).sum())
            raise SampleError(
                f"{key}: {bad} NaN/inf dates; give every date a whole day number >= 0 (e.g. its "
                f"day-of-year) and flag the missing ones False in '{s.name}_mask' [B, T]"
            )
        if d.is_floating_point() and not torch.equal(d, d.round()):
            raise SampleError(f"{key}: dates must be whole days (e.g. day-of-year), got fractional values")
        lo, hi = torch.stack(torch.aminmax(d)).tolist()  # one read-back
        if lo < 0:
            raise SampleError(
                f"{key}: dates must be whole days >= 0 (day-of-year, or days since the dataset's "
                f"origin), got values down to {lo:g}"
            )
        if hi > LARGEST_USUAL_DATE and key not in _WARNED_DATES:
            _WARNED_DATES.add(key)
            warnings.warn(
                f"{key}: dates up to {hi:g}, expected whole days from the dataset's origin (day-of-year "
                f"1..366; PASTIS up to about 440); dates such as 20200115 (YYYYMMDD) or years give meaningless date "
                "codes: convert them to day-of-year, e.g. datetime.date(2020, 1, 15).timetuple().tm_yday",
                stacklevel=4,
            )
    mkey = f"{s.name}_mask"
    if mkey in x:
        m = x[mkey]
        if tuple(m.shape) != (B, T):
            raise SampleError(f"{mkey}: expected shape [B, T] = [{B}, {T}] (True = valid date), got {_shape(m)}")
        if check_values and m.dtype != torch.bool:
            other = m[(m != 0) & (m != 1)]
            if other.numel():
                raise SampleError(
                    f"{mkey}: expected True/False (or 0/1) per date, True = valid, got {m.dtype} values such as "
                    f"{other[0].item():g}; build it from what flags a date, e.g. mask = cloud < 20 for a cloud cover "
                    "in percent"
                )
        if check_values and not bool((m.bool().any(dim=1)).all()):
            raise SampleError(f"{mkey}: every sample needs at least one valid date")


def patch_size_m(patch_m) -> int:
    """The patch size as an ``int`` of metres: Python/NumPy integers, whole floats and 0-d tensors are accepted.

    Raises :class:`SampleError` unless it is a positive multiple of 10 m.
    """
    value = patch_m
    if torch.is_tensor(value) and value.dim() == 0 and value.dtype != torch.bool:
        value = value.item()
    whole = isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Integral))
    if whole and float(value).is_integer():
        value = int(value)
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value <= 0 or value % 10:
        shown = f"tensor of shape {_shape(patch_m)}" if torch.is_tensor(patch_m) and patch_m.dim() else repr(patch_m)
        raise SampleError(f"patch size must be a positive multiple of 10 m, got {shown}")
    return int(value)


def check_patch_size(patch_m, extent_m: tuple[float, float]) -> tuple[int, int]:
    """Patch grid ``(h, w)`` for a patch of ``patch_m`` metres over a tile of ``extent_m`` metres.

    The patch size must be a positive multiple of 10 m that divides both sides of the tile.
    """
    patch_m = patch_size_m(patch_m)
    H, W = extent_m
    h, w = H / patch_m, W / patch_m
    if abs(h - round(h)) > 1e-6 or abs(w - round(w)) > 1e-6 or round(h) < 1 or round(w) < 1:
        divisors = [p for p in range(10, int(min(H, W)) + 1, 10) if H % p < 1e-6 and W % p < 1e-6]
        raise SampleError(
            f"patch size {patch_m} m does not divide the tile of {H:g} x {W:g} m; "
            f"choose a divisor of both sides that is a multiple of 10 m"
            + (f" ({', '.join(map(str, divisors[:8]))})" if divisors else "")
        )
    return int(round(h)), int(round(w))


# --- inputs of the Python API -------------------------------------------------------------------
# What the sub-patch transformer holds per sequence of L = g*g + 1 tokens (g sub-patches per patch
# side), in bytes: the iRPE one-hot bucket map [L, L, 8] (int64, then in the compute dtype) once per
# block call, and per sequence the attention bias [L, L] and its einsum output; with gradients each
# block keeps its one-hot map and biases for the backward.
_BYTES_PER_L2 = 100
_BYTES_PER_L2_PER_BLOCK_GRAD = 32
_BYTES_PER_SEQ_L2 = 8
_BYTES_PER_SEQ_L2_PER_BLOCK_GRAD = 12
_CHECK_ABOVE = 2**28  # estimates below this are not compared with the free memory


def estimate_memory(
    x: Mapping, patch_size: int, registry: Mapping[str, Sensor], depth: int, grad: bool = False
) -> tuple[int, str]:
    """Rough peak bytes of the sub-patch transformer on sample ``x`` at ``patch_size`` metres, and its largest term.

    Sensors with the same sub-patch grid are encoded together as ``S = B x patches x sensors``
    sequences of ``L = g*g + 1`` tokens; memory grows as ``L**2`` (``g = P / sub-patch size``; a coarse sensor
    whose map the tokenizer upsamples to 10 m cells has ``g = P / 10``, more than counted here: these terms are
    small).
    """
    groups: dict[int, list] = {}
    for key, t in x.items():
        s = registry.get(key)
        if s is None or s.one_token_per_tile or not torch.is_tensor(t) or t.dim() < 3:
            continue
        g = max(1, int(round(patch_size / s.subpatch_m)))
        n = max(1, int(round(t.shape[-2] * s.gsd / patch_size)) * int(round(t.shape[-1] * s.gsd / patch_size)))
        groups.setdefault(g * g + 1, []).append((key, t.shape[0] * n))
    total, worst, worst_bytes = 0, "", 0
    for L, members in groups.items():
        S = sum(n for _, n in members)
        per_l2 = _BYTES_PER_L2 + (_BYTES_PER_L2_PER_BLOCK_GRAD * depth if grad else 0)
        per_seq = _BYTES_PER_SEQ_L2 + (_BYTES_PER_SEQ_L2_PER_BLOCK_GRAD * depth if grad else 0)
        b = L * L * (per_l2 + per_seq * S)
        total += b
        if b > worst_bytes:
            g = int(round((L - 1) ** 0.5))
            worst_bytes, worst = (
                b,
                (f"{'+'.join(k for k, _ in members)}: {S} sequence(s) of {g}x{g}+1 = {L} tokens at P = {patch_size} m"),
            )
    return total, worst


def available_memory(device: torch.device) -> int | None:
    """Bytes free for new tensors on ``device`` (``None`` if unknown)."""
    try:
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        if device.type == "cpu":
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, RuntimeError, AttributeError):
        return None
    return None


def _check_memory(model, x: Mapping, patch_size: int, device: torch.device) -> None:
    depth = len(getattr(getattr(model, "subpatch_encoder", None), "blocks", [])) or 1
    need, worst = estimate_memory(x, patch_size, model.sensors, depth, grad=torch.is_grad_enabled())
    if need < _CHECK_ABOVE:
        return
    free = available_memory(device)
    if free is None or need <= free:
        return
    grad = torch.is_grad_enabled()
    extents = [
        (t.shape[-2] * model.sensors[k].gsd, t.shape[-1] * model.sensors[k].gsd)
        for k, t in x.items()
        if k in model.sensors and not model.sensors[k].one_token_per_tile and torch.is_tensor(t) and t.dim() > 3
    ]
    fits = [
        p
        for p in range(10, patch_size, 10)
        if all(abs(e / p - round(e / p)) < 1e-6 for ext in extents for e in ext)
        and estimate_memory(x, p, model.sensors, depth, grad)[0] < free
    ]
    hint = (
        f"use a smaller patch size (P = {fits[-1]} m needs about "
        f"{estimate_memory(x, fits[-1], model.sensors, depth, grad)[0] / 1e9:.1f} GB)"
        if fits
        else "use a smaller patch size"
    )
    raise SampleError(
        f"not enough memory: the sub-patch transformer would need about {need / 1e9:.1f} GB "
        f"({worst}; memory grows with (P / sub-patch size)^4), {free / 1e9:.1f} GB are free on "
        f"{device.type}; {hint}, fewer samples per batch, or cut the tile into smaller tiles"
    )


def _raw_input_check(model, x: Mapping) -> None:
    """Warn once per model and sensor when a sensor's values look like raw data although the model carries
    normalisation statistics (``model.norm_stats``, set by ``load_encoder``)."""
    stats = getattr(model, "norm_stats", None)
    if not stats:
        return
    warned = model.__dict__.setdefault("_raw_input_warned", set())
    for name, t in x.items():
        if name in warned or name not in model.sensors or not torch.is_tensor(t) or not t.is_floating_point():
            continue
        source = next((d for d, st in stats.items() if name in st), None)
        if source is None:
            continue
        s = model.sensors[name]
        mean = torch.tensor(stats[source][name]["mean"], dtype=torch.float64)
        std = torch.tensor(stats[source][name]["std"], dtype=torch.float64).clamp_min(1e-12)
        if mean.numel() != s.n_bands or t.shape[2 if s.is_series else 1] != s.n_bands:
            continue
        c_axis = 2 if s.is_series else 1
        step = max(1, int((t.shape[-2] * t.shape[-1] / 4096) ** 0.5))  # a strided subset is enough for a mean
        m = t.detach()[..., ::step, ::step].float().mean(dim=[d for d in range(t.dim()) if d != c_axis])
        m = m.double().cpu()  # per-band mean of the input
        # Standardised inputs have band means of a few units at most; raw inputs have band means near the
        # training data's raw means (both distances in units of the training std).
        to_zero = (m / std).abs().mean().item()
        to_raw = ((m - mean) / std).abs().mean().item()
        if m.abs().mean().item() > 5 and to_raw < to_zero / 2:
            warned.add(name)
            shown = [round(v, 1) for v in m[:3].tolist()]
            warnings.warn(
                f"{name}: the input looks like raw values (band means {shown}..., the training "
                f"data's raw means {[round(v, 3) for v in mean[:3].tolist()]}...) but the model was "
                "trained on standardised inputs; apply its statistics first: "
                f"NormStats.from_dict(model.norm_stats[{source!r}]).apply(sample)",
                stacklevel=4,
            )


def broadcast_per_date(x: Mapping) -> dict:
    """A copy of ``x`` whose 1-D ``<sensor>_dates`` / ``<sensor>_mask`` ``[T]`` are repeated for every sample
    (``[B, T]``) of their series ``[B, T, C, H, W]``; other entries are left as they are."""
    out = dict(x)
    for key, value in x.items():
        name, suffix = split_key(key)
        series = x.get(name)
        if (
            suffix in KEY_SUFFIXES
            and torch.is_tensor(value)
            and value.dim() == 1
            and torch.is_tensor(series)
            and series.dim() == 5
            and value.shape[0] == series.shape[1]
        ):
            out[key] = value[None].expand(series.shape[0], -1)
    return out


def prepare_input(model, x: Mapping, patch_size) -> tuple[dict, int]:
    """Bring an API input to the form the model computes on, or refuse it with a one-line :class:`SampleError`.

    * ``patch_size``: Python/NumPy integers, whole floats and 0-d tensors -> ``int`` metres.
    * floating-point sensor tensors (float16, float64...) -> the model's parameter dtype.
    * 1-D ``<sensor>_dates`` / ``<sensor>_mask`` ``[T]`` -> ``[B, T]`` (the same dates for every sample).
    * raw values for a model that carries normalisation statistics -> a warning (once per sensor).
    * an input whose sub-patch attention would not fit in the free memory -> refused, with the estimate.

    Returns ``(sample dict, patch size in metres)``; the contract itself is checked by :func:`validate_sample`.
    """
    P = patch_size_m(patch_size)
    if not isinstance(x, Mapping):
        raise SampleError(
            f"a sample must be a dict {{sensor: tensor, sensor_dates: tensor, ...}}, got {type(x).__name__}"
        )
    ref = next(model.parameters(), None)
    dtype = ref.dtype if ref is not None else torch.float32
    out = broadcast_per_date(x)
    for key, value in x.items():
        if torch.is_tensor(value) and split_key(key)[1] is None and value.is_floating_point() and value.dtype != dtype:
            out[key] = value.to(dtype)
    if not torch.compiler.is_compiling():
        if ref is not None:
            _check_memory(model, out, P, ref.device)
        if getattr(model, "check_values", True):
            _raw_input_check(model, out)
    return out, P


def random_sample(
    sensors,
    extent_m: float | tuple[float, float] = 60,
    batch: int = 2,
    n_dates: int = 3,
    generator: torch.Generator | None = None,
    registry: Mapping[str, Sensor] | None = None,
) -> dict:
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
