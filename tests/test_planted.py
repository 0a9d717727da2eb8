"""PLANTED reader on the generated official-layout fixture (tests/data/planted/data.py).

Expected items are derived by hand from the official ``src/data/Planted.py``: ``arr_0`` permuted
``(0, 3, 1, 2)``, for ``s1``/``alos`` the bands ``[:2]`` plus ``clamp(b0 / (b1 + 1e-10), -1e4, 1e4)``,
dates = ``tm_yday`` of the timestamps, the label the class index of ``labels2.json``.
"""

import datetime as dt
import json

import numpy as np
import pytest
import torch
from conftest import ROOT

from anysat_lite import AnySat
from anysat_lite.data.contract import validate_sample
from anysat_lite.data.normalization import NormStats
from anysat_lite.data.planted import CLASSES, PlantedDataset, doy_from_milliseconds, official_norm_stats
from anysat_lite.errors import MissingFileError, UserError

PLANTED = ROOT / "tests" / "data" / "planted"


def official_sensor(split, name, sensor):
    """``(values [T, C, H, W], dates [T])`` as the official ``__getitem__`` computes them."""

    def load(suffix):
        return np.load(PLANTED / split / name / f"{name}_{suffix}.npz", allow_pickle=True)["arr_0"]

    x = torch.tensor(load(sensor)).permute(0, 3, 1, 2)
    if sensor in ("alos", "s1"):
        ratio = torch.clamp(x[:, :1] / (x[:, 1:2] + 1e-10), max=1e4, min=-1e4)
        x = torch.cat((x[:, :2], ratio), dim=1)
    stamps = load(f"{sensor}_timestamp")
    dates = [dt.datetime.fromtimestamp(m / 1000, tz=dt.timezone.utc).timetuple().tm_yday for m in stamps]
    return x, torch.tensor(dates)


def test_split_membership_and_labels_follow_labels2_json():
    train = PlantedDataset(PLANTED, "train")
    assert train.names == ["p0001", "p0002", "p0003"] and train.labels.tolist() == [3, 17, 3]
    assert PlantedDataset(PLANTED, "val").names == ["p0101"] and PlantedDataset(PLANTED, "test").names == ["p0201"]
    item = PlantedDataset(PLANTED, "test")[0]
    assert item["label"].dtype == torch.int64 and item["label"].dim() == 0
    assert CLASSES[item["label"]] == "Theobroma cacao"


def test_item_equals_official():
    ds = PlantedDataset(PLANTED, "val")
    item = ds[0]
    assert set(item) == {*ds.sensors, *(f"{s}_dates" for s in ds.sensors), "label"}
    shapes = {
        "s2": (4, 10, 12, 12),
        "s1": (3, 3, 12, 12),
        "l7": (3, 6, 4, 4),
        "alos": (2, 3, 4, 4),
        "modis": (5, 7, 1, 1),
    }
    for s in ds.sensors:
        x, dates = official_sensor("val", "p0101", s)
        assert item[s].shape == shapes[s] and item[s].dtype == torch.float32
        torch.testing.assert_close(item[s], x.float(), rtol=0, atol=0)
        assert torch.equal(item[f"{s}_dates"], dates) and item[f"{s}_dates"].dtype == torch.int64


def test_values_dates_and_ratio_band():
    item = PlantedDataset(PLANTED, "val")[0]  # value 1000 t + 100 c + 10 row + col + 101
    assert item["s2"][2, 7, 3, 5] == 1000 * 2 + 100 * 7 + 10 * 3 + 5 + 101
    assert item["s1"][0, 2, 0, 0] == 1e4  # VH = 0 -> ratio clipped
    assert item["s1"][1, 2, 3, 4] == pytest.approx((1000 + 34 + 101) / (1000 + 100 + 34 + 101))
    assert item["s2_dates"].tolist() == [5, 60, 166, 366]  # 5 Jan, 29 Feb, 14 Jun, 31 Dec 2020
    assert item["alos_dates"].tolist() == [181, 181] and item["modis_dates"].tolist() == [1, 32, 61, 92, 122]
    assert doy_from_milliseconds([0, 86_399_999, 86_400_000]).tolist() == [1, 1, 2]


def test_fill_invalid_standardises_invalid_pixels_to_zero_and_pixel_masks():
    stats = NormStats(
        {s: ([7.0] * c, [2.0] * c) for s, c in {"s2": 10, "s1": 3, "l7": 6, "alos": 3, "modis": 7}.items()}
    )
    raw = PlantedDataset(PLANTED, "val", pixel_masks=True)[0]
    filled = PlantedDataset(PLANTED, "val", fill_invalid=stats)[0]
    for s in PlantedDataset.sensors:
        valid = raw[f"{s}_valid"]
        assert valid.dtype == torch.bool and valid.shape == (raw[s].shape[0], 1, *raw[s].shape[2:])
        assert not valid[-1, 0, 0, 0] and valid.sum() == valid.numel() - 1  # the generator's one invalid pixel
        assert torch.equal(filled[s][:, :, 1:], raw[s][:, :, 1:])
        normed = stats.apply({s: filled[s]}, batched=False)[s]
        assert (normed[-1, :, 0, 0] == 0).all()
    with pytest.raises(KeyError, match="fill_invalid has no statistics"):
        PlantedDataset(PLANTED, "val", fill_invalid=NormStats({"s2": ([0.0] * 10, [1.0] * 10)}))


def test_official_temporal_dropout_and_date_cap():
    drop = PlantedDataset(PLANTED, "train", temporal_dropout=0.3)[0]
    # int(T * 0.7) dates, ALOS int(T * 0.9); at least one date
    assert {s: drop[s].shape[0] for s in PlantedDataset.sensors} == {"s2": 2, "s1": 2, "l7": 2, "alos": 1, "modis": 3}
    assert PlantedDataset(PLANTED, "val", temporal_dropout=0.3)[0]["s2"].shape[0] == 4  # train split only
    full = PlantedDataset(PLANTED, "train", sensors=["modis"])[1]
    capped = PlantedDataset(PLANTED, "train", sensors=["modis"], max_dates=2, seed=5)[1]
    kept = [full["modis_dates"].tolist().index(d) for d in capped["modis_dates"].tolist()]
    assert len(kept) == 2 and kept == sorted(kept) and torch.equal(capped["modis"], full["modis"][kept])


def test_density_weights_match_the_official_class_sampling():
    w = PlantedDataset(PLANTED, "train").density_weights()  # classes 3, 17, 3
    a, b = np.sqrt(2 / 3), np.sqrt(1 / 3)
    np.testing.assert_allclose(w, [a / (a + b) / 2, b / (a + b), a / (a + b) / 2])


def test_official_norm_stats():
    stats = official_norm_stats(PLANTED, ["s2"])
    assert stats.stats["s2"][0][:2] == [1000.0, 1001.0]
    with pytest.raises(MissingFileError, match="NORM_s1_patch.json"):
        official_norm_stats(PLANTED)


def test_bad_root_split_and_sensors_give_one_line_errors(tmp_path):
    with pytest.raises(MissingFileError, match=r"labels2.json not found; expected the official PLANTED folder"):
        PlantedDataset(tmp_path)
    with pytest.raises(UserError, match=r"split='\w+': expected one of train, val, test; choose one of them$"):
        PlantedDataset(PLANTED, "validation")
    with pytest.raises(UserError, match=r"sensors=\[.*\] \(config: data.datasets\[i\].sensors\): expected some of "):
        PlantedDataset(PLANTED, sensors=["aerial"])
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "labels2.json").write_text(json.dumps({"x1": 2}))
    with pytest.raises(MissingFileError, match=r"x1_s2.npz not found"):
        PlantedDataset(tmp_path)[0]


def test_item_is_a_valid_model_input_for_the_nano_model():
    item = PlantedDataset(PLANTED, "test")[0]
    x = {k: v[None] for k, v in item.items() if k != "label"}
    info = validate_sample(x)
    assert info.extent_m == (PlantedDataset.tile_m, PlantedDataset.tile_m)
    torch.manual_seed(0)
    model = AnySat("nano", sensors=PlantedDataset.sensors).eval()
    with torch.no_grad():
        out = model(x, patch_size=30, output="tile")  # official PLANTED scale 3 -> 30 m patches
    assert out.shape == (1, 64) and torch.isfinite(out).all()


def test_files_holding_python_objects_are_refused_unless_trusted(tmp_path):
    """The fixture's numeric arrays load without unpickling; an object array asks for allow_pickle."""
    import shutil

    root = tmp_path / "planted"
    shutil.copytree(PLANTED, root)
    tile = next(p for p in (root / "train").iterdir() if p.is_dir()).name
    stamps = root / "train" / tile / f"{tile}_s2_timestamp.npz"
    values = np.load(stamps)["arr_0"]
    np.savez_compressed(stamps, np.array(list(values), dtype=object))  # the same numbers, as Python objects
    with pytest.raises(UserError, match=r"_s2_timestamp.npz holds Python objects.*options: \{allow_pickle: true\}"):
        PlantedDataset(root).read_sensor(tile, "s2")
    x, _, dates = PlantedDataset(root, allow_pickle=True).read_sensor(tile, "s2")
    assert len(dates) == len(values) == x.shape[0]


def test_damaged_labels_and_a_file_as_root_name_the_file(tmp_path):
    """A cut-short or wrongly shaped labels2.json is one line naming the file; a file as root is refused as such."""

    with pytest.raises(UserError, match=r"NORM_s2_patch.json: expected the dataset's folder, got a file"):
        PlantedDataset(PLANTED / "NORM_s2_patch.json")
    (tmp_path / "train").mkdir()
    labels = tmp_path / "train" / "labels2.json"
    labels.write_text('{"x1": 2,')
    with pytest.raises(
        UserError, match=r"labels2.json: not valid JSON \(.* at line 1, column 10\); expected the class"
    ):
        PlantedDataset(tmp_path)
    labels.write_text("[2, 3]")
    with pytest.raises(UserError, match=r"labels2.json: expected .* \(a JSON object\), got a JSON list; re-download"):
        PlantedDataset(tmp_path)
