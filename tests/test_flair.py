"""FLAIR reader on the generated official-layout fixture (tests/data/flair/data.py).

Expected values are derived by hand from the official ``src/data/FLAIR.py`` (``classif=False``,
``crop_s2=True``) and ``src/data/transforms/transform.py``: the aerial tile and its mask cropped
to 500 px (``[6:506, 6:506]`` in the test transform), Sentinel-2 ``data[:, :, X-5:X+5, Y-5:Y+5]``
around the centroid, dates = ``tm_yday`` of characters 11:19 of each product line, labels
``min(code, 13) - 1``.
"""

import json

import numpy as np
import pytest
import rasterio
import torch
from conftest import ROOT

from anysat_lite import AnySat
from anysat_lite.data.contract import validate_sample
from anysat_lite.data.flair import CLASSES, FLAIRDataset, official_norm_stats
from anysat_lite.data.normalization import per_tile_norm_stats
from anysat_lite.data.readers import choose_dates
from anysat_lite.errors import MissingFileError, UserError

FLAIR = ROOT / "tests" / "data" / "flair"
SENSOR_KEYS = ("aerial-flair", "s2", "s2_dates")


def official_item(root, split, tile, area, domain, top=6, left=6, side=500):
    """What the official ``__getitem__`` + transform returns for tile ``tile`` (hand-written from its code)."""
    prefix = "flair_2" if split == "test" else "flair"
    status = "test" if split == "test" else "train"
    with rasterio.open(root / f"{prefix}_aerial_{status}" / domain / area / "img" / f"IMG_{tile:06d}.tif") as f:
        aerial = f.read().astype(np.float32)
    with rasterio.open(root / f"{prefix}_labels_{status}" / domain / area / "msk" / f"MSK_{tile:06d}.tif") as f:
        labels = f.read()[0].astype(np.int64)
    labels[labels > 13] = 13
    sen = root / f"{prefix}_sen_{status}" / domain / area / "sen"
    X, Y = json.loads((root / "flair-2_centroids_sp_to_patch.json").read_text())[f"IMG_{tile:06d}.tif"]
    s2 = np.load(sen / f"SEN2_sp_{domain}-{area}_data.npy")[:, :, X - 5 : X + 5, Y - 5 : Y + 5].astype(float)
    import datetime

    lines = (sen / f"SEN2_sp_{domain}-{area}_products.txt").read_text().splitlines()
    dates = [datetime.datetime.strptime(ln[11:19], "%Y%m%d").timetuple().tm_yday for ln in lines]
    return {
        "aerial-flair": aerial[:, top : top + side, left : left + side],
        "s2": s2.astype(np.float32),
        "s2_dates": np.array(dates),
        "segmentation": (labels - 1)[top : top + side, left : left + side],
    }


def test_split_membership_follows_splits_json():
    assert FLAIRDataset(FLAIR, "train").names == ["IMG_000002", "IMG_000010", "IMG_000011"]
    assert FLAIRDataset(FLAIR, "val").names == ["IMG_000020"]
    assert FLAIRDataset(FLAIR, "test").names == ["IMG_000030"]


@pytest.mark.parametrize(
    "split,index,tile,area,domain", [("val", 0, 20, "Z5_UN", "D002_2021"), ("test", 0, 30, "Z1_NN", "D003_2022")]
)
def test_item_equals_official_center_crop(split, index, tile, area, domain):
    ds = FLAIRDataset(FLAIR, split)
    item = ds[index]
    ref = official_item(FLAIR, split, tile, area, domain)
    assert set(item) == {"aerial-flair", "s2", "s2_dates", "segmentation"}
    assert item["aerial-flair"].shape == (5, 500, 500) and item["aerial-flair"].dtype == torch.float32
    assert item["s2"].shape == (len(ref["s2_dates"]), 10, 10, 10) and item["s2"].dtype == torch.float32
    assert item["s2_dates"].dtype == torch.int64 and item["segmentation"].dtype == torch.int64
    for key, value in ref.items():
        np.testing.assert_array_equal(item[key].numpy(), value, err_msg=key)


def test_values_decode_to_the_official_positions():
    """Spot values against the generator's formulas: band order, crop offsets, centroid axes."""
    item = FLAIRDataset(FLAIR, "val")[0]  # tile 20, centroid (7, 9), dates 2021-01-04, 2021-07-20
    r, c = 10, 240  # aerial bands: row, col, row + 2 col + n, ... (mod 256) at file pixel (6 + r, 6 + c)
    assert item["aerial-flair"][:3, r, c].tolist() == [6 + r, 6 + c, (6 + r + 2 * (6 + c) + 20) % 256]
    t, b, i, j = 1, 7, 2, 9  # s2 256 (b + 10 t) + 16 row + col at super-patch pixel (7 - 5 + i, 9 - 5 + j)
    assert item["s2"][t, b, i, j] == 256 * (b + 10 * t) + 16 * (2 + i) + (4 + j)
    assert item["s2_dates"].tolist() == [4, 201]


def test_dates_are_day_of_year_including_leap_days():
    ds = FLAIRDataset(FLAIR, "train", sensors=["s2"])
    assert ds[0]["s2_dates"].tolist() == [15, 60, 162]  # 15 Jan, 29 Feb, 10 Jun 2020
    assert ds[2]["s2_dates"].tolist() == [61, 93, 124, 366]  # 1 Mar, 2 Apr, 3 May, 31 Dec 2020


def test_labels_merge_codes_above_13_and_mark_void():
    seg = FLAIRDataset(FLAIR, "test")[0]["segmentation"]
    assert seg.min() == -1 and seg.max() == len(CLASSES) - 1 == 12
    assert (seg[:26, :26] == -1).all() and (seg[26:, 26:] >= 0).all()  # code-0 block [0:32] shifted by the crop
    assert set(torch.unique(seg).tolist()) == set(range(-1, 13))


def test_random_crop_is_shared_by_tile_and_mask_and_seeded():
    ds = FLAIRDataset(FLAIR, "train")
    ref = official_item(FLAIR, "train", 2, "Z1_UA", "D001_2020", top=0, left=0, side=512)
    windows = set()
    for epoch in range(4):
        ds.set_epoch(epoch)
        item = ds[0]
        a = item["aerial-flair"].numpy()
        hits = [
            (top, left)
            for top in range(13)
            for left in range(13)
            if np.array_equal(a, ref["aerial-flair"][:, top : top + 500, left : left + 500])
        ]
        assert len(hits) == 1
        top, left = hits[0]
        np.testing.assert_array_equal(
            item["segmentation"].numpy(), ref["segmentation"][top : top + 500, left : left + 500]
        )
        windows.add(hits[0])
        again = ds[0]  # same (seed, epoch, index): same crop
        assert torch.equal(again["aerial-flair"], item["aerial-flair"])
    assert len(windows) > 1


def test_date_cap_and_official_temporal_dropout():
    full = FLAIRDataset(FLAIR, "train", sensors=["s2"])[2]  # 4 dates
    capped = FLAIRDataset(FLAIR, "train", sensors=["s2"], max_dates=2, seed=3)[2]
    assert capped["s2"].shape[0] == 2 and capped["s2_dates"].tolist() == sorted(capped["s2_dates"].tolist())
    kept = [full["s2_dates"].tolist().index(d) for d in capped["s2_dates"].tolist()]
    assert torch.equal(capped["s2"], full["s2"][kept])
    # official dropout: keep int(T * (1 - p)) dates, on the train split only
    assert FLAIRDataset(FLAIR, "train", sensors=["s2"], temporal_dropout=0.7)[2]["s2"].shape[0] == 1
    assert FLAIRDataset(FLAIR, "val", sensors=["s2"], temporal_dropout=0.7)[0]["s2"].shape[0] == 2


def test_choose_dates():
    rng = np.random.default_rng(0)
    assert choose_dates(5, rng).tolist() == [0, 1, 2, 3, 4]
    idx = choose_dates(10, rng, max_dates=3)
    assert len(idx) == 3 and np.all(np.diff(idx) > 0)
    assert len(choose_dates(10, rng, keep_fraction=0.3)) == 3 and len(choose_dates(2, rng, keep_fraction=0.3)) == 1


def test_official_norm_stats_read_and_per_tile_formula(tmp_path):
    stats = official_norm_stats(FLAIR)
    assert stats.stats["s2"] == ([float(v) for v in range(10)], [float(v + 1) for v in range(10)])
    assert len(stats.stats["aerial-flair"][0]) == 5
    with pytest.raises(MissingFileError, match="NORM_s2_patch.json"):
        official_norm_stats(tmp_path, ["s2"])
    ds = FLAIRDataset(FLAIR, "val", sensors=["s2"])
    x = ds[0]["s2"].double()  # one tile: mean / unbiased std over dates and pixels, per band
    got = per_tile_norm_stats(ds, write_to=tmp_path)
    np.testing.assert_allclose(got.stats["s2"][0], x.mean(dim=(0, 2, 3)).numpy())
    np.testing.assert_allclose(got.stats["s2"][1], x.transpose(0, 1).reshape(10, -1).std(dim=1).numpy())
    assert official_norm_stats(tmp_path, ["s2"]).stats == got.stats


def test_bad_root_split_and_sensors_give_one_line_errors(tmp_path):
    with pytest.raises(MissingFileError, match=r"splits.json not found; expected the official FLAIR-2 folder"):
        FLAIRDataset(tmp_path)
    with pytest.raises(UserError, match=r"split='\w+': expected one of train, val, test; choose one of them$"):
        FLAIRDataset(FLAIR, "training")
    with pytest.raises(UserError, match=r"sensors=\[.*\] \(config: data.datasets\[i\].sensors\): expected some of "):
        FLAIRDataset(FLAIR, sensors=["s1"])


def test_item_is_a_valid_model_input_for_the_nano_model():
    item = FLAIRDataset(FLAIR, "val")[0]
    x = {k: item[k][None] for k in SENSOR_KEYS}
    assert validate_sample(x).extent_m == (FLAIRDataset.tile_m, FLAIRDataset.tile_m)
    torch.manual_seed(0)
    model = AnySat("nano", sensors=FLAIRDataset.sensors).eval()
    with torch.no_grad():
        out = model(x, patch_size=10, output="patch")  # official FLAIR scale 1 (fine-tuning; GeoPlex: 1 and 2)
    assert out.shape == (1, 10, 10, 64) and torch.isfinite(out).all()


def test_damaged_json_files_and_a_file_as_root_name_the_file(tmp_path):
    """A non-UTF-8, empty or cut-short JSON file of the dataset is one line naming the file and what it should
    hold (not the bare parser message); a file given as the dataset's path is refused as such."""
    import shutil

    with pytest.raises(UserError, match=r"splits.json: expected the dataset's folder, got a file; give the folder"):
        FLAIRDataset(FLAIR / "splits.json")
    root = tmp_path / "flair"
    shutil.copytree(FLAIR, root)
    (root / "splits.json").write_bytes(b"\x89PNG\r\n")
    with pytest.raises(UserError, match=r"splits.json: expected UTF-8 text, got byte 0x89 at position 0; expected the"):
        FLAIRDataset(root)
    shutil.copy(FLAIR / "splits.json", root / "splits.json")
    (root / "flair-2_centroids_sp_to_patch.json").write_text("")
    with pytest.raises(UserError, match=r"centroids_sp_to_patch.json: not valid JSON \(the file is empty\); expected"):
        FLAIRDataset(root)
    (root / "NORM_s2_patch.json").write_text('{"mean": [1, 2,')
    with pytest.raises(UserError, match=r"NORM_s2_patch.json: not valid JSON \(Expecting value at line 1, column"):
        official_norm_stats(root, ["s2"])
    with pytest.raises(UserError, match=r"re-download or restore the file") as err:
        official_norm_stats(root, ["s2"])
    assert "\n" not in str(err.value)
