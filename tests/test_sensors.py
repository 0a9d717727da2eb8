import pytest

from anysat_lite.sensors import OFFICIAL_SENSORS, SENSORS, Sensor, get_sensor, register_sensor


def test_official_registry_facts():
    assert OFFICIAL_SENSORS == (
        "aerial",
        "aerial-flair",
        "spot",
        "naip",
        "s2",
        "s1-asc",
        "s1",
        "alos",
        "l7",
        "l8",
        "modis",
    )
    facts = {n: (SENSORS[n].gsd, SENSORS[n].n_bands, SENSORS[n].kind, SENSORS[n].subpatch_m) for n in OFFICIAL_SENSORS}
    assert facts == {
        "aerial": (0.2, 4, "image", 2.0),
        "aerial-flair": (0.2, 5, "image", 2.0),
        "spot": (1.0, 3, "image", 10.0),
        "naip": (1.25, 4, "image", 10.0),
        "s2": (10.0, 10, "series", 10.0),
        "s1-asc": (10.0, 2, "series", 10.0),
        "s1": (10.0, 3, "series", 10.0),
        "alos": (30.0, 3, "series", 30.0),
        "l7": (30.0, 6, "series", 30.0),
        "l8": (10.0, 11, "series", 10.0),
        "modis": (250.0, 7, "series", 250.0),
    }
    assert SENSORS["s2"].in_norm and SENSORS["l8"].doy_period == 366
    # projector dropout of the official training configs (Any_*.yaml, pretraining and fine-tuning alike)
    series = [n for n in OFFICIAL_SENSORS if SENSORS[n].kind == "series"]
    assert {n: SENSORS[n].dropout for n in series} == {
        "s2": 0.0,
        "s1-asc": 0.2,
        "s1": 0.2,
        "alos": 0.2,
        "l7": 0.2,
        "l8": 0.0,
        "modis": 0.2,
    }
    assert SENSORS["modis"].one_token_per_tile and SENSORS["naip"].subpatch_px == 8


def test_register_at_run_time_and_errors():
    s = register_sensor("testcam", gsd=0.5, bands=("R", "G", "B"), kind="image", subpatch_px=4)
    try:
        assert get_sensor("testcam") is s and s.subpatch_m == 2.0 and s.layout == "[B, C, H, W]"
        with pytest.raises(ValueError, match="already registered"):
            register_sensor("testcam", gsd=1, bands=("R",), kind="image")
        assert register_sensor("testcam", gsd=1, bands=("R",), kind="image", overwrite=True).gsd == 1.0
    finally:
        SENSORS.pop("testcam")
    with pytest.raises(KeyError, match="unknown sensor 'nope'"):
        get_sensor("nope")
    with pytest.raises(ValueError, match="kind"):
        Sensor("x", 1.0, ("a",), kind="video")
    with pytest.raises(ValueError, match="may not"):
        Sensor("bad_name", 1.0, ("a",), kind="image")
    with pytest.raises(ValueError, match="gsd"):
        Sensor("x", 0.0, ("a",), kind="image")


@pytest.mark.parametrize(
    "facts, pattern",
    [
        ({"gsd": float("nan")}, r"gsd must be a finite number of metres > 0, got nan; e.g. gsd=10.0$"),
        ({"gsd": "10"}, r"gsd must be a finite number of metres > 0, got '10'; e.g. gsd=10.0$"),
        ({"subpatch_px": 2.5}, r"subpatch_px must be an integer >= 1, got 2.5; e.g. subpatch_px=1$"),
        ({"dropout": 2.0}, r"dropout must be in \[0, 1\), got 2.0; e.g. dropout=0.2 \(official\)$"),
        ({"doy_period": 0}, r"doy_period must be an integer >= 1 \(days\), got 0; e.g. doy_period=367 \(official\)$"),
        ({"bands": "NIR"}, r"bands must be a list of band names, got the string 'NIR'; e.g. bands=\['NIR'\]$"),
        ({"bands": ["R", ""]}, r"bands must be a non-empty list of band names, got \('R', ''\); e.g. bands=\["),
        ({"subpach_px": 2}, r"unknown fact 'subpach_px'; expected some of subpatch_px, doy_period, .*description$"),
    ],
)
def test_register_sensor_refuses_facts_that_would_fail_later(facts, pattern):
    """Each of these used to be accepted and to fail (or give non-finite embeddings) only in the model."""
    args = {"name": "testcam", "gsd": 10, "bands": ("R", "G"), "kind": "series"} | facts
    with pytest.raises(ValueError, match=r"^sensor 'testcam': " + pattern):
        register_sensor(**args)
    assert "testcam" not in SENSORS


def test_numpy_numbers_are_facts_like_any_other():
    import numpy as np

    try:
        s = register_sensor("npcam", gsd=np.float32(3.0), bands=["a"], kind="series", subpatch_px=np.int64(2))
        assert (s.gsd, s.subpatch_px) == (3.0, 2) and type(s.gsd) is float and type(s.subpatch_px) is int
    finally:
        SENSORS.pop("npcam", None)


def test_an_unknown_sensor_is_a_user_error_with_a_suggestion():
    """get_sensor used to raise a bare KeyError; it is now a UserError (still a KeyError, as before)."""
    from anysat_lite.errors import UserError

    with pytest.raises(UserError, match=r"^unknown sensor 's3'; did you mean 's2'\? registered sensors: aerial, ") as e:
        get_sensor("s3")
    assert isinstance(e.value, KeyError) and str(e.value).endswith(
        "(register new ones with anysat_lite.register_sensor)"
    )
    with pytest.raises(UserError, match=r"^unknown sensor 'Aerial'; did you mean 'aerial'\?"):
        get_sensor("Aerial")
    with pytest.raises(UserError, match=r"^expected a sensor name \(a string\), got None \(NoneType\); give one of "):
        get_sensor(None)
