"""The input pipeline: padding of variable-length series, crops, batch plans, datasets found under data.root."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import ROOT

from anysat_lite.config import DataConfig, DatasetSpec, get_config
from anysat_lite.data.datasets import (
    BatchPlanner,
    DatasetBundle,
    build_dataset,
    collate,
    effective_batch_size,
    pad_series,
)
from anysat_lite.data.normalization import NormStats, per_tile_norm_stats, read_norm_files
from anysat_lite.data.pipeline import StepBatches, crop_item, read_item
from anysat_lite.data.registry import dataset_root
from anysat_lite.errors import MissingFileError, UserError
from anysat_lite.jepa import build_mask_sampler

FIXTURES = ROOT / "tests" / "data"


def _series(T, fill):
    return {
        "s2": torch.full((T, 10, 2, 2), float(fill)),
        "s2_dates": torch.arange(1, T + 1) * 10,
        "aerial": torch.zeros(4, 100, 100),
        "label": torch.tensor(fill),
    }


def test_collate_pads_series_of_different_lengths_and_masks_the_padding():
    a, b = _series(3, 1), _series(5, 2)
    b["s2_dates"] = torch.tensor([400, 401, 402, 403, 404])  # any whole days
    batch = collate([a, b])
    assert batch["s2"].shape == (2, 5, 10, 2, 2) and batch["aerial"].shape == (2, 4, 100, 100)
    assert batch["s2_mask"].tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert batch["s2_dates"][0].tolist() == [10, 20, 30, 0, 0]  # padded dates are 0, as the official collate
    assert batch["s2"][0, 3:].abs().sum() == 0 and (batch["s2"][1] == 2).all()
    assert "s2_mask" not in collate([a, _series(3, 4)])  # equal lengths: stacked as they are


def test_collate_keeps_an_items_own_mask_and_names_mismatched_shapes():
    a, b = _series(2, 1), _series(4, 2)
    a["s2_mask"], b["s2_mask"] = torch.tensor([True, False]), torch.tensor([True, True, False, True])
    assert collate([a, b])["s2_mask"].tolist() == [[True, False, False, False], [True, True, False, True]]
    c = _series(2, 3)
    c["aerial"] = torch.zeros(4, 50, 50)
    with pytest.raises(
        UserError,
        match=r"^collate: 'aerial' has shapes \[4, 100, 100\], \[4, 50, 50\] in different items, expected one "
        r"shape; give every tile the same size",
    ):
        collate([_series(2, 1), c])
    d = _series(2, 4)
    del d["aerial"]
    with pytest.raises(UserError, match=r"^collate: items 0 and 1 hold different keys \(\['aerial'\] only in item 0\)"):
        collate([_series(2, 1), d])  # a plain ValueError without a fix before
    with pytest.raises(UserError, match=r"^collate: items 0 and 2 hold different keys \(\['aerial'\] only in item 2\)"):
        collate([d, d, _series(2, 1)])


def test_collate_refuses_no_item_and_a_dict_in_one_line():
    with pytest.raises(UserError, match=r"^collate: expected a non-empty list of dataset items \(dicts\), got \[\]; e"):
        collate([])  # an IndexError before
    with pytest.raises(UserError, match=r"got one dict \(an item or a batch\); e.g. collate\(\[ds\[0\], ds\[1\]\]\)"):
        collate(_series(2, 1))  # KeyError: 0 before


def test_pad_series_to_a_longer_global_length():
    batch = collate([_series(3, 1), _series(3, 2)])
    out = pad_series(batch, {"s2": 5})
    assert out["s2"].shape == (2, 5, 10, 2, 2) and out["s2_mask"].tolist() == [[True] * 3 + [False] * 2] * 2
    assert pad_series(batch, {"s2": 3}) == batch


def test_crop_item_keeps_the_sensors_aligned():
    """A 60 m tile (aerial 300 px at 0.2 m, s2 6 px at 10 m) whose pixels hold the index of their 10 m cell."""
    cell = torch.arange(6)[:, None] * 10 + torch.arange(6)  # [6, 6] 10 m cells
    aerial = cell.repeat_interleave(50, 0).repeat_interleave(50, 1).float()  # [300, 300]
    item = {
        "aerial": aerial.expand(4, -1, -1).clone(),
        "s2": cell.float().expand(2, 10, -1, -1).clone(),
        "s2_dates": torch.tensor([1, 2]),
        "segmentation": cell.clone(),
    }
    corners = set()
    for seed in range(8):
        out = crop_item(item, 40, np.random.default_rng(seed))
        assert out["aerial"].shape == (4, 200, 200) and out["s2"].shape == (2, 10, 4, 4)
        assert out["segmentation"].shape == (4, 4) and torch.equal(out["s2_dates"], item["s2_dates"])
        first, last = out["s2"][0, 0, 0, 0], out["s2"][0, 0, 3, 3]
        assert out["aerial"][0, 0, 0] == first == out["segmentation"][0, 0]  # the same ground, every sensor
        assert out["aerial"][0, 199, 199] == last == out["segmentation"][3, 3] == first + 33
        corners.add(int(first))
    assert corners <= {0, 1, 2, 10, 11, 12, 20, 21, 22} and len(corners) > 2  # offsets in whole 10 m cells
    assert crop_item(item, 40)["s2"][0, 0, 0, 0] == 11  # centred: (60 - 40) / 2 = 10 m
    with pytest.raises(ValueError, match=r"tile_m=80 m is larger than the 60 x 60 m tiles"):
        crop_item(item, 80)


class _Split(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n


def _bundle(name, n, batch, weight=1.0, patch_sizes=(10,)):
    return DatasetBundle(
        name,
        _Split(n),
        _Split(max(n // 4, 1)),
        None,
        ["s2"],
        list(patch_sizes),
        (),
        NormStats(),
        weight=weight,
        batch_size=batch,
    )


def test_effective_batch_size():
    assert effective_batch_size(128, 1000) == 128
    assert effective_batch_size(128, 4) == 4  # never more than the split holds
    assert effective_batch_size(7, 100, world=2) == 6  # a multiple of the processes
    assert effective_batch_size(1, 100, world=2) == 2  # at least one tile per process


def test_official_mixing_is_one_pass_over_every_dataset_per_epoch():
    bundles = [_bundle("a", 10, 3, weight=1.0, patch_sizes=(10, 20)), _bundle("b", 8, 4, weight=4.0)]
    planner = BatchPlanner(bundles, 16, seed=0, mixing="official")
    assert planner.epoch_steps == 3 + 2  # full batches only (official drop_last)
    for epoch in (0, 1):
        plans = [planner.plan(5 * epoch + k) for k in range(5)]
        assert all(p.epoch == epoch for p in plans)
        for d, n_batches in ((0, 3), (1, 2)):
            tiles = [i for p in plans if p.dataset == d for i in p.indices]
            assert len(tiles) == n_batches * bundles[d].batch_size and len(set(tiles)) == len(tiles)  # no repeat
    assert {planner.plan(k).patch_size for k in range(50) if planner.plan(k).dataset == 0} == {10, 20}
    again = BatchPlanner(bundles, 16, seed=0, mixing="official")
    assert [again.plan(k) for k in range(12)] == [planner.plan(k) for k in range(12)]  # a function of (seed, step)
    assert BatchPlanner(bundles, 16, seed=0, mixing="official", epoch_steps=2).plan(2).epoch == 1
    # weights decide which dataset goes first: b (weight 4) opens most epochs
    firsts = [planner.plan(5 * e).dataset for e in range(200)]
    assert 0.7 < firsts.count(1) / 200 < 0.9
    empty = BatchPlanner([_bundle("a", 0, 3)], 16, seed=0, mixing="official")  # no tile: no batch, no epoch
    with pytest.raises(ValueError, match=r"no dataset has a full batch on its train split: sizes \[0\]"):
        empty.plan(0)


def test_weighted_mixing_plans_are_unchanged():
    """The weighted planner draws as before this pipeline: (dataset, patch size, tiles) from (seed, step)."""
    bundles = [_bundle("a", 100, None, patch_sizes=(10, 20)), _bundle("b", 50, None, weight=3.0)]
    planner = BatchPlanner(bundles, 8, seed=0)
    rng = np.random.default_rng([0, 7])
    d = int(rng.choice(2, p=[0.25, 0.75]))
    P = int(rng.choice(bundles[d].patch_sizes))
    idx = tuple(int(i) for i in rng.choice(len(bundles[d].train), size=8, replace=False))
    assert planner.plan(7) == (planner.plan(7)) and (
        planner.plan(7).dataset,
        planner.plan(7).patch_size,
        planner.plan(7).indices,
    ) == (d, P, idx)


def test_datasets_are_found_under_data_root_by_official_or_fixture_folder(tmp_path):
    assert dataset_root("pastis-hd", FIXTURES) == FIXTURES / "pastis_hd"
    (tmp_path / "PASTIS-R").mkdir()
    assert dataset_root("pastis-hd", tmp_path) == tmp_path / "PASTIS-R"  # the official folder first
    assert dataset_root("treesatai", FIXTURES) == FIXTURES / "treesatai_ts"  # the old name
    with pytest.raises(MissingFileError, match=r"dataset 'flair': none of FLAIR, flair found in data.root="):
        dataset_root("flair", tmp_path)


def test_build_dataset_from_the_registry_with_official_statistics():
    data = DataConfig(root=str(FIXTURES))
    b = build_dataset(DatasetSpec("pastis-hd", patch_sizes=[40], max_dates=3, norm="official"), data)
    assert b.name == "pastis-hd" and b.sensors == ["spot", "s2", "s1"] and b.tile_m == 80.0
    assert len(b.train) == 4 and len(b.val) == 1 and len(b.test) == 1
    assert b.train.max_dates == 3 and b.val.max_dates is None  # the cap is for the train split only
    official = read_norm_files(FIXTURES / "pastis_hd", ["spot", "s2", "s1"], folds=(1, 2, 3))
    assert b.stats.stats == official.stats  # per-fold files averaged over folds 1-3
    # PLANTED ships NORM_s2 only: the other sensors are computed the official way (per-tile means)
    p = build_dataset(DatasetSpec("planted", patch_sizes=[30], norm="official"), data)
    s2 = json.loads((FIXTURES / "planted" / "NORM_s2_patch.json").read_text())
    assert p.stats.stats["s2"] == (s2["mean"], s2["std"])
    assert p.stats.stats["l7"] == per_tile_norm_stats(p.train, ["l7"]).stats["l7"]


def test_build_dataset_crop_and_reader_options():
    data = DataConfig(root=str(FIXTURES))
    b = build_dataset(DatasetSpec("treesatai", patch_sizes=[10], tile_m=30, options={"crop": "center"}), data)
    assert b.name == "treesatai-ts" and b.tile_m == 30 and b.crop_m == 30 and b.train.crop == "center"
    planner = BatchPlanner([b], 4, seed=0)
    sb = StepBatches([b], planner, build_mask_sampler(get_config("cpu-demo").jepa), 0, 1)[0]
    x = sb["batch"]
    assert x["aerial"].shape == (4, 4, 150, 150) and x["s2"].shape[-2:] == (3, 3) and sb["masks"].grid == (3, 3)
    lengths = [len(b.train[i]["s2"]) for i in planner.plan(0).indices]  # TreeSatAI series differ in length
    assert len(set(lengths)) > 1 and x["s2_mask"].sum(1).tolist() == lengths and x["s2"].shape[1] == max(lengths)


def test_reader_options_are_checked_against_the_reader():
    data = DataConfig(root=str(FIXTURES))
    with pytest.raises(UserError, match=r"unknown option\(s\) bogus; TreeSatAITSDataset takes crop, .*s1_from_h5"):
        build_dataset(DatasetSpec("treesatai", options={"bogus": 1}), data)
    with pytest.raises(UserError, match=r"options.split \(treesatai\): set by the config itself.*probe.split"):
        build_dataset(DatasetSpec("treesatai", options={"split": "test"}), data)


@pytest.mark.parametrize(
    "options, message",
    [  # each went through to the reader: a traceback, a wrong error further on, or a truthy 3 taken as true
        ({"threshold": "x"}, r"options.threshold \(treesatai\): expected a number, got 'x'; correct it or remove"),
        ({"s1_from_h5": 3}, r"options.s1_from_h5 \(treesatai\): expected a boolean \(true/false\), got 3"),
        (
            {"threshold": 2},
            r"^TreeSatAITSDataset: threshold=2.0 \(config: data.datasets options.threshold\): ",
        ),
        ({"crop": "foo"}, r"crop='foo' .*: expected random or center; correct it, or leave it out for the default$"),
        ({"temporal_dropout": 1}, r"temporal_dropout=1.0 .*: expected a share in \[0, 1\)"),
    ],
)
def test_reader_option_values_are_checked(options, message):
    with pytest.raises(UserError, match=message):
        build_dataset(DatasetSpec("treesatai", options=options), DataConfig(root=str(FIXTURES)))


def test_reader_options_a_config_cannot_give_are_refused():
    data = DataConfig(root=str(FIXTURES))
    with pytest.raises(
        UserError,
        match=r"fill_invalid \(planted\): PlantedDataset takes a NormStats object there, .*got 3; remove",
    ):
        build_dataset(DatasetSpec("planted", options={"fill_invalid": 3}), data)
    with pytest.raises(UserError, match=r"pixel_masks \(planted\): expected false or left out, got true \(true"):
        build_dataset(DatasetSpec("planted", options={"pixel_masks": True}), data)
    with pytest.raises(UserError, match=r"unknown option\(s\) pixel_masks; TreeSatAITSDataset takes"):
        build_dataset(DatasetSpec("treesatai", options={"pixel_masks": True}), data)
    with pytest.raises(UserError, match=r"options.folds \(pastis-hd\): expected a list of integers or null, got 3"):
        build_dataset(DatasetSpec("pastis-hd", options={"folds": 3}), data)
    with pytest.raises(UserError, match=r"folds=\[9\] .*expected fold numbers among \[1, 2, 3, 4, 5\] \(official: "):
        build_dataset(DatasetSpec("pastis-hd", options={"folds": [9]}), data)
    b = build_dataset(DatasetSpec("pastis-hd", options={"folds": [5.0]}), data)  # 5.0 read as 5
    assert b.train.folds == (5,)


def test_reader_options_that_are_right_pass_and_types_the_check_does_not_know_are_left_to_the_reader():
    from typing import Literal

    from anysat_lite.data.datasets import _check_options
    from anysat_lite.data.flair import FLAIRDataset
    from anysat_lite.data.planted import PlantedDataset
    from anysat_lite.data.rasters import RastersDataset

    assert _check_options("rasters", RastersDataset, {"extent_m": [100, 200]}) == {"extent_m": (100.0, 200.0)}
    assert _check_options("rasters", RastersDataset, {"extent_m": 500}) == {"extent_m": 500.0}
    assert _check_options("flair", FLAIRDataset, {"crop": None}) == {"crop": None}
    assert _check_options("planted", PlantedDataset, {"pixel_masks": False}) == {"pixel_masks": False}

    class Mine:  # a reader of the user's own: a Literal, a mapping, a tuple of any length
        def __init__(self, root, split="train", mode: Literal["a", "b"] = "a", table: dict | None = None, ids=()):
            pass

    mine = {"mode": "b", "table": {"x": 1.5}, "ids": [3, 4]}
    assert _check_options("mine", Mine, mine) == mine
    with pytest.raises(UserError, match=r"^config data.datasets options.mode \(mine\): expected one of a, b, got 'c'"):
        _check_options("mine", Mine, {"mode": "c"})

    class Unresolved:  # an annotation that names a type only a type checker imports
        def __init__(self, root, split="train", values: "ArrayLike" = None):  # noqa: F821
            pass

    assert _check_options("unresolved", Unresolved, {"values": [1, 2]}) == {"values": [1, 2]}
    assert _check_options("unresolved", Unresolved, {}) == {}


@pytest.mark.parametrize(
    "stats, message",
    [
        ({"mean": [1, 2], "std": [1]}, r"got 2 mean\(s\) and 1 std\(s\)"),
        ({"mean": [1, 2], "std": [1, 0]}, r"got mean 2 and std 0 for band 1"),  # would divide by zero
        ({"mean": ["a"], "std": [1]}, r"got values that are not numbers"),
        ({"mean": [1, float("nan")], "std": [1, 1]}, r"got mean nan and std 1 for band 1"),
        ({"mean": 5, "std": 1}, r"got a mean of shape \[\] and a std of shape \[\], not two lists of numbers"),
    ],
)
def test_normalisation_statistics_are_checked_when_read(stats, message):
    with pytest.raises(UserError, match=message) as error:
        NormStats.from_dict({"s2": stats})
    assert str(error.value).startswith("normalisation statistics of s2: expected one mean and one std > 0 per band, ")


def test_statistics_computed_over_a_constant_band_are_refused_with_the_band():
    class Tiles:
        sensors = ("aerial",)

        def __len__(self):
            return 3

        def __getitem__(self, i):
            x = torch.rand(4, 10, 10, generator=torch.Generator().manual_seed(i))
            x[2] = 7.0  # e.g. an alpha band
            return {"aerial": x}

    with pytest.raises(
        UserError, match=r"^aerial statistics over the tiles of Tiles \(3\): .*got mean 7 and std 0 for band 2 "
    ):
        per_tile_norm_stats(Tiles())


def test_statistics_leave_out_a_tile_without_a_valid_date():
    class Series:
        sensors = ("s2",)

        def __len__(self):
            return 2

        def __getitem__(self, i):  # tile 1: every date flagged invalid, and its values far off
            x = torch.rand(3, 10, 4, 4, generator=torch.Generator().manual_seed(i)) + 1000 * i
            return {"s2": x, "s2_mask": torch.full((3,), i == 0)}

    stats = per_tile_norm_stats(Series())
    first = Series()[0]["s2"].double().transpose(0, 1).flatten(1)
    assert np.allclose(stats.stats["s2"][0], first.mean(1).numpy()) and np.isfinite(stats.stats["s2"][1]).all()
    with pytest.raises(UserError, match=r"^s2 statistics over the tiles of Series: no tile has a valid date of s2 "):
        per_tile_norm_stats(Series(), indices=[1])


def test_normalising_a_sample_with_other_bands_names_both_counts():
    stats = NormStats.from_dict({"s2": {"mean": [0.0] * 10, "std": [2.0] * 10}})
    with pytest.raises(
        UserError,
        match=r"^s2: 12 bands on axis 2 of \[2, 3, 12, 6, 6\] \(read as batched, \[B, \.\.\.\]\), expected 10, ",
    ):
        stats.apply({"s2": torch.zeros(2, 3, 12, 6, 6)})
    assert torch.equal(stats.apply({"s2": torch.ones(2, 3, 10, 6, 6)})["s2"], torch.full((2, 3, 10, 6, 6), 0.5))


def test_statistics_refuse_the_wrong_batch_reading_one_sample_and_no_sensor():
    from anysat_lite.data.contract import random_sample

    x = random_sample(["aerial", "s2"], 20, batch=1, n_dates=6, generator=torch.Generator().manual_seed(0))
    # batched=False read [1, 4, H, W] as 1 band and [1, 6, 10, H, W] as 6 "bands" (the dates) before
    with pytest.raises(
        UserError,
        match=r"^NormStats.from_samples: aerial of shape \[1, 4, 100, 100\]: expected \[C, H, W\] with its 4 bands "
        r"\(NIR, G, B, R\) on axis 0 \(batched=False\), got a 4-D tensor with 1 on axis 0; pass batched=True ",
    ):
        NormStats.from_samples([x])
    with pytest.raises(UserError, match=r"^NormStats.from_samples: s2 of shape \[1, 6, 10, 2, 2\]: .*batched=True"):
        NormStats.from_samples([{"s2": x["s2"], "s2_dates": x["s2_dates"]}])
    with pytest.raises(UserError, match=r"^NormStats.from_samples: expected a list of samples, got one sample"):
        NormStats.from_samples(x, batched=True)  # an AttributeError before
    for samples, got in (([], "no samples"), ([{"S2": x["s2"]}], "1 sample\\(s\\) without any")):
        with pytest.raises(
            UserError, match=rf"^NormStats.from_samples: expected samples holding sensor tensors, got {got}"
        ):
            NormStats.from_samples(samples, batched=True)  # empty statistics before
    stats = NormStats.from_samples([x], batched=True)
    assert [len(m) for m, _ in stats.stats.values()] == [4, 10]
    assert NormStats.from_samples([{k: v[0] for k, v in x.items()}]).stats == stats.stats  # one item, no batch axis


def test_normalising_a_sensor_the_statistics_lack_is_refused():
    from anysat_lite.data.contract import random_sample

    x = random_sample(["aerial", "s2"], 20, batch=1, n_dates=2, generator=torch.Generator().manual_seed(0))
    s2_only = NormStats.from_samples([{"s2": x["s2"]}], batched=True)
    with pytest.raises(
        UserError,
        match=r"^aerial: no normalisation statistics for it \(expected statistics for every sensor of the sample, "
        r"these have s2\), it would stay raw; compute statistics that include it: ",
    ):
        s2_only.apply(x)  # aerial went through raw before
    assert set(s2_only.apply({"s2": x["s2"], "s2_dates": x["s2_dates"], "label": 3})) == {"s2", "s2_dates", "label"}


def test_a_tile_that_cannot_be_read_names_dataset_split_and_item():
    class Broken:
        def __getitem__(self, i):
            raise OSError("tile.tif: truncated file")

    bundle = SimpleNamespace(name="mine", train=Broken(), crop_m=None, stats=None)
    with pytest.raises(UserError, match=r"^dataset mine, train split, item 3: cannot be read \(tile.tif: truncated"):
        read_item(bundle, "train", 3, epoch=0, seed=0)


def test_a_world_of_one_date_keeps_that_date_clear(tmp_path):
    """Every tile of the embedded world keeps a clear Sentinel-2 date, so data.n_dates=1 trains."""
    cfg = get_config("cpu-demo", ["data.n_dates=1", "data.n_tiles=60", f"data.cache_dir={tmp_path}"])
    world = build_dataset(cfg.data.datasets[0], cfg.data)
    assert all(bool(world.train[i]["s2_mask"].all()) for i in range(len(world.train)))


def test_a_cache_folder_that_cannot_be_one_is_named(tmp_path):
    (tmp_path / "afile").write_text("mine")
    cfg = get_config("cpu-demo", [f"data.cache_dir={tmp_path / 'afile'}"])
    with pytest.raises(UserError, match=r"^data.cache_dir .*afile: expected a folder, got a file"):
        build_dataset(cfg.data.datasets[0], cfg.data)
    assert (tmp_path / "afile").read_text() == "mine"
