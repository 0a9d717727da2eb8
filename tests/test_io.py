"""GeoTIFF <-> xarray round trips and co-registered rasters -> model sample, on the generated fixtures."""
import datetime as dt

import numpy as np
import pytest
import rasterio
import torch
from rasterio.crs import CRS

from anysat_lite.data.io import date_from_name, rasters_to_sample, read_geotiff, stack_time_series, write_geotiff

from conftest import GEOTIFF


def test_read_geotiff_metadata():
    da = read_geotiff(GEOTIFF / "aerial.tif")
    assert da.dims == ("band", "y", "x") and da.shape == (4, 100, 100)
    assert da.attrs["gsd"] == pytest.approx(0.2)
    assert CRS.from_wkt(da.attrs["crs"]).to_epsg() == 32632
    assert list(da.band.values) == ["R", "G", "B", "NIR"]
    # pixel centres: first column at left + gsd/2, first row at top - gsd/2
    assert da.x.values[0] == pytest.approx(500000.1) and da.y.values[0] == pytest.approx(5000019.9)
    assert np.all(np.diff(da.y.values) < 0) and np.allclose(np.diff(da.x.values), 0.2)


def test_geotiff_round_trip(tmp_path):
    da = read_geotiff(GEOTIFF / "s2_20200301.tif")
    write_geotiff(da, tmp_path / "copy.tif")
    back = read_geotiff(tmp_path / "copy.tif")
    np.testing.assert_array_equal(back.values, da.values)
    np.testing.assert_allclose(back.x.values, da.x.values)
    np.testing.assert_allclose(back.y.values, da.y.values)
    assert back.attrs["crs"] == da.attrs["crs"] and back.attrs["gsd"] == da.attrs["gsd"] == 10.0
    with rasterio.open(tmp_path / "copy.tif") as src:
        assert tuple(src.transform)[:6] == da.attrs["transform"]


def test_band_name_count_checked():
    with pytest.raises(ValueError, match="4 bands in the file, 2 band names given"):
        read_geotiff(GEOTIFF / "aerial.tif", bands=["R", "G"])


def test_dates_from_names():
    assert date_from_name("S2A_MSIL2A_20200102T102421_N0213") == dt.date(2020, 1, 2)
    assert date_from_name("s2_2021-07-04.tif") == dt.date(2021, 7, 4)
    with pytest.raises(ValueError, match="no date"):
        date_from_name("aerial.tif")


def test_stack_time_series_sorts_and_gives_doy():
    paths = [GEOTIFF / f"s2_{d}.tif" for d in ("20200930", "20200301", "20200615")]
    ts = stack_time_series(paths)
    assert ts.dims == ("time", "band", "y", "x") and ts.shape == (3, 10, 2, 2)
    assert list(ts.doy.values) == [61, 167, 274]  # 2020 is a leap year
    np.testing.assert_array_equal(ts.values[0], read_geotiff(paths[1]).values)
    with pytest.raises(ValueError, match="co-register"):
        stack_time_series([GEOTIFF / "s2_20200301.tif", GEOTIFF / "aerial.tif"], dates=[dt.date(2020, 1, 1)] * 2)


def test_rasters_to_sample_common_extent():
    rasters = {"aerial": read_geotiff(GEOTIFF / "aerial.tif"),
               "s2": stack_time_series([GEOTIFF / f"s2_{d}.tif" for d in ("20200301", "20200615", "20200930")]),
               "s1-asc": stack_time_series([GEOTIFF / f"s1-asc_{d}.tif" for d in ("20200410", "20200820")])}
    x = rasters_to_sample(rasters, resampling=rasterio.enums.Resampling.nearest)
    assert x["aerial"].shape == (1, 4, 100, 100) and x["s2"].shape == (1, 3, 10, 2, 2)
    assert x["s1-asc"].shape == (1, 2, 2, 2, 2) and x["s2_dates"].tolist() == [[61, 167, 274]]
    torch.testing.assert_close(x["s2"][0], torch.from_numpy(rasters["s2"].values))  # same grid: unchanged
    y = rasters_to_sample(rasters, extent_m=10)
    assert y["aerial"].shape == (1, 4, 50, 50) and y["s2"].shape == (1, 3, 10, 1, 1)
    with pytest.raises(ValueError, match="does not fit"):
        rasters_to_sample(rasters, extent_m=30)


def test_rasters_to_sample_reprojects_other_crs():
    geo = read_geotiff(GEOTIFF / "s2_wgs84_20200301.tif")
    assert CRS.from_wkt(geo.attrs["crs"]).to_epsg() == 4326
    geo = geo.expand_dims(time=1).assign_coords(doy=("time", [61]))
    x = rasters_to_sample({"aerial": read_geotiff(GEOTIFF / "aerial.tif"), "s2": geo})
    assert tuple(x["s2"].shape[-2:]) == tuple(n // 50 for n in x["aerial"].shape[-2:])  # same extent
    assert torch.isfinite(x["s2"]).all() and x["s2"].abs().sum() > 0
