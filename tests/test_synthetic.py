"""The embedded procedural world: deterministic, label-consistent, native GSDs, cached, not trivial."""

import numpy as np
import pytest

from anysat_lite.data.contract import validate_sample
from anysat_lite.data.synthetic import CLASSES, WorldSpec, generate_world, load_world


@pytest.fixture(scope="module")
def world():
    return generate_world(WorldSpec(n_tiles=48, sensors=("aerial", "spot", "s2", "s1-asc", "s1"), seed=3))


def test_deterministic_by_seed(world):
    again = generate_world(WorldSpec(n_tiles=48, sensors=("aerial", "spot", "s2", "s1-asc", "s1"), seed=3))
    for k in world:
        np.testing.assert_array_equal(world[k], again[k])
    other = generate_world(WorldSpec(n_tiles=48, sensors=("aerial", "spot", "s2", "s1-asc", "s1"), seed=4))
    assert not np.array_equal(world["s2"], other["s2"])


def test_native_gsd_shapes_and_contract(world):
    assert world["aerial"].shape == (48, 4, 300, 300) and world["aerial"].dtype == np.uint8  # 0.2 m
    assert world["spot"].shape == (48, 3, 60, 60)  # 1 m
    assert world["s2"].shape == (48, 12, 10, 6, 6) and world["s1-asc"].shape == (48, 12, 2, 6, 6)
    assert world["s1"].shape == (48, 12, 3, 6, 6)
    np.testing.assert_allclose(world["s1"][:, :, 2], world["s1"][:, :, 0] / world["s1"][:, :, 1], rtol=1e-5)
    import torch

    x = {k: torch.as_tensor(np.asarray(world[k][:2])).float() for k in ("aerial", "spot", "s2", "s1-asc")}
    x.update({f"{k}_dates": torch.as_tensor(world[f"{k}_dates"][:2]) for k in ("s2", "s1-asc")})
    assert validate_sample(x).extent_m == (60.0, 60.0)


def test_labels_are_consistent_with_the_map(world):
    seg = world["segmentation"]
    assert seg.shape == (48, 30, 30) and seg.max() < len(CLASSES)
    for i in range(48):
        counts = np.bincount(seg[i].ravel(), minlength=len(CLASSES)) / seg[i].size
        assert world["label"][i] == counts.argmax()
        np.testing.assert_array_equal(world["multilabel"][i], counts >= 0.10)
    assert set(np.unique(world["split"])) == {0, 1, 2}


def test_dates_sorted_and_clouds_flagged(world):
    assert (np.diff(world["s2_dates"], axis=1) >= 0).all() and world["s2_dates"].min() >= 1
    assert 0.5 < world["s2_mask"].mean() < 1.0


def test_cache_round_trip(tmp_path, monkeypatch):
    """The cache holds the generated world, and a second load reads it instead of generating again."""
    from anysat_lite.data import synthetic

    spec = WorldSpec(n_tiles=8, seed=1)
    ref = generate_world(spec)
    a = load_world(spec, tmp_path)
    files = sorted(p.name for p in (tmp_path / "synthetic" / f"world-{spec.key()}").iterdir())
    assert "spec.json" in files and "s2.npy" in files
    assert a.keys() == ref.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], ref[k])
    monkeypatch.setattr(synthetic, "generate_world", lambda s: pytest.fail("the cache was not used"))
    b = load_world(spec, tmp_path)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert spec.key() != WorldSpec(n_tiles=8, seed=2).key()


@pytest.mark.slow
def test_raw_pixel_statistics_are_informative_but_do_not_solve_the_task():
    w = generate_world(WorldSpec(n_tiles=192, seed=0))
    feats = []
    for s in ("s2", "s1-asc", "aerial"):
        x = w[s].astype(np.float32)
        band = 2 if x.ndim == 5 else 1
        x = np.moveaxis(x, band, -1).reshape(len(x), -1, x.shape[band])
        feats += [x.mean(1), x.std(1)]
    f = np.concatenate(feats, 1)
    f = (f - f.mean(0)) / (f.std(0) + 1e-6)
    tr, te = w["split"] == 0, w["split"] != 0
    y = np.eye(len(CLASSES))[w["label"]]
    A = np.c_[f, np.ones(len(f))]
    W = np.linalg.lstsq(A[tr], y[tr], rcond=None)[0]
    acc = ((A[te] @ W).argmax(1) == w["label"][te]).mean()
    assert 0.3 < acc < 0.95, acc


def test_spec_validation():
    from anysat_lite.errors import UserError

    with pytest.raises(ValueError, match="cannot render"):
        WorldSpec(sensors=("l7",))
    with pytest.raises(ValueError, match="multiple of 10"):
        WorldSpec(tile_m=55)
    for kw, pattern in (  # plain ValueErrors (n_tiles: not which one) or a TypeError ('8') before
        ({"n_tiles": 0}, r"^WorldSpec: n_tiles=0: expected a whole number >= 1; e.g. n_tiles=8$"),
        ({"n_tiles": "8"}, r"^WorldSpec: n_tiles='8': expected a whole number >= 1"),
        ({"n_dates": 2.5}, r"^WorldSpec: n_dates=2.5: expected a whole number >= 1"),
        ({"tile_m": 65}, r"^WorldSpec: tile_m=65: expected a positive multiple of 10 m; e.g. tile_m=60$"),
        ({"sensors": ("S2",)}, r"^synthetic world cannot render \['S2'\]; did you mean 's2'\? supported: aerial"),
        (
            {"sensors": "s2"},
            r"^WorldSpec: sensors='s2': expected a list of one or more sensor names; e.g. sensors=\('s2',\)$",
        ),
        ({"sensors": ()}, r"^WorldSpec: sensors=\(\): expected a list of one or more sensor names"),
    ):
        with pytest.raises(UserError, match=pattern):
            WorldSpec(**kw)


def test_a_damaged_cache_is_generated_again(tmp_path, monkeypatch):
    """A cached file cut short (an interrupted copy, a full disk) is derived data: the world is generated again,
    with a warning naming the file; when the damaged folder cannot be removed, one line says to delete it."""
    from anysat_lite.data import synthetic
    from anysat_lite.errors import UserError

    spec = WorldSpec(n_tiles=8, seed=1)
    ref = load_world(spec, tmp_path, mmap=False)
    folder = tmp_path / "synthetic" / f"world-{spec.key()}"
    s2 = folder / "s2.npy"
    s2.write_bytes(s2.read_bytes()[:90])
    with pytest.warns(UserWarning, match=r"s2.npy is damaged \(EOF: reading array header.*\); generating the world"):
        again = load_world(spec, tmp_path)
    assert again.keys() == ref.keys()
    for k in ref:
        np.testing.assert_array_equal(again[k], ref[k])
    assert sorted(p.name for p in (tmp_path / "synthetic").iterdir()) == [folder.name]  # nothing left aside

    s2.write_bytes(s2.read_bytes()[:-100])
    monkeypatch.setattr(synthetic.os, "rename", lambda *a: (_ for _ in ()).throw(PermissionError(13, "denied")))
    with pytest.warns(UserWarning, match="s2.npy is damaged"), pytest.raises(UserError) as err:
        load_world(spec, tmp_path)
    assert (
        f"s2.npy is damaged (mmap length is greater than file size), expected a .npy array; delete the folder {folder}"
        in str(err.value)
    )
