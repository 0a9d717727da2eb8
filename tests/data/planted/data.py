#!/usr/bin/env python3
"""Write a tiny PLANTED copy in the layout the official AnySat reader takes (TorchGeo style: generated).

Five tiles: ``train`` (p0001 class 3, p0002 class 17, p0003 class 3), ``val`` (p0101 class 5),
``test`` (p0201 class 39).  Per tile and sensor ``<id>_<sensor>.npz`` (``arr_0 [T, H, W, C]``
float32), ``<id>_<sensor>_mask.npz`` (``[T, H, W, 1]`` uint8, 1 = valid) and
``<id>_<sensor>_timestamp.npz`` (``[T]`` int64 ms since 1970 UTC, at 10:30 UTC).  Values encode
their position: ``1000 t + 100 c + 10 row + col + tile``; VH/HV of pixel (0, 0) at the first date
is 0 (the ratio band is then clipped to 1e4); every first pixel of the last date is invalid.

Run ``python tests/data/planted/data.py`` to regenerate (deterministic).
"""

import datetime as dt
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
TILES = {"train": {"p0001": 3, "p0002": 17, "p0003": 3}, "val": {"p0101": 5}, "test": {"p0201": 39}}
# sensor: (side px, bands, dates)
SENSORS = {
    "s2": (12, 10, ["2020-01-05", "2020-02-29", "2020-06-14", "2020-12-31"]),
    "s1": (12, 2, ["2020-03-02", "2020-05-20", "2020-09-09"]),
    "l7": (4, 6, ["2019-04-01", "2019-08-01", "2019-11-30"]),
    "alos": (4, 2, ["2018-06-30", "2019-06-30"]),
    "modis": (1, 7, ["2020-01-01", "2020-02-01", "2020-03-01", "2020-04-01", "2020-05-01"]),
}


def milliseconds(day: str) -> int:
    t = dt.datetime.fromisoformat(day).replace(hour=10, minute=30, tzinfo=dt.timezone.utc)
    return int(t.timestamp() * 1000)


def main():
    for split, tiles in TILES.items():
        (HERE / split).mkdir(exist_ok=True)
        (HERE / split / "labels2.json").write_text(json.dumps(tiles, indent=1))
        for name in tiles:
            folder = HERE / split / name
            folder.mkdir(exist_ok=True)
            tile = int(name[1:])
            for sensor, (side, bands, dates) in SENSORS.items():
                t, y, x, c = np.mgrid[0 : len(dates), 0:side, 0:side, 0:bands]
                data = (1000 * t + 100 * c + 10 * y + x + tile).astype(np.float32)
                if sensor in ("s1", "alos"):
                    data[0, 0, 0, 1] = 0.0
                mask = np.ones((len(dates), side, side, 1), dtype=np.uint8)
                mask[-1, 0, 0, 0] = 0
                np.savez_compressed(folder / f"{name}_{sensor}.npz", data)
                np.savez_compressed(folder / f"{name}_{sensor}_mask.npz", mask)
                np.savez_compressed(
                    folder / f"{name}_{sensor}_timestamp.npz",
                    np.array([milliseconds(d) for d in dates], dtype=np.int64),
                )
    (HERE / "NORM_s2_patch.json").write_text(
        json.dumps({"mean": [1000.0 + v for v in range(10)], "std": [500.0] * 10}, indent=4)
    )


if __name__ == "__main__":
    main()
