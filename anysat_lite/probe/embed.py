"""``anysat-lite embed``: per-patch embeddings of a set of GeoTIFFs, as a georeferenced xarray dataset.

The rasters (one single-date GeoTIFF per image sensor, one or more dated GeoTIFFs per time
series) are brought to a common extent (:func:`~anysat_lite.data.io.rasters_to_sample`),
normalised with the checkpoint's statistics, encoded with ``output="patch"``, and written
with the CRS and the patch-centre coordinates, ready to be probed on your own labels.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import xarray as xr
from rasterio.transform import Affine

from ..data.io import rasters_to_sample, read_geotiff, stack_time_series
from ..data.normalization import NormStats
from ..sensors import SENSORS

__all__ = ["embed_rasters", "load_rasters"]


def load_rasters(spec: Mapping[str, Sequence[str | Path]]) -> dict[str, xr.DataArray]:
    """``{sensor: [paths]}`` -> DataArrays (series are stacked by the dates in their file names)."""
    out = {}
    for sensor, paths in spec.items():
        if sensor not in SENSORS:
            raise KeyError(f"unknown sensor {sensor!r}; known: {', '.join(SENSORS)}")
        s = SENSORS[sensor]
        if s.is_series:
            out[sensor] = stack_time_series(list(paths), bands=s.bands)
        else:
            if len(paths) != 1:
                raise ValueError(f"{sensor} is single-date imagery: give exactly one GeoTIFF, got {len(paths)}")
            out[sensor] = read_geotiff(paths[0], bands=s.bands)
    return out


@torch.no_grad()
def embed_rasters(encoder, rasters: Mapping[str, xr.DataArray], patch_size: int, stats: NormStats | None = None,
                  device="cpu") -> xr.Dataset:
    """Encode co-located rasters -> ``xr.Dataset`` with ``embedding (y, x, feature)`` and ``tile (feature)``."""
    sample = rasters_to_sample(rasters)
    if stats is not None:
        sample = stats.apply(sample)
    sample = {k: v.to(device) for k, v in sample.items()}
    patch = encoder(sample, patch_size, output="all")[0].float().cpu().numpy()   # [1 + h*w, D]
    first = next(n for n in rasters if not SENSORS[n].one_token_per_tile)
    ref = rasters[first]
    t = Affine(*ref.attrs["transform"])
    s = SENSORS[first]
    h = int(round(ref.sizes["y"] * s.gsd / patch_size))
    w = int(round(ref.sizes["x"] * s.gsd / patch_size))
    # Patch centres in the raster CRS, from the top-left corner of the common extent.
    left, top = float(ref.x.min()) - s.gsd / 2, float(ref.y.max()) + s.gsd / 2
    xs = left + (np.arange(w) + 0.5) * patch_size
    ys = top - (np.arange(h) + 0.5) * patch_size
    ds = xr.Dataset(
        {"embedding": (("y", "x", "feature"), patch[1:].reshape(h, w, -1)), "tile": (("feature",), patch[0])},
        coords={"y": ys, "x": xs, "feature": np.arange(patch.shape[-1])},
        attrs={"crs": ref.attrs.get("crs", ""), "patch_size_m": patch_size, "sensors": ",".join(rasters),
               "transform": (float(patch_size), 0.0, left, 0.0, -float(patch_size), top), "north_up": int(t.e < 0)},
    )
    return ds
