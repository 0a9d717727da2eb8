"""The manifest-driven "rasters" dataset on GeoTIFFs generated in a temporary folder."""

import datetime as dt
import json

import numpy as np
import pytest
import rasterio
import torch
import yaml
from rasterio.transform import from_origin

from anysat_lite.data.contract import validate_sample
from anysat_lite.data.rasters import RastersDataset, read_manifest
from anysat_lite.data.registry import get_dataset
from anysat_lite.errors import MissingFileError, UserError

S2_DATES = {
    "t0": ["2020-03-01", "2020-06-15", "2020-09-30"],
    "t1": ["2020-01-05", "2020-07-01", "2020-12-31"],
    "t2": ["2021-02-01", "2021-05-05"],
}
SPLITS = {"t0": "train", "t1": "train", "t2": "val"}
LABELS = {"t0": "forest", "t1": "crop", "t2": "forest"}


def _write(path, data, gsd, left, top):
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=data.shape[1],
        width=data.shape[2],
        count=data.shape[0],
        dtype=data.dtype,
        crs="EPSG:32632",
        transform=from_origin(left, top, gsd, gsd),
    ) as dst:
        dst.write(data)


def make_manifest(folder, fmt: str = "csv"):
    """Three 20 m tiles (aerial 100 x 100 px, s2 2 x 2 px, s1-asc 2 x 2 px) and a manifest listing them.

    S2 dates are given in the manifest for the first date of each tile and read from the file
    name for the others; S1 dates always from the file name.  Returns the manifest path and the arrays.
    """
    rng = np.random.default_rng(0)
    rows, arrays, tiles = [], {}, []
    for k, t in enumerate(S2_DATES):
        left, top = 500000.0 + 100 * k, 5000020.0
        aerial = rng.integers(0, 255, size=(4, 100, 100), dtype=np.uint8)
        _write(folder / t / "aerial.tif", aerial, 0.2, left, top)
        arrays[t, "aerial"] = aerial
        entry = {
            "name": t,
            "split": SPLITS[t],
            "label": LABELS[t],
            "rasters": {"aerial": f"{t}/aerial.tif", "s2": [], "s1-asc": []},
        }
        rows.append([t, SPLITS[t], LABELS[t], "aerial", "", f"{t}/aerial.tif"])
        for j, d in enumerate(reversed(S2_DATES[t])):  # listed out of order on purpose
            name = f"{t}/s2_{d.replace('-', '')}.tif" if j else f"{t}/s2_first.tif"
            arrays[t, "s2", d] = rng.uniform(0, 5000, size=(10, 2, 2)).astype(np.float32)
            _write(folder / name, arrays[t, "s2", d], 10.0, left, top)
            rows.append([t, SPLITS[t], LABELS[t], "s2", "" if j else d, name])
            entry["rasters"]["s2"].append({"path": name, "date": d} if not j else name)
        for d in ("20200410", "20200820"):
            arrays[t, "s1-asc", d] = rng.uniform(0, 0.3, size=(2, 2, 2)).astype(np.float32)
            _write(folder / t / f"s1-asc_{d}.tif", arrays[t, "s1-asc", d], 10.0, left, top)
            rows.append([t, SPLITS[t], LABELS[t], "s1-asc", "", f"{t}/s1-asc_{d}.tif"])
            entry["rasters"]["s1-asc"].append(f"{t}/s1-asc_{d}.tif")
        tiles.append(entry)
    if fmt == "csv":
        path = folder / "manifest.csv"
        path.write_text("tile,split,label,sensor,date,path\n" + "".join(",".join(r) + "\n" for r in rows))
    else:
        path = folder / "manifest.yaml"
        path.write_text(yaml.safe_dump({"classes": ["crop", "forest"], "tiles": tiles}, sort_keys=False))
    return path, arrays


def _doy(d: str) -> int:
    return dt.date.fromisoformat(d).timetuple().tm_yday


@pytest.mark.parametrize("fmt", ["csv", "yaml"])
def test_items_are_the_listed_rasters(tmp_path, fmt):
    path, arrays = make_manifest(tmp_path, fmt)
    ds = RastersDataset(tmp_path)  # the folder holding the manifest
    assert ds.manifest == path and ds.names == ["t0", "t1"] and ds.sensors == ("aerial", "s2", "s1-asc")
    assert ds.classes == ("crop", "forest") and ds.tasks == ("label",) and ds.tile_m == 20.0
    item = ds[1]
    assert (
        item["aerial"].shape == (4, 100, 100)
        and item["s2"].shape == (3, 10, 2, 2)
        and item["s1-asc"].shape == (2, 2, 2, 2)
    )
    torch.testing.assert_close(item["aerial"], torch.from_numpy(arrays["t1", "aerial"].astype(np.float32)))
    for j, d in enumerate(S2_DATES["t1"]):  # chronological whatever the manifest order
        torch.testing.assert_close(item["s2"][j], torch.from_numpy(arrays["t1", "s2", d]))
    assert item["s2_dates"].dtype == torch.int64 and item["s2_dates"].tolist() == [5, 183, 366]
    assert item["s1-asc_dates"].tolist() == [_doy("2020-04-10"), _doy("2020-08-20")]
    assert item["label"] == ds.classes.index("crop")
    val = RastersDataset(path, "val")
    assert val.names == ["t2"] and val[0]["s2_dates"].tolist() == [_doy(d) for d in S2_DATES["t2"]]
    assert get_dataset("rasters") is RastersDataset


def test_csv_and_yaml_manifests_agree(tmp_path):
    a, _ = make_manifest(tmp_path / "a", "csv")
    b, _ = make_manifest(tmp_path / "b", "yaml")
    ta, tb = read_manifest(a)[0], read_manifest(b)[0]
    assert [(t.name, t.split, t.label) for t in ta] == [(t.name, t.split, t.label) for t in tb]
    for x, y in zip(ta, tb):
        assert {s: [(p.relative_to(a.parent), d) for p, d in f] for s, f in x.files.items()} == {
            s: [(p.relative_to(b.parent), d) for p, d in f] for s, f in y.files.items()
        }


def test_sensor_subset_date_cap_and_extent(tmp_path):
    make_manifest(tmp_path)
    ds = RastersDataset(tmp_path, sensors=("s2",), max_dates=2, seed=5, extent_m=10)
    item = ds[0]
    assert set(item) == {"s2", "s2_dates", "label"} and item["s2"].shape == (2, 10, 1, 1) and ds.tile_m == 10.0
    d = item["s2_dates"].tolist()
    assert d == sorted(d) and set(d) <= {_doy(x) for x in S2_DATES["t0"]}
    assert torch.equal(RastersDataset(tmp_path, sensors=("s2",), max_dates=2, seed=5, extent_m=10)[0]["s2"], item["s2"])


def test_item_is_a_model_input_and_nano_runs(tmp_path):
    from anysat_lite import AnySat

    make_manifest(tmp_path)
    item = RastersDataset(tmp_path)[0]
    x = {k: v[None] for k, v in item.items() if k != "label"}
    assert validate_sample(x).extent_m == (20.0, 20.0)
    torch.manual_seed(0)
    with torch.no_grad():
        out = AnySat("nano").eval()(x, patch_size=10, output="patch")
    assert out.shape[:3] == (1, 2, 2) and torch.isfinite(out).all()


def test_one_line_errors(tmp_path):
    with pytest.raises(MissingFileError, match="no manifest.csv / manifest.yaml / manifest.yml in"):
        RastersDataset(tmp_path)
    path, _ = make_manifest(tmp_path)
    with pytest.raises(UserError, match=r"split='test': expected one of train, val; choose one of them$"):
        RastersDataset(path, "test")
    with pytest.raises(UserError, match=r"sensors=\[.*\] \(config: data.datasets\[i\].sensors\): expected some of "):
        RastersDataset(path, sensors=("spot",))
    text = path.read_text()
    bad = tmp_path / "bad.csv"
    bad.write_text(text + "t0,train,forest,planet,,t0/aerial.tif\n")
    with pytest.raises(KeyError, match="bad.csv line 19: unknown sensor 'planet'"):
        RastersDataset(bad)
    bad.write_text(text + "t0,train,forest,s2,,t0/missing.tif\n")
    with pytest.raises(MissingFileError, match="raster .*missing.tif not found"):
        RastersDataset(bad)
    bad.write_text(text + "t3,val,crop,aerial,,t0/aerial.tif\n")
    with pytest.raises(ValueError, match=r"tile 't3' of bad.csv has no \['s2', 's1-asc'\] raster"):
        RastersDataset(bad, "val")
    assert len(RastersDataset(bad, "val", sensors=("aerial",))) == 2
    bad.write_text(text + "t0,val,forest,spot,,t0/aerial.tif\n")
    with pytest.raises(ValueError, match="tile 't0' has split/label 'val'/'forest' here"):
        RastersDataset(bad)
    bad.write_text("tile,path\nt0,t0/aerial.tif\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['sensor'\]"):
        RastersDataset(bad)
    bad = tmp_path / "bad.yaml"
    bad.write_text(json.dumps({"tiles": [{"name": "t0", "rasters": {"s2": "t0/aerial.tif"}}]}))
    with pytest.raises(ValueError, match="no date for aerial.tif"):
        RastersDataset(bad)


def test_manifest_mistakes_name_the_file_the_entry_and_the_fix(tmp_path):
    """A misspelled split, a YAML syntax error, a raster path that is not text, a file that is not UTF-8 and a
    short CSV row are one line each naming the manifest and the line or tile (not a parser message or a
    reversed split message)."""

    path, _ = make_manifest(tmp_path)
    lines = path.read_text().splitlines(keepends=True)
    bad = tmp_path / "bad.csv"
    bad.write_text("".join(lines[:3]) + lines[3].replace(",train,", ",training,") + "".join(lines[4:]))
    with pytest.raises(UserError, match=r"bad.csv line 4: split 'training', expected train, val or test; correct"):
        RastersDataset(bad)
    bad.write_text("".join(lines) + "t0,train\n")
    with pytest.raises(UserError, match=r"bad.csv line 19: no sensor / path, expected a value in column\(s\) sensor"):
        RastersDataset(bad)
    bad.write_bytes(path.read_bytes() + "t0,train,forêt,aerial,,t0/aerial.tif\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"bad.csv: expected UTF-8 text, got byte 0xea at position \d+; expected a CSV"):
        RastersDataset(bad)

    yml, _ = make_manifest(tmp_path, "yaml")
    doc = yaml.safe_load(yml.read_text())
    bad = tmp_path / "bad.yaml"
    bad.write_text(yml.read_text() + "  - name: [t9\n")
    with pytest.raises(UserError, match=r"bad.yaml: not valid YAML \(.*\(line \d+, column \d+\)\); expected a raster"):
        RastersDataset(bad)
    doc["tiles"][0]["rasters"] = {"aerial": [1, 2]}
    bad.write_text(yaml.safe_dump(doc))
    with pytest.raises(UserError, match=r"bad.yaml tile #0 \(t0\) rasters.aerial: raster path 1 \(int\), expected"):
        RastersDataset(bad)
    doc["tiles"][0]["rasters"] = {"aerial": {"date": "2020-03-01"}}
    bad.write_text(yaml.safe_dump(doc))
    with pytest.raises(UserError, match=r"rasters.aerial: raster path None \(NoneType\), expected the path of a"):
        RastersDataset(bad)
    doc["tiles"][0]["split"] = "validation"
    bad.write_text(yaml.safe_dump(doc))
    with pytest.raises(UserError, match=r"bad.yaml tile #0 \(t0\): split 'validation', expected train, val or test"):
        RastersDataset(bad)


def test_csv_rows_with_more_values_than_columns(tmp_path):
    """A path holding an unquoted comma spills into a value past the last column: refused with the line; an empty
    trailing value (a trailing comma) is accepted."""

    path, _ = make_manifest(tmp_path)
    text = path.read_text()
    bad = tmp_path / "bad.csv"
    bad.write_text(text + "t0,train,forest,spot,,t0/aerial,x.tif\n")
    with pytest.raises(UserError, match=r"bad.csv line 19: 7 values, expected at most 6 \(tile, split, label, sen"):
        RastersDataset(bad)
    bad.write_text(text.replace(".tif\n", ".tif,\n"))
    assert len(RastersDataset(bad)) == 2
