"""``anysat-lite embed``: per-patch embeddings of a set of GeoTIFFs, as a georeferenced xarray dataset.

The rasters (one single-date GeoTIFF per image sensor, one or more dated GeoTIFFs per time
series) may differ in CRS, pixel size and extent.  Their common extent (in a metric CRS, see
:func:`~anysat_lite.data.io.common_grid`) is cut into tiles of ``tile_m`` metres; each tile is
resampled to every sensor's native GSD (:func:`~anysat_lite.data.io.rasters_to_sample`),
normalised with the checkpoint's statistics and encoded (``output="all"``).  The result holds
``embedding (feature, y, x)`` per patch, ``tile_embedding (feature, tile_row, tile_col)`` per tile
and ``valid (y, x)``; :func:`write_netcdf` writes it with CF conventions, so GDAL, QGIS and
rioxarray place it on the map.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from rasterio.crs import CRS

from ..data.contract import patch_size_m
from ..data.io import (
    NodataError,
    RasterError,
    common_grid,
    open_raster,
    rasters_to_sample,
    read_geotiff,
    source_gsd_m,
    stack_time_series,
    target_crs,
)
from ..data.normalization import NormStats
from ..errors import UserError, check_device, check_output_file
from ..files import atomic_write
from ..sensors import SENSORS

__all__ = ["embed_rasters", "load_rasters", "write_netcdf", "default_tile_m", "check_tile_size"]

DEFAULT_TILE_M = 240.0  # tiles of about this side (a multiple of the patch size) are encoded one at a time


def load_rasters(spec: Mapping[str, str | Path | Sequence[str | Path]]) -> dict[str, xr.DataArray]:
    """``{sensor: [paths]}`` -> DataArrays (series are stacked by the dates in their file names).

    A single path stands for a list of one: ``{"aerial": "a.tif"}``.
    """
    if not isinstance(spec, Mapping):
        raise RasterError(
            f"load_rasters: expected a dict {{sensor: path or [paths]}}, got {type(spec).__name__} {str(spec)[:60]!r}; "
            'e.g. load_rasters({"aerial": "a.tif", "s2": ["s2_20200301.tif", "s2_20200615.tif"]})'
        )
    out = {}
    for sensor, paths in spec.items():
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        if sensor not in SENSORS:
            raise RasterError(f"unknown sensor {sensor!r}; known: {', '.join(SENSORS)}")
        s = SENSORS[sensor]
        folders = [str(p) for p in paths if Path(p).is_dir()]
        if folders:
            raise RasterError(f"{sensor}: {folders[0]} is a folder, expected a GeoTIFF file; name the file in it")
        missing = [str(p) for p in paths if not Path(p).is_file()]
        if missing:
            shown = repr(missing[0]) if missing[0] != missing[0].strip() else missing[0]  # a space would not show
            raise RasterError(f"{sensor}: no such file {shown}")
        if s.is_series:
            out[sensor] = stack_time_series(list(paths), bands=_bands(s, paths))
        else:
            if len(paths) != 1:
                raise RasterError(f"{sensor} is single-date imagery: give exactly one GeoTIFF, got {len(paths)}")
            out[sensor] = read_geotiff(paths[0], bands=_bands(s, paths))
    return out


def _bands(s, paths) -> tuple[str, ...]:
    for p in paths:
        with open_raster(p) as src:
            if src.count != s.n_bands:
                raise RasterError(
                    f"{p}: {src.count} band(s), but {s.name} takes {s.n_bands} "
                    f"({', '.join(s.bands)}, in that order); give a file with those bands"
                )
    return s.bands


def default_tile_m(patch_size: int) -> float:
    """The multiple of ``patch_size`` nearest :data:`DEFAULT_TILE_M` (at least one patch)."""
    return float(max(1, round(DEFAULT_TILE_M / patch_size)) * patch_size)


def check_tile_size(tile_m: float | None, patch_size: float) -> float:
    """The tile side in metres: ``tile_m`` (``None``: :func:`default_tile_m`), refused unless it is a positive
    multiple of ``patch_size`` (the command checks ``--tile-size`` with it before loading the encoder)."""
    P = patch_size
    if tile_m is None:
        return default_tile_m(P)
    tile_m = float(tile_m)
    if not math.isfinite(tile_m) or tile_m <= 0 or abs(tile_m / P - round(tile_m / P)) > 1e-9:
        raise RasterError(
            f"tile size {tile_m:g} m: expected a positive multiple of the {P:g} m patch size, got {tile_m:g}; e.g. "
            f"--tile-size {default_tile_m(P):g}, or leave it out for that default"
        )
    return tile_m


def _cuts(total_m: float, tile_m: float) -> list[tuple[float, float]]:
    """``(start, size)`` of tiles covering ``total_m`` metres; the last may be shorter."""
    n = int(np.ceil(total_m / tile_m - 1e-9))
    return [(i * tile_m, min(tile_m, total_m - i * tile_m)) for i in range(n)]


def _check_arguments(encoder, rasters, stats) -> None:
    """Refuse arguments of :func:`embed_rasters` of the wrong kind, before any tile is encoded."""
    if not isinstance(encoder, torch.nn.Module):
        load = f"encoder, meta = load_encoder({str(encoder)!r})" if isinstance(encoder, (str, Path)) else "load_encoder"
        raise UserError(f"encoder: expected an AnySat model, got {type(encoder).__name__}; load one first: {load}")
    if not isinstance(rasters, Mapping):
        raise RasterError(
            f"rasters: expected a dict {{sensor: DataArray}} as load_rasters returns, got {type(rasters).__name__}; "
            'e.g. rasters = load_rasters({"aerial": "a.tif"}), or {"aerial": da} for one DataArray'
        )
    for n, da in rasters.items():
        if n not in SENSORS:
            raise RasterError(f"rasters: unknown sensor {n!r}; known: {', '.join(SENSORS)}")
        if not isinstance(da, xr.DataArray):
            raise RasterError(
                f"rasters[{n!r}]: expected an xarray DataArray with its CRS and transform, got {type(da).__name__}; "
                f"read the GeoTIFF with load_rasters({{{n!r}: PATH}})"
            )
    if stats is not None and not isinstance(stats, NormStats):
        raise UserError(
            f"stats: expected NormStats or None, got {type(stats).__name__}; for the statistics an encoder carries: "
            "NormStats.from_dict(encoder.norm_stats[DATASET])"
        )


@torch.no_grad()
def embed_rasters(
    encoder,
    rasters: Mapping[str, xr.DataArray],
    patch_size: int,
    stats: NormStats | None = None,
    device="cpu",
    tile_m: float | None = None,
    nodata: str = "error",
) -> xr.Dataset:
    """Encode co-located rasters tile by tile -> ``xr.Dataset`` (see the module docstring).

    Args:
        encoder: an :class:`~anysat_lite.model.AnySat` (e.g. from ``load_encoder``).
        rasters: ``{sensor: DataArray}`` as from :func:`load_rasters`.
        patch_size: patch side ``P`` in metres; the common extent is cut to whole patches.
        stats: normalisation statistics applied to every tile (``None``: the rasters go in as they are).
        device: where the tiles are encoded (cpu, cuda, cuda:N or mps; the encoder must be there too).
        tile_m: side of the tiles in metres, a multiple of ``P`` (default :func:`default_tile_m`);
            patches attend to the patches of their tile only.
        nodata: ``"error"`` (stop when image pixels of a tile are nodata or a series has no complete
            date there) or ``"skip"`` (leave such tiles out: NaN embeddings, ``valid`` 0).
    """
    _check_arguments(encoder, rasters, stats)
    device = check_device("device", device)
    if nodata not in ("error", "skip"):
        raise RasterError(f"nodata must be 'error' or 'skip', got {nodata!r}")
    P = patch_size_m(patch_size)
    tile_m = check_tile_size(tile_m, P)
    units = [SENSORS[n].subpatch_m for n in rasters if not SENSORS[n].one_token_per_tile]
    bad = [
        n
        for n in rasters
        if not SENSORS[n].one_token_per_tile
        and abs(P / SENSORS[n].subpatch_m - round(P / SENSORS[n].subpatch_m)) > 1e-9
    ]
    if bad:
        raise RasterError(
            f"patch size {P} m is not a multiple of the {SENSORS[bad[0]].subpatch_m:g} m sub-patch of "
            f"{bad[0]}; choose a multiple of {max(units):g} m (--patch-size)"
        )
    grid = common_grid(rasters, unit_m=float(P))
    crs, crs_note = target_crs(rasters)
    rows, cols = _cuts(grid.height_m, tile_m), _cuts(grid.width_m, tile_m)
    h, w = int(round(grid.height_m / P)), int(round(grid.width_m / P))
    emb = tiles = None
    valid = np.zeros((h, w), dtype=np.uint8)
    skipped, masked, dates, first = [], {}, {}, None
    for i, (r0, rh) in enumerate(rows):
        for j, (c0, cw) in enumerate(cols):
            part = grid.part(r0, c0, rh, cw)
            try:
                sample = rasters_to_sample(rasters, grid=part)
            except NodataError as e:
                if nodata == "error":
                    raise NodataError(
                        f"tile {i},{j} ({rh:g} x {cw:g} m at x {part.left:.1f}, y {part.top:.1f}): {e}"
                    ) from None
                skipped.append((i, j))
                first = first or f"tile {i},{j}: {str(e).split('; ')[0]}"
                continue
            for n in rasters:
                if SENSORS[n].is_series:
                    m = sample.get(f"{n}_mask")
                    masked[n] = masked.get(n, 0) + (0 if m is None else int((~m).sum()))
                    dates[n] = dates.get(n, 0) + sample[n].shape[1]
            if stats is not None:
                sample = stats.apply(sample)
            sample = {k: v.to(device) for k, v in sample.items()}
            out = encoder(sample, P, output="all")[0].float().cpu().numpy()  # [1 + hp*wp, D]
            if emb is None:
                emb = np.full((out.shape[-1], h, w), np.nan, dtype=np.float32)
                tiles = np.full((out.shape[-1], len(rows), len(cols)), np.nan, dtype=np.float32)
            y0, x0 = int(round(r0 / P)), int(round(c0 / P))
            hp, wp = int(round(rh / P)), int(round(cw / P))
            emb[:, y0 : y0 + hp, x0 : x0 + wp] = out[1:].reshape(hp, wp, -1).transpose(2, 0, 1)
            tiles[:, i, j] = out[0]
            valid[y0 : y0 + hp, x0 : x0 + wp] = 1
    if emb is None:
        raise NodataError(
            f"every one of the {len(rows) * len(cols)} tile(s) has nodata, expected at least one without; nothing "
            f"to embed ({first}); give rasters with valid pixels where they overlap (fill or crop them), or tiles "
            f"smaller than {tile_m:g} m (--tile-size) so that some hold no nodata"
        )
    xs = grid.left + (np.arange(w) + 0.5) * P
    ys = grid.top - (np.arange(h) + 0.5) * P
    resampled = []
    for n, da in rasters.items():
        src = source_gsd_m(da, crs)
        s = SENSORS[n]
        how = (
            "native"
            if abs(src - s.gsd) <= 1e-3 * s.gsd
            else f"resampled from {src:.3g} m, {'average' if src < s.gsd else 'bilinear'}"
        )
        resampled.append(f"{n}: {s.gsd:g} m ({how})")
    nodata_notes = [f"{n}: nodata {da.attrs.get('nodata')}" for n, da in rasters.items()]
    nodata_notes += [f"{n}: {masked[n]} of {dates[n]} tile-dates masked for nodata" for n in masked]
    nodata_notes.append(f"{len(skipped)} of {len(rows) * len(cols)} tiles skipped for nodata")
    return xr.Dataset(
        {
            "embedding": (("feature", "y", "x"), emb),
            "tile_embedding": (("feature", "tile_row", "tile_col"), tiles),
            "valid": (("y", "x"), valid),
        },
        coords={"y": ys, "x": xs, "feature": np.arange(emb.shape[0])},
        attrs={
            "crs": grid.crs,
            "crs_name": crs_note,
            "patch_size_m": P,
            "tile_size_m": tile_m,
            "n_tiles": len(rows) * len(cols),
            "sensors": ",".join(rasters),
            "transform": (float(P), 0.0, grid.left, 0.0, -float(P), grid.top),
            "gsd_per_sensor": "; ".join(resampled),
            "nodata": "; ".join(nodata_notes),
        },
    )


# CF names of the WKT1 parameters of a Transverse Mercator projection (UTM, Gauss-Krueger, ...)
_CF_TRANSVERSE_MERCATOR = {
    "scale_factor": "scale_factor_at_central_meridian",
    "central_meridian": "longitude_of_central_meridian",
    "latitude_of_origin": "latitude_of_projection_origin",
    "false_easting": "false_easting",
    "false_northing": "false_northing",
}


def _cf_grid_mapping(crs: CRS) -> dict:
    """CF grid-mapping attributes: the WKT (read by GDAL, QGIS and rioxarray) and, for a Transverse Mercator
    projection (UTM among them), the CF parameters, read from the WKT's own ``PARAMETER`` entries (every
    rasterio writes them alike; ``CRS.to_dict()`` gives only ``{'init': 'epsg:...'}`` on some)."""
    wkt = crs.to_wkt()
    attrs = {"crs_wkt": wkt, "spatial_ref": wkt}
    projection = re.search(r'PROJECTION\["([^"]+)"', wkt)
    if projection and projection.group(1) == "Transverse_Mercator":
        params = dict(re.findall(r'PARAMETER\["([^"]+)",([-+0-9.eE]+)\]', wkt))
        if set(_CF_TRANSVERSE_MERCATOR) <= set(params):
            attrs["grid_mapping_name"] = "transverse_mercator"
            attrs.update({cf: float(params[name]) for name, cf in _CF_TRANSVERSE_MERCATOR.items()})
    return attrs


def write_netcdf(ds: xr.Dataset, path: str | Path, overwrite: bool = False) -> Path:
    """Write :func:`embed_rasters`' dataset to NetCDF with CF conventions (grid mapping, coordinate attributes).

    A file already at ``path`` is refused unless ``overwrite`` (``anysat-lite embed --force``); a missing
    folder is created.
    """
    path = Path(path)
    check_output_file("path", path, overwrite, replace="overwrite=True")
    crs = CRS.from_wkt(ds.attrs["crs"])
    a, _, c, _, e, f = ds.attrs["transform"]
    mapping = _cf_grid_mapping(crs)
    mapping["GeoTransform"] = f"{c!r} {a!r} 0.0 {f!r} 0.0 {e!r}"  # GDAL order: x0, dx, 0, y0, 0, dy
    out = ds.assign(spatial_ref=xr.DataArray(np.int32(0), attrs=mapping))
    for v in ("embedding", "valid"):
        out[v].attrs["grid_mapping"] = "spatial_ref"
    out["embedding"].attrs.update(long_name="AnySat patch embedding", units="1")
    out["valid"].attrs.update(long_name="1 where the patch was encoded, 0 where its tile was skipped for nodata")
    for axis in ("x", "y"):
        out[axis].attrs.update(
            standard_name=f"projection_{axis}_coordinate",
            units="m",
            axis=axis.upper(),
            long_name=f"{axis} coordinate of projection (patch centre)",
        )
    out.attrs["Conventions"] = "CF-1.8"
    atomic_write(path, out.to_netcdf)
    return path
