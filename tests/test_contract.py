"""The validator, one error path at a time: each message names the sensor, the expected and the received value."""

import warnings

import numpy as np
import pytest
import torch

import anysat_lite.data.contract as contract
from anysat_lite.data.contract import SampleError, check_patch_size, estimate_memory, patch_size_m, validate_sample
from anysat_lite.model import AnySat


def good(B=2, T=3):
    return {
        "aerial": torch.rand(B, 4, 300, 300),
        "s2": torch.rand(B, T, 10, 6, 6),
        "s2_dates": torch.randint(1, 366, (B, T)),
    }


def test_valid_sample_info():
    info = validate_sample(good())
    assert info.batch == 2 and info.extent_m == (60.0, 60.0) and info.sensors == ["aerial", "s2"]
    assert info.n_dates == {"s2": 3}


def test_non_square_tiles_are_accepted():
    x = {"s2": torch.rand(1, 2, 10, 6, 12), "s2_dates": torch.tensor([[10, 20]]), "aerial": torch.rand(1, 4, 300, 600)}
    assert validate_sample(x).extent_m == (60.0, 120.0)
    assert check_patch_size(30, (60.0, 120.0)) == (2, 4)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda x: x.update(foo=torch.rand(2, 3)), r"'foo': unknown sensor 'foo'; known sensors: aerial"),
        (lambda x: x.update(s2_extra=torch.rand(2, 3)), r"'s2_extra': unknown suffix 'extra'"),
        (lambda x: x.update(aerial=[1, 2]), r"'aerial': expected a torch.Tensor, got list"),
        (
            lambda x: x.update(s2_dates=torch.randint(1, 366, (3, 3))),
            r"'s2_dates': batch size 3 differs from the batch size 2",
        ),
        (
            lambda x: x.update(aerial=torch.rand(2, 1, 4, 300, 300)),
            r"aerial: expected a 4-D tensor \[B, C, H, W\] \(image\), got shape \[2, 1, 4, 300, 300\]",
        ),
        (
            lambda x: x.update(s2=torch.rand(2, 10, 6, 6)),
            r"s2: expected a 5-D tensor \[B, T, C, H, W\] \(series\), got shape \[2, 10, 6, 6\]",
        ),
        (
            lambda x: x.update(aerial=torch.rand(2, 3, 300, 300)),
            r"aerial: expected 4 bands \(NIR, G, B, R\) on axis 1 of \[B, C, H, W\], got 3",
        ),
        (
            lambda x: x.update(s2=torch.rand(2, 3, 4, 6, 6)),
            r"s2: expected 10 bands \(B2, .*B12\) on axis 2 of \[B, T, C, H, W\], got 4",
        ),
        (
            lambda x: x.update(aerial=torch.randint(0, 9, (2, 4, 300, 300))),
            r"aerial: expected a floating-point tensor, got dtype torch.int64",
        ),
        (
            lambda x: x.update(aerial=torch.rand(2, 4, 305, 300)),
            r"aerial: height and width must be multiples of its 10-pixel sub-patch \(2 m at 0.2 m GSD\), got 305x300",
        ),
        (lambda x: x["aerial"].__setitem__((0, 0, 0, 0), float("nan")), r"aerial: 1 non-finite values"),
        (lambda x: x["s2"].__setitem__((1, 2, 3), float("-inf")), r"s2: 36 non-finite values"),
        (
            lambda x: x.pop("s2_dates"),
            r"s2: time series needs 's2_dates' \[B, T\] = \[2, 3\] \(whole days, e.g. day-of-year\), not found",
        ),
        (
            lambda x: x.update(s2_dates=torch.randint(1, 366, (2, 4))),
            r"s2_dates: expected shape \[B, T\] = \[2, 3\], got \[2, 4\]",
        ),
        (
            lambda x: x.update(s2_dates=torch.tensor([[1, 2, -3], [1, 2, 3]])),
            r"s2_dates: dates must be whole days >= 0 "
            r"\(day-of-year, or days since the dataset's origin\), got values down to -3",
        ),
        (lambda x: x.update(s2_dates=torch.tensor([[1.5, 2, 3], [1, 2, 3]])), r"s2_dates: dates must be whole days"),
        (
            lambda x: x.update(s2_mask=torch.ones(2, 5, dtype=torch.bool)),
            r"s2_mask: expected shape \[B, T\] = \[2, 3\] \(True = valid date\), got \[2, 5\]",
        ),
        (
            lambda x: x.update(s2_mask=torch.tensor([[1, 1, 1], [0, 0, 0]])),
            r"s2_mask: every sample needs at least one valid date",
        ),
        (lambda x: x.update(aerial_dates=torch.ones(2, 3)), r"aerial: single-date sensor takes no 'aerial_dates'"),
        (lambda x: x.update(s1_dates=torch.ones(2, 3)), r"'s1_dates' given without the 's1' tensor itself"),
        (
            lambda x: x.update(s2=torch.rand(2, 3, 10, 5, 5)),
            r"s2: ground extent 50 x 50 m \(pixels x GSD\) differs from aerial's 60 x 60 m; "
            r".* \(expected s2 to be 6 x 6 px at 10 m GSD\)",
        ),
    ],
)
def test_each_error_path(mutate, match):
    x = good()
    mutate(x)
    with pytest.raises(SampleError, match=match):
        validate_sample(x)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (
            lambda x: x.update(S2=x.pop("s2"), S2_dates=x.pop("s2_dates")),
            r"^'S2': unknown sensor 'S2'; did you mean 's2'\? known sensors: ",
        ),
        (
            lambda x: x.update(s1_asc=torch.rand(2, 3, 2, 6, 6)),  # 's1' and the suffix 'asc' before
            r"^'s1_asc': unknown suffix 'asc'; did you mean 's1-asc'\? expected '<sensor>', ",
        ),
        (
            lambda x: x.update(s2_date=x.pop("s2_dates")),
            r"^'s2_date': unknown suffix 'date'; did you mean 's2_dates'\?",
        ),
        (
            lambda x: (x.clear(), x.update(aerial=torch.rand(4, 300, 300))),
            r"^aerial: expected a 4-D tensor \[B, C, H, W\] \(image\), got shape \[4, 300, 300\]; for one sample "
            r"\[C, H, W\], add the batch axis: x\['aerial'\]\[None\]$",
        ),
        (
            lambda x: x.update(s2=torch.randint(0, 9999, (2, 3, 10, 6, 6)).to(torch.uint16)),  # raw reflectances
            r"^s2: expected a floating-point tensor, got dtype torch.uint16; convert it with x\['s2'\].float\(\) and "
            r"standardise it with NormStats ",
        ),
        (
            lambda x: x.update(s2_mask=torch.tensor([[80.0, 3.0, 95.0], [0.0, 10.0, 20.0]])),  # cloud cover, in %
            r"^s2_mask: expected True/False \(or 0/1\) per date, True = valid, got torch.float32 values such as 80; "
            r"build it from what flags a date, e.g. mask = cloud < 20 ",
        ),
        (
            lambda x: x.update(s2_mask=torch.tensor([[0.2, 0.0, 0.9], [1.0, 1.0, 1.0]])),  # read as True/False/True
            r"^s2_mask: expected True/False \(or 0/1\) per date, True = valid, got torch.float32 values such as 0.2; ",
        ),
    ],
)
def test_error_paths_name_the_fix(mutate, match):
    x = good()
    mutate(x)
    with pytest.raises(SampleError, match=match):
        validate_sample(x)


def test_large_finite_values_pass_the_finite_check():
    x = good()
    x["aerial"] = torch.full((2, 4, 300, 300), 3e38)  # the fast path's float32 sum overflows to inf
    x["aerial"][0, 0, 0, 0] = -3e38
    assert validate_sample(x).sensors == ["aerial", "s2"]


def test_empty_and_only_suffix_samples():
    with pytest.raises(SampleError, match="non-empty dict"):
        validate_sample({})
    with pytest.raises(SampleError, match="no sensor tensor"):
        validate_sample({"s2_dates": torch.ones(1, 2)})


def test_modis_is_exempt_from_the_extent_check():
    x = good()
    x.update(modis=torch.rand(2, 4, 7, 1, 1), modis_dates=torch.randint(1, 366, (2, 4)))
    assert validate_sample(x).extent_m == (60.0, 60.0)


@pytest.mark.parametrize(
    "P, match",
    [
        (15, "positive multiple of 10 m, got 15"),
        (0, "got 0"),
        ("20", "got '20'"),
        (40, "patch size 40 m does not divide the tile of 60 x 60 m"),
    ],
)
def test_patch_size_errors(P, match):
    with pytest.raises(SampleError, match=match):
        check_patch_size(P, (60.0, 60.0))


# --- inputs of the Python API (prepare_input, called at the top of AnySat.encode_all) ------------------------


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return AnySat("nano", sensors=["aerial", "s2"]).eval()


def small(B=2, T=3, dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    return {
        "aerial": torch.rand(B, 4, 100, 100, generator=g).to(dtype),
        "s2": torch.rand(B, T, 10, 2, 2, generator=g).to(dtype),
        "s2_dates": torch.tensor([[10, 100, 200][:T]] * B),
    }


@pytest.mark.parametrize(
    "x, match",
    [
        (small(T=0), r"^s2: the time series has no dates \(T = 0, shape \[2, 0, 10, 2, 2\]\); give at least one date"),
        (small(B=0), r"^'aerial': batch size 0 \(shape \[0, 4, 100, 100\]\); give at least one sample$"),
        (
            {**small(), "aerial": torch.rand(2, 4, 0, 100), "s2": torch.rand(2, 3, 10, 0, 2)},
            r"^aerial: empty image \(0x100 px",
        ),
        (
            {**small(), "s2_dates": torch.tensor([[1.0, float("nan"), 3.0]] * 2)},
            r"^s2_dates: 2 NaN/inf dates; give every date a whole day number >= 0 "
            r"\(e.g. its day-of-year\) and flag the "
            r"missing ones False in "
            r"'s2_mask'",
        ),
    ],
)
def test_empty_and_nan_inputs(model, x, match):
    with pytest.raises(SampleError, match=match):
        model(x, 10)


def test_float16_and_float64_inputs_are_cast_to_the_model_dtype(model):
    with torch.no_grad():
        ref = model(small(), 10)
        for dtype in (torch.float16, torch.float64):
            x = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in small().items()}
            out = model(x, 10)
            assert out.dtype == torch.float32
            torch.testing.assert_close(
                out, model({k: (v.float() if v.is_floating_point() else v) for k, v in x.items()}, 10)
            )
        assert ref.shape == (2, 64)


def test_1d_dates_apply_to_every_sample(model):
    x = small()
    one = {**x, "s2_dates": torch.tensor([10, 100, 200]), "s2_mask": torch.tensor([True, True, False])}
    full = {**x, "s2_dates": torch.tensor([[10, 100, 200]] * 2), "s2_mask": torch.tensor([[True, True, False]] * 2)}
    with torch.no_grad():
        torch.testing.assert_close(model(one, 10), model(full, 10))


@pytest.mark.parametrize("P", [np.int64(20), np.int32(20), torch.tensor(20), 20.0, np.float32(20), torch.tensor(20.0)])
def test_patch_size_types(model, P):
    assert patch_size_m(P) == 20 and isinstance(patch_size_m(P), int)
    with torch.no_grad():
        torch.testing.assert_close(model(small(), P, output="patch"), model(small(), 20, output="patch"))


@pytest.mark.parametrize(
    "P, match",
    [
        (torch.tensor([20, 20]), r"got tensor of shape \[2\]"),
        (True, "got True"),
        (np.float64(12.5), r"got (np\.float64\()?12\.5\b"),  # NumPy 2's repr / NumPy 1's
    ],
)
def test_bad_patch_size_types(P, match):
    with pytest.raises(SampleError, match=match):
        patch_size_m(P)


def test_raw_values_warn_once_when_the_model_has_statistics(model):
    m = AnySat("nano", sensors=["aerial", "s2"]).eval()
    m.norm_stats = {"synthetic": {"s2": {"mean": [1500.0] * 10, "std": [900.0] * 10}}}
    raw = {**small(), "s2": 1500 + 900 * torch.rand(2, 3, 10, 2, 2)}
    with warnings.catch_warnings(record=True) as w, torch.no_grad():
        warnings.simplefilter("always")
        m(raw, 10)
        m(raw, 10)  # once per model and sensor
        m({**small(), "s2": torch.randn(2, 3, 10, 2, 2)}, 10)  # standardised: no warning
        model(raw, 10)  # no statistics: no warning
    msgs = [str(x.message) for x in w if "raw values" in str(x.message)]
    assert len(msgs) == 1 and msgs[0].startswith("s2: the input looks like raw values")
    assert "NormStats.from_dict(model.norm_stats['synthetic']).apply(sample)" in msgs[0]


def test_memory_estimate_refuses_what_would_not_fit(model, monkeypatch):
    big = {"aerial": torch.zeros(1, 4, 1200, 1200)}  # 240 m at 0.2 m
    need, worst = estimate_memory(big, 240, model.sensors, depth=2)
    assert 15e9 < need < 30e9 and worst == "aerial: 1 sequence(s) of 120x120+1 = 14401 tokens at P = 240 m"
    assert estimate_memory(big, 20, model.sensors, depth=2)[0] < 1e9
    monkeypatch.setattr(contract, "available_memory", lambda device: 8 * 10**9)
    with pytest.raises(
        SampleError,
        match=r"^not enough memory: the sub-patch transformer would need about 2\d\.\d GB "
        r"\(aerial: 1 sequence\(s\) of 120x120\+1 = 14401 tokens at P = 240 m; .*\), "
        r"8\.0 GB are free on cpu; use a smaller patch size "
        r"\(P = 120 m needs about 1\.\d GB\)",
    ):
        with torch.no_grad():
            model(big, 240)


def test_dates_beyond_the_encoding_period_pass():
    """Day 366 of a leap year on l8 (period 366) and PASTIS days since 2018-09-01 (up to about 440) are valid dates."""
    x = {
        "l8": torch.rand(1, 2, 11, 2, 2),
        "l8_dates": torch.tensor([[1, 366]]),
        "s2": torch.rand(1, 2, 10, 2, 2),
        "s2_dates": torch.tensor([[0, 440]]),
    }
    assert validate_sample(x).n_dates == {"l8": 2, "s2": 2}


def test_non_finite_values_in_masked_dates_are_refused_with_the_reason():
    """The model replaces masked dates, but the contract refuses NaN there too (other readers of a sample, such as
    the pixel baselines, compute with them): the message says that masking does not remove the values."""
    x = good()
    x["s2"][:, -1] = float("nan")
    x["s2_mask"] = torch.tensor([[True, True, False], [True, True, False]])
    with pytest.raises(
        SampleError,
        match=r"^s2: 720 non-finite values \(NaN/inf\) in dates that 's2_mask' flags invalid, expected finite values "
        r"there too: masking a date does not remove its values; fill them, e.g. with 0",
    ):
        validate_sample(x)
    x["s2_mask"][1, 2] = True  # now one of the dates holding NaN is a valid date
    with pytest.raises(
        SampleError,
        match=r"^s2: 720 non-finite values \(NaN/inf\), expected finite ones; fill them \(e.g. with 0\) and flag "
        r"their dates False in 's2_mask' \[B, T\]$",
    ):
        validate_sample(x)
    x["s2"][:, -1] = 0.0
    assert validate_sample(x).sensors == ["aerial", "s2"]


def test_the_value_check_records_the_largest_magnitude():
    """One reduction per sensor (min and max) both finds NaN/inf and gives the model the values' range."""
    x = good()
    x["aerial"][1, 2, 3, 4] = -7e20
    x["s2"][0, 0, 0, 0, 0] = float("inf")
    with pytest.raises(SampleError, match=r"^s2: 1 non-finite values"):
        validate_sample(x)
    x["s2"][0, 0, 0, 0, 0] = 2.0
    info = validate_sample(x)
    assert info.max_abs["aerial"] == pytest.approx(7e20) and info.max_abs["s2"] == 2.0
    assert validate_sample(x, check_values=False).max_abs == {}


def test_dates_above_a_thousand_days_are_warned_about_once(monkeypatch):
    """YYYYMMDD dates or years pass the contract (any whole day >= 0), with one warning per key."""
    monkeypatch.setattr(contract, "_WARNED_DATES", set())
    x = good()
    x["s2_mask"] = torch.tensor([[1.0, 0.0, 1.0], [1, 1, 0]])  # 0/1 as floats: a valid mask
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x["s2_dates"] = torch.tensor([[1, 200, 440], [0, 300, 366]])  # PASTIS counts to about 440 days
        validate_sample(x)
    x["s2_dates"] = torch.tensor([[20200115, 20200320, 20200704]] * 2)
    with pytest.warns(UserWarning, match=r"^s2_dates: dates up to 2.02007e\+07, expected whole days .*tm_yday$") as w:
        validate_sample(x)
        validate_sample(x)
    assert len(w) == 1 and "\n" not in str(w[0].message)


@pytest.mark.parametrize(
    "key, meant",
    [
        ("S2", "s2"),
        ("S2_dates", "s2_dates"),
        ("s1_asc", "s1-asc"),
        ("s1_asc_mask", "s1-asc_mask"),
        ("Aerial", "aerial"),
    ],
)
def test_sensor_entries_refuse_a_misspelt_sensor_key_instead_of_dropping_it(key, meant):
    from anysat_lite.data.contract import sensor_entries

    with pytest.raises(SampleError, match=rf"'{key}': not a sensor key .*; did you mean '{meant}'\?"):
        sensor_entries({key: torch.zeros(1), "label": torch.zeros(1)}, ["s2", "aerial"])
    kept = sensor_entries({"s2": 1, "s2_dates": 2, "s2_valid": 3, "aerial": 4, "label": 5, "labels": 6}, ["s2"])
    assert list(kept) == ["s2", "s2_dates", "s2_valid"]  # targets and the sensors left out are dropped, not refused
