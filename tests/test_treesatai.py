"""The TreeSatAI-TS reader on the real sample shipped in data/."""
import numpy as np
import pytest
import torch

from anysat_lite.data.contract import validate_sample
from anysat_lite.data.treesatai import CLASSES, TreeSatAITS, read_products

from conftest import TREESAT


@pytest.fixture(scope="module")
def reader():
    return TreeSatAITS(TREESAT)


def test_read_shapes_and_dates(reader):
    assert reader.names == ["Abies_alba_1_1005_WEFL_NLF"]
    r = reader.read(reader.names[0])
    assert r["aerial"].shape == (4, 300, 300) and r["gsd"] == pytest.approx(0.2)
    assert r["s2"].shape == (146, 10, 6, 6) and r["s2"][0].shape == (10, 6, 6)
    assert r["s1-asc"].shape == (60, 2, 6, 6) and r["s1-des"].shape == (86, 2, 6, 6)
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


def test_read_products_accepts_bytes_and_str():
    assert read_products([b"S1A_IW_GRDH_1SDV_20201231T170841_x", "x_20200301"]).tolist() == [366, 61]
