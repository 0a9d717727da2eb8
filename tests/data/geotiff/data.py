#!/usr/bin/env python3
"""Write the tiny GeoTIFF fixtures of the tests (TorchGeo style: generated, not hand-made).

A 20 m x 20 m scene in UTM 32N (EPSG:32632), top-left corner (500000, 5000020):

* ``aerial.tif``              0.2 m, 100 x 100 px, 4 bands uint8 (R, G, B, NIR)
* ``s2_2020MMDD.tif`` x 3     10 m, 2 x 2 px, 10 bands float32, dates 2020-03-01, 2020-06-15, 2020-09-30
* ``s1-asc_2020MMDD.tif`` x 2 10 m, 2 x 2 px, 2 bands float32 (VV, VH), dates 2020-04-10, 2020-08-20
* ``s2_wgs84_20200301.tif``   the first S2 date warped to EPSG:4326 (to test reprojection)

Awkward inputs (for the error and resampling paths):

* ``s2_shifted_20200301.tif``  10 m, 3 x 2 px starting 10 m east: overlaps the scene on 10 m x 20 m only
* ``s2_20m_20200301.tif``      20 m (not S2's native 10 m), 2 x 2 px: covers the scene and more
* ``aerial_nodata.tif``        ``aerial.tif`` with ``nodata=0``: its western half is 0, the rest at least 1
* ``s2nd_20200401.tif``, ``s2nd_20200701.tif``  a series with ``nodata=-9999``: one pixel of the first date
* ``nocrs.tif``                4 bands, 0.2 m, no CRS
* ``aerial_tiny.tif``          0.2 m, 5 x 5 px (1 m): smaller than one sub-patch of S2

Run ``python tests/data/geotiff/data.py`` to regenerate (deterministic).
"""

from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import calculate_default_transform, reproject

HERE = Path(__file__).parent
CRS = "EPSG:32632"
LEFT, TOP = 500000.0, 5000020.0


def write(path, data, gsd, crs=CRS, transform=None, names=None, nodata=None):
    count, h, w = data.shape
    transform = transform or from_origin(LEFT, TOP, gsd, gsd)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=h,
        width=w,
        count=count,
        dtype=data.dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
    ) as dst:
        dst.write(data)
        if names:
            dst.descriptions = tuple(names)


def main():
    rng = np.random.default_rng(0)
    write(
        HERE / "aerial.tif", rng.integers(0, 255, size=(4, 100, 100), dtype=np.uint8), 0.2, names=["R", "G", "B", "NIR"]
    )
    for date in ("20200301", "20200615", "20200930"):
        write(HERE / f"s2_{date}.tif", rng.uniform(0, 5000, size=(10, 2, 2)).astype(np.float32), 10.0)
    for date in ("20200410", "20200820"):
        write(HERE / f"s1-asc_{date}.tif", rng.uniform(0, 0.3, size=(2, 2, 2)).astype(np.float32), 10.0)
    # A copy of the first S2 date in geographic coordinates.
    with rasterio.open(HERE / "s2_20200301.tif") as src:
        t, w, h = calculate_default_transform(src.crs, "EPSG:4326", src.width, src.height, *src.bounds)
        out = np.zeros((src.count, h, w), dtype=np.float32)
        reproject(src.read(), out, src_transform=src.transform, src_crs=src.crs, dst_transform=t, dst_crs="EPSG:4326")
    write(HERE / "s2_wgs84_20200301.tif", out, None, crs="EPSG:4326", transform=t)

    # Awkward inputs (drawn after the files above, which stay unchanged).
    write(
        HERE / "s2_shifted_20200301.tif",
        rng.uniform(0, 5000, size=(10, 2, 3)).astype(np.float32),
        10.0,
        transform=from_origin(LEFT + 10, TOP, 10.0, 10.0),
    )
    write(
        HERE / "s2_20m_20200301.tif",
        rng.uniform(0, 5000, size=(10, 2, 2)).astype(np.float32),
        20.0,
        transform=from_origin(LEFT, TOP + 20, 20.0, 20.0),
    )
    with rasterio.open(HERE / "aerial.tif") as src:
        aerial = np.maximum(src.read(), 1)  # 0 is nodata here: only the western half
    aerial[:, :, :50] = 0
    write(HERE / "aerial_nodata.tif", aerial, 0.2, names=["R", "G", "B", "NIR"], nodata=0)
    for date, hole in (("20200401", True), ("20200701", False)):
        data = rng.uniform(0, 5000, size=(10, 2, 2)).astype(np.float32)
        if hole:
            data[:, 0, 1] = -9999
        write(HERE / f"s2nd_{date}.tif", data, 10.0, nodata=-9999)
    write(HERE / "nocrs.tif", rng.integers(0, 255, size=(4, 10, 10), dtype=np.uint8), 0.2, crs=None)
    write(HERE / "aerial_tiny.tif", rng.integers(0, 255, size=(4, 5, 5), dtype=np.uint8), 0.2)


if __name__ == "__main__":
    main()
