#!/usr/bin/env python3
"""Write a tiny PASTIS-HD in the official on-disk layout (TorchGeo style: generated, not hand-made).

Six patches of 80 m x 80 m (the real ones are 1280 m: 128 px of Sentinel; the official reader
takes any size), listed in ``metadata.geojson`` in this order::

    ID_PATCH  Fold  S2 dates  S1A dates
    10000     1     7         5
    10002     3     22        21        more than 20 dates: the official train split keeps 20 at random
    10001     2     5         4
    20000     4     6         5
    30000     5     6         4         every date within a year of 2018-09-01 (days 0..365)
    10003     1     8         6         dates stored as a JSON string (some GeoJSON writers do that)

Files (``<id>`` = ID_PATCH)::

    metadata.geojson        EPSG:2154 polygons; properties ID_PATCH, Fold, TILE, N_Parcel, dates-S2, dates-S1A,
                            dates-S1D ({"0": YYYYMMDD, ...}, in chronological order)
    DATA_S2/S2_<id>.npy     [T, 10, 8, 8] int16
    DATA_S1A/S1A_<id>.npy   [T, 3, 8, 8] float32 (VV, VH, VV/VH)
    DATA_S1D/S1D_<id>.npy   [T, 3, 8, 8] float32 (never read by the AnySat reader)
    DATA_SPOT/PASTIS_SPOT6_RVB_1M00_2019/SPOT6_RVB_1M00_2019_<id>.tif   [3, 80, 80] uint8, 1 m, deflate
    ANNOTATIONS/TARGET_<id>.npy   [3, 8, 8] uint8; channel 0 = semantic classes 0..19 (19 = void),
                                  channels 1, 2 = zeros (not read)
    NORM_<sensor>_patch.json      {"Fold_1": {"mean": [C], "std": [C]}, ..., "Fold_5": ...} for s2, s1, spot

Run ``python tests/data/pastis_hd/data.py`` to regenerate (deterministic).
"""

import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

HERE = Path(__file__).parent
PATCHES = [  # (ID_PATCH, Fold, S2 dates, S1A dates)
    (10000, 1, 7, 5),
    (10002, 3, 22, 21),
    (10001, 2, 5, 4),
    (20000, 4, 6, 5),
    (30000, 5, 6, 4),
    (10003, 1, 8, 6),
]
REFERENCE = dt.date(2018, 9, 1)
SIDE = 8  # Sentinel pixels (10 m); SPOT is 10 x SIDE pixels (1 m)


def dates(rng, n: int, last_day: int) -> dict[str, int]:
    days = np.sort(rng.choice(np.arange(0, last_day + 1), size=n, replace=False))
    return {str(i): int((REFERENCE + dt.timedelta(days=int(d))).strftime("%Y%m%d")) for i, d in enumerate(days)}


def main():
    for p in ("DATA_S2", "DATA_S1A", "DATA_S1D", "DATA_SPOT", "ANNOTATIONS"):
        shutil.rmtree(HERE / p, ignore_errors=True)
        (HERE / p).mkdir()
    (HERE / "DATA_SPOT" / "PASTIS_SPOT6_RVB_1M00_2019").mkdir()
    rng = np.random.default_rng(16)
    features = []
    for k, (pid, fold, t2, t1) in enumerate(PATCHES):
        last = 365 if pid == 30000 else 440  # 440 days after 2018-09-01 is 2019-11-15
        d2, d1a, d1d = dates(rng, t2, last), dates(rng, t1, last), dates(rng, 3, last)
        if k == 0:  # the first and last acquisitions of the real series' span
            d2["0"], d2[str(t2 - 1)] = 20180901, 20191115
        left, top = 600000.0 + 1000 * k, 6800000.0
        props = {
            "ID_PATCH": pid,
            "Fold": fold,
            "TILE": "T31TFM",
            "N_Parcel": int(rng.integers(5, 50)),
            "dates-S2": json.dumps(d2) if pid == 10003 else d2,
            "dates-S1A": d1a,
            "dates-S1D": d1d,
        }
        ring = [
            [left, top],
            [left + 10 * SIDE, top],
            [left + 10 * SIDE, top - 10 * SIDE],
            [left, top - 10 * SIDE],
            [left, top],
        ]
        features.append(
            {"type": "Feature", "properties": props, "geometry": {"type": "Polygon", "coordinates": [ring]}}
        )
        s2 = rng.integers(0, 32, size=(t2, 10, SIDE, SIDE)) + rng.integers(2, 40, size=(t2, 10, 1, 1)) * 100
        np.save(HERE / "DATA_S2" / f"S2_{pid}.npy", s2.astype(np.int16))
        for folder, t in (("S1A", t1), ("S1D", 3)):
            vv_vh = rng.integers(1, 64, size=(t, 2, SIDE, SIDE)).astype(np.float32) / 128
            np.save(
                HERE / f"DATA_{folder}" / f"{folder}_{pid}.npy", np.concatenate([vv_vh, vv_vh[:, :1] / vv_vh[:, 1:]], 1)
            )
        yy, xx = np.mgrid[0 : 10 * SIDE, 0 : 10 * SIDE]
        spot = np.stack([(yy + 3 * xx + 41 * k + 70 * b) % 256 for b in range(3)]).astype(np.uint8)
        with rasterio.open(
            HERE / "DATA_SPOT" / "PASTIS_SPOT6_RVB_1M00_2019" / f"SPOT6_RVB_1M00_2019_{pid}.tif",
            "w",
            driver="GTiff",
            height=10 * SIDE,
            width=10 * SIDE,
            count=3,
            dtype="uint8",
            crs="EPSG:2154",
            transform=from_origin(left, top, 1.0, 1.0),
            compress="deflate",
            predictor=2,
        ) as dst:
            dst.write(spot)
        target = np.zeros((3, SIDE, SIDE), dtype=np.uint8)
        if pid == 20000:  # background and void only: no crop class present
            target[0, :, :4] = 19
        else:
            target[0] = rng.choice([0, 0, 19, 1 + k, 2 + 2 * k, 18 if k % 2 else 3], size=(SIDE, SIDE))
        np.save(HERE / "ANNOTATIONS" / f"TARGET_{pid}.npy", target)
    meta = {
        "type": "FeatureCollection",
        "name": "metadata",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::2154"}},
        "features": features,
    }
    (HERE / "metadata.geojson").write_text(json.dumps(meta))
    for sensor, c in (("s2", 10), ("s1", 3), ("spot", 3)):
        norm = {
            f"Fold_{f}": {"mean": [100.0 * f + b for b in range(c)], "std": [10.0 * f + b for b in range(c)]}
            for f in range(1, 6)
        }
        (HERE / f"NORM_{sensor}_patch.json").write_text(json.dumps(norm, indent=4))


if __name__ == "__main__":
    main()
