"""S2NAIP-Urban reader on the generated official-layout fixture (tests/data/s2naip_urban/data.py).

Expected items are derived by hand from the official ``src/data/S2Naip.py``: NAIP PNG permuted to
``[4, H, W]``; S1 ``view(-1, 2, 64, 64)`` plus ``clamp(VV / (VH + 1e-10), -1e4, 1e4)``; S2 and
Landsat ``_8`` / ``_16`` rasters cast to int16, the ``_16`` ones through
``torchvision.transforms.Resize((64, 64), antialias=True)`` (on an integer tensor torchvision
interpolates in float32, rounds and casts back), S2 channels ``[0, 1, 2, 4, 5, 6, 3, 7, 8, 9]``;
dates = ``tm_yday`` of the split dict's ``YYYYMMDD`` strings.
"""

import datetime as dt
import sys

import numpy as np
import pytest
import rasterio
import torch
from conftest import ROOT
from PIL import Image

from anysat_lite import AnySat
from anysat_lite.data.contract import validate_sample
from anysat_lite.data.s2naip import CLASSES, S2NAIPUrbanDataset, official_norm_stats
from anysat_lite.errors import MissingFileError, UserError

S2NAIP = ROOT / "tests" / "data" / "s2naip_urban"


def torchvision_resize_int16(x: torch.Tensor) -> torch.Tensor:
    """``Resize((64, 64), antialias=True)`` on an int16 ``[N, 32, 32]`` tensor, as torchvision computes it."""
    y = torch.nn.functional.interpolate(
        x[None].to(torch.float32), size=[64, 64], mode="bilinear", align_corners=False, antialias=True
    )[0]
    return torch.round(y).to(torch.int16)


def official_item(name, s2_dates, s1_dates, l8_dates):
    def read(path):
        with rasterio.open(path) as f:
            return f.read()

    out = {"naip": torch.from_numpy(np.array(Image.open(S2NAIP / "naip" / f"{name}.png"))).permute(2, 0, 1)}
    s1 = torch.FloatTensor(read(S2NAIP / "sentinel1" / f"{name}.tif")).view(-1, 2, 64, 64)
    out["s1"] = torch.cat((s1, torch.clamp(s1[:, :1] / (s1[:, 1:] + 1e-10), max=1e4, min=-1e4)), dim=1)
    l8_8 = torch.from_numpy(read(S2NAIP / "landsat" / f"{name}_8.tif").astype(np.int16)).unsqueeze(1)
    l8_16 = torchvision_resize_int16(torch.from_numpy(read(S2NAIP / "landsat" / f"{name}_16.tif").astype(np.int16)))
    out["l8"] = torch.cat([l8_8, l8_16.view(-1, 10, 64, 64)], dim=1)
    s2_8 = torch.from_numpy(read(S2NAIP / "sentinel2" / f"{name}_8.tif").astype(np.int16)).view(-1, 4, 64, 64)
    s2_16 = torchvision_resize_int16(torch.from_numpy(read(S2NAIP / "sentinel2" / f"{name}_16.tif").astype(np.int16)))
    out["s2"] = torch.cat([s2_8, s2_16.view(-1, 6, 64, 64)], dim=1)[:, [0, 1, 2, 4, 5, 6, 3, 7, 8, 9]]
    for key, days in (("s2", s2_dates), ("s1", s1_dates), ("l8", l8_dates)):
        out[f"{key}_dates"] = torch.tensor([dt.datetime.strptime(d, "%Y%m%d").timetuple().tm_yday for d in days])
    return out


def test_split_membership_follows_the_split_dicts():
    assert S2NAIPUrbanDataset(S2NAIP, "train").names == ["t0_a", "t1_b"]
    assert S2NAIPUrbanDataset(S2NAIP, "val").names == ["t2_c"]
    assert S2NAIPUrbanDataset(S2NAIP, "test").names == ["t3_d"]


def test_item_equals_official():
    item = S2NAIPUrbanDataset(S2NAIP, "val")[0]
    ref = official_item(
        "t2_c", ["20210110", "20210420", "20210808", "20211122"], ["20210301", "20210601"], ["20210512"]
    )
    assert set(item) == set(ref)
    shapes = {"naip": (4, 512, 512), "s2": (4, 10, 64, 64), "s1": (2, 3, 64, 64), "l8": (1, 11, 64, 64)}
    for key, value in ref.items():
        if key in shapes:
            assert item[key].shape == shapes[key] and item[key].dtype == torch.float32
        else:
            assert item[key].dtype == torch.int64
        assert torch.equal(item[key], value.to(item[key].dtype)), key


def test_band_order_resize_and_ratio_decode():
    item = S2NAIPUrbanDataset(S2NAIP, "train")[0]  # tile k = 0
    t, r, c = 1, 3, 4
    codes = ((item["s2"][t, :, r, c] - 1000 * t) // 100).long().tolist()
    assert codes == [0, 1, 2, 4, 5, 6, 3, 7, 8, 9]  # B2 B3 B4 | B5 B6 B7 (from _16) | B8 | B8A B11 B12
    assert item["s2"][t, 0, r, c] == 1000 * t + r + c  # 10 m band, untouched
    assert item["s2"][t, 3, r, c] == 1000 * t + 400 + 10  # 20 m band: left of the step
    assert item["s2"][t, 3, r, 40] == 1000 * t + 400 + 11  # right of the step (column 16 at 20 m = 32 at 10 m)
    assert item["l8"][2, 0, r, c] == 2000 + r + c and item["l8"][2, 10, r, c] == 2000 + 1000 + 10
    assert item["s1"][0, 2, 0, 1] == 1e4  # VH = 0 -> ratio clipped
    assert item["s1"][1, 2, r, c] == pytest.approx((1000 + r + c) / 7)
    assert item["naip"][:, 10, 20].tolist() == [10, 20, 30, 20]


def test_dates_are_day_of_year():
    ds = S2NAIPUrbanDataset(S2NAIP, "train")
    assert ds[0]["s2_dates"].tolist() == [5, 165, 365]  # 5 Jan, 14 Jun, 31 Dec 2019
    assert ds[1]["s1_dates"].tolist() == [2, 124, 366]  # 2 Jan, 3 May, 31 Dec 2020


def test_openstreetmap_labels():
    pytest.importorskip("cv2")
    seg = S2NAIPUrbanDataset(S2NAIP, "test", sensors=["naip"], labels=True)[0]["segmentation"]
    assert seg.shape == (512, 512) and seg.dtype == torch.int64 and len(CLASSES) == 6
    assert seg[140, 150] == 1  # building polygon x 100..200, y 100..180 (GeoJSON x = column)
    assert seg[300, 256] == 2 and seg[305, 256] == 0  # road at y = int(300.7) = int(300.2) = 300, 2 px thick
    assert seg[50, 400] == 3  # power tower point
    assert seg[100, 450] == 4 and seg[511, 469] == 4  # river lines, the second clipped at the edge
    assert seg[420, 40] == 5  # unknown category -> other
    assert seg[250, 250] == 0 and seg[10, 10] == 0  # feature without category skipped; background
    assert set(torch.unique(seg).tolist()) == set(range(6))


@pytest.mark.parametrize(
    "geometry, match",
    [
        (None, None),  # no geometry: nothing to draw, as a feature without category
        ({"type": "MultiLineString", "coordinates": []}, None),  # empty multi-geometry: nothing, as official
        ({"type": "GeometryCollection", "geometries": []}, None),  # a type the official code skips
        ({"type": "Polygon", "coordinates": [[[1, 2, 3, 4]]]}, r"OSM feature 0 \(building, Polygon\): OpenCV cannot"),
        ({"type": "Polygon", "coordinates": []}, r"OSM feature 0 \(building, Polygon\) has no coordinates"),
        ({"type": "LineString"}, r"OSM feature 0 \(road, LineString\) has no coordinates"),
    ],
)
def test_malformed_openstreetmap_features_are_named(geometry, match):
    pytest.importorskip("cv2")
    from anysat_lite.data.s2naip import rasterise_osm

    category = "road" if geometry and geometry["type"] == "LineString" else "building"
    geojson = {"features": [{"properties": {"category": category}, "geometry": geometry}]}
    if match is None:
        assert rasterise_osm(geojson, 16).max() == 0
    else:
        with pytest.raises(ValueError, match=match):
            rasterise_osm(geojson, 16)


def test_labels_without_opencv_fail_at_construction(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(ImportError, match="pip install opencv-python-headless, or read the dataset with labels=False"):
        S2NAIPUrbanDataset(S2NAIP, labels=True)


def test_official_temporal_dropout_and_date_cap():
    drop = S2NAIPUrbanDataset(S2NAIP, "train", sensors=["s2", "s1", "l8"], temporal_dropout=0.5)[1]
    assert drop["s2"].shape[0] == 1 and drop["s1"].shape[0] == 1 and drop["l8"].shape[0] == 1  # int(T / 2)
    assert S2NAIPUrbanDataset(S2NAIP, "val", sensors=["s2"], temporal_dropout=0.5)[0]["s2"].shape[0] == 4
    full = S2NAIPUrbanDataset(S2NAIP, "val", sensors=["s2"])[0]
    capped = S2NAIPUrbanDataset(S2NAIP, "val", sensors=["s2"], max_dates=2, seed=1)[0]
    kept = [full["s2_dates"].tolist().index(d) for d in capped["s2_dates"].tolist()]
    assert len(kept) == 2 and kept == sorted(kept) and torch.equal(capped["s2"], full["s2"][kept])


def test_official_norm_stats():
    assert official_norm_stats(S2NAIP, ["naip"]).stats["naip"][0] == [120.0, 110.0, 100.0, 90.0]
    with pytest.raises(MissingFileError, match="NORM_l8_patch.json"):
        official_norm_stats(S2NAIP)


def test_bad_root_split_and_sensors_give_one_line_errors(tmp_path):
    with pytest.raises(MissingFileError, match=r"train_dict.json not found; expected the official S2NAIP-urban"):
        S2NAIPUrbanDataset(tmp_path)
    with pytest.raises(UserError, match=r"split='\w+': expected one of train, val, test; choose one of them$"):
        S2NAIPUrbanDataset(S2NAIP, "dev")
    with pytest.raises(UserError, match=r"sensors=\[.*\] \(config: data.datasets\[i\].sensors\): expected some of "):
        S2NAIPUrbanDataset(S2NAIP, sensors=["l7"])
    (tmp_path / "train_dict.json").write_text('{"name": ["x"], "s2_dates": [["20200101"]]}')
    with pytest.raises(KeyError, match="has no \\['l8_dates', 's1_dates'\\]"):
        S2NAIPUrbanDataset(tmp_path)
    with pytest.raises(MissingFileError, match=r"sentinel2/x_8.tif not found"):
        S2NAIPUrbanDataset(tmp_path, sensors=["s2"])[0]


def test_item_is_a_valid_model_input_for_the_nano_model():
    item = S2NAIPUrbanDataset(S2NAIP, "test")[0]
    x = {k: v[None] for k, v in item.items()}
    assert validate_sample(x).extent_m == (S2NAIPUrbanDataset.tile_m, S2NAIPUrbanDataset.tile_m)
    torch.manual_seed(0)
    model = AnySat("nano", sensors=S2NAIPUrbanDataset.sensors).eval()
    with torch.no_grad():
        out = model(x, patch_size=160, output="patch")  # GeoPlex S2NAIP scales 4, 8, 16 -> 40, 80, 160 m
    assert out.shape == (1, 4, 4, 64) and torch.isfinite(out).all()


def test_damaged_json_files_and_a_file_as_root_name_the_file(tmp_path):
    """A split dict that is not UTF-8, or a cut-short OpenStreetMap GeoJSON, is one line naming the file; a file
    given as the dataset's path is refused as such."""
    import shutil

    with pytest.raises(UserError, match=r"S2NAIP-Urban: dataset path .*train_dict.json: expected the dataset's folder"):
        S2NAIPUrbanDataset(S2NAIP / "train_dict.json")
    (tmp_path / "train_dict.json").write_bytes('{"name": ["é"]}'.encode("latin-1"))
    with pytest.raises(UserError, match=r"train_dict.json: expected UTF-8 text, got byte 0xe9 at position 11"):
        S2NAIPUrbanDataset(tmp_path)
    pytest.importorskip("cv2")
    root = tmp_path / "copy"
    shutil.copytree(S2NAIP, root)
    (root / "openstreetmap" / "t3_d.geojson").write_text('{"features": [')
    ds = S2NAIPUrbanDataset(root, "test", sensors=["naip"], labels=True)
    with pytest.raises(UserError, match=r"t3_d.geojson: not valid JSON \(.*\); expected the tile's OpenStreetMap"):
        ds[0]
    (root / "openstreetmap" / "t3_d.geojson").unlink()
    with pytest.raises(MissingFileError, match=r"labels .*t3_d.geojson not found"):
        ds[0]
