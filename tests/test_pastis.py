"""PASTIS-HD: the official-layout reader on its generated fixture.

Expected values are derived by hand from the official ``src/data/Pastis.py`` and the GeoPlex /
PASTIS configs: folds 1-3 / 4 / 5, metadata order within a fold, days since 2018-09-01,
``temporal_dropout: 20`` on the train split, multi-label = classes 1..18 present, void = 19.
"""

import datetime as dt
import json
import shutil

import numpy as np
import pytest
import rasterio
import torch
from conftest import ROOT

from anysat_lite.data.contract import sensor_entries, validate_sample
from anysat_lite.data.pastis import CLASSES, PastisHDDataset, compute_norm_stats, days_since, official_norm_stats
from anysat_lite.data.registry import get_dataset
from anysat_lite.errors import MissingFileError, UserError

FIXTURE = ROOT / "tests" / "data" / "pastis_hd"
SENSORS = ("spot", "s2", "s1")


def _meta():
    return {
        str(f["properties"]["ID_PATCH"]): f["properties"]
        for f in json.loads((FIXTURE / "metadata.geojson").read_text())["features"]
    }


def _days(props, key):
    d = props[key]
    d = json.loads(d) if isinstance(d, str) else d
    return [(dt.date(v // 10000, v // 100 % 100, v % 100) - dt.date(2018, 9, 1)).days for v in d.values()]


def test_splits_are_the_official_folds_in_metadata_order():
    assert PastisHDDataset(FIXTURE, "train").names == ["10000", "10003", "10001", "10002"]  # fold 1, then 2, then 3
    assert PastisHDDataset(FIXTURE, "val").names == ["20000"] and PastisHDDataset(FIXTURE, "test").names == ["30000"]
    assert len(PastisHDDataset(FIXTURE, "train", folds=(1, 2, 3, 4, 5))) == 6
    assert get_dataset("pastis-hd") is PastisHDDataset


def test_item_matches_the_official_getitem():
    ds = PastisHDDataset(FIXTURE, "val")
    assert ds.sensors == SENSORS and ds.max_dates is None  # every date on val
    item, pid, props = ds[0], "20000", _meta()["20000"]
    assert set(item) == {"spot", "s2", "s2_dates", "s1", "s1_dates", "multilabel", "segmentation"}
    with rasterio.open(FIXTURE / f"DATA_SPOT/PASTIS_SPOT6_RVB_1M00_2019/SPOT6_RVB_1M00_2019_{pid}.tif") as src:
        assert torch.equal(item["spot"], torch.from_numpy(src.read().astype(np.float32)))
    assert item["spot"].shape == (3, 80, 80) and item["spot"].dtype == torch.float32
    s2, s1 = np.load(FIXTURE / f"DATA_S2/S2_{pid}.npy"), np.load(FIXTURE / f"DATA_S1A/S1A_{pid}.npy")
    assert torch.equal(item["s2"], torch.from_numpy(s2.astype(np.float32))) and item["s2"].shape == (6, 10, 8, 8)
    assert torch.equal(item["s1"], torch.from_numpy(s1)) and item["s1"].shape == (5, 3, 8, 8)
    assert item["s2_dates"].dtype == torch.int64
    assert item["s2_dates"].tolist() == _days(props, "dates-S2") and item["s1_dates"].tolist() == _days(
        props, "dates-S1A"
    )
    # patch 20000 holds background and void only: no crop class, void pixels become -1
    assert item["multilabel"].shape == (18,) and item["multilabel"].sum() == 0
    target = np.load(FIXTURE / f"ANNOTATIONS/TARGET_{pid}.npy")[0]
    assert (item["segmentation"][:, :4] == -1).all() and (item["segmentation"][:, 4:] == 0).all()
    assert (target[:, :4] == 19).all() and item["segmentation"].dtype == torch.int64


@pytest.mark.parametrize("index", range(4))
def test_targets_of_the_train_patches(index):
    ds = PastisHDDataset(FIXTURE, "train", sensors=("s2",))
    target = np.load(FIXTURE / f"ANNOTATIONS/TARGET_{ds.names[index]}.npy")[0].astype(np.int64)
    item = ds[index]
    present = sorted(int(c) for c in set(target.ravel().tolist()) - {0, 19})
    assert present and torch.nonzero(item["multilabel"]).ravel().tolist() == [c - 1 for c in present]
    assert torch.equal(item["segmentation"], torch.from_numpy(np.where(target == 19, -1, target)))
    assert len(ds.multilabel_classes) == 18 and ds.multilabel_classes[0] == CLASSES[1] == "Meadow"


def test_dates_are_days_since_2018_09_01_in_metadata_order():
    ds = PastisHDDataset(FIXTURE, "train", max_dates=None)
    meta = _meta()
    for i, pid in enumerate(ds.names):
        assert ds[i]["s2_dates"].tolist() == _days(meta[pid], "dates-S2")
    assert ds[0]["s2_dates"][0] == 0 and ds[0]["s2_dates"][-1] == 440  # 2018-09-01 and 2019-11-15
    assert isinstance(meta["10003"]["dates-S2"], str) and len(ds[1]["s2_dates"]) == 8  # a JSON string is read too
    assert days_since([20190101, "20180831"]).tolist() == [122, -1]


def test_official_date_cap_on_the_train_split():
    ds = PastisHDDataset(FIXTURE, "train")  # max_dates="official": 20 on train
    full = PastisHDDataset(FIXTURE, "train", max_dates=None)
    assert ds.max_dates == 20 and ds.names[3] == "10002"
    capped, whole = ds[3], full[3]
    for s in ("s2", "s1"):
        d = capped[f"{s}_dates"]
        assert len(whole[f"{s}_dates"]) > 20 and len(d) == 20 and capped[s].shape[0] == 20
        assert bool((d[1:] > d[:-1]).all())  # a chronological subset
        rows = [int(np.flatnonzero((whole[f"{s}_dates"] == v).numpy())[0]) for v in d]
        assert torch.equal(capped[s], whole[s][rows])
    assert torch.equal(ds[0]["s2"], full[0]["s2"])  # 7 dates: under the cap, untouched
    assert torch.equal(PastisHDDataset(FIXTURE, "train")[3]["s2_dates"], capped["s2_dates"])  # (seed, epoch, index)
    draws = set()
    for epoch in range(4):
        ds.set_epoch(epoch)
        draws.add(tuple(ds[3]["s2_dates"].tolist()))
    assert len(draws) > 1
    assert len(PastisHDDataset(FIXTURE, "test", max_dates=3)[0]["s1_dates"]) == 3


def test_one_line_errors(tmp_path):
    with pytest.raises(MissingFileError, match="metadata.geojson not found; expected the official PASTIS-HD folder"):
        PastisHDDataset(tmp_path)
    with pytest.raises(ValueError, match="max_dates must be 'official', a positive integer or None"):
        PastisHDDataset(FIXTURE, max_dates=0)
    root = tmp_path / "copy"
    shutil.copytree(FIXTURE, root, ignore=shutil.ignore_patterns("DATA_SPOT"))
    with pytest.raises(MissingFileError, match="DATA_SPOT not found"):
        PastisHDDataset(root)
    assert len(PastisHDDataset(root, sensors=("s2", "s1"))) == 4
    meta = json.loads((root / "metadata.geojson").read_text())
    meta["features"][0]["properties"]["dates-S2"] = {"0": 20180910}
    (root / "metadata.geojson").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="S2_10000.npy has 7 dates, metadata.geojson lists 1"):
        PastisHDDataset(root, sensors=("s2",))[0]


def test_official_norm_stats_average_the_folds_read():
    stats = official_norm_stats(FIXTURE)  # folds 1, 2, 3: means 100 f + b, stds 10 f + b
    assert stats.stats["s2"][0] == [200.0 + b for b in range(10)] and stats.stats["spot"][1] == [20.0, 21.0, 22.0]
    assert official_norm_stats(FIXTURE, ("s1",), folds=(4,)).stats["s1"] == ([400.0, 401.0, 402.0], [40.0, 41.0, 42.0])
    with pytest.raises(
        UserError, match=r"NORM_s1_patch.json: no statistics for fold\(s\) \[6\], expected Fold_6 among"
    ):
        official_norm_stats(FIXTURE, ("s1",), folds=(6,))
    got = compute_norm_stats(FIXTURE, ("s1",), folds=(4, 5)).stats["s1"]
    tiles = [
        np.load(FIXTURE / f"DATA_S1A/S1A_{p}.npy").transpose(1, 0, 2, 3).reshape(3, -1).astype(np.float64)
        for p in ("20000", "30000")
    ]
    np.testing.assert_allclose(got[0], np.mean([t.mean(1) for t in tiles], axis=0), rtol=1e-12)
    np.testing.assert_allclose(got[1], np.mean([t.std(1, ddof=1) for t in tiles], axis=0), rtol=1e-12)


def test_item_is_a_model_input_and_nano_runs_at_the_paper_patch_size():
    from anysat_lite import AnySat

    item = PastisHDDataset(FIXTURE, "test")[0]  # patch 30000: every date within days 0..365
    x = {k: v[None] for k, v in sensor_entries(item).items()}
    assert validate_sample(x).extent_m == (80.0, 80.0)
    assert PastisHDDataset(FIXTURE, "test").tile_m == 80.0 == PastisHDDataset(FIXTURE, "test", sensors=("spot",)).tile_m
    torch.manual_seed(0)
    model = AnySat("nano").eval()
    with torch.no_grad():
        out = model(x, patch_size=40, output="patch")  # 40 m: the PASTIS-HD patch size of the paper (scale 4)
    assert out.shape[:3] == (1, 2, 2) and torch.isfinite(out).all()


def test_dates_past_one_year_pass_the_contract():
    item = PastisHDDataset(FIXTURE, "val")[0]  # dates up to day 419
    assert item["s2_dates"].max() > 366
    validate_sample({k: v[None] for k, v in sensor_entries(item).items()})


def test_damaged_metadata_and_a_file_as_root_name_the_file(tmp_path):
    """An empty or wrongly shaped metadata.geojson, or a bad date string in it, is one line naming the file; a
    file given as the dataset's path is refused as such."""

    with pytest.raises(UserError, match=r"PASTIS-HD: dataset path .*metadata.geojson: expected the dataset's folder"):
        PastisHDDataset(FIXTURE / "metadata.geojson")
    root = tmp_path / "copy"
    shutil.copytree(FIXTURE, root)
    meta = json.loads((root / "metadata.geojson").read_text())
    (root / "metadata.geojson").write_text("")
    with pytest.raises(UserError, match=r"metadata.geojson: not valid JSON \(the file is empty\); expected the PASTIS"):
        PastisHDDataset(root)
    (root / "metadata.geojson").write_text('{"type": "FeatureCollection"}')
    with pytest.raises(UserError, match=r"with a 'features' list, got the keys \['type'\]; re-download"):
        PastisHDDataset(root)
    meta["features"][0]["properties"]["dates-S2"] = '{"0": 201809'
    (root / "metadata.geojson").write_text(json.dumps(meta))
    with pytest.raises(UserError, match=r"metadata.geojson: 'dates-S2' is not valid JSON \(.*\); expected \{"):
        PastisHDDataset(root, sensors=("s2",))
