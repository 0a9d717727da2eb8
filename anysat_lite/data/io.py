"""GeoTIFF <-> xarray, dated GeoTIFF stacks, and co-registered rasters -> a model sample.

Everything carries its georeferencing: a DataArray from :func:`read_geotiff` has dims
``(band, y, x)``, pixel-centre ``y``/``x`` coordinates in the raster's CRS, and attrs
``crs`` (WKT), ``transform`` (6 affine coefficients), ``gsd`` (metres, from the transform)
and ``nodata``.
"""
from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import rasterio
import torch
import xarray as xr
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.transform import Affine, from_origin
from rasterio.warp import reproject

from ..sensors import SENSORS
from .contract import validate_sample

__all__ = ["read_geotiff", "write_geotiff", "stack_time_series", "date_from_name", "rasters_to_sample"]

_DATE = re.compile(r"(\d{4})[-_]?(\d{2})[-_]?(\d{2})")


def _coords(transform: Affine, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    xs = transform.c + transform.a * (np.arange(width) + 0.5)
    ys = transform.f + transform.e * (np.arange(height) + 0.5)
    return ys, xs


def read_geotiff(path: str | Path, bands: Sequence[str] | None = None, name: str | None = None) -> xr.DataArray:
    """Read a GeoTIFF into a ``(band, y, x)`` DataArray with CRS, transform and GSD attrs."""
    with rasterio.open(path) as src:
        data = src.read()
        t = src.transform
        if abs(abs(t.a) - abs(t.e)) > 1e-6 * abs(t.a):
            raise ValueError(f"{path}: non-square pixels ({abs(t.a)} x {abs(t.e)} m) are not supported")
        ys, xs = _coords(t, src.height, src.width)
        names = list(bands) if bands is not None else [d or f"b{i + 1}" for i, d in enumerate(src.descriptions)]
        if len(names) != src.count:
            raise ValueError(f"{path}: {src.count} bands in the file, {len(names)} band names given")
        return xr.DataArray(
            data, dims=("band", "y", "x"), coords={"band": names, "y": ys, "x": xs},
            name=name or Path(path).stem,
            attrs={"crs": src.crs.to_wkt() if src.crs else "", "transform": tuple(t)[:6],
                   "gsd": float(round(abs(t.a), 9)), "nodata": src.nodata})


def write_geotiff(da: xr.DataArray, path: str | Path) -> None:
    """Write a ``(band, y, x)`` DataArray (as produced by :func:`read_geotiff`) to a GeoTIFF."""
    arr = np.asarray(da.transpose("band", "y", "x").values)
    t = Affine(*da.attrs["transform"])
    with rasterio.open(path, "w", driver="GTiff", height=arr.shape[1], width=arr.shape[2], count=arr.shape[0],
                       dtype=arr.dtype, crs=CRS.from_wkt(da.attrs["crs"]) if da.attrs.get("crs") else None,
                       transform=t, nodata=da.attrs.get("nodata")) as dst:
        dst.write(arr)
        dst.descriptions = tuple(str(b) for b in da.coords["band"].values)


def date_from_name(name: str) -> dt.date:
    """First ``YYYYMMDD`` / ``YYYY-MM-DD`` in a file or product name."""
    m = _DATE.search(Path(name).name)
    if not m:
        raise ValueError(f"no date (YYYYMMDD or YYYY-MM-DD) in {name!r}")
    return dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))


def stack_time_series(paths: Sequence[str | Path], dates: Sequence[dt.date] | None = None,
                      bands: Sequence[str] | None = None) -> xr.DataArray:
    """Stack single-date GeoTIFFs of one sensor into ``(time, band, y, x)``, sorted by date.

    Dates come from ``dates`` or from the file names; the ``doy`` coordinate holds the
    day-of-year the model takes.  All files must share grid, CRS and bands.
    """
    if not paths:
        raise ValueError("stack_time_series needs at least one file")
    dates = list(dates) if dates is not None else [date_from_name(str(p)) for p in paths]
    arrays = [read_geotiff(p, bands) for p in paths]
    ref = arrays[0]
    for p, a in zip(paths, arrays):
        if a.shape != ref.shape or a.attrs["transform"] != ref.attrs["transform"] or a.attrs["crs"] != ref.attrs["crs"]:
            raise ValueError(f"{p}: grid {a.shape} / transform / CRS differ from {paths[0]}; co-register first")
    order = np.argsort(np.array(dates, dtype="datetime64[D]"))
    stacked = xr.concat([arrays[i] for i in order], dim="time")
    times = np.array([dates[i] for i in order], dtype="datetime64[D]")
    doy = [dates[i].timetuple().tm_yday for i in order]
    return stacked.assign_coords(time=times, doy=("time", doy)).assign_attrs(ref.attrs)


def _bounds(da: xr.DataArray) -> tuple[float, float, float, float]:
    t = Affine(*da.attrs["transform"])
    h, w = da.sizes["y"], da.sizes["x"]
    xs = [t.c, t.c + t.a * w]
    ys = [t.f, t.f + t.e * h]
    return min(xs), min(ys), max(xs), max(ys)


def _warp_to(da: xr.DataArray, crs_wkt: str, left: float, top: float, gsd: float, height: int, width: int,
             resampling: Resampling) -> np.ndarray:
    """Resample ``da`` (band or time x band stack) onto a north-up grid of ``gsd`` metres."""
    src = np.asarray(da.values)
    lead = src.shape[:-2]
    src2 = src.reshape(-1, *src.shape[-2:]).astype(np.float32)
    dst = np.zeros((src2.shape[0], height, width), dtype=np.float32)
    reproject(src2, dst, src_transform=Affine(*da.attrs["transform"]), src_crs=CRS.from_wkt(da.attrs["crs"]),
              dst_transform=from_origin(left, top, gsd, gsd), dst_crs=CRS.from_wkt(crs_wkt), resampling=resampling)
    return dst.reshape(*lead, height, width)


def rasters_to_sample(rasters: Mapping[str, xr.DataArray], extent_m: float | tuple[float, float] | None = None,
                      resampling: Resampling = Resampling.bilinear) -> dict[str, torch.Tensor]:
    """Turn co-located rasters into a batch-of-one model sample.

    ``rasters`` maps sensor names to DataArrays: ``(band, y, x)`` for images, ``(time, band, y, x)``
    with a ``doy`` coordinate for series.  All are brought to the CRS of the first raster, at
    each sensor's registered GSD, over the common extent, cropped (from the top-left corner of
    the intersection) to a size every sensor's sub-patch divides (or to ``extent_m``).
    """
    if not rasters:
        raise ValueError("rasters_to_sample needs at least one raster")
    names = list(rasters)
    for n in names:
        if n not in SENSORS:
            raise KeyError(f"unknown sensor {n!r}; known: {', '.join(SENSORS)}")
    crs = rasters[names[0]].attrs["crs"]
    # Common extent, in the target CRS (bounds of rasters in another CRS are transformed).
    from rasterio.warp import transform_bounds
    boxes = []
    for n in names:
        b = _bounds(rasters[n])
        if rasters[n].attrs["crs"] != crs:
            b = transform_bounds(CRS.from_wkt(rasters[n].attrs["crs"]), CRS.from_wkt(crs), *b)
        boxes.append(b)
    left, bottom = max(b[0] for b in boxes), max(b[1] for b in boxes)
    right, top = min(b[2] for b in boxes), min(b[3] for b in boxes)
    if right <= left or top <= bottom:
        raise ValueError("the rasters do not overlap")
    unit = max(SENSORS[n].subpatch_m for n in names if not SENSORS[n].one_token_per_tile)
    if extent_m is None:
        eh = np.floor((top - bottom) / unit + 1e-6) * unit
        ew = np.floor((right - left) / unit + 1e-6) * unit
    else:
        eh, ew = (extent_m, extent_m) if np.isscalar(extent_m) else extent_m
    if eh <= 0 or ew <= 0 or eh > top - bottom + 1e-6 or ew > right - left + 1e-6:
        raise ValueError(f"requested extent {eh} x {ew} m does not fit the {top - bottom:.2f} x {right - left:.2f} m overlap")
    sample: dict[str, torch.Tensor] = {}
    for n in names:
        s, da = SENSORS[n], rasters[n]
        if s.one_token_per_tile:
            h = w = max(1, int(round(min(eh, ew) / s.gsd)))
            gsd = min(eh, ew) / h
        else:
            h, w, gsd = int(round(eh / s.gsd)), int(round(ew / s.gsd)), s.gsd
        arr = _warp_to(da, crs, left, top, gsd, h, w, resampling)
        sample[n] = torch.from_numpy(arr)[None]
        if s.is_series:
            if "doy" not in da.coords:
                raise ValueError(f"{n}: a time series needs a 'doy' coordinate (see stack_time_series)")
            sample[f"{n}_dates"] = torch.as_tensor(np.asarray(da.coords["doy"].values), dtype=torch.long)[None]
    validate_sample(sample)
    return sample
