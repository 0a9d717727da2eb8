"""GeoTIFF <-> xarray, dated GeoTIFF stacks, and co-located rasters -> a model sample.

Everything carries its georeferencing: a DataArray from :func:`read_geotiff` has dims
``(band, y, x)``, pixel-centre ``y``/``x`` coordinates in the raster's CRS, and attrs
``crs`` (WKT), ``transform`` (6 affine coefficients), ``gsd`` (pixel size in CRS units:
metres for projected CRSs), ``nodata`` and ``path``.

:func:`rasters_to_sample` brings rasters of any CRS, pixel size and (overlapping) extent to a
:class:`Grid`: their common extent in a metric CRS (:func:`target_crs`), each sensor at its
registered GSD, nodata turned into date masks (series) or an error (images).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import torch
import xarray as xr
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.transform import Affine
from rasterio.warp import reproject, transform, transform_bounds

from ..errors import UserError
from ..sensors import SENSORS
from .contract import validate_sample

__all__ = [
    "read_geotiff",
    "write_geotiff",
    "stack_time_series",
    "date_from_name",
    "rasters_to_sample",
    "common_grid",
    "target_crs",
    "Grid",
    "RasterError",
    "NodataError",
]

_DATE = re.compile(r"(\d{4})[-_]?(\d{2})[-_]?(\d{2})")


def _coords(transform: Affine, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    xs = transform.c + transform.a * (np.arange(width) + 0.5)
    ys = transform.f + transform.e * (np.arange(height) + 0.5)
    return ys, xs


def open_raster(path: str | Path):
    """``rasterio.open(path)``, with one-line :class:`RasterError` for a folder, a missing file or a file
    GDAL cannot read."""
    if Path(path).is_dir():
        raise RasterError(f"{path}: expected a GeoTIFF file, got a folder; name the file in it")
    if not Path(path).is_file():
        raise RasterError(f"{path}: no such file")
    try:
        return rasterio.open(path)
    except rasterio.errors.RasterioIOError:
        raise RasterError(f"{path}: not a raster GDAL can read; expected a GeoTIFF") from None


def read_geotiff(path: str | Path, bands: Sequence[str] | None = None, name: str | None = None) -> xr.DataArray:
    """Read a GeoTIFF into a ``(band, y, x)`` DataArray with CRS, transform and GSD attrs."""
    with open_raster(path) as src:
        data = src.read()
        t = src.transform
        if t.b or t.d:
            raise RasterError(
                f"{path}: rotated pixel grid (transform {tuple(t)[:6]}); warp it to a north-up grid first (gdalwarp)"
            )
        ys, xs = _coords(t, src.height, src.width)
        names = list(bands) if bands is not None else [d or f"b{i + 1}" for i, d in enumerate(src.descriptions)]
        if len(names) != src.count:
            raise RasterError(
                f"{path}: {src.count} bands in the file, {len(names)} band names given "
                f"({', '.join(names)}); give a file with those bands in that order"
            )
        return xr.DataArray(
            data,
            dims=("band", "y", "x"),
            coords={"band": names, "y": ys, "x": xs},
            name=name or Path(path).stem,
            attrs={
                "crs": src.crs.to_wkt() if src.crs else "",
                "transform": tuple(t)[:6],
                "gsd": float(round(abs(t.a), 9)),
                "nodata": src.nodata,
                "path": str(path),
            },
        )


def write_geotiff(da: xr.DataArray, path: str | Path) -> None:
    """Write a ``(band, y, x)`` DataArray (as produced by :func:`read_geotiff`) to a GeoTIFF."""
    arr = np.asarray(da.transpose("band", "y", "x").values)
    t = Affine(*da.attrs["transform"])
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=arr.shape[1],
        width=arr.shape[2],
        count=arr.shape[0],
        dtype=arr.dtype,
        crs=CRS.from_wkt(da.attrs["crs"]) if da.attrs.get("crs") else None,
        transform=t,
        nodata=da.attrs.get("nodata"),
    ) as dst:
        dst.write(arr)
        dst.descriptions = tuple(str(b) for b in da.coords["band"].values)


def date_from_name(name: str) -> dt.date:
    """First ``YYYYMMDD`` / ``YYYY-MM-DD`` in a file or product name."""
    m = _DATE.search(Path(name).name)
    if not m:
        raise RasterError(
            f"no date (YYYYMMDD or YYYY-MM-DD) in the file name {name!r}; put the acquisition date in "
            "the name (s2_20200301.tif) or pass dates=[...] to stack_time_series"
        )
    try:
        return dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError as e:
        raise RasterError(
            f"{m.group(0)!r} in the file name {name!r} is not a date ({e}); name the file with its acquisition "
            "date as YYYYMMDD or YYYY-MM-DD"
        ) from None


def stack_time_series(
    paths: Sequence[str | Path], dates: Sequence[dt.date] | None = None, bands: Sequence[str] | None = None
) -> xr.DataArray:
    """Stack single-date GeoTIFFs of one sensor into ``(time, band, y, x)``, sorted by date.

    Dates come from ``dates`` or from the file names; the ``doy`` coordinate holds the
    day-of-year the model takes.  All files must share grid, CRS and bands.
    """
    if not paths:
        raise RasterError("stack_time_series needs at least one file")
    dates = list(dates) if dates is not None else [date_from_name(str(p)) for p in paths]
    arrays = [read_geotiff(p, bands) for p in paths]
    ref = arrays[0]
    for p, a in zip(paths, arrays):
        if a.shape != ref.shape or a.attrs["transform"] != ref.attrs["transform"] or a.attrs["crs"] != ref.attrs["crs"]:
            raise RasterError(f"{p}: grid {a.shape} / transform / CRS differ from {paths[0]}; co-register first")
        if a.attrs["nodata"] != ref.attrs["nodata"]:
            raise RasterError(
                f"{p}: nodata {a.attrs['nodata']} differs from {ref.attrs['nodata']} in {paths[0]}; "
                "give the dates of a series one nodata value"
            )
    order = np.argsort(np.array(dates, dtype="datetime64[D]"))
    stacked = xr.concat([arrays[i] for i in order], dim="time")
    # nanoseconds: older xarray converts any other resolution itself, with a warning
    times = np.array([dates[i] for i in order], dtype="datetime64[D]").astype("datetime64[ns]")
    doy = [dates[i].timetuple().tm_yday for i in order]
    return stacked.assign_coords(time=times, doy=("time", doy)).assign_attrs(ref.attrs)


class RasterError(UserError):
    """Rasters that cannot be brought to a common grid (no CRS, no overlap, too small...)."""


class NodataError(RasterError):
    """Nodata (or no coverage) where the model needs values: image pixels, or every date of a series."""


@dataclass(frozen=True)
class Grid:
    """A north-up extent in a metric CRS: top-left corner ``(left, top)`` and size ``(height_m, width_m)`` in metres."""

    crs: str  # WKT
    left: float
    top: float
    height_m: float
    width_m: float

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in metres."""
        return self.left, self.top - self.height_m, self.left + self.width_m, self.top

    def part(self, row_m: float, col_m: float, height_m: float, width_m: float) -> Grid:
        """The sub-extent starting ``row_m`` metres below and ``col_m`` metres right of the top-left corner."""
        return Grid(self.crs, self.left + col_m, self.top - row_m, height_m, width_m)


def _source(da: xr.DataArray) -> str:
    return str(da.attrs.get("path") or da.name or "raster")


def _bounds(da: xr.DataArray) -> tuple[float, float, float, float]:
    t = Affine(*da.attrs["transform"])
    h, w = da.sizes["y"], da.sizes["x"]
    xs = [t.c, t.c + t.a * w]
    ys = [t.f, t.f + t.e * h]
    return min(xs), min(ys), max(xs), max(ys)


def _crs(name: str, da: xr.DataArray) -> CRS:
    wkt = da.attrs.get("crs")
    if not wkt:
        raise RasterError(
            f"{name} ({_source(da)}): the raster has no CRS, so it cannot be placed on the ground; "
            "assign one (e.g. gdal_edit.py -a_srs EPSG:32632 file.tif, or rio edit-info --crs)"
        )
    return CRS.from_wkt(wkt)


def _utm_of(crs: CRS, bounds) -> CRS:
    """The UTM zone (WGS 84) holding the centre of ``bounds`` given in the geographic ``crs``."""
    lon, lat = transform(crs, CRS.from_epsg(4326), [(bounds[0] + bounds[2]) / 2], [(bounds[1] + bounds[3]) / 2])
    zone = min(60, int((lon[0] + 180) // 6) + 1)
    return CRS.from_epsg((32600 if lat[0] >= 0 else 32700) + zone)


def target_crs(rasters: Mapping[str, xr.DataArray]) -> tuple[CRS, str]:
    """The metric CRS the rasters are brought to, and why: the first raster in a projected CRS in metres, or the
    UTM zone of the first raster's centre when every raster is in geographic coordinates (degrees)."""
    crss = {n: _crs(n, da) for n, da in rasters.items()}
    for n, crs in crss.items():
        if crs.is_projected:
            unit, factor = crs.linear_units_factor
            if abs(factor - 1.0) > 1e-9:
                raise RasterError(
                    f"{n} ({_source(rasters[n])}): CRS units are {unit}, the model works in metres; "
                    "reproject it to a metric CRS (e.g. its UTM zone: gdalwarp -t_srs EPSG:326XX)"
                )
            return crs, f"{f'EPSG:{crs.to_epsg()}' if crs.to_epsg() else crs.to_string()} (from {n})"
    first = next(iter(rasters))
    utm = _utm_of(crss[first], _bounds(rasters[first]))
    return utm, f"EPSG:{utm.to_epsg()} (UTM zone of {first}'s centre: every input is in degrees)"


def common_grid(rasters: Mapping[str, xr.DataArray], unit_m: float | None = None) -> Grid:
    """The common extent of ``rasters`` in :func:`target_crs`, cut down to whole multiples of ``unit_m`` metres
    (default: the largest sub-patch of the spatial sensors) from its top-left corner."""
    if not rasters:
        raise RasterError("no raster given; pass {sensor: DataArray}")
    for n in rasters:
        if n not in SENSORS:
            raise RasterError(f"unknown sensor {n!r}; known: {', '.join(SENSORS)}")
    crs, _ = target_crs(rasters)
    boxes = {}
    for n, da in rasters.items():
        b, src = _bounds(da), _crs(n, da)
        boxes[n] = b if src == crs else transform_bounds(src, crs, *b)
    left, bottom = max(b[0] for b in boxes.values()), max(b[1] for b in boxes.values())
    right, top = min(b[2] for b in boxes.values()), min(b[3] for b in boxes.values())
    where = "; ".join(f"{n} x {b[0]:.1f}..{b[2]:.1f}, y {b[1]:.1f}..{b[3]:.1f}" for n, b in boxes.items())
    if right <= left or top <= bottom:
        raise RasterError(
            f"the rasters do not overlap ({where} m in {crs.to_string()}); give rasters of the same place"
        )
    spatial = [n for n in rasters if not SENSORS[n].one_token_per_tile]
    if not spatial:
        raise RasterError(f"only one-token-per-tile sensors ({', '.join(rasters)}); add a sensor with spatial extent")
    unit = unit_m or max(SENSORS[n].subpatch_m for n in spatial)
    h = np.floor((top - bottom) / unit + 1e-6) * unit
    w = np.floor((right - left) / unit + 1e-6) * unit
    if h <= 0 or w <= 0:
        raise RasterError(
            f"the rasters overlap on {right - left:.1f} x {top - bottom:.1f} m ({where} m), less than "
            f"one {unit:g} m cell (patch or sub-patch) each way; give rasters covering at least "
            f"{unit:g} x {unit:g} m together (or a smaller patch size)"
        )
    # corners to the millimetre: bounds transformed from another CRS carry float noise
    return Grid(crs.to_wkt(), round(float(left), 3), round(float(top), 3), float(h), float(w))


def resampling_for(da: xr.DataArray, crs: CRS, gsd: float) -> Resampling:
    """Average when the source pixels are finer than ``gsd`` metres, bilinear otherwise."""
    return Resampling.average if source_gsd_m(da, crs) < 0.999 * gsd else Resampling.bilinear


def source_gsd_m(da: xr.DataArray, crs: CRS) -> float:
    """Pixel size of ``da`` in metres of ``crs`` (approximate for a raster in another CRS)."""
    b = _bounds(da)
    src = _crs("", da)
    if src != crs:
        b = transform_bounds(src, crs, *b)
    return float((b[2] - b[0]) / max(da.sizes["x"], 1))


def _warp_to(
    da: xr.DataArray, grid: Grid, gsd: float, height: int, width: int, resampling: Resampling | None
) -> np.ndarray:
    """Resample ``da`` (``(band, y, x)`` or ``(time, band, y, x)``) onto ``height x width`` pixels of ``gsd`` metres
    from the grid's top-left corner -> float32 ``[..., height, width]``, NaN where the source has nodata or no pixel."""
    crs, src_crs = CRS.from_wkt(grid.crs), _crs("", da)
    t = Affine(*da.attrs["transform"])
    # Read only the source window around the grid (plus a margin for the resampling kernel).
    b = grid.bounds if src_crs == crs else transform_bounds(crs, src_crs, *grid.bounds)
    cols = sorted(((b[0] - t.c) / t.a, (b[2] - t.c) / t.a))
    rows = sorted(((b[3] - t.f) / t.e, (b[1] - t.f) / t.e))
    c0, c1 = max(0, int(np.floor(cols[0])) - 2), min(da.sizes["x"], int(np.ceil(cols[1])) + 2)
    r0, r1 = max(0, int(np.floor(rows[0])) - 2), min(da.sizes["y"], int(np.ceil(rows[1])) + 2)
    dst = np.full((int(np.prod(da.shape[:-2])), height, width), np.nan, dtype=np.float32)
    if c1 <= c0 or r1 <= r0:
        return dst.reshape(*da.shape[:-2], height, width)
    src = np.asarray(da.isel(y=slice(r0, r1), x=slice(c0, c1)).values)
    src = src.reshape(-1, *src.shape[-2:]).astype(np.float32)
    nodata = da.attrs.get("nodata")
    missing = np.isnan(src) if nodata is None or np.isnan(nodata) else (src == np.float32(nodata)) | np.isnan(src)
    common = dict(
        src_transform=t @ Affine.translation(c0, r0),
        src_crs=src_crs,
        dst_transform=Affine(gsd, 0.0, grid.left, 0.0, -gsd, grid.top),  # north-up, origin at the top-left corner
        dst_crs=crs,
    )
    reproject(
        np.where(missing, np.nan, src),
        dst,
        src_nodata=np.nan,
        dst_nodata=np.nan,
        init_dest_nodata=True,
        resampling=resampling if resampling is not None else resampling_for(da, crs, gsd),
        **common,
    )
    if missing.any():
        # A destination pixel any nodata pixel contributes to is nodata (the resampling kernels would fill it in).
        reach = np.zeros(dst.shape, dtype=np.float32)
        reproject(missing.astype(np.float32), reach, resampling=Resampling.max, **common)
        dst[reach > 0] = np.nan
    return dst.reshape(*da.shape[:-2], height, width)


def rasters_to_sample(
    rasters: Mapping[str, xr.DataArray],
    extent_m: float | tuple[float, float] | None = None,
    resampling: Resampling | None = None,
    grid: Grid | None = None,
) -> dict[str, torch.Tensor]:
    """Turn co-located rasters into a batch-of-one model sample.

    ``rasters`` maps sensor names to DataArrays: ``(band, y, x)`` for images, ``(time, band, y, x)``
    with a ``doy`` coordinate for series.  All are resampled onto ``grid`` (default: the common extent
    of :func:`common_grid`, in :func:`target_crs`, cut to ``extent_m`` metres from its top-left corner
    when given) at each sensor's registered GSD.  ``resampling`` defaults to average where the source
    pixels are finer than the sensor's GSD and bilinear otherwise.

    The rasters' nodata values are honoured: a series date with nodata in the extent is masked
    (``<sensor>_mask`` False); nodata in an image, or a series without any complete date, raises
    :class:`NodataError`.
    """
    grid = grid or common_grid(rasters)
    if extent_m is not None:
        eh, ew = (extent_m, extent_m) if np.isscalar(extent_m) else extent_m
        if eh <= 0 or ew <= 0 or eh > grid.height_m + 1e-6 or ew > grid.width_m + 1e-6:
            raise RasterError(
                f"requested extent {eh:g} x {ew:g} m does not fit in the rasters' common extent of "
                f"{grid.height_m:g} x {grid.width_m:g} m; ask for at most that (extent_m)"
            )
        grid = grid.part(0.0, 0.0, float(eh), float(ew))
    eh, ew = grid.height_m, grid.width_m
    sample: dict[str, torch.Tensor] = {}
    for n, da in rasters.items():
        s = SENSORS[n]
        if s.one_token_per_tile:
            h = w = max(1, int(round(min(eh, ew) / s.gsd)))
            gsd = min(eh, ew) / h
        else:
            h, w, gsd = int(round(eh / s.gsd)), int(round(ew / s.gsd)), s.gsd
        arr = _warp_to(da, grid, gsd, h, w, resampling)
        missing = np.isnan(arr)
        where = f"{n} ({_source(da)}, nodata {da.attrs.get('nodata')})"
        if s.is_series:
            if "doy" not in da.coords:
                raise RasterError(f"{n}: a time series needs a 'doy' coordinate (see stack_time_series)")
            valid = ~missing.reshape(missing.shape[0], -1).any(axis=1)
            if not valid.any():
                raise NodataError(
                    f"{where}: every one of its {len(valid)} dates has nodata (or no pixel) in the "
                    f"{eh:g} x {ew:g} m extent; give dates covering it"
                )
            arr[missing] = 0.0  # masked dates: the projector replaces them by its learned pad value
            sample[n] = torch.from_numpy(arr)[None]
            sample[f"{n}_dates"] = torch.as_tensor(np.asarray(da.coords["doy"].values), dtype=torch.long)[None]
            if not valid.all():
                sample[f"{n}_mask"] = torch.from_numpy(valid)[None]
        else:
            if missing.any():
                share = missing.any(axis=0).mean()
                raise NodataError(
                    f"{where}: {share:.0%} of the pixels in the {eh:g} x {ew:g} m extent have nodata "
                    "or no source pixel; crop the extent, fill the raster, or with anysat-lite embed "
                    "use --nodata skip (embed_rasters(nodata='skip')) to leave such tiles out"
                )
            sample[n] = torch.from_numpy(arr)[None]
    validate_sample(sample)
    return sample
