"""Shapes and contracts of every output mode and sensor, plus what the official code cannot do."""

import pytest
import torch

from anysat_lite.config import model_config
from anysat_lite.data.contract import SampleError, random_sample
from anysat_lite.model import AnySat
from anysat_lite.model.tokenizer import group_subpatches, subpatch_layout, ungroup_subpatches
from anysat_lite.sensors import SENSORS, register_sensor

D = 64


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return AnySat(model_config("nano")).eval()


def sample_for(names, extent=60, B=2, T=3):
    """A random valid sample of ``names`` covering ``extent`` metres (a side or ``(H, W)``)."""
    return random_sample(names, extent, B, T)


SPATIAL = [
    n
    for n in SENSORS
    if not SENSORS[n].one_token_per_tile
    and n in ("aerial", "aerial-flair", "spot", "naip", "s2", "s1-asc", "s1", "alos", "l7", "l8")
]


@pytest.mark.parametrize("sensor", SPATIAL)
def test_every_output_mode_for_every_sensor(model, sensor):
    x = sample_for([sensor], extent=60)
    g = {"aerial": 15, "aerial-flair": 15, "alos": 1, "l7": 1}.get(sensor, 3)  # sub-patches per 30 m patch side
    with torch.no_grad():
        assert model(x, 30, "tile").shape == (2, D)
        assert model(x, 30, "patch").shape == (2, 2, 2, D)
        assert model(x, 30, "all").shape == (2, 1 + 4, D)
        assert model(x, 30, "dense").shape == (2, 2 * g, 2 * g, 2 * D)


def test_patch_and_all_agree_and_dense_repeats_fused_tokens(model):
    x = sample_for(["aerial", "s2", "s1-asc"])
    with torch.no_grad():
        all_ = model(x, 20, "all")
        patch = model(x, 20, "patch")
        dense = model(x, 20, "dense", output_modality="s2")
    torch.testing.assert_close(all_[:, 1:].reshape(2, 3, 3, D), patch)
    torch.testing.assert_close(all_[:, 0], model(x, 20, "tile"))
    assert dense.shape == (2, 6, 6, 2 * D)
    # first half of each dense vector is its patch's fused token
    torch.testing.assert_close(dense[:, 0:2, 0:2, :D], patch[:, :1, :1].expand(-1, 2, 2, -1))


def test_non_square_tiles(model):
    x = sample_for(["aerial", "s2"], extent=(60, 120))
    with torch.no_grad():
        assert model(x, 30, "patch").shape == (2, 2, 4, D)
        assert model(x, 20, "dense", output_modality="aerial").shape == (2, 30, 60, 2 * D)


def test_time_series_with_a_single_date(model):
    x = sample_for(["s2", "s1-asc"], T=1)
    with torch.no_grad():
        out = model(x, 20, "patch")
    assert out.shape == (2, 3, 3, D) and torch.isfinite(out).all()


@pytest.mark.parametrize("P, grid", [(10, 12), (20, 6), (30, 4), (40, 3), (60, 2), (120, 1)])
def test_30m_sensors_at_any_patch_size(model, P, grid):
    """Official code: crashes for l7/alos; here 30 m maps are repeated onto 10 m when P is not a multiple of 30."""
    x = sample_for(["s2", "l7", "alos"], extent=120)
    with torch.no_grad():
        out = model(x, P, "patch")
    assert out.shape == (2, grid, grid, D) and torch.isfinite(out).all()


def test_30m_sensor_alone_with_a_patch_larger_than_its_tile_sub_patch(model):
    x = sample_for(["l7"], extent=60)  # 2 x 2 px
    with torch.no_grad():
        assert model(x, 60, "patch").shape == (2, 1, 1, D)
        assert model(x, 60, "dense").shape == (2, 2, 2, 2 * D)
        assert model(x, 20, "patch").shape == (2, 3, 3, D)


def test_modis_adds_one_token_per_tile(model):
    x = sample_for(["s2", "modis"])
    with torch.no_grad():
        with_modis = model(x, 20, "all")
        without = model({k: v for k, v in x.items() if not k.startswith("modis")}, 20, "all")
    assert with_modis.shape == without.shape == (2, 10, D)
    assert not torch.allclose(with_modis, without)
    from anysat_lite.model.trace import trace_pipeline

    joint = [
        trace_pipeline(model, s, 20, outputs=False).joint for s in (x, {k: v for k, v in x.items() if "modis" not in k})
    ]
    assert joint[0].shape[1] == joint[1].shape[1] + 1 == 1 + 9 + 1  # cls + 9 S2 patches + one MODIS token
    with pytest.raises(SampleError, match="no dense output"):
        model(x, 20, "dense", output_modality="modis")
    with pytest.raises(SampleError, match="only one-token-per-tile sensors"):
        model({k: v for k, v in x.items() if k.startswith("modis")}, 20)


def test_clear_errors(model):
    x = sample_for(["aerial", "s2"])
    with pytest.raises(SampleError, match="positive multiple of 10 m, got 25"):
        model(x, 25)
    with pytest.raises(SampleError, match="patch size 40 m does not divide the tile of 60 x 60 m"):
        model(x, 40)
    with pytest.raises(ValueError, match="output must be one of"):
        model(x, 20, output="pixels")
    with pytest.raises(SampleError, match="output_modality 'spot' is not in the sample"):
        model(x, 20, "dense", output_modality="spot")
    small = AnySat(model_config("nano"), sensors=["s2"])
    with pytest.raises(SampleError, match="no projector for sensor 'aerial'.*add_sensor"):
        small(x, 20)
    s1 = AnySat(model_config("nano"), sensors=["s2", "s1"])  # 's1_asc' read as s1 with a suffix 'asc' before
    asc = {"s1_asc": torch.rand(2, 3, 2, 6, 6), "s1_asc_dates": torch.randint(1, 366, (2, 3))}
    with pytest.raises(SampleError, match=r"^'s1_asc': unknown suffix 'asc'; did you mean 's1-asc'\? "):
        s1(asc, 20)


def test_sensor_registered_at_run_time_gets_a_projector():
    register_sensor("hyper", gsd=5.0, bands=tuple(f"b{i}" for i in range(6)), kind="image", subpatch_px=2)
    register_sensor("ndvi-ts", gsd=15.0, bands=("NDVI",), kind="series")
    try:
        m = AnySat(model_config("nano"), sensors=["s2"]).eval()
        m.add_sensor("hyper")
        m.add_sensor("ndvi-ts")
        assert type(m.projectors["hyper"]).__name__ == "ImageProjector"
        assert m.projectors["hyper"].conv.weight.shape == (D, 6, 2, 2)
        assert type(m.projectors["ndvi-ts"]).__name__ == "SeriesProjector"
        x = sample_for(["s2", "hyper", "ndvi-ts"], extent=60)
        with torch.no_grad():
            assert m(x, 30, "patch").shape == (2, 2, 2, D)
            assert m(x, 30, "dense", output_modality="hyper").shape == (2, 6, 6, 2 * D)
            assert m(x, 30, "dense", output_modality="ndvi-ts").shape == (2, 4, 4, 2 * D)
        with pytest.raises(SampleError, match="ndvi-ts: patch size 20 m is not a multiple of its 15 m sub-patch"):
            m(x, 20)
    finally:
        SENSORS.pop("hyper")
        SENSORS.pop("ndvi-ts")


def test_date_mask_excludes_dates(model):
    x = sample_for(["s2"], T=4)
    m = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    y = dict(x)
    y["s2"] = x["s2"].clone()
    y["s2"][0, 2:] = 1e3  # garbage on the masked dates must not matter
    with torch.no_grad():
        a = model({**x, "s2_mask": m}, 20)
        b = model({**y, "s2_mask": m}, 20)
    torch.testing.assert_close(a, b)


def test_subpatch_orders():
    s = SENSORS["aerial"]
    fmap = torch.arange(30 * 30).float().view(1, 30, 30, 1)
    geo = subpatch_layout(s, 20, "geometric")
    off = subpatch_layout(s, 20, "official")
    assert (geo.g, geo.cell, off.cell) == (10, 1, 5)
    torch.testing.assert_close(ungroup_subpatches(group_subpatches(fmap, geo), geo), fmap)
    seq = group_subpatches(fmap, off)[0, 0, 0, :, 0]
    # official order: first the 5 x 5 sub-patches of the top-left 10 m cell, row-major
    assert seq[:6].tolist() == [0, 1, 2, 3, 4, 30]
    assert seq[25].item() == 5  # then the next 10 m cell
    assert subpatch_layout(SENSORS["s2"], 30, "official").cell == 1


def test_float_patch_size_and_batch_of_one(model):
    x = sample_for(["s2"], B=1)
    with torch.no_grad():
        assert model(x, 20.0, "patch").shape == (1, 3, 3, D)


def test_gradients_reach_every_used_module():
    """Every parameter of the used sensors, the encoders and the fusion gets a gradient; among them the fusion's iRPE
    table and, with a masked s2 date, the learned pad value get non-zero ones."""
    m = AnySat(model_config("nano"), sensors=["aerial", "s2"])
    x = sample_for(["aerial", "s2"])
    x["s2_mask"] = torch.tensor([[True, False, True], [True, True, True]])
    m(x, 20, "patch").sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None, name
    assert m.fusion.attn.rpe.weight.grad.abs().sum() > 0
    assert m.projectors["s2"].pad_value.grad.abs() > 0


def _compiled_by_compile_blocks(monkeypatch, module):
    """Names of the submodules that ``compile_blocks`` hands to ``nn.Module.compile`` (recorded, not compiled)."""
    from anysat_lite.model import compile_blocks

    calls = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: calls.append(self))
    assert compile_blocks(module) is module
    names = {id(m): n for n, m in module.named_modules()}
    return [names[id(m)] for m in calls]


def test_compile_blocks_compiles_blocks_fusion_and_ltae_outside_the_subpatch_encoder(monkeypatch):
    m = AnySat(model_config("nano"), sensors=["aerial", "s2"])
    names = _compiled_by_compile_blocks(monkeypatch, m)
    expected = [f"joint.blocks.{i}" for i in range(m.config.depth)] + ["fusion", "projectors.s2.ltae"]
    assert sorted(names) == sorted(expected)
    assert m.compile_blocks() is m


def test_compile_blocks_on_a_whole_jepa_reaches_target_and_predictor(monkeypatch):
    from anysat_lite.config import get_config
    from anysat_lite.jepa import JEPA

    model = JEPA(get_config("cpu-demo"), sensors=["aerial", "s2"])
    names = _compiled_by_compile_blocks(monkeypatch, model)
    assert len(names) == len(set(names))
    assert {n.split(".")[0] for n in names} == {"encoder", "target", "predictor"}
    assert not any("subpatch_encoder" in n for n in names)
    assert {f"predictor.blocks.{i}" for i in range(len(model.predictor.blocks))} <= set(names)


@pytest.mark.long
def test_compiled_blocks_compute_what_eager_blocks_compute():
    torch.manual_seed(0)
    m = AnySat(model_config("nano"), sensors=["aerial", "s2"]).eval()
    x = sample_for(["aerial", "s2"])
    eager = m(x, 20, "all")
    keys = list(m.state_dict())
    m.compile_blocks()
    assert list(m.state_dict()) == keys  # compiled in place: checkpoints unchanged
    torch.testing.assert_close(m(x, 20, "all"), eager, atol=1e-5, rtol=1e-5)


def test_doy_code_periods_are_the_periods_of_the_code():
    from anysat_lite.model.posenc import doy_code_periods, doy_encoding

    periods = doy_code_periods(16, 367)
    codes = doy_encoding(torch.tensor([[40.0]]), 16, 367, 1)[0, 0]
    for j, p in enumerate(periods):  # shifting a date by pair j's period leaves that pair unchanged
        shifted = doy_encoding(torch.tensor([[40.0 + p]]), 16, 367, 1)[0, 0]
        assert torch.allclose(codes[2 * j : 2 * j + 2], shifted[2 * j : 2 * j + 2], atol=1e-3)
    assert periods == sorted(periods) and len(periods) == 8


def test_cpu_demo_ltae_can_tell_the_seasons_apart_the_official_widths_at_nano_cannot():
    """At D = 64 the official L-TAE numbers give 4-channel date codes (longest period 120 days) and
    GroupNorm groups of 2 channels after the first layer (each pair normalised to about +-1);
    the cpu-demo preset sets ``ltae_heads`` and ``ltae_in_width`` so that neither happens."""
    from anysat_lite.config import get_config
    from anysat_lite.model.posenc import doy_code_periods

    def ltae_of(cfg):
        return AnySat(cfg, sensors=["s2"]).projectors["s2"].ltae

    official, demo = ltae_of(model_config("nano")), ltae_of(get_config("cpu-demo").model)
    for ltae, year_long, group in ((official, False, 2), (demo, True, 8)):
        norm = ltae.input_mlp[1]
        assert norm.num_channels // norm.num_groups == group
        assert (max(doy_code_periods(ltae.d_model // ltae.n_head, ltae.period)) >= 365) is year_long
    assert official.input_mlp[0].out_features == D // 8  # the official width: released weights still load
    assert max(doy_code_periods(768 // 16, 367)) > 365  # base: 16 heads of 48 channels


def test_several_outputs_from_one_pass_equal_the_single_outputs(model):
    x = sample_for(["aerial", "s2"])
    with torch.no_grad():
        both = model(x, 20, output=("tile", "dense", "patch"), output_modality="aerial")
        assert set(both) == {"tile", "dense", "patch"}
        # keeping the aerial sub-patch tokens takes another code path: equal up to float rounding
        assert torch.allclose(both["tile"], model(x, 20), atol=1e-5)
        assert torch.equal(both["dense"], model(x, 20, output="dense", output_modality="aerial"))
        assert torch.allclose(both["patch"], model(x, 20, output="patch"), atol=1e-5)
    for bad in ((), ("tile", "pixels")):
        with pytest.raises(ValueError, match="output must be one of"):
            model(x, 20, output=bad)


@pytest.mark.parametrize(
    "args, kwargs, pattern",
    [
        ((5,), {}, r"^AnySat\(config\): expected a size name .* or a ModelConfig, got 5; e.g. AnySat\('nano'\)$"),
        ((None,), {}, r"AnySat\(config\): .*got None"),
        (("nano",), {"sensors": "s2"}, r"^AnySat\(sensors=...\): expected a list of sensor names, got the string 's2'"),
    ],
)
def test_wrong_constructor_arguments_are_one_line(args, kwargs, pattern):
    from anysat_lite.errors import UserError

    with pytest.raises(UserError, match=pattern):
        AnySat(*args, **kwargs)


@pytest.mark.parametrize(
    "fields, pattern",
    [
        ({"embed_dim": 65}, r"embed_dim: expected a positive multiple of 32 .*, got 65; e.g. ModelConfig\(embed_dim="),
        ({"embed_dim": -64}, r"embed_dim: expected a positive multiple of 32 .*, got -64"),
        ({"embed_dim": "64"}, r"num_heads: expected a divisor of model.embed_dim=64, got 12; e.g. ModelConfig\("),
        ({"embed_dim": 64, "num_heads": 4, "depth": 0}, r"depth: expected an integer >= 1, got 0"),
        ({"dropout": 2.0}, r"dropout: expected null or in \[0, 1\), got 2.0"),
        ({"sensors": ["s3"]}, r"sensors: expected null \(all\) or registered sensor names"),
    ],
)
def test_a_model_config_gets_the_checks_of_model_config(fields, pattern):
    """``AnySat(ModelConfig(...))`` used to build (or fail with RuntimeError, TypeError...) whatever the fields."""
    from anysat_lite.config import ModelConfig
    from anysat_lite.errors import UserError

    with pytest.raises(UserError, match=r"^AnySat\(ModelConfig\(\.\.\.\)\): " + pattern):
        AnySat(ModelConfig(**fields))


def test_a_model_config_is_built_as_model_config_reads_it():
    from anysat_lite.config import ModelConfig

    model = AnySat(ModelConfig(embed_dim=64.0, depth=2, num_heads=4), sensors=["s2"])  # 64.0: a whole number
    assert model.config == model_config("nano", sensors=None) and model.embed_dim == 64


@pytest.mark.parametrize(
    "args, kwargs, pattern",
    [
        (("huge",), {}, r"^AnySat\('huge'\): unknown model size, expected one of nano, tiny, small, base or a "),
        (("Nano",), {}, r"did you mean 'nano'\? e.g. AnySat\('nano'\)$"),
        (("nano",), {"sensors": [None]}, r"^sensor None: expected a sensor name or a Sensor, got NoneType; give one "),
        (("nano",), {"sensors": [3]}, r"^sensor 3: expected a sensor name or a Sensor, got int"),
        (("nano",), {"sensors": 3}, r"^AnySat\(sensors=...\): expected a list of sensor names, got 3"),
        (("nano",), {"sensors": ["s3"]}, r"^unknown sensor 's3'; did you mean 's2'\? registered sensors: "),
    ],
)
def test_unknown_sizes_and_sensors_are_one_line_errors(args, kwargs, pattern):
    """These used to raise a bare KeyError (unknown size) or an AttributeError (a sensor that is not a name)."""
    from anysat_lite.errors import UserError

    with pytest.raises(UserError, match=pattern):
        AnySat(*args, **kwargs)


@pytest.mark.parametrize(
    "output, pattern",
    [
        (None, r"^output must be one of tile, patch, all, dense or a tuple of them, got None; e.g. output='tile'"),
        ("tiles", r"got 'tiles'; did you mean 'tile'\? e.g. output='tile' or output=\('tile', 'patch'\)$"),
        (3, r"got 3; e.g. output='tile'"),
    ],
)
def test_wrong_outputs_are_user_errors(model, output, pattern):
    from anysat_lite.errors import UserError

    with pytest.raises(UserError, match=pattern):
        model(sample_for(["s2"]), 20, output=output)


def test_dense_output_modality_is_checked_against_the_model_and_the_sample(model):
    """An output_modality the model has no projector for used to raise a bare KeyError; a sample without a
    sensor with sub-patches got ``output_modality None is not in the sample``."""
    x = sample_for(["aerial", "s2"])
    with pytest.raises(SampleError, match=r"^output_modality 'foo': expected one of the sample's sensors with "):
        model({"foo": torch.rand(2, 4, 300, 300)}, 20, output="dense", output_modality="foo")
    small = AnySat(model_config("nano"), sensors=["s2", "modis"])
    with pytest.raises(
        SampleError,
        match=r"^output_modality 'aerial': expected one of the sample's sensors with sub-patches \(s2\), got a sensor "
        r"this model has no projector for \(the model has s2, modis\); call model.add_sensor\(...\) first",
    ):
        small(x, 20, output="dense", output_modality="aerial")
    with pytest.raises(SampleError, match=r"^output_modality \['s2'\]: .*got a list"):
        model(x, 20, output="dense", output_modality=["s2"])
    with pytest.raises(
        SampleError,
        match=r"^output='dense' needs a sensor with sub-patches .*, got a sample of modis \(one token per tile\); "
        r"add one .* or ask for output='tile'$",
    ):
        model(sample_for(["modis"]), 20, output="dense")
    with torch.no_grad():  # the official default output_modality, "", picks the first sensor with sub-patches
        assert torch.equal(model(x, 20, "dense", output_modality=""), model(x, 20, "dense", output_modality="aerial"))


def test_values_too_large_for_float32_are_refused(model):
    """s2 * 1e30 is finite, but gave NaN/inf embeddings without an error."""
    x = sample_for(["s2"])
    x["s2"] = x["s2"] * 1e30
    with pytest.raises(
        SampleError, match=r"^s2: values up to \d\.\d+e\+30 in magnitude, expected at most 1e\+15: larger ones overflow"
    ):
        model(x, 20)
    model.check_values = False  # the check reads the data: off with the other value checks
    try:
        with torch.no_grad():
            assert not torch.isfinite(model(x, 20)).all()  # what the check prevents
    finally:
        model.check_values = True
    x["s2"] = x["s2"] * 1e-16  # values up to a few 1e14: finite features
    with torch.no_grad():
        assert torch.isfinite(model(x, 20)).all()
