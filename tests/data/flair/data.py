#!/usr/bin/env python3
"""Write a tiny FLAIR-2 copy in the official on-disk layout (TorchGeo style: generated, not hand-made).

Five aerial tiles in four areas: train domain ``D001_2020`` (area ``Z1_UA`` with tiles 2 and 10,
area ``Z2_AB`` with tile 11), val domain ``D002_2021`` (tile 20), test domain ``D003_2022`` in the
``flair_2_*_test`` folders (tile 30).  Values encode their position so tests can check crops:

* aerial ``IMG_<n>.tif``: 5 bands uint8, 512 x 512 px: ``row``, ``col``, ``row + 2 col + n``,
  ``2 row + col + n``, ``row // 2 + n`` (all modulo 256)
* labels ``MSK_<n>.tif``: uint8 codes 1..19 in 32 px blocks; tile 30 has a block of code 0 (void)
* super-patch ``*_data.npy``: ``[T, 10, 16, 16]`` uint16, ``256 (band + 10 t) + 16 row + col``
* products: dates include 29 Feb and 31 Dec 2020 (day-of-year 60 and 366)

Run ``python tests/data/flair/data.py`` to regenerate (deterministic).
"""

import json
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

HERE = Path(__file__).parent
# (split folder suffix, domain, area, tile ids, centroids, product dates)
AREAS = [
    ("train", "D001_2020", "Z1_UA", [2, 10], [(5, 11), (8, 8)], ["20200115", "20200229", "20200610"]),
    ("train", "D001_2020", "Z2_AB", [11], [(11, 5)], ["20200301", "20200402", "20200503", "20201231"]),
    ("train", "D002_2021", "Z5_UN", [20], [(7, 9)], ["20210104", "20210720"]),
    ("test", "D003_2022", "Z1_NN", [30], [(10, 6)], ["20220110", "20220311", "20220909"]),
]
SPLITS = {"train": ["D001_2020"], "val": ["D002_2021"], "test": ["D003_2022"]}
SP = 16  # super-patch side, px


def folders(status):
    prefix = "flair_2" if status == "test" else "flair"
    return {m: HERE / f"{prefix}_{m}_{status}" for m in ("aerial", "sen", "labels")}


def write_tif(path, data, left=600000.0, top=6800000.0):
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
        crs="EPSG:2154",
        transform=from_origin(left, top, 0.2, 0.2),
        compress="deflate",
        predictor=2,
    ) as dst:
        dst.write(data)


def main():
    r, c = np.mgrid[0:512, 0:512]
    centroids = {}
    for status, domain, area, tiles, cents, dates in AREAS:
        d = folders(status)
        for n, cent in zip(tiles, cents):
            img = (np.stack([r, c, r + 2 * c + n, 2 * r + c + n, r // 2 + n]) % 256).astype(np.uint8)
            write_tif(d["aerial"] / domain / area / "img" / f"IMG_{n:06d}.tif", img)
            codes = (1 + (r // 32 + c // 32 + n) % 19).astype(np.uint8)
            if n == 30:
                codes[:32, :32] = 0
            write_tif(d["labels"] / domain / area / "msk" / f"MSK_{n:06d}.tif", codes[None])
            centroids[f"IMG_{n:06d}.tif"] = list(cent)
        t, b, y, x = np.mgrid[0 : len(dates), 0:10, 0:SP, 0:SP]
        sen = d["sen"] / domain / area / "sen"
        sen.mkdir(parents=True, exist_ok=True)
        stem = f"SEN2_sp_{domain}-{area}"
        np.save(sen / f"{stem}_data.npy", (256 * (b + 10 * t) + 16 * y + x).astype(np.uint16))
        np.save(sen / f"{stem}_masks.npy", np.zeros((len(dates), 2, SP, SP), dtype=np.uint8))
        lines = [f"S2A_MSIL2A_{day}T105421_N0213_R051_T31TFJ_{day}T121022" for day in dates]
        (sen / f"{stem}_products.txt").write_text("\n".join(lines) + "\n")
    (HERE / "flair-2_centroids_sp_to_patch.json").write_text(json.dumps(centroids, indent=1))
    (HERE / "splits.json").write_text(json.dumps(SPLITS, indent=1))
    (HERE / "NORM_s2_patch.json").write_text(
        json.dumps({"mean": [float(v) for v in range(10)], "std": [float(v + 1) for v in range(10)]}, indent=4)
    )
    (HERE / "NORM_aerial-flair_patch.json").write_text(
        json.dumps({"mean": [100.0, 110.0, 120.0, 130.0, 20.0], "std": [50.0, 51.0, 52.0, 53.0, 10.0]}, indent=4)
    )


if __name__ == "__main__":
    main()
