"""Command line entry points, YAML configs and the embed command on the GeoTIFF fixtures."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import xarray as xr
from conftest import GEOTIFF
from rasterio.crs import CRS

from anysat_lite.cli import main
from anysat_lite.config import PRESETS, get_config, load_config, save_config
from anysat_lite.demo import SEED_MARKERS, WORLD_MARKERS, readme_block
from anysat_lite.errors import UserError
from anysat_lite.probe.embed import _cf_grid_mapping


def test_presets_and_overrides(tmp_path):
    assert set(PRESETS) == {"cpu-demo", "tiny", "small", "base", "base-cuda", "geoplex"}
    base = get_config("base-cuda")
    assert (base.model.embed_dim, base.model.depth, base.model.num_heads) == (768, 6, 12)
    assert base.train.amp == "bf16" and base.train.device == "cuda" and base.jepa.predictor_depth == 4
    assert base.data.num_workers == 4 and get_config("base").data.num_workers == 0
    cfg = get_config(
        "cpu-demo",
        [
            "train.lr=1e-4",
            "train.steps=7",
            "jepa.target_scale=[0.1, 0.3]",
            "data.datasets=[{name: treesatai, path: data/treesatai_ts_sample}]",
        ],
    )
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


def test_set_help_shows_an_override_the_parser_accepts(capsys):
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    examples = re.findall(r'--set "([^"]+)"', text)
    assert examples == ["data.datasets=[{name: synthetic, sensors: [s2]}]"]
    assert get_config("cpu-demo", examples).data.datasets[0].sensors == ["s2"]


def test_info_and_module_entry_point(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "modis" in out and "cpu-demo" in out
    r = subprocess.run([sys.executable, "-m", "anysat_lite", "--help"], capture_output=True, text=True, check=True)
    for cmd in ("demo", "pretrain", "probe", "embed", "bench", "notebooks"):
        assert cmd in r.stdout


def test_a_reader_that_closes_the_pipe_early_is_not_an_error():
    """``anysat-lite info | head -1``: the output's reader goes away; no error line, exit code 0."""
    p = subprocess.Popen([sys.executable, "-m", "anysat_lite", "info"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # before the command writes anything
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 0 and err == "", err


@pytest.fixture
def encoder_files(tmp_path):
    """An exported nano encoder (aerial + S2) with normalisation statistics."""
    from anysat_lite.config import model_config
    from anysat_lite.model import AnySat
    from anysat_lite.train.checkpoint import export_encoder

    torch.manual_seed(0)
    enc = AnySat(model_config("nano"), sensors=["aerial", "s2"])
    stats = {"aerial": {"mean": [120.0] * 4, "std": [70.0] * 4}, "s2": {"mean": [2500.0] * 10, "std": [1400.0] * 10}}
    export_encoder(
        enc,
        tmp_path / "enc",
        {
            "model": {"embed_dim": 64, "depth": 2, "num_heads": 4},
            "sensors": ["aerial", "s2"],
            "norm_stats": {"synthetic": stats},
        },
    )
    return tmp_path / "enc"


S2 = ",".join(str(GEOTIFF / f"s2_{d}.tif") for d in ("20200301", "20200615", "20200930"))


def test_embed_geotiffs_to_cf_netcdf_that_gdal_places_on_the_map(tmp_path, encoder_files):
    out = tmp_path / "new" / "folder" / "emb.nc"  # a missing folder is created
    assert (
        main(
            [
                "embed",
                "--checkpoint",
                str(encoder_files),
                "--raster",
                f"aerial={GEOTIFF / 'aerial.tif'}",
                "--raster",
                f"s2={S2}",
                "--patch-size",
                "10",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    ds = xr.open_dataset(out)
    assert ds.embedding.dims == ("feature", "y", "x") and ds.embedding.shape == (64, 2, 2)
    assert ds.x.values.tolist() == [500005.0, 500015.0] and ds.y.values.tolist() == [5000015.0, 5000005.0]
    assert ds.x.attrs["standard_name"] == "projection_x_coordinate"
    assert ds.embedding.attrs["grid_mapping"] == "spatial_ref"
    assert CRS.from_wkt(ds.spatial_ref.attrs["crs_wkt"]).to_epsg() == 32632
    assert ds.spatial_ref.attrs["grid_mapping_name"] == "transverse_mercator"
    assert ds.attrs["patch_size_m"] == 10 and ds.valid.values.tolist() == [[1, 1], [1, 1]]
    assert ds.attrs["gsd_per_sensor"] == "aerial: 0.2 m (native); s2: 10 m (native)"
    with rasterio.open(f"netcdf:{out}:embedding") as src:  # GDAL reads CRS and transform
        assert src.crs.to_epsg() == 32632 and src.count == 64 and (src.height, src.width) == (2, 2)
        assert tuple(src.transform)[:6] == (10.0, 0.0, 500000.0, 0.0, -10.0, 5000020.0)
        np.testing.assert_allclose(src.read(1), ds.embedding.values[0], rtol=1e-6)


@pytest.mark.parametrize(
    "epsg, expected",
    [  # central meridian, false easting, false northing, scale factor
        (32632, (9.0, 500000.0, 0.0, 0.9996)),  # UTM 32N
        (32733, (15.0, 500000.0, 10000000.0, 0.9996)),  # UTM 33S
        (31467, (9.0, 3500000.0, 0.0, 1.0)),  # Gauss-Krueger zone 3: Transverse Mercator, not UTM
        (3035, None),  # Lambert azimuthal equal area: the WKT alone
    ],
)
def test_netcdf_grid_mapping_reads_the_projection_parameters_of_the_crs(epsg, expected):
    attrs = _cf_grid_mapping(CRS.from_epsg(epsg))
    assert CRS.from_wkt(attrs["crs_wkt"]).to_epsg() == epsg and attrs["spatial_ref"] == attrs["crs_wkt"]
    if expected is None:
        assert "grid_mapping_name" not in attrs
        return
    assert attrs["grid_mapping_name"] == "transverse_mercator" and attrs["latitude_of_projection_origin"] == 0.0
    got = tuple(
        attrs[k]
        for k in (
            "longitude_of_central_meridian",
            "false_easting",
            "false_northing",
            "scale_factor_at_central_meridian",
        )
    )
    assert got == expected


def test_embed_tiles_are_the_encodings_of_each_tile(encoder_files):
    from anysat_lite.data.io import common_grid, rasters_to_sample
    from anysat_lite.data.normalization import NormStats
    from anysat_lite.probe.embed import embed_rasters, load_rasters
    from anysat_lite.train.checkpoint import load_encoder

    enc, meta = load_encoder(encoder_files)
    stats = NormStats.from_dict(meta["norm_stats"]["synthetic"])
    rasters = load_rasters({"aerial": [GEOTIFF / "aerial.tif"], "s2": S2.split(",")})
    ds = embed_rasters(enc, rasters, 10, stats, tile_m=10)
    assert ds.attrs["n_tiles"] == 4 and ds.tile_embedding.shape == (64, 2, 2)
    grid = common_grid(rasters)
    for i in range(2):
        for j in range(2):
            x = stats.apply(rasters_to_sample(rasters, grid=grid.part(10 * i, 10 * j, 10, 10)))
            with torch.no_grad():
                out = enc(x, 10, output="all")[0]
            torch.testing.assert_close(torch.from_numpy(ds.embedding.values[:, i, j]), out[1])
            torch.testing.assert_close(torch.from_numpy(ds.tile_embedding.values[:, i, j]), out[0])
    whole = embed_rasters(enc, rasters, 10, stats)  # default tiles: one 20 m tile here
    assert whole.attrs["n_tiles"] == 1 and whole.attrs["tile_size_m"] == 240


def test_embed_python_api_refuses_wrong_arguments_up_front(encoder_files):
    from anysat_lite.data.normalization import NormStats
    from anysat_lite.probe.embed import embed_rasters, load_rasters
    from anysat_lite.train.checkpoint import load_encoder

    enc, meta = load_encoder(encoder_files)
    stats = NormStats.from_dict(meta["norm_stats"]["synthetic"])
    # one path for a sensor stands for a list of one
    one = load_rasters({"aerial": str(GEOTIFF / "aerial.tif"), "s2": S2.split(",")})
    assert one["aerial"].identical(load_rasters({"aerial": [GEOTIFF / "aerial.tif"]})["aerial"])
    assert load_rasters({"aerial": GEOTIFF / "aerial.tif"})["aerial"].identical(one["aerial"])
    with pytest.raises(UserError, match=r"^load_rasters: expected a dict \{sensor: path or \[paths\]\}, got str"):
        load_rasters(str(GEOTIFF / "aerial.tif"))
    for args, pattern in (
        ((enc, one["aerial"], 10, stats), r"^rasters: expected a dict \{sensor: DataArray\} .*got DataArray; e.g. "),
        ((enc, {"aerial": one["aerial"].values}, 10, stats), r"^rasters\['aerial'\]: expected an xarray DataArray "),
        ((enc, {"s9": one["aerial"]}, 10, stats), r"^rasters: unknown sensor 's9'; known: "),
        ((enc, one, 10, meta["norm_stats"]["synthetic"]), r"^stats: expected NormStats or None, got dict; for the "),
        (
            (str(encoder_files), one, 10, stats),
            r"^encoder: expected an AnySat model, got str; load one first: encoder, ",
        ),
    ):
        with pytest.raises(UserError, match=pattern) as e:
            embed_rasters(*args)
        assert "\n" not in str(e.value)
    for device in ("gpu", 0):  # torch's own errors before: RuntimeError, or 0 taken for the CPU
        with pytest.raises(UserError, match=rf"^device {device}: expected cpu, cuda or cuda:N "):
            embed_rasters(enc, one, 10, stats, device=device)


def test_write_netcdf_replaces_a_file_only_when_asked(encoder_files, tmp_path):
    from anysat_lite.data.normalization import NormStats
    from anysat_lite.probe.embed import embed_rasters, load_rasters, write_netcdf
    from anysat_lite.train.checkpoint import load_encoder

    enc, meta = load_encoder(encoder_files)
    stats = NormStats.from_dict(meta["norm_stats"]["synthetic"])
    ds = embed_rasters(enc, load_rasters({"aerial": [GEOTIFF / "aerial.tif"], "s2": S2.split(",")}), 10, stats)
    mine = tmp_path / "mine.nc"
    mine.write_text("my notes")
    with pytest.raises(
        UserError, match=r"^path .*mine.nc: the file exists; write elsewhere, or replace it with overwrite=True$"
    ):
        write_netcdf(ds, mine)  # replaced silently before
    assert mine.read_text() == "my notes"
    assert write_netcdf(ds, mine, overwrite=True) == mine and mine.read_bytes()[:3] != b"my "
    assert write_netcdf(ds, tmp_path / "new" / "e.nc").is_file()  # a missing folder is created


def test_embed_nodata_skip_leaves_tiles_out(encoder_files):
    from anysat_lite.data.io import NodataError
    from anysat_lite.data.normalization import NormStats
    from anysat_lite.probe.embed import embed_rasters, load_rasters
    from anysat_lite.train.checkpoint import load_encoder

    enc, meta = load_encoder(encoder_files)
    stats = NormStats.from_dict(meta["norm_stats"]["synthetic"])
    rasters = load_rasters({"aerial": [GEOTIFF / "aerial_nodata.tif"], "s2": S2.split(",")})
    with pytest.raises(NodataError, match=r"^tile 0,0 \(10 x 10 m at x 500000.0, y 5000020.0\): aerial .*nodata"):
        embed_rasters(enc, rasters, 10, stats, tile_m=10)
    ds = embed_rasters(enc, rasters, 10, stats, tile_m=10, nodata="skip")
    assert ds.valid.values.tolist() == [[0, 1], [0, 1]]  # the western half is nodata
    assert np.isnan(ds.embedding.values[:, :, 0]).all() and np.isfinite(ds.embedding.values[:, :, 1]).all()
    assert ds.attrs["nodata"].endswith("2 of 4 tiles skipped for nodata")
    series = load_rasters(
        {"aerial": [GEOTIFF / "aerial.tif"], "s2": [GEOTIFF / "s2nd_20200401.tif", GEOTIFF / "s2nd_20200701.tif"]}
    )
    ds = embed_rasters(enc, series, 10, stats, tile_m=10)
    assert "s2: 1 of 8 tile-dates masked for nodata" in ds.attrs["nodata"] and ds.valid.values.all()


# --- the installed command: every mistake is one line on stderr, exit code 2, nothing written -----------------
def anysat_lite(*args, env=None, cwd=None):
    exe = Path(sys.executable).with_name("anysat-lite")
    cmd = [str(exe)] if exe.exists() else [shutil.which("anysat-lite") or "anysat-lite"]
    return subprocess.run(
        [*cmd, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )


def one_line_error(r, pattern):
    """Exit code 2 and a single stderr line ``anysat-lite CMD: error: ...`` matching ``pattern``."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, (r.returncode, r.stderr)
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in r.stderr and "weights_only=False" not in r.stderr
    return lines[0]


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "args, pattern",
    [
        (
            ["--set", "train.steps=0"],
            r"^anysat-lite pretrain: error: config train.steps: expected an integer >= 1, got 0; "
            r"e.g. --set train.steps=300$",
        ),
        (["--set", "train.steps=abc"], r"train.steps: expected an integer, got 'abc'"),
        (["--set", "train.lr=fast"], r"train.lr: expected a number, got 'fast'"),
        (["--set", "train.batch_size=-4"], r"train.batch_size: expected an integer >= 1, got -4"),
        (["--set", "train.ckpt_every=0"], r"train.ckpt_every: expected an integer >= 1, got 0"),
        (["--set", "data.datasets=[{name: synthetic"], r"not valid YAML \(expected ',' or '\}'.*\); quote the whole"),
        (["--set", "train.stepz=3"], r"unknown config key\(s\) \['stepz'\] in train .*did you mean train.steps\?"),
        (
            ["--config", "huge"],
            r"--config huge: neither a preset \(cpu-demo, tiny, small, base, base-cuda, geoplex\) nor an "
            r"existing YAML file",
        ),
    ],
)
def test_pretrain_config_mistakes(tmp_path, args, pattern):
    out = tmp_path / "run"
    one_line_error(anysat_lite("pretrain", "--set", f"train.out_dir={out}", *args), pattern)
    assert not out.exists()  # refused before anything ran


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["--seeds", "0", "1", "0"], r"--seeds 0 1 0: expected distinct seeds >= 0, e.g. --seeds 0 1 2$"),
        (["--seeds", "-1"], r"argument --seeds: expected an integer in \[0, 2\*\*32 - 1\], got '-1'"),
        (["--seeds", "0", "--resume", "x.pt"], r"--resume x.pt: with --seeds, --resume takes no checkpoint"),
        (["--seeds", "0", "--set", "train.steps=0"], r"config train.steps: expected an integer >= 1, got 0"),
        (
            ["--seeds", "0", "--update-readme", "README.md"],
            r"--update-readme README.md: no markers <!-- demo-seeds:start .* in it; add them where the table should "
            r"go, or write the seed table to docs/seeds.md: --update-readme docs/seeds.md$",
        ),
        (
            ["--update-readme", "nope.md"],
            r"--update-readme nope.md: no such file; give the file that holds the markers",
        ),
        (["--worlds", "1"], r"--worlds 1: probes the encoders of a seed study; add --seeds, e.g. --seeds 0 1 2 "),
        (["--seeds", "0", "--worlds", "1", "1"], r"--worlds 1 1: expected distinct worlds >= 0, e.g. --worlds 0 1 2$"),
        (["--seeds", "0", "--worlds", "-1"], r"argument --worlds: expected an integer in \[0, 2\*\*32 - 1\], got '-1'"),
        (
            ["--update-readme", "bin.md"],
            r"--update-readme bin.md: expected UTF-8 text, got byte 0xff at position 2; give the Markdown file that "
            r"holds the markers <!-- demo-results:start",
        ),
        (
            ["--set", "probe.modality_sets=[[foo]]"],
            r"config probe.modality_sets: expected non-empty lists of registered",
        ),
        (
            ["--set", "data.tile_m=40", "--set", "probe.patch_sizes=[30]"],
            r"config probe.patch_sizes: expected sizes that divide the embedded world's 40 m tiles",
        ),
        (
            ["--seeds", "0", "--set", "probe.modality_sets=[[spot]]"],
            r"config probe.modality_sets\[0\]: expected \[all\] or sensors of the embedded world",
        ),
        (
            ["--seeds", "0", "--worlds", "1", "--set", "data.datasets=[{name: treesatai-ts, path: .}]"],
            r"--worlds: other draws of a world need the synthetic dataset .* but the probes read 'treesatai-ts'",
        ),
        (
            ["--seeds", "0", "--worlds", "1", "--update-readme", "seeds.md"],
            r"--update-readme seeds.md: no markers <!-- demo-worlds:start .* or write the world table to "
            r"docs/seeds.md: --update-readme docs/seeds.md$",
        ),
    ],
)
def test_demo_seed_study_mistakes(tmp_path, args, pattern):
    out = tmp_path / "run"
    (tmp_path / "README.md").write_text("# a README without results markers\n")
    (tmp_path / "seeds.md").write_text(f"{SEED_MARKERS[0]}\n{SEED_MARKERS[1]}\n")  # a seed block, no world block
    (tmp_path / "bin.md").write_bytes(b"# \xff\xfe not UTF-8")
    one_line_error(anysat_lite("demo", "--set", f"train.out_dir={out}", *args, cwd=tmp_path), pattern)
    assert not out.exists() and not Path(f"{out}-seeds").exists()  # refused before anything ran


def test_demo_resume_never_replaces_probe_results(tmp_path, capsys):
    from anysat_lite.demo import run_demo

    out = tmp_path / "run"
    out.mkdir()
    (out / "probe_results.json").write_text('{"the": "user\'s results"}')
    assert main(["demo", "--quiet", "--resume", "--set", f"train.out_dir={out}"]) == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert re.search(
        r"demo --resume: .*run/probe_results.json already holds probe results, which the demo would replace; to "
        r"re-probe, run anysat-lite probe --config .*run/config.yaml --checkpoint .*run/encoder --out .*run --force, "
        r"or move",
        err,
    ), err
    with pytest.raises(UserError, match="already holds probe results"):  # the Python API, before any pretraining
        run_demo(get_config("cpu-demo", [f"train.out_dir={out}"]), resume=True, progress=False)
    assert [p.name for p in out.iterdir()] == ["probe_results.json"]
    assert (out / "probe_results.json").read_text() == '{"the": "user\'s results"}'


def test_debug_shows_the_traceback(tmp_path):
    for r in (
        anysat_lite("pretrain", "--debug", "--set", "train.steps=0"),
        anysat_lite("pretrain", "--set", "train.steps=0", env={"ANYSAT_LITE_DEBUG": "1"}),
    ):
        assert (
            r.returncode == 1
            and "Traceback" in r.stderr
            and r.stderr.strip().endswith("got 0; e.g. --set train.steps=300")
        )
    (tmp_path / "bad.yaml").write_text("train: {steps: [1\n")
    one_line_error(anysat_lite("pretrain", "--config", tmp_path / "bad.yaml"), r"bad.yaml: not valid YAML \(.*line")
    (tmp_path / "bin.yaml").write_bytes(b"train:\n  steps: 3\n\x89PNG")
    one_line_error(
        anysat_lite("pretrain", "--config", tmp_path / "bin.yaml"),
        r"config file .*bin.yaml: expected UTF-8 text, got byte 0x89 at position 18; give a YAML file \(saved as "
        r"UTF-8\) or a preset name$",
    )


@pytest.mark.slow
def test_embed_mistakes(tmp_path, encoder_files):
    aerial, s2 = f"aerial={GEOTIFF / 'aerial.tif'}", f"s2={S2}"
    out = tmp_path / "emb.nc"

    def embed(*args, checkpoint=encoder_files):
        return anysat_lite("embed", "--checkpoint", checkpoint, *args)

    bad_pt = tmp_path / "last.pt"
    bad_pt.write_bytes(b"PK\x03\x04 cut short")
    one_line_error(
        embed("--raster", aerial, "--out", out, checkpoint=bad_pt),
        r"last.pt: not a readable checkpoint \(\d+ bytes, it is a PyTorch file, truncated or corrupt",
    )
    weights = encoder_files.with_suffix(".safetensors")
    kept = weights.read_bytes()
    weights.write_bytes(kept[:1000])
    one_line_error(embed("--raster", aerial, "--out", out), r"enc.safetensors: not a readable safetensors file")
    weights.write_bytes(kept)
    one_line_error(embed("--raster", "aerial", "--out", out), r"--raster 'aerial': expected SENSOR=PATH\[,PATH...\]")
    one_line_error(
        embed("--raster", aerial, "--out", tmp_path / "emb.zarr"),
        r"--out .*emb.zarr: expected a NetCDF file name ending in .nc",
    )
    one_line_error(
        embed("--raster", f"aerial={GEOTIFF / 'nocrs.tif'}", "--out", out), r"nocrs.tif\): the raster has no CRS"
    )
    one_line_error(
        embed("--raster", f"aerial={GEOTIFF / 'aerial_tiny.tif'}", "--raster", s2, "--out", out),
        r"the rasters overlap on 1.0 x 1.0 m .* less than one 20 m cell",
    )
    one_line_error(
        embed(
            "--raster", f"aerial={GEOTIFF / 'aerial_nodata.tif'}", "--raster", s2, "--patch-size", "10", "--out", out
        ),
        r"aerial \(.*aerial_nodata.tif, nodata 0.0\): 50% of the pixels .* --nodata skip",
    )


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["--raster", "s3=x.tif"], r"unknown sensor 's3'; known: aerial"),
        (["--raster", "aerial=none.tif"], r"aerial: no such file none.tif$"),
        (["--raster", "aerial= none.tif"], r"aerial: no such file ' none.tif'$"),
        (
            ["--raster", f"aerial={GEOTIFF / 'aerial.tif'}", "--patch-size", "15"],
            r"--patch-size 15: expected a positive multiple of 10 m, got 15; e.g. --patch-size 20$",
        ),
        (
            ["--raster", f"aerial={GEOTIFF / 'aerial.tif'}", "--stats", "treesatai"],
            r"--stats treesatai: the checkpoint "
            r"has statistics for \['synthetic'\]; name one of them, or leave --stats out to use the first$",
        ),
        (
            ["--raster", f"aerial={GEOTIFF / 'aerial.tif'}", "--tile-size", "25"],
            r"tile size 25 m: expected a positive "
            r"multiple of the 20 m patch size",
        ),
        (
            ["--raster", f"aerial={GEOTIFF / 'aerial.tif'}", "--raster", f"s1-asc={GEOTIFF / 's1-asc_20200410.tif'}"],
            r"^anysat-lite embed: error: --raster s1-asc=...: the encoder .*enc has no projector for 's1-asc', only "
            r"for aerial, s2; leave out --raster s1-asc=..., or give a --checkpoint pretrained with s1-asc$",
        ),
        (
            ["--raster", f"aerial={GEOTIFF / 'aerial.tif'}", "--tile-size", "nan"],
            r"tile size nan m: expected a positive",
        ),
        (
            ["--raster", f"aerial={GEOTIFF / 'aerial.tif'}", "--tile-size", "inf"],
            r"tile size inf m: expected a positive",
        ),
        (["--raster", f"aerial={GEOTIFF}"], r"aerial: .*geotiff is a folder, expected a GeoTIFF file; name the file"),
        (
            ["--raster", f"s2={S2},{GEOTIFF / 's2_20200301.tif'}"],
            r"s2_20200301.tif is given twice for s2, expected each",
        ),
        (["--raster", f"aerial={Path(__file__)}"], r"test_cli.py: not a raster GDAL can read; expected a GeoTIFF$"),
    ],
)
def test_more_embed_mistakes_in_process(tmp_path, encoder_files, capsys, args, pattern):
    assert main(["embed", "--checkpoint", str(encoder_files), *args, "--out", str(tmp_path / "e.nc")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(pattern, err[0]), err
    assert (
        main(
            [
                "embed",
                "--checkpoint",
                str(tmp_path / "nothing"),
                "--raster",
                f"aerial={GEOTIFF / 'aerial.tif'}",
                "--out",
                str(tmp_path / "e.nc"),
            ]
        )
        == 2
    )
    assert re.search(
        r"no encoder at .*nothing \(neither .*\); give an exported encoder without suffix", capsys.readouterr().err
    )
    assert not (tmp_path / "e.nc").exists()


def test_embed_out_is_checked_before_any_work_and_never_replaced_unasked(tmp_path, encoder_files, capsys):
    aerial = f"aerial={GEOTIFF / 'aerial.tif'}"
    out = tmp_path / "e.nc"
    out.write_bytes(b"the user's own file")
    (tmp_path / "afile").write_text("a file, not a folder")
    (tmp_path / "dir.nc").mkdir()
    for target, pattern in (
        (out, r"--out .*e.nc: the file exists; write elsewhere, or replace it with --force$"),
        (tmp_path / "afile" / "x.nc", r"--out .*afile/x.nc: .*afile is a file, expected a folder; choose a path"),
        (tmp_path / "afile" / "sub" / "x.nc", r"--out .*afile/sub/x.nc: .*afile is a file, expected a folder"),
        (tmp_path / "dir.nc", r"--out .*dir.nc: expected a file name, got a folder; name a file in it$"),
    ):
        # a checkpoint that does not exist: the --out mistake is found before the encoder is loaded
        assert main(["embed", "--checkpoint", str(tmp_path / "nothing"), "--raster", aerial, "--out", str(target)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and re.search(pattern, err[0]), err
    assert out.read_bytes() == b"the user's own file"
    assert main(["embed", "--checkpoint", str(encoder_files), "--raster", aerial, "--out", str(out), "--force"]) == 0
    assert xr.open_dataset(out).embedding.sizes["feature"] == 64
    # the input itself as --out, named directly or through a symlink: replaced by the embedding before (even a .tif)
    own = tmp_path / "a.nc"
    own.write_bytes((GEOTIFF / "aerial.tif").read_bytes())
    (tmp_path / "link.nc").symlink_to(own)
    for target in (own, tmp_path / "link.nc"):
        args = ["--raster", f"aerial={own}", "--out", str(target), "--force"]
        assert main(["embed", "--checkpoint", str(encoder_files), *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and re.search(r"--out .*: is the --raster aerial input .*a.nc, expected a new", err[0])
    assert own.read_bytes() == (GEOTIFF / "aerial.tif").read_bytes()


def test_notebooks_only_names_no_notebook(capsys):
    assert main(["notebooks", "--only", "00", "zz", "--check"]) == 2  # --check: nothing would run without the fix
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(
        r"--only 00 zz: no notebook name starts with 'zz'; expected prefixes of 00_quickstart.ipynb, .*, e.g. "
        r"--only 00 03$",
        err[0],
    ), err
    assert main(["notebooks", "--only", "00", "--check"]) == 0


TINY = [
    "data.n_tiles=48",
    "data.tile_m=40",
    "data.n_dates=6",
    "data.datasets=[{name: synthetic, patch_sizes: [10, 20]}]",
    "train.batch_size=8",
    "train.warmup_steps=1",
    "train.log_every=1",
    "train.ckpt_every=2",
    "jepa.monitor_every=0",
    "probe.patch_sizes=[20]",
    "probe.modality_sets=[[all]]",
    "probe.seg_epochs=2",
]


@pytest.mark.slow
def test_a_run_is_never_replaced_or_mixed_silently(tmp_path):
    out = tmp_path / "run"
    sets = sum((["--set", o] for o in TINY + [f"train.out_dir={out}"]), [])
    r = anysat_lite("pretrain", "--quiet", *sets, "--set", "train.steps=4")
    assert r.returncode == 0, r.stderr
    before = snapshot(out)
    assert {"last.pt", "step-000002.pt", "step-000004.pt", "encoder.safetensors", "config.yaml"} <= {
        p.name for p in before
    }
    # a new run into the folder: refused, naming both ways on
    one_line_error(
        anysat_lite("pretrain", "--quiet", *sets, "--set", "train.steps=4"),
        r"already holds a run \(.*\); continue it with --resume .*, replace it with --force .*, or choose "
        r"a new folder",
    )
    # resume with another preset: refused before config.yaml is rewritten
    one_line_error(
        anysat_lite("pretrain", "--quiet", "--resume", "--config", "tiny", *sets, "--set", "train.steps=8"),
        r"last.pt was trained with model.embed_dim=64, the config now says 256 .*; resume with the config it was "
        r"trained with \(--config .*config.yaml as the run wrote it, or leave --config out\)",
    )
    one_line_error(
        anysat_lite("pretrain", "--quiet", "--resume", "--set", f"train.out_dir={out}"),
        r"last.pt is at step 4 = train.steps: the run is finished; raise train.steps",
    )
    one_line_error(
        anysat_lite("pretrain", "--quiet", "--resume", "--set", f"train.out_dir={tmp_path / 'none'}"),
        r"nothing to resume: .*none/last.pt does not exist",
    )
    assert snapshot(out) == before and not (tmp_path / "none").exists()
    # a corrupt last.pt: the message names the newest intact checkpoint, which --resume PATH continues from
    (out / "last.pt").write_bytes(before[Path("last.pt")][:5000])
    one_line_error(
        anysat_lite("pretrain", "--quiet", "--resume", "--set", f"train.out_dir={out}", "--set", "train.steps=6"),
        r"last.pt: not a readable checkpoint .*; resume from the newest intact checkpoint: --resume "
        r".*step-000004.pt$",
    )
    r = anysat_lite("pretrain", "--quiet", "--resume", out / "step-000004.pt", "--set", "train.steps=6")
    assert r.returncode == 0, r.stderr
    assert "the run's own" in r.stdout and json.loads(r.stdout[r.stdout.index("{") :])["start_step"] == 4
    # demo --resume on the finished run probes its encoder
    r = anysat_lite("demo", "--quiet", "--resume", "--set", f"train.out_dir={out}")
    assert r.returncode == 0, r.stderr
    assert "last.pt is already at step 6 = train.steps; probing its encoder" in r.stdout
    results = (out / "probe_results.json").read_bytes()
    assert json.loads(results)["checkpoint"] == str(out / "encoder")
    # probe does not overwrite those results
    one_line_error(
        anysat_lite("probe", "--quiet", "--config", out / "config.yaml"),
        r"--out \(default: the checkpoint's folder\) \S+: \S+probe_results.json exists \(probe results of an earlier "
        r"run, or a file of yours\) and the probes would "
        r"replace it; write elsewhere with --out DIR, or replace it with --force",
    )
    one_line_error(
        anysat_lite("probe", "--quiet", "--set", f"train.out_dir={tmp_path / 'empty'}"),
        r"no --checkpoint given and no encoder at .*empty/encoder.safetensors; pass --checkpoint PATH",
    )
    assert (out / "probe_results.json").read_bytes() == results
    # embed straight from the training checkpoint: the EMA target encoder
    r = anysat_lite(
        "embed",
        "--checkpoint",
        out / "last.pt",
        "--raster",
        f"aerial={GEOTIFF / 'aerial.tif'}",
        "--out",
        tmp_path / "emb.nc",
    )
    assert r.returncode == 0, r.stderr
    assert f"encoder: EMA target encoder of {out / 'last.pt'} (step 6)" in r.stdout
    assert "normalisation: statistics of 'synthetic'" in r.stdout


@pytest.mark.slow
def test_demo_seed_study_runs_each_seed_and_tabulates_them(tmp_path):
    from anysat_lite.demo import computed_on

    out = tmp_path / "run"
    sets = sum((["--set", o] for o in TINY + [f"train.out_dir={out}", "train.steps=2", "jepa.monitor_every=1"]), [])
    r = anysat_lite("demo", "--quiet", "--seeds", "0", "1", *sets)
    assert r.returncode == 0, r.stderr
    root = Path(f"{out}-seeds")
    study = json.loads((root / "seeds.json").read_text())
    assert study["seeds"] == [0, 1] and not out.exists()
    reports = [json.loads((root / f"seed-{s}" / "probe_results.json").read_text()) for s in (0, 1)]
    assert [load_config(root / f"seed-{s}" / "config.yaml").train.seed for s in (0, 1)] == [0, 1]
    linear = next(c for c in study["cells"] if c["method"] == "linear" and "+" in c["modalities"])

    def score(report, encoder):
        (row,) = [
            x
            for x in report["results"]
            if (x["encoder"], x["method"], x["metric"], x["modalities"])
            == (encoder, "linear", "OA", linear["modalities"])
        ]
        return 100 * row["value"]

    # each seed's score is its own run's, the baselines are the same in both runs, the margins follow
    assert linear["scores"]["pretrained"] == [score(rep, "pretrained") for rep in reports]
    assert linear["scores"]["raw-pixels"] == [score(reports[0], "raw-pixels")] * 2
    margins = [a - b for a, b in zip(linear["scores"]["pretrained"], linear["scores"]["raw-pixels"])]
    assert linear["vs raw-pixels"] == {"wins": sum(m > 0 for m in margins), "mean_margin": sum(margins) / 2}
    table = (root / "seeds.md").read_text()
    assert table.strip() in r.stdout and "| pretrained, seeds 0 / 1 |" in table
    finals = [json.loads((root / f"seed-{s}" / "summary.json").read_text())["final"] for s in (0, 1)]
    assert [study["monitors"][str(s)]["cos"] for s in (0, 1)] == [f["cos"] for f in finals]
    assert f"1: {finals[1]['std']:.2f} / {finals[1]['erank']:.1f} / {finals[1]['cos']:.2f}" in table
    # the table names the machine its digits come from, as each run's report does
    assert computed_on(table) == reports[0]["machine"] == reports[1]["machine"]
    assert "ATen CPU capability" in reports[0]["machine"] and reports[0]["machine"].endswith(" 2 threads")
    # --resume probes the finished runs again instead of refusing them, and starts a seed added to the study
    r = anysat_lite("demo", "--quiet", "--seeds", "0", "1", "2", "--resume", *sets)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("is already at step 2 = train.steps") == 2
    assert json.loads((root / "seeds.json").read_text())["seeds"] == [0, 1, 2]
    assert (root / "seed-2" / "probe_results.json").exists()
    # --worlds: each seed's encoder probed on another draw of the world (data.seed=1), world 0 read from its run
    doc = tmp_path / "seeds.md"
    doc.write_text("".join(f"{a}\n{b}\n\n" for a, b in (SEED_MARKERS, WORLD_MARKERS)))
    r = anysat_lite(
        "demo", "--quiet", "--seeds", "0", "1", "--worlds", "0", "1", "--resume", "--update-readme", doc, *sets
    )
    assert r.returncode == 0, r.stderr
    worlds = json.loads((root / "worlds.json").read_text())
    assert (worlds["worlds"], worlds["seeds"]) == ([0, 1], [0, 1]) and not (root / "seed-0" / "world-0").exists()
    fresh = [json.loads((root / f"seed-{s}" / "world-1" / "probe_results.json").read_text()) for s in (0, 1)]
    assert {rep["seeds"]["data"] for rep in fresh} == {1}
    reports = [json.loads((root / f"seed-{s}" / "probe_results.json").read_text()) for s in (0, 1)]
    (cell,) = [c for c in worlds["cells"] if c["modalities"] == linear["modalities"] and c["method"] == "linear"]
    # pairs in (world, seed) order; world 1's baselines are its own, and a pair is judged against its world's
    assert cell["scores"]["pretrained"] == [score(rep, "pretrained") for rep in reports + fresh]
    assert cell["scores"]["raw-pixels"] == [score(reports[0], "raw-pixels")] * 2 + [score(fresh[0], "raw-pixels")] * 2
    margins = [a - b for a, b in zip(cell["scores"]["pretrained"], cell["scores"]["raw-pixels"])]
    assert cell["vs raw-pixels"]["wins"] == sum(m > 0 for m in margins)
    table = (root / "worlds.md").read_text()
    assert table.strip() in r.stdout and "| pretrained, worlds 0 / 1 (mean of the 2 seeds) | 4 pairs" in table
    # --update-readme fills both blocks of the page
    assert readme_block(doc.read_text(), WORLD_MARKERS) == table.strip()
    assert readme_block(doc.read_text(), SEED_MARKERS) == (root / "seeds.md").read_text().strip()
    # one seed's encoder probed on the validation split, the way to choose settings without the test tiles
    val = tmp_path / "val"
    r = anysat_lite(
        "probe", "--quiet", "--checkpoint", root / "seed-0" / "encoder", "--set", "probe.split=val", "--out", val, *sets
    )
    assert r.returncode == 0, r.stderr
    report = json.loads((val / "probe_results.json").read_text())
    assert report["scored_on"] == "val" and f"scored on the {report['splits']['val']} val tiles" in r.stdout


def test_notebooks_never_execute_into_the_stored_notebooks(tmp_path, capsys):
    from anysat_lite.notebooks import NOTEBOOK_DIR

    before = (NOTEBOOK_DIR / "00_quickstart.ipynb").read_bytes()
    assert main(["notebooks", "--only", "00", "--out", str(NOTEBOOK_DIR)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "that is the folder of the notebooks themselves" in err[0]
    assert "(--full --store with another --out stores a full run in them)" in err[0]
    assert (NOTEBOOK_DIR / "00_quickstart.ipynb").read_bytes() == before
    (tmp_path / "afile").write_text("mine")
    assert main(["notebooks", "--only", "00", "--out", str(tmp_path / "afile")]) == 2
    assert "expected a folder, got a file" in capsys.readouterr().err


def test_probe_writes_beside_the_checkpoint_and_checks_out_before_any_work(
    tmp_path, encoder_files, capsys, monkeypatch
):
    """Without --out the results go beside the encoder probed (never into another run's folder);
    an --out that cannot be a folder is refused before the probes run."""
    from anysat_lite.cli import build_parser, cmd_probe

    (tmp_path / "afile").write_text("mine")
    args = ["probe", "--checkpoint", str(encoder_files), "--out", str(tmp_path / "afile")]
    assert main(args) == 2
    assert "--out " in capsys.readouterr().err and (tmp_path / "afile").read_text() == "mine"
    seen = {}

    def fake_run_probe(cfg, checkpoint=None, out_dir=None, progress=True):
        seen["out"] = out_dir
        raise UserError("stop here")  # where the results would go is all this test reads

    monkeypatch.setattr("anysat_lite.probe.run_probe", fake_run_probe)
    with pytest.raises(UserError, match="stop here"):
        cmd_probe(build_parser().parse_args(["probe", "--checkpoint", str(encoder_files)]))
    assert Path(seen["out"]) == encoder_files.parent


ROOT_DATA = GEOTIFF.parent  # tests/data


@pytest.mark.parametrize(
    "args, pattern",
    [
        (
            ["--device", "cuda"],
            r"^--device cuda: an option of the paper's evaluation \(expected only with --official\), "
            r"which probing an encoder would ignore; the probes run on train.device: --set train.device=cuda$",
        ),
        (["--epochs", "3"], r"^--epochs 3: .*ignore; .*--set probe.seg_epochs=3$"),
        (["--min-epochs", "2"], r"^--min-epochs 2: .*ignore; the probes have no early stopping; leave it out$"),
        (["--amp", "bf16"], r"^--amp bf16: .*ignore; the probes run in full precision; leave it out$"),
        (["--seed", "7"], r"^--seed 7: .*ignore; the probes' seed is probe.seed: --set probe.seed=7$"),
        (["--bootstrap", "0"], r"^--bootstrap 0: .*ignore; .*--set probe.bootstrap=0$"),
        (["--batch-size", "4"], r"^--batch-size 4: .*ignore; .*--set probe.batch_size=4$"),
        (["--num-workers", "2"], r"^--num-workers 2: .*ignore; the probes read the data in the main process"),
        (["--val-metric", "pooled"], r"^--val-metric pooled: .*ignore; the probes select no epoch"),
        (["--allow-pickle"], r"^--allow-pickle: .*ignore; .*options: \{allow_pickle: true\}\}\]\"$"),
        (["--limit-batches", "1"], r"^--limit-batches 1: .*ignore; .*leave it out$"),
        (["--attend-over", "heads"], r"^--attend-over heads: .*ignore; an encoder's attention is its own model"),
    ],
)
def test_probe_refuses_the_official_options_it_would_ignore(tmp_path, capsys, args, pattern):
    """Without --official the options of the paper's evaluation did nothing (exit 0): refused before any work,
    each naming what to use instead."""
    assert main(["probe", "--checkpoint", str(tmp_path / "nothing"), "--out", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(pattern, err[0].removeprefix("anysat-lite probe: error: ")), err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["--set", "train.bogus=1"], r"--set train.bogus=1: the paper's evaluation \(--official\) takes its settings"),
        (["--config", "nonexist.yaml"], r"--config nonexist.yaml: .*expected no --config or --set with --official"),
    ],
)
def test_probe_official_refuses_the_run_config_it_would_ignore(tmp_path, capsys, args, pattern):
    official = ["--official", str(tmp_path / "x.pth"), "--task", "planted-lp", "--data", str(tmp_path)]
    assert main(["probe", *official, "--out", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(pattern, err[0]) and "leave it out" in err[0], err


def test_probe_data_without_official_names_the_way_to_probe_ones_own_encoder(tmp_path, capsys):
    data = str(ROOT_DATA / "treesatai_ts")
    assert main(["probe", "--checkpoint", str(tmp_path / "enc"), "--data", data]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing --official, --task" in err[0], err
    assert f'--set "data.datasets=[{{name: NAME, path: {data}}}]" (NAME: treesatai-ts, ' in err[0]
    assert main(["probe", "--checkpoint", str(tmp_path / "enc"), "--data", data, "--task", "treesatai-ts-lp"]) == 2
    assert f'--set "data.datasets=[{{name: treesatai-ts, path: {data}}}]"' in capsys.readouterr().err


def test_probe_refuses_a_dataset_with_sensors_the_encoder_lacks_before_encoding(encoder_files, tmp_path, capsys):
    """An aerial + S2 encoder on PASTIS-HD (SPOT, S2, S1): the missing sensors named, not a bare 'spot'."""
    pastis = ROOT_DATA / "pastis_hd"
    sets = ["--set", f"data.datasets=[{{name: pastis-hd, path: {pastis}}}]", "--set", "probe.modality_sets=[[all]]"]
    assert main(["probe", "--quiet", "--checkpoint", str(encoder_files), "--out", str(tmp_path / "o"), *sets]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(
        rf"^anysat-lite probe: error: --checkpoint .*enc: the encoder has no projector for spot, s1 of dataset "
        rf"'pastis-hd' \(expected every sensor of the dataset: spot, s2, s1; the encoder has aerial, s2\); probe the "
        rf'sensors it has: --set "data.datasets=\[{{name: pastis-hd, path: {re.escape(str(pastis))}, sensors: '
        rf'\[s2\]}}\]" --set "probe.modality_sets=\[\[all\], \[s2\]\]", or give a checkpoint pretrained with spot, s1$',
        err[0],
    ), err
    assert not (tmp_path / "o").exists()  # nothing written, and the empty --out folder taken back


def test_check_output_files_refuses_folders_and_existing_files(tmp_path):
    """The one check of the files a command writes in its output folder (probe, notebooks, protocol table)."""
    from anysat_lite.errors import check_output_files

    (tmp_path / "a.md").mkdir()
    with pytest.raises(UserError, match=r"^--out \S+: \S+a\.md is a folder, expected a file or nothing \(the probes "):
        check_output_files("--out", tmp_path, ["b.md", "a.md"], True, "the probes")  # --force does not remove folders
    (tmp_path / "a.md").rmdir()
    (tmp_path / "b.md").write_text("mine")
    with pytest.raises(UserError, match=r"b\.md exists \(notes\) and running b\.md would replace it; .* --force$"):
        check_output_files("--out", tmp_path, ["a.md", "b.md"], False, "running {name}", " (notes)")
    check_output_files("--out", tmp_path, ["a.md", "b.md"], True, "the probes")
    check_output_files("--out", tmp_path, ["b.md"], False, "the run", unchanged=lambda p: p.read_text() == "mine")
    assert (tmp_path / "b.md").read_text() == "mine" and not (tmp_path / "a.md").exists()


@pytest.mark.parametrize("name", ["probe_results.md", "probe_results.png"])
def test_probe_never_replaces_any_of_its_files_unasked(tmp_path, encoder_files, capsys, monkeypatch, name):
    """probe checked probe_results.json only, and replaced the user's .md and .png silently."""
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_text("mine")

    def fake_run_probe(*args, **kwargs):
        raise UserError("the probes ran")

    monkeypatch.setattr("anysat_lite.probe.run_probe", fake_run_probe)
    assert main(["probe", "--checkpoint", str(encoder_files), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(
        rf"{name} exists \(probe results of an earlier run, or a file of yours\) and the probes would replace it; "
        r"write elsewhere with --out DIR, or replace it with --force$",
        err[0],
    ), err
    assert (out / name).read_text() == "mine"
    assert main(["probe", "--checkpoint", str(encoder_files), "--out", str(out), "--force"]) == 2
    assert "the probes ran" in capsys.readouterr().err  # --force: on to the probes


@pytest.mark.parametrize("tile", ["-240", "0", "30"])
def test_embed_tile_size_is_checked_before_any_work(tmp_path, capsys, tile):
    """A checkpoint that does not exist: the --tile-size mistake is found before the encoder is loaded."""
    args = ["embed", "--checkpoint", str(tmp_path / "nothing"), "--raster", f"aerial={GEOTIFF / 'aerial.tif'}"]
    assert main([*args, f"--tile-size={tile}", "--out", str(tmp_path / "e.nc")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(
        rf"tile size {tile} m: expected a positive multiple of the 20 m patch size, got {tile}; e.g. --tile-size 240, "
        "or leave it out for that default$",
        err[0],
    ), err


@pytest.mark.parametrize(
    "out, pattern",
    [
        (
            ".nc",
            r"--out .nc: expected a NetCDF file name before .nc, got the suffix alone; name the file, e.g. "
            r"--out embedding.nc$",
        ),
        ("sub/.nc", r"--out sub/.nc: expected a NetCDF file name before .nc, .* e.g. --out sub/embedding.nc$"),
        ("emb.zarr", r"--out emb.zarr: expected a NetCDF file name ending in .nc .*, got '.zarr'; e.g. --out emb.nc$"),
        ("emb", r"--out emb: expected a NetCDF file name ending in .nc .*, got no suffix; e.g. --out emb.nc$"),
        ("emb.nc.tmp", r"--out emb.nc.tmp: .*, got '.tmp'; e.g. --out emb.nc$"),
        ("adir", r"--out adir: .*, got no suffix; e.g. --out adir/embedding.nc$"),  # an existing folder
    ],
)
def test_embed_out_without_a_netcdf_name(tmp_path, capsys, monkeypatch, out, pattern):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "adir").mkdir()
    args = ["embed", "--checkpoint", "nothing", "--raster", f"aerial={GEOTIFF / 'aerial.tif'}", "--out", out]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(pattern, err[0]), err


def test_embed_nodata_skip_with_every_tile_bad_says_what_to_do(tmp_path, encoder_files, capsys):
    args = ["embed", "--checkpoint", str(encoder_files), "--raster", f"aerial={GEOTIFF / 'aerial_nodata.tif'}"]
    assert main([*args, "--patch-size", "10", "--nodata", "skip", "--out", str(tmp_path / "e.nc")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(
        r"every one of the 1 tile\(s\) has nodata, expected at least one without; nothing to embed \(tile 0,0: "
        r"aerial \(.*aerial_nodata.tif, nodata 0.0\): 50% of the pixels .* no source pixel\); give rasters with valid "
        r"pixels where they overlap \(fill or crop them\), or tiles smaller than 240 m \(--tile-size\)",
        err[0],
    ), err
    assert not (tmp_path / "e.nc").exists()


def test_an_error_in_a_data_loading_worker_is_its_own_one_line(capsys):
    """torch re-raises a worker's error with the worker's traceback pasted in front; the line keeps the message."""
    from torch.utils.data import DataLoader, Dataset

    from anysat_lite.cli import _one_line

    class Broken(Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, i):
            raise UserError("dataset mine, train split, item 0: cannot be read (truncated); restore the file")

    with pytest.raises(UserError) as e:
        list(DataLoader(Broken(), num_workers=1))
    assert "Traceback" in str(e.value)
    assert _one_line(e.value) == (
        "dataset mine, train split, item 0: cannot be read (truncated); restore the file "
        "(in DataLoader worker process 0)"
    )


def test_out_of_memory_is_one_line_with_what_to_lower(monkeypatch, capsys):
    import anysat_lite.cli as cli

    def too_big(args):
        raise MemoryError("Unable to allocate 119. GiB for an array")

    monkeypatch.setattr(cli, "cmd_info", too_big)
    assert main(["info"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error: out of memory (Unable to allocate 119. GiB" in err and "data.n_tiles" in err

    def torch_cpu_oom(args):  # what torch raises when the CPU allocator fails
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 128000000000 bytes.")

    monkeypatch.setattr(cli, "cmd_info", torch_cpu_oom)
    assert main(["info"]) == 2 and "error: out of memory (DefaultCPUAllocator" in capsys.readouterr().err
    with pytest.raises(RuntimeError, match="can't allocate memory"):  # --debug shows the traceback
        main(["info", "--debug"])


def test_resume_and_config_name_a_file_of_the_wrong_kind(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("preset: tiny\n")
    assert main(["pretrain", "--resume", str(tmp_path / "run" / "config.yaml")]) == 2
    err = capsys.readouterr().err
    assert re.search(r"--resume \S+config.yaml: expected a checkpoint \(.pt, .pth, .ckpt.*or a run folder", err)
    assert main(["pretrain", "--config", str(tmp_path / "run")]) == 2
    assert "a run folder's config is " + str(tmp_path / "run" / "config.yaml") in capsys.readouterr().err


def test_argparse_mistakes_are_one_line(capsys):
    for argv, expected in [
        (["embed", "--patch-size", "20.5"], "anysat-lite embed: error: argument --patch-size: invalid int value"),
        (["nonsense"], "anysat-lite: error: argument command: invalid choice: 'nonsense'"),
        (["bench", "--batch", "x"], "anysat-lite bench: error: argument --batch: invalid int value: 'x'"),
    ]:
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1 and err.startswith(expected), err
        assert err.rstrip().endswith("--help")


def test_an_empty_value_is_refused_not_read_as_the_option_left_out(capsys):
    """``--resume "$CKPT"`` with CKPT unset started a new 350-step run; ``--checkpoint ""`` said none was given."""
    for argv, option in [
        (["pretrain", "--resume", ""], "--resume"),
        (["probe", "--checkpoint", " "], "--checkpoint"),
        (["probe", "--official", "", "--task", "treesatai-ts-lp", "--data", "."], "--official"),
        (["embed", "--checkpoint", "x", "--raster", "s2=a.tif", "--out", ""], "--out"),
    ]:
        with pytest.raises(SystemExit):
            main(argv)
        err = capsys.readouterr().err
        assert f"argument {option}: an empty value (an unset shell variable?)" in err and err.count("\n") == 1, err


def test_seeds_out_of_range_are_one_line_errors(capsys):
    """A seed past 2**32 - 1 reached numpy or torch ("Overflow when unpacking long long")."""
    assert main(["pretrain", "--set", "train.seed=4294967296"]) == 2
    assert "config train.seed: expected an integer in [0, 2**32 - 1], got 4294967296" in capsys.readouterr().err
    assert main(["probe", "--checkpoint", "x", "--set", "probe.seed=-1"]) == 2
    assert "config probe.seed: expected an integer in [0, 2**32 - 1], got -1" in capsys.readouterr().err
    for argv in (["demo", "--seeds", "0", "99999999999999999999"], ["probe", "--official", "x.pt", "--seed", "-5"]):
        with pytest.raises(SystemExit):
            main(argv)
        assert "expected an integer in [0, 2**32 - 1]" in capsys.readouterr().err


def test_debug_may_come_before_bench_and_debug_env_false_is_off(capsys, monkeypatch):
    assert main(["bench", "--batch", "0"]) == 2
    assert "--batch 0: expected an integer >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(UserError, match="--batch 0: expected an integer >= 1"):  # --debug: the traceback
        main(["--debug", "bench", "--batch", "0"])
    for off in ("false", "No", "off", "0"):
        monkeypatch.setenv("ANYSAT_LITE_DEBUG", off)
        assert main(["pretrain", "--set", "train.threads=0"]) == 2
    monkeypatch.setenv("ANYSAT_LITE_DEBUG", "1")
    with pytest.raises(UserError):
        main(["pretrain", "--set", "train.threads=0"])


def test_a_seed_study_is_not_replaced_by_one_that_leaves_seeds_out(tmp_path):
    from anysat_lite.cli import _keep_earlier_study

    (tmp_path / "seeds.json").write_text(json.dumps({"seeds": [0, 1]}))
    _keep_earlier_study(tmp_path, "seeds", [0, 1, 2], force=False, resume=False)  # adds a seed: fine
    with pytest.raises(
        UserError,
        match=r"seeds.md holds the study of seeds 0 1; this call would replace it with one "
        r"that leaves out 1: list them too and continue the runs already there \(--seeds 0 1 7 --resume\)",
    ):
        _keep_earlier_study(tmp_path, "seeds", [0, 7], force=False, resume=False)
    _keep_earlier_study(tmp_path, "seeds", [7], force=True, resume=False)
    _keep_earlier_study(tmp_path, "seeds", [0], force=False, resume=True)  # a study continued on some of its runs
    _keep_earlier_study(tmp_path / "none", "worlds", [3], force=False, resume=False)  # no earlier study


def test_update_readme_keeps_windows_line_endings(tmp_path):
    from anysat_lite.demo import README_MARKERS, replace_readme_block

    start, end = README_MARKERS
    path = tmp_path / "README.md"
    path.write_bytes(f"# Title\r\n\r\n{start}\r\nold\r\n{end}\r\nafter\r\n".encode())
    assert replace_readme_block(path, "| a |\n| b |")
    assert path.read_bytes() == f"# Title\r\n\r\n{start}\r\n| a |\r\n| b |\r\n{end}\r\nafter\r\n".encode()
    assert not replace_readme_block(path, "| a |\n| b |")


def test_official_weights_option_names_a_folder_and_a_training_checkpoint(tmp_path):
    from anysat_lite.model.official import OfficialCheckpointError, load_official

    with pytest.raises(OfficialCheckpointError, match=r": a folder; expected the official AnySat.pth file"):
        load_official(tmp_path)
    torch.save({"model": {}, "optimizer": {}, "step": 3, "rng": {}}, tmp_path / "last.pt")
    with pytest.raises(
        OfficialCheckpointError,
        match=r"last.pt: an anysat-lite training checkpoint, not an official AnySat state dict; probe it with "
        r"anysat-lite probe --checkpoint .*last.pt",
    ):
        load_official(tmp_path / "last.pt")


def test_a_failed_command_leaves_no_empty_output_folder(tmp_path, capsys):
    """probe with a missing checkpoint, embed with a missing raster: the --out folders they created are taken
    back; a folder that existed before, or that holds a file, stays."""
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    assert main(["probe", "--checkpoint", str(tmp_path / "bad.pt"), "--out", str(tmp_path / "a" / "b")]) == 2
    assert not (tmp_path / "a").exists()
    (tmp_path / "kept").mkdir()
    assert main(["probe", "--checkpoint", str(tmp_path / "bad.pt"), "--out", str(tmp_path / "kept")]) == 2
    assert (tmp_path / "kept").is_dir()
    args = ["embed", "--checkpoint", str(tmp_path / "bad.pt"), "--raster", f"aerial={GEOTIFF / 'aerial.tif'}"]
    assert main([*args, "--out", str(tmp_path / "e" / "emb.nc")]) == 2
    assert not (tmp_path / "e").exists()
    capsys.readouterr()
