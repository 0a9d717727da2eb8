"""TreeSatAI-TS: the official-layout reader on its generated fixture and on the real sample tile,
and the loose-file reader on the real sample.

Expected values are derived by hand from the official ``src/data/TreeSAT.py`` (lists, 0.07
threshold, ``aerial/`` + ``sentinel/`` + ``s1-asc/``, product-name dates, ``RandomCrop(300)``).
"""

import datetime as dt
import json
import shutil

import h5py
import numpy as np
import pytest
import rasterio
import torch
from conftest import ROOT, TREESAT

from anysat_lite.data.contract import sensor_entries, validate_sample
from anysat_lite.data.normalization import per_tile_norm_stats
from anysat_lite.data.registry import get_dataset
from anysat_lite.data.treesatai import (
    CLASSES,
    TreeSatAITS,
    TreeSatAITSDataset,
    official_norm_stats,
    products_to_doy,
    read_products,
)
from anysat_lite.errors import MissingFileError, UserError

FIXTURE = ROOT / "tests" / "data" / "treesatai_ts"
SENSORS = ("aerial", "s2", "s1-asc")


def _h5(name):
    with h5py.File(FIXTURE / "sentinel" / name.replace(".tif", ".h5"), "r") as f:
        return {k: f[k][()] for k in f}


def _doy(product: bytes, field: int) -> int:
    d = dt.datetime.strptime(product.decode().split("_")[field][:8], "%Y%m%d").date()
    return (d - dt.date(d.year, 1, 1)).days + 1


def _onehot(*genera):
    y = torch.zeros(len(CLASSES))
    y[[CLASSES.index(g) for g in genera]] = 1
    return y


# --- the official layout --------------------------------------------------------------------
def test_split_membership_equals_the_official_lists():
    lists = {s: (FIXTURE / f"{s}_filenames.lst").read_text().split() for s in ("train", "val", "test")}
    assert len(lists["train"]) == 5
    splits = {s: TreeSatAITSDataset(FIXTURE, s).names for s in lists}
    # the official reader keeps the list order and drops the tile with no genus share above 0.07
    assert splits["train"] == [n for n in lists["train"] if not n.startswith("Picea")]
    assert splits["val"] == lists["val"] and splits["test"] == lists["test"]
    assert not set(splits["train"]) & set(splits["val"]) and not set(splits["val"]) & set(splits["test"])
    assert get_dataset("treesatai-ts") is TreeSatAITSDataset


def test_item_matches_the_official_getitem():
    ds = TreeSatAITSDataset(FIXTURE, "train")
    assert ds.names[0] == "Abies_alba_1_1005_WEFL_NLF.tif" and ds.sensors == SENSORS
    item = ds[0]
    assert set(item) == {"aerial", "s2", "s2_dates", "s1-asc", "s1-asc_dates", "multilabel", "label"}
    raw = _h5(ds.names[0])
    with rasterio.open(FIXTURE / "aerial" / ds.names[0]) as src:
        aerial = src.read()
    assert item["aerial"].dtype == torch.float32 and item["aerial"].shape == (4, 300, 300)
    # a 300 x 300 window of the 304 x 304 tile (the pattern encodes the offset)
    offsets = [
        (t, left)
        for t in range(5)
        for left in range(5)
        if np.array_equal(aerial[:, t : t + 300, left : left + 300], item["aerial"].numpy())
    ]
    assert len(offsets) == 1
    assert torch.equal(item["s2"], torch.from_numpy(raw["sen-2-data"])) and item["s2"].shape[1:] == (10, 6, 6)
    assert item["s2_dates"].dtype == torch.int64
    assert item["s2_dates"].tolist() == [_doy(p, 2) for p in raw["sen-2-products"]]
    assert item["s2_dates"][0] == 1 and item["s2_dates"][-1] == 366  # 1 Jan 2020 -> 1, 31 Dec 2020 -> 366
    pth = torch.load(FIXTURE / "s1-asc" / "Abies_alba_1_1005_WEFL_NLF.pth", weights_only=True)
    assert torch.equal(item["s1-asc"], pth[:, :2]) and item["s1-asc"].shape[1:] == (2, 6, 6)
    assert item["s1-asc_dates"].tolist() == [_doy(p, 4) for p in raw["sen-1-asc-products"]]
    assert torch.equal(item["multilabel"], _onehot("Abies", "Picea", "Fagus"))  # shares 0.62, 0.30, 0.08
    assert item["multilabel"].dtype == torch.float32 and item["label"] == CLASSES.index("Abies")


@pytest.mark.parametrize(
    "index, genera, dominant",
    [
        (1, ("Fagus",), "Fagus"),  # Quercus at 0.07 is not > 0.07
        (2, ("Cleared",), "Cleared"),
        (3, ("Acer", "Quercus", "Tilia"), "Quercus"),
    ],
)
def test_multilabel_threshold_is_strict(index, genera, dominant):
    ds = TreeSatAITSDataset(FIXTURE, "train", sensors=("s2",))
    item = ds[index]
    assert torch.equal(item["multilabel"], _onehot(*genera)) and item["label"] == CLASSES.index(dominant)
    assert set(item) == {"s2", "s2_dates", "multilabel", "label"}


def test_crops_center_and_random_per_epoch():
    name = "Pinus_sylvestris_6_15_WEFL_NLF.tif"
    with rasterio.open(FIXTURE / "aerial" / name) as src:
        aerial = torch.from_numpy(src.read().astype(np.float32))
    center = TreeSatAITSDataset(FIXTURE, "val", sensors=("aerial",), crop="center")
    assert torch.equal(center[0]["aerial"], aerial[:, 2:302, 2:302])
    ds = TreeSatAITSDataset(FIXTURE, "val", sensors=("aerial",), seed=3)
    again = TreeSatAITSDataset(FIXTURE, "val", sensors=("aerial",), seed=3)
    assert torch.equal(ds[0]["aerial"], again[0]["aerial"])  # a pure function of (seed, epoch, index)
    corners = set()
    for epoch in range(8):
        ds.set_epoch(epoch)
        corners.add(ds[0]["aerial"][0, 0, 0].item())
    assert len(corners) > 1  # the random crop moves between epochs


def test_max_dates_is_a_sorted_random_subset():
    full = TreeSatAITSDataset(FIXTURE, "test", sensors=("s2", "s1-asc"))[1]
    ds = TreeSatAITSDataset(FIXTURE, "test", sensors=("s2", "s1-asc"), max_dates=2, seed=1)
    item = ds[1]
    for s in ("s2", "s1-asc"):
        d = item[f"{s}_dates"]
        assert len(d) == 2 and item[s].shape[0] == 2 and bool((d[1:] >= d[:-1]).all())
        rows = [int(np.flatnonzero((full[f"{s}_dates"] == v).numpy())[0]) for v in d]
        assert torch.equal(item[s], full[s][rows])


def test_s1_from_h5_equals_the_pth_files():
    a = TreeSatAITSDataset(FIXTURE, "val", sensors=("s1-asc",))
    b = TreeSatAITSDataset(FIXTURE, "val", sensors=("s1-asc",), s1_from_h5=True)
    for i in range(len(a)):
        assert torch.equal(a[i]["s1-asc"], b[i]["s1-asc"]) and torch.equal(a[i]["s1-asc_dates"], b[i]["s1-asc_dates"])


def test_one_line_errors(tmp_path):
    with pytest.raises(MissingFileError, match="train_filenames.lst not found.*official TreeSatAI-TS folder"):
        TreeSatAITSDataset(tmp_path / "missing")
    with pytest.raises(UserError, match=r"split='\w+': expected one of train, val, test; choose one of them$"):
        TreeSatAITSDataset(FIXTURE, "validation")
    with pytest.raises(
        UserError,
        match=r"sensors=\['s1-des'\] \(config: .*\): expected some of this dataset's sensors \(aerial, s2, s1-asc\)",
    ):
        TreeSatAITSDataset(FIXTURE, sensors=("s1-des",))
    root = tmp_path / "copy"
    shutil.copytree(FIXTURE, root, ignore=shutil.ignore_patterns("s1-asc"))
    with pytest.raises(MissingFileError, match=r"s1-asc not found.*s1_from_h5=True"):
        TreeSatAITSDataset(root)
    assert len(TreeSatAITSDataset(root, sensors=("aerial", "s2"))) == 4
    (root / "aerial" / "Cleared_0_3_401_WEFL_NLF.tif").unlink()
    with pytest.raises(MissingFileError, match="Cleared_0_3_401_WEFL_NLF.tif not found"):
        TreeSatAITSDataset(root, sensors=("aerial",))[2]


def test_item_is_a_model_input_and_nano_runs_at_the_paper_patch_sizes():
    from anysat_lite import AnySat

    item = TreeSatAITSDataset(FIXTURE, "test", crop="center")[0]
    x = {k: v[None] for k, v in sensor_entries(item).items()}
    assert validate_sample(x).extent_m == (60.0, 60.0) == (TreeSatAITSDataset.tile_m,) * 2
    torch.manual_seed(0)
    model = AnySat("nano").eval()
    with torch.no_grad():
        for patch in (10, 20):  # GeoPlex scales 1 and 2 of TreeSatAI-TS
            out = model(x, patch_size=patch, output="patch")
            assert out.shape[:3] == (1, 60 // patch, 60 // patch) and torch.isfinite(out).all()


def test_official_norm_stats_and_the_official_formula():
    stats = official_norm_stats(FIXTURE)
    d = json.loads((FIXTURE / "NORM_s2_patch.json").read_text())
    assert stats.stats["s2"] == (d["mean"], d["std"]) and set(stats.stats) == set(SENSORS)
    # per_tile_norm_stats: per band, the mean over tiles of the tile's mean and (unbiased) std
    ds = TreeSatAITSDataset(FIXTURE, "val", sensors=("s2",))
    tiles = [_h5(n)["sen-2-data"].transpose(1, 0, 2, 3).reshape(10, -1).astype(np.float64) for n in ds.names]
    got = per_tile_norm_stats(ds).stats["s2"]
    np.testing.assert_allclose(got[0], np.mean([t.mean(1) for t in tiles], axis=0), rtol=1e-12)
    np.testing.assert_allclose(got[1], np.mean([t.std(1, ddof=1) for t in tiles], axis=0), rtol=1e-12)


def test_products_to_doy_reads_the_official_field():
    names = [
        b"S2A_MSIL2A_20200229T103421_N0213_R108_T32UNC_20200301T120935",
        "S1B_IW_GRDH_1SDV_20201231T170758_20210101T170823_019743_025539_3DC3",
    ]
    assert products_to_doy(names[:1], 2).tolist() == [60] and products_to_doy(names[1:], 4).tolist() == [366]
    with pytest.raises(ValueError, match="expected YYYYMMDD at the start of field 4"):
        products_to_doy(["S1A_IW_GRDH"], 4)


def test_official_layout_on_the_real_sample(tmp_path):
    """The real tile in the official layout: its demo ``.pth`` (VV, VH, VV/VH) is an ``s1-asc/`` file."""
    stem = "Abies_alba_1_1005_WEFL_NLF"
    for folder, suffix in (("aerial", ".tif"), ("sentinel", ".h5"), ("s1-asc", ".pth")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / f"{stem}{suffix}").symlink_to(TREESAT / f"{stem}{suffix}")
    for split in ("train", "val", "test"):
        (tmp_path / f"{split}_filenames.lst").write_text(f"{stem}.tif\n")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "TreeSatBA_v9_60m_multi_labels.json").write_text(
        json.dumps({f"{stem}.tif": [["Abies", 1.0]]})
    )
    item = TreeSatAITSDataset(tmp_path, "test", crop="center")[0]
    loose = TreeSatAITS(TREESAT).read(stem)
    assert torch.equal(item["aerial"], torch.from_numpy(loose["aerial"]))
    assert item["s2"].shape == (146, 10, 6, 6) and item["s1-asc"].shape == (60, 2, 6, 6)
    assert item["s2_dates"][:5].tolist() == [2, 5, 7, 10, 12] and item["s1-asc_dates"][:3].tolist() == [3, 9, 15]
    torch.testing.assert_close(item["s1-asc"], torch.from_numpy(loose["s1-asc"]), rtol=1e-6, atol=0)


# --- the loose-file reader ------------------------------------------------------------------
def test_loose_reader_on_the_official_root_ignores_the_60m_folders():
    """Regression: the official root holds s1/60m/<tile>.tif and s2/60m/<tile>.tif (6 x 6 px) with the
    names of the aerial tiles; they must not be taken for aerial tiles."""
    assert (FIXTURE / "s2" / "60m" / "Abies_alba_1_1005_WEFL_NLF.tif").exists()
    reader = TreeSatAITS(FIXTURE)
    assert len(reader) == 9
    r = reader.read("Abies_alba_1_1005_WEFL_NLF")
    assert r["aerial"].shape == (4, 300, 300) and r["s2"].shape[1:] == (10, 6, 6)


@pytest.fixture(scope="module")
def reader():
    return TreeSatAITS(TREESAT)


def test_read_shapes_and_dates(reader):
    assert reader.names == ["Abies_alba_1_1005_WEFL_NLF"]
    r = reader.read(reader.names[0])
    assert r["aerial"].shape == (4, 300, 300) and r["gsd"] == pytest.approx(0.2)
    assert r["s2"].shape == (146, 10, 6, 6) and r["s2"][0].shape == (10, 6, 6)
    assert r["s1-asc"].shape == (60, 2, 6, 6) and "s1-des" not in r  # descending orbit: no registered sensor
    # dates parsed from 'S2A_MSIL2A_20200102T...' etc: 2 Jan, 5 Jan, 7 Jan, 10 Jan, 12 Jan 2020
    assert r["s2_dates"][:5].tolist() == [2, 5, 7, 10, 12]
    assert np.all(np.diff(r["s2_dates"]) >= 0) and r["s2_dates"].max() <= 366
    assert r["s1-asc_dates"][:3].tolist() == [3, 9, 15]
    assert 0 < r["s2_mask"].sum() < 146  # some dates cloudy, some clear
    assert CLASSES[r["label"]] == "Abies" and r["multilabel"].sum() == 1


def test_s1_matches_official_demo_tensor(reader):
    r = reader.read(reader.names[0])
    official = torch.load(TREESAT / "Abies_alba_1_1005_WEFL_NLF.pth", weights_only=True)
    torch.testing.assert_close(torch.from_numpy(r["s1"]), official, rtol=1e-4, atol=1e-6)


def test_sample_is_a_valid_model_input(reader):
    x = reader.sample(reader.names[0], ("aerial", "s2", "s1-asc"), max_dates=12)
    assert x["s2"].shape == (1, 12, 10, 6, 6) and x["s1-asc_dates"].shape == (1, 12)
    assert validate_sample(x).extent_m == (60.0, 60.0)
    with pytest.raises(KeyError, match="not in this tile"):
        reader.sample(reader.names[0], ("spot",))


def test_sample_refuses_an_unknown_tile_a_wrong_max_dates_and_takes_one_sensor_as_a_string(reader, tmp_path):
    name = reader.names[0]
    for bad, pattern in (
        ("nope", r"^TreeSatAI-TS: tile 'nope' not in .*; expected the name of one of its 1 tiles \('Abies_alba_1_"),
        (name[:-1], rf"^TreeSatAI-TS: tile '{name[:-1]}' not in .*; did you mean '{name}'\? expected"),
        (0, r"^TreeSatAI-TS: tile 0 \(int\) not in .*; pass a name from reader.names, e.g. reader.names\[0\]$"),
    ):
        with pytest.raises(UserError, match=pattern):  # a bare KeyError: 'nope' before; still a KeyError
            reader.sample(bad)
        with pytest.raises(KeyError):
            reader.read(bad)
    for bad in (0, -1, "24", 2.5, True):  # 0 gave a series of no date, which the model refuses later
        with pytest.raises(UserError, match=rf"^TreeSatAI-TS: max_dates={bad!r}: expected None \(all dates\) or a "):
            reader.sample(name, ("s2",), max_dates=bad)
    with pytest.raises(UserError, match=r"^.*: sensor 'S2' not in this tile; did you mean 's2'\? expected some of"):
        reader.sample(name, ("S2",))
    one = reader.sample(name, "s2", max_dates=3)  # as TreeSatAITSDataset(sensors="s2") takes it
    assert list(one) == ["s2", "s2_dates"] and one["s2"].shape == (1, 3, 10, 6, 6)
    with pytest.raises(UserError, match=r"^TreeSatAI-TS: folder .*missing not found; expected a folder of"):
        TreeSatAITS(tmp_path / "missing")
    with pytest.raises(MissingFileError, match=r"^no TreeSatAI-TS tile"):  # still a FileNotFoundError
        TreeSatAITS(tmp_path)


def test_read_products_accepts_bytes_and_str():
    assert read_products([b"S1A_IW_GRDH_1SDV_20201231T170841_x", "x_20200301"]).tolist() == [366, 61]


def test_damaged_list_and_labels_and_a_file_as_root_name_the_file(tmp_path):
    """A split list that is not UTF-8 or a cut-short multi-label JSON is one line naming the file; a file given
    as the dataset's path is refused as such, by both readers."""

    for reader in (TreeSatAITSDataset, TreeSatAITS):
        with pytest.raises(UserError, match=r"train_filenames.lst: expected the dataset's folder, got a file"):
            reader(FIXTURE / "train_filenames.lst")
    root = tmp_path / "copy"
    shutil.copytree(FIXTURE, root)
    (root / "train_filenames.lst").write_bytes(b"Abies_alba_1_1005_WEFL_NLF.tif\n\xff\n")
    with pytest.raises(UserError, match=r"train_filenames.lst: expected UTF-8 text, got byte 0xff at position 31"):
        TreeSatAITSDataset(root)
    shutil.copy(FIXTURE / "train_filenames.lst", root / "train_filenames.lst")
    labels = root / "labels" / "TreeSatBA_v9_60m_multi_labels.json"
    labels.write_text('{"Abies_alba_1_1005_WEFL_NLF.tif": [["Abies", 0.71]')
    with pytest.raises(UserError, match=r"multi_labels.json: not valid JSON \(.*\); expected the genus shares"):
        TreeSatAITSDataset(root)
    with pytest.raises(UserError, match=r"multi_labels.json: not valid JSON"):
        TreeSatAITS(FIXTURE, labels_json=labels)
