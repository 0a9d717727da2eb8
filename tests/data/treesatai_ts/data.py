#!/usr/bin/env python3
"""Write a tiny TreeSatAI-TS in the official on-disk layout (TorchGeo style: generated, not hand-made).

Nine tiles, named like the real ones (``<Genus>_<species>_<n>_<id>_WEFL_NLF.tif``)::

    train_filenames.lst  5 tiles (one of them has no genus share above 0.07: the official reader drops it)
    val_filenames.lst    2 tiles
    test_filenames.lst   2 tiles
    labels/TreeSatBA_v9_60m_multi_labels.json   shares of all 9 tiles + one tile of no list
    aerial/<stem>.tif    304 x 304 px, 4 bands uint8 (NIR, G, B, R), 0.2 m, EPSG:25832, deflate;
                         pixel (b, y, x) = (y + 5 x + 37 k + 60 b) mod 256 for tile k (a crop shows its offset)
    sentinel/<stem>.h5   sen-2-data [T2, 10, 6, 6] float32, sen-2-masks [T2, 10, 6, 6], sen-2-products,
                         sen-1-asc-data [T1, 2, 6, 6] float32, sen-1-asc-products, sen-1-des-data/-products
                         (product names as in TreeSatAI: date at the start of field 2 (S2) / field 4 (S1));
                         gzip-compressed to keep the fixture small (h5py reads it the same; the real files are not)
    s1-asc/<stem>.pth    torch tensor [T1, 3, 6, 6]: VV, VH (= sen-1-asc-data) and VV / VH
    s1/60m/, s2/60m/     single-date 6 x 6 px GeoTIFFs of two tiles (never read; they share the tile names)
    NORM_<sensor>_patch.json   statistics in the official format {"mean": [C], "std": [C]}

The first S2 date of every tile is 2020-01-01 (day 1) and the last one 2020-12-31 (day 366, a leap
year); the other dates are drawn at random.  Run ``python tests/data/treesatai_ts/data.py`` to
regenerate (deterministic).
"""

import datetime as dt
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin

HERE = Path(__file__).parent
CRS = "EPSG:25832"
# (tile, split, [[genus, share], ...]) in the order of the lists
TILES = [
    ("Abies_alba_1_1005_WEFL_NLF.tif", "train", [["Abies", 0.62], ["Picea", 0.30], ["Fagus", 0.08]]),
    ("Fagus_sylvatica_4_120_WEFL_NLF.tif", "train", [["Fagus", 0.93], ["Quercus", 0.07]]),  # 0.07 is not > 0.07
    ("Picea_abies_2_88_WEFL_NLF.tif", "train", [["Picea", 0.05], ["Larix", 0.04]]),  # no share > 0.07: dropped
    ("Cleared_0_3_401_WEFL_NLF.tif", "train", [["Cleared", 1.0]]),
    ("Quercus_robur_5_7_WEFL_NLF.tif", "train", [["Acer", 0.2], ["Quercus", 0.45], ["Tilia", 0.35]]),
    ("Pinus_sylvestris_6_15_WEFL_NLF.tif", "val", [["Pinus", 0.81], ["Betula", 0.19]]),
    ("Larix_decidua_3_77_WEFL_NLF.tif", "val", [["Larix", 0.5], ["Pseudotsuga", 0.5]]),
    ("Alnus_spec_7_210_WEFL_NLF.tif", "test", [["Alnus", 0.7], ["Fraxinus", 0.2], ["Populus", 0.1]]),
    ("Betula_spec_8_31_WEFL_NLF.tif", "test", [["Betula", 0.9], ["Prunus", 0.1]]),
]
UNLISTED = ("Tilia_spec_9_5_WEFL_NLF.tif", [["Tilia", 1.0]])


def s2_product(d: dt.date) -> str:
    return f"S2A_MSIL2A_{d:%Y%m%d}T103421_N0213_R108_T32UNC_{d:%Y%m%d}T120935"


def s1_product(d: dt.date, orbit: int) -> str:
    return f"S1A_IW_GRDH_1SDV_{d:%Y%m%d}T170841_{d:%Y%m%d}T170906_0{orbit}_0382D5_360A"


def dates(rng, n: int, first=None, last=None) -> list[dt.date]:
    days = sorted(rng.choice(np.arange(1, 366), size=n, replace=False).tolist())
    if first:
        days[0] = first
    if last:
        days[-1] = last
    return [dt.date(2020, 1, 1) + dt.timedelta(days=int(d) - 1) for d in days]


def write_tif(path: Path, data: np.ndarray, gsd: float, left: float, top: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=data.shape[1],
        width=data.shape[2],
        count=data.shape[0],
        dtype=data.dtype,
        crs=CRS,
        transform=from_origin(left, top, gsd, gsd),
        compress="deflate",
        predictor=2,
    ) as dst:
        dst.write(data)


def main():
    for p in ("aerial", "sentinel", "s1-asc", "s1", "s2", "labels"):
        shutil.rmtree(HERE / p, ignore_errors=True)
    rng = np.random.default_rng(16)
    yy, xx = np.mgrid[0:304, 0:304]
    s2_all, s1_all = [], []
    for k, (name, _split, _labels) in enumerate(TILES):
        stem = name[:-4]
        left, top = 565000.0 + 60 * k, 5770000.0
        aerial = np.stack([(yy + 5 * xx + 37 * k + 60 * b) % 256 for b in range(4)]).astype(np.uint8)
        write_tif(HERE / "aerial" / name, aerial, 0.2, left - 0.4, top + 0.4)  # 304 px centred on the 60 m tile
        t2, t1a, t1d = 4 + k % 3, 3 + k % 2, 2
        s2 = (rng.integers(2, 40, size=(t2, 10, 1, 1)) * 100 + rng.integers(0, 16, size=(t2, 10, 6, 6))).astype(
            np.float32
        )
        s1a = rng.integers(1, 64, size=(t1a, 2, 6, 6)).astype(np.float32) / 128  # backscatter (linear)
        s1d = rng.integers(1, 64, size=(t1d, 2, 6, 6)).astype(np.float32) / 128
        masks = np.zeros((t2, 10, 6, 6), dtype=np.float32)
        masks[:, 1] = rng.integers(0, 100, size=(t2, 1, 1))  # cloud probability (%)
        text = h5py.string_dtype("ascii")
        (HERE / "sentinel").mkdir(exist_ok=True)
        # the file format of HDF5 1.10 at the newest, so that every h5py the package accepts reads it
        with h5py.File(HERE / "sentinel" / f"{stem}.h5", "w", libver=("earliest", "v110")) as f:
            for key, value in (
                ("sen-2-data", s2),
                ("sen-2-masks", masks),
                ("sen-1-asc-data", s1a),
                ("sen-1-des-data", s1d),
            ):
                f.create_dataset(key, data=value, compression="gzip", shuffle=True)
            f.create_dataset("sen-2-products", data=[s2_product(d) for d in dates(rng, t2, 1, 366)], dtype=text)
            f.create_dataset(
                "sen-1-asc-products", data=[s1_product(d, 30639 + i) for i, d in enumerate(dates(rng, t1a))], dtype=text
            )
            f.create_dataset(
                "sen-1-des-products", data=[s1_product(d, 19692 + i) for i, d in enumerate(dates(rng, t1d))], dtype=text
            )
        (HERE / "s1-asc").mkdir(exist_ok=True)
        torch.save(
            torch.from_numpy(np.concatenate([s1a, s1a[:, :1] / s1a[:, 1:2]], axis=1)), HERE / "s1-asc" / f"{stem}.pth"
        )
        if k < 2:  # TreeSatAI's single-date 60 m Sentinel GeoTIFFs carry the same tile names
            write_tif(HERE / "s1" / "60m" / name, s1a[0], 10.0, left, top)
            write_tif(HERE / "s2" / "60m" / name, np.concatenate([s2[0], s2[0, :2]]), 10.0, left, top)
        if _split == "train":
            s2_all.append(s2)
            s1_all.append(s1a)
    for split in ("train", "val", "test"):
        (HERE / f"{split}_filenames.lst").write_text("".join(f"{n}\n" for n, s, _ in TILES if s == split))
    (HERE / "labels").mkdir(exist_ok=True)
    shares = {n: lab for n, _, lab in TILES} | {UNLISTED[0]: UNLISTED[1]}
    (HERE / "labels" / "TreeSatBA_v9_60m_multi_labels.json").write_text(json.dumps(shares, indent=1))
    stats = {
        "aerial": ([110.0, 120.0, 130.0, 140.0], [60.0, 61.0, 62.0, 63.0]),
        "s2": (np.concatenate(s2_all).mean(axis=(0, 2, 3)), np.concatenate(s2_all).std(axis=(0, 2, 3))),
        "s1-asc": (np.concatenate(s1_all).mean(axis=(0, 2, 3)), np.concatenate(s1_all).std(axis=(0, 2, 3))),
    }
    for s, (mean, std) in stats.items():
        (HERE / f"NORM_{s}_patch.json").write_text(
            json.dumps({"mean": [float(v) for v in mean], "std": [float(v) for v in std]}, indent=4)
        )


if __name__ == "__main__":
    main()
