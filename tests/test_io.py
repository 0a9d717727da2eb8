"""GeoTIFF <-> xarray round trips and co-registered rasters -> model sample, on the generated fixtures."""

import datetime as dt

import numpy as np
import pytest
import rasterio
import torch
from conftest import GEOTIFF
from rasterio.crs import CRS

from anysat_lite.data.io import (
    NodataError,
    RasterError,
    common_grid,
    date_from_name,
    rasters_to_sample,
    read_geotiff,
    stack_time_series,
    target_crs,
    write_geotiff,
)


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
    with pytest.raises(ValueError, match=r"^'20201345' in the file name 's2_20201345.tif' is not a date \(month must"):
        date_from_name("s2_20201345.tif")


def test_stack_time_series_sorts_and_gives_doy():
    paths = [GEOTIFF / f"s2_{d}.tif" for d in ("20200930", "20200301", "20200615")]
    ts = stack_time_series(paths)
    assert ts.dims == ("time", "band", "y", "x") and ts.shape == (3, 10, 2, 2)
    assert list(ts.doy.values) == [61, 167, 274]  # 2020 is a leap year
    np.testing.assert_array_equal(ts.values[0], read_geotiff(paths[1]).values)
    with pytest.raises(ValueError, match="co-register"):
        stack_time_series([GEOTIFF / "s2_20200301.tif", GEOTIFF / "aerial.tif"], dates=[dt.date(2020, 1, 1)] * 2)


def test_rasters_to_sample_common_extent():
    rasters = {
        "aerial": read_geotiff(GEOTIFF / "aerial.tif"),
        "s2": stack_time_series([GEOTIFF / f"s2_{d}.tif" for d in ("20200301", "20200615", "20200930")]),
        "s1-asc": stack_time_series([GEOTIFF / f"s1-asc_{d}.tif" for d in ("20200410", "20200820")]),
    }
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


# --- awkward rasters: partial overlap, other pixel sizes, nodata, CRS and size problems ----------------------
def _s2(*names):
    return stack_time_series([GEOTIFF / n for n in names])


def test_partly_overlapping_rasters_use_the_common_extent():
    x = rasters_to_sample({"aerial": read_geotiff(GEOTIFF / "aerial.tif"), "s2": _s2("s2_shifted_20200301.tif")})
    # overlap: x 500010..500020 (10 m), y 5000000..5000020 (20 m)
    assert x["aerial"].shape == (1, 4, 100, 50) and x["s2"].shape == (1, 1, 10, 2, 1)
    torch.testing.assert_close(
        x["aerial"][0], torch.from_numpy(read_geotiff(GEOTIFF / "aerial.tif").values[:, :, 50:]).float()
    )
    grid = common_grid({"aerial": read_geotiff(GEOTIFF / "aerial.tif"), "s2": _s2("s2_shifted_20200301.tif")})
    assert (grid.left, grid.top, grid.height_m, grid.width_m) == (500010.0, 5000020.0, 20.0, 10.0)


def test_a_raster_at_another_pixel_size_is_resampled_to_the_native_gsd():
    s2_20m = _s2("s2_20m_20200301.tif")  # 20 m pixels over 40 m
    for order in (("s2", "aerial"), ("aerial", "s2")):  # whichever comes first
        rasters = {k: {"s2": s2_20m, "aerial": read_geotiff(GEOTIFF / "aerial.tif")}[k] for k in order}
        x = rasters_to_sample(rasters, resampling=rasterio.enums.Resampling.nearest)
        assert x["s2"].shape == (1, 1, 10, 2, 2) and x["aerial"].shape == (1, 4, 100, 100)
        # the 20 m scene is the south-west pixel of the 40 m raster: each 10 m pixel repeats it
        np.testing.assert_allclose(
            x["s2"][0, 0, :, :, :].numpy(), np.repeat(np.repeat(s2_20m.values[0, :, 1:2, 0:1], 2, axis=1), 2, axis=2)
        )


def test_image_nodata_is_an_error_and_series_nodata_a_date_mask():
    aerial = read_geotiff(GEOTIFF / "aerial_nodata.tif")
    assert aerial.attrs["nodata"] == 0
    with pytest.raises(
        NodataError,
        match=r"^aerial \(.*aerial_nodata.tif, nodata 0.0\): 50% of the pixels in the "
        r"20 x 20 m extent have nodata .* use --nodata skip",
    ):
        rasters_to_sample({"aerial": aerial})
    s2 = _s2("s2nd_20200401.tif", "s2nd_20200701.tif")  # pixel (0, 1) of the first date is nodata
    x = rasters_to_sample({"aerial": read_geotiff(GEOTIFF / "aerial.tif"), "s2": s2})
    assert x["s2_mask"].tolist() == [[False, True]] and torch.isfinite(x["s2"]).all()
    assert (x["s2"][0, 0, :, 0, 1] == 0).all() and x["s2_dates"].tolist() == [[92, 183]]  # the hole, filled
    y = rasters_to_sample({"aerial": read_geotiff(GEOTIFF / "aerial.tif"), "s2": s2}, extent_m=10)  # top-left 10 m
    assert "s2_mask" not in y  # the hole is outside: nothing masked


def test_crs_problems_and_tiny_rasters_say_what_is_wrong():
    with pytest.raises(
        RasterError,
        match=r"^aerial \(.*nocrs.tif\): the raster has no CRS, so it cannot be placed on "
        r"the ground; assign one \(e.g. gdal_edit.py -a_srs",
    ):
        rasters_to_sample({"aerial": read_geotiff(GEOTIFF / "nocrs.tif")})
    with pytest.raises(
        RasterError,
        match=r"^the rasters overlap on 1.0 x 1.0 m \(aerial x 500000.0..500001.0, .*\), "
        r"less than one 10 m cell \(patch or sub-patch\) each way",
    ):
        rasters_to_sample({"aerial": read_geotiff(GEOTIFF / "aerial_tiny.tif"), "s2": _s2("s2_20200301.tif")})
    with pytest.raises(
        RasterError,
        match=r"^requested extent 30 x 30 m does not fit in the rasters' common extent "
        r"of 20 x 20 m",
    ):
        rasters_to_sample({"aerial": read_geotiff(GEOTIFF / "aerial.tif")}, extent_m=30)
    far = read_geotiff(GEOTIFF / "aerial.tif")
    far.attrs["transform"] = (0.2, 0.0, 600000.0, 0.0, -0.2, 5000020.0)
    with pytest.raises(
        RasterError,
        match=r"^the rasters do not overlap \(aerial x 600000.0..600020.0, .*; s2 x "
        r"500000.0..500020.0",
    ):
        rasters_to_sample({"aerial": far, "s2": _s2("s2_20200301.tif")})


def test_geographic_only_inputs_go_to_their_utm_zone():
    geo = read_geotiff(GEOTIFF / "s2_wgs84_20200301.tif").expand_dims(time=1).assign_coords(doy=("time", [61]))
    crs, note = target_crs({"s2": geo})
    assert crs.to_epsg() == 32632 and note == "EPSG:32632 (UTM zone of s2's centre: every input is in degrees)"
    x = rasters_to_sample({"s2": geo})
    assert x["s2"].shape[:3] == (1, 1, 10) and torch.isfinite(x["s2"]).all()
    grid = common_grid({"s2": geo})
    assert abs(grid.left - 500000.0) < 1.0 and abs(grid.top - 5000020.0) < 1.0  # the UTM square it came from
