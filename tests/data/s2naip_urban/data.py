#!/usr/bin/env python3
"""Write a tiny S2NAIP-Urban copy in the layout the official AnySat reader takes (TorchGeo style: generated).

Four tiles: ``train`` (``t0_a``, ``t1_b``), ``val`` (``t2_c``), ``test`` (``t3_d``).  Values encode
what they are:

* NAIP PNG ``[512, 512, 4]`` uint8: ``row``, ``col``, ``row + col + k``, ``2 row + k`` (mod 256), ``k`` the tile number
* 10 m rasters ``[bands x T, 64, 64]``: ``1000 t + 100 band + row + col + k`` (band = position in
  the concatenated stack: S2 ``_8`` bands 0..3, ``_16`` bands 4..9; Landsat ``_8`` band 0,
  ``_16`` bands 1..10); S1 float32 VV = that value, VH = 7 (VH = 0 at pixel (0, 1) of the first date)
* 20 m rasters ``[bands x T, 32, 32]`` uint16: ``1000 t + 100 band + 10``, plus 1 on columns >= 16
* OpenStreetMap: a building polygon, a road line, a power tower point, a river multi-line,
  an unknown category (class 5), a feature without category (skipped)

Run ``python tests/data/s2naip_urban/data.py`` to regenerate (deterministic).
"""

import json
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.transform import from_origin

HERE = Path(__file__).parent
SPLITS = {"train": ["t0_a", "t1_b"], "val": ["t2_c"], "test": ["t3_d"]}
DATES = {  # per tile: s2, s1, l8 dates (YYYYMMDD)
    "t0_a": (["20190105", "20190614", "20191231"], ["20190301", "20190720"], ["20190410", "20190826", "20191101"]),
    "t1_b": (["20200229", "20200701"], ["20200102", "20200503", "20201231"], ["20200615", "20200930"]),
    "t2_c": (["20210110", "20210420", "20210808", "20211122"], ["20210301", "20210601"], ["20210512"]),
    "t3_d": (["20180101", "20180702"], ["20180310"], ["20180505", "20180905"]),
}
OSM = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "properties": {"category": "building"},
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[100, 100], [200, 100], [200, 180], [100, 180], [100, 100]]],
            },
        },
        {
            "type": "Feature",
            "properties": {"category": "road"},
            "geometry": {"type": "LineString", "coordinates": [[0.0, 300.7], [511.0, 300.2]]},
        },
        {
            "type": "Feature",
            "properties": {"category": "power_tower"},
            "geometry": {"type": "Point", "coordinates": [400, 50]},
        },
        {
            "type": "Feature",
            "properties": {"category": "river"},
            "geometry": {"type": "MultiLineString", "coordinates": [[[450, 0], [450, 250]], [[460, 0], [470, 600]]]},
        },
        {
            "type": "Feature",
            "properties": {"category": "park"},
            "geometry": {"type": "Polygon", "coordinates": [[[20, 400], [60, 400], [60, 440], [20, 440]]]},
        },
        {"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [250, 250]}},
    ],
}


def write_tif(path, data, gsd):
    path.parent.mkdir(parents=True, exist_ok=True)
    count, h, w = data.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=h,
        width=w,
        count=count,
        dtype=data.dtype,
        crs="EPSG:32610",
        transform=from_origin(550000.0, 4180000.0, gsd, gsd),
        compress="deflate",
        predictor=3 if data.dtype == np.float32 else 2,
    ) as dst:
        dst.write(data)


def stack(n_dates, bands, side, k):
    """Date-major ``[n_dates * len(bands), side, side]`` with ``1000 t + 100 band + row + col + k``."""
    r, c = np.mgrid[0:side, 0:side]
    return np.stack([1000 * t + 100 * b + r + c + k for t in range(n_dates) for b in bands])


def low(n_dates, bands):
    """20 m bands: ``1000 t + 100 band + 10``, plus 1 on columns >= 16."""
    step = (np.arange(32)[None, :] >= 16).repeat(32, axis=0)
    return np.stack([1000 * t + 100 * b + 10 + step for t in range(n_dates) for b in bands]).astype(np.uint16)


def main():
    for split, names in SPLITS.items():
        table = {"name": names, "s2_dates": [], "s1_dates": [], "l8_dates": []}
        for name in names:
            k = int(name[1])
            s2, s1, l8 = DATES[name]
            table["s2_dates"].append(s2)
            table["s1_dates"].append(s1)
            table["l8_dates"].append(l8)
            r, c = np.mgrid[0:512, 0:512]
            naip = (np.stack([r, c, r + c + k, 2 * r + k], axis=-1) % 256).astype(np.uint8)
            (HERE / "naip").mkdir(exist_ok=True)
            Image.fromarray(naip, "RGBA").save(HERE / "naip" / f"{name}.png")
            write_tif(HERE / "sentinel2" / f"{name}_8.tif", stack(len(s2), range(4), 64, k).astype(np.uint16), 10.0)
            write_tif(HERE / "sentinel2" / f"{name}_16.tif", low(len(s2), range(4, 10)), 20.0)
            write_tif(HERE / "landsat" / f"{name}_8.tif", stack(len(l8), [0], 64, k).astype(np.uint16), 10.0)
            write_tif(HERE / "landsat" / f"{name}_16.tif", low(len(l8), range(1, 11)), 20.0)
            vv = stack(len(s1), [0], 64, k).astype(np.float32)
            s1_data = np.stack([vv, np.full_like(vv, 7.0)], axis=1)  # [T, 2, 64, 64]
            s1_data[0, 1, 0, 1] = 0.0
            write_tif(HERE / "sentinel1" / f"{name}.tif", s1_data.reshape(-1, 64, 64), 10.0)
            (HERE / "openstreetmap").mkdir(exist_ok=True)
            (HERE / "openstreetmap" / f"{name}.geojson").write_text(json.dumps(OSM))
        (HERE / f"{split}_dict.json").write_text(json.dumps(table))
    (HERE / "NORM_naip_patch.json").write_text(
        json.dumps({"mean": [120.0, 110.0, 100.0, 90.0], "std": [40.0, 41.0, 42.0, 43.0]}, indent=4)
    )


if __name__ == "__main__":
    main()
