"""Command line entry points, YAML configs and the embed command on the GeoTIFF fixtures."""
import subprocess
import sys

import pytest
import xarray as xr

from anysat_lite.cli import main
from anysat_lite.config import get_config, load_config, save_config, PRESETS

from conftest import GEOTIFF


def test_presets_and_overrides(tmp_path):
    assert set(PRESETS) == {"cpu-demo", "tiny", "small", "base", "base-cuda"}
    base = get_config("base-cuda")
    assert (base.model.embed_dim, base.model.depth, base.model.num_heads) == (768, 6, 12)
    assert base.train.amp == "bf16" and base.train.device == "cuda" and base.jepa.predictor_depth == 4
    cfg = get_config("cpu-demo", ["train.lr=1e-4", "train.steps=7", "jepa.target_scale=[0.1, 0.3]",
                                  "data.datasets=[{name: treesatai, path: data/treesatai_ts_sample}]"])
    assert cfg.train.lr == 1e-4 and cfg.train.steps == 7 and cfg.jepa.target_scale == (0.1, 0.3)
    assert cfg.data.datasets[0].name == "treesatai"
    with pytest.raises(KeyError, match="unknown config key"):
        get_config("cpu-demo", ["train.nope=1"])
    with pytest.raises(KeyError, match="unknown preset"):
        get_config("huge")
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert again == cfg
    (tmp_path / "p.yaml").write_text("preset: base-cuda\ntrain:\n  steps: 5\n")
    assert load_config(tmp_path / "p.yaml").train.steps == 5 and load_config(tmp_path / "p.yaml").train.amp == "bf16"


def test_info_and_module_entry_point(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "modis" in out and "cpu-demo" in out
    r = subprocess.run([sys.executable, "-m", "anysat_lite", "--help"], capture_output=True, text=True, check=True)
    for cmd in ("demo", "pretrain", "probe", "embed", "bench", "notebooks"):
        assert cmd in r.stdout


def test_embed_geotiffs_to_netcdf(tmp_path):

    from anysat_lite.config import model_config
    from anysat_lite.model import AnySat
    from anysat_lite.train.checkpoint import export_encoder

    enc = AnySat(model_config("nano"), sensors=["aerial", "s2"])
    export_encoder(enc, tmp_path / "enc", {"model": {"embed_dim": 64, "depth": 2, "num_heads": 4},
                                           "sensors": ["aerial", "s2"], "norm_stats": {}})
    s2 = ",".join(str(GEOTIFF / f"s2_{d}.tif") for d in ("20200301", "20200615", "20200930"))
    out = tmp_path / "emb.nc"
    assert main(["embed", "--checkpoint", str(tmp_path / "enc"), "--raster", f"aerial={GEOTIFF / 'aerial.tif'}",
                 "--raster", f"s2={s2}", "--patch-size", "10", "--out", str(out)]) == 0
    ds = xr.open_dataset(out)
    assert ds.embedding.dims == ("y", "x", "feature") and ds.embedding.shape == (2, 2, 64)
    assert ds.x.values.tolist() == [500005.0, 500015.0] and ds.y.values.tolist() == [5000015.0, 5000005.0]
    assert "32632" in ds.attrs["crs"] or "UTM zone 32N" in ds.attrs["crs"]
    assert ds.attrs["patch_size_m"] == 10
