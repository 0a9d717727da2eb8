"""The task presets of the paper's evaluation: their settings, and one short epoch of each on its fixture."""

import json
import math
from pathlib import Path

import pytest
import torch

from anysat_lite.config import model_config
from anysat_lite.data.registry import get_dataset
from anysat_lite.errors import UserError
from anysat_lite.model import AnySat
from anysat_lite.model.official import to_official_state_dict
from anysat_lite.model.tokenizer import subpatch_layout
from anysat_lite.probe.protocol import ROLES, run_task
from anysat_lite.probe.tasks import TASKS, get_task, task_names
from anysat_lite.sensors import SENSORS

DATA = Path(__file__).parent / "data"
FIXTURES = {
    "treesatai-ts": DATA / "treesatai_ts",
    "pastis-hd": DATA / "pastis_hd",
    "flair": DATA / "flair",
    "planted": DATA / "planted",
}
# The values read off the official repository's results figure.
PAPER = {
    "treesatai-ts-ft": 75.1,
    "treesatai-ts-lp": 72.6,
    "pastis-hd-cls-ft": 72.9,
    "pastis-hd-cls-lp": 65.3,
    "planted-ft": 61.6,
    "planted-lp": 61.2,
    "pastis-hd-seg-ft": 66.5,
    "pastis-hd-seg-lp": 66.5,
    "flair-seg-ft": 55.6,
    "flair-seg-lp": 55.6,
}


@pytest.fixture(scope="module")
def tiny_official(tmp_path_factory):
    """A random-weight checkpoint in the official format (AnySat.pth layout) at width 64."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("official") / "AnySat-d64.pth"
    torch.save({"state_dict": to_official_state_dict(AnySat(model_config("nano")))}, path)
    return path


def test_every_paper_task_has_both_protocols_and_the_paper_value():
    assert set(task_names()) == set(PAPER)
    for name, value in PAPER.items():
        t = get_task(name)
        assert t.paper.value == value, name
        assert t.protocol == ("linear-probe" if name.endswith("-lp") else "fine-tune")
        assert t.frozen == name.endswith("-lp")
        assert "results.png" in t.paper.source


def test_presets_match_the_official_configs():
    # patch size = official encoder scale x 10 m; metric, loss and head per task (configs/exp/*_AnySat_FT*.yaml)
    expected = {
        "treesatai-ts": (10, "f1-weighted", "bce", "tile", 15),
        "pastis-hd-cls": (40, "f1-macro", "bce", "tile", 18),
        "pastis-hd-seg": (40, "miou", "ce-seg", "dense", 20),
        "flair-seg": (10, "miou", "ce-seg", "dense", 13),
        "planted": (30, "f1-macro", "ce", "tile", 40),
    }
    for stem, (P, metric, loss, head, K) in expected.items():
        for suffix in ("lp", "ft"):
            t = get_task(f"{stem}-{suffix}")
            assert (t.patch_size, t.metric, t.loss, t.head, t.num_classes) == (P, metric, loss, head, K), t.name
            assert (t.max_epochs, t.min_epochs, t.patience, t.seed) == (200, 50, 10, 32)
    assert get_task("treesatai-ts-ft").sensors == ("aerial", "s2", "s1-asc")
    assert get_task("pastis-hd-seg-lp").sensors == ("s2",)
    assert get_task("pastis-hd-seg-ft").sensors == ("spot", "s2", "s1")
    assert get_task("planted-ft").sensors == ("s2", "s1", "l7", "alos", "modis")
    assert get_task("flair-seg-ft").splits["val"]["split"] == "test"  # official FLAIR validates on test
    assert get_task("pastis-hd-seg-ft").ignore_classes == (19,) and get_task("flair-seg-ft").ignore_classes == (12,)
    assert [get_task(n).batch_size for n in ("treesatai-ts-ft", "pastis-hd-cls-ft", "flair-seg-ft", "planted-ft")] == [
        256,
        4,
        32,
        64,
    ]
    assert get_task("flair-seg-ft").weight_decay == 1e-2 and get_task("planted-ft").weight_decay == 1e-4


@pytest.mark.parametrize("name", list(TASKS))
def test_preset_is_consistent_with_its_reader_and_the_sensors(name):
    t = get_task(name)
    reader = get_dataset(t.dataset)
    assert set(t.sensors) <= set(reader.sensors)
    assert t.target in reader.tasks
    assert set(t.splits) == set(ROLES)
    for s in t.sensors:  # the patch size cuts every sensor into sub-patches
        if not SENSORS[s].one_token_per_tile:
            subpatch_layout(SENSORS[s], t.patch_size)
    assert (t.dense_sensor in t.sensors) == (t.head == "dense")
    assert all(0 <= k < t.num_classes for k in t.ignore_classes)
    assert t.official_configs and all(c.startswith("configs/") for c in t.official_configs)


def test_unknown_task_is_a_one_line_error_with_a_suggestion():
    with pytest.raises(UserError, match=r"unknown task 'planted-l'.*did you mean 'planted-lp'.*treesatai-ts-lp"):
        get_task("planted-l")
    with pytest.raises(UserError, match="no field 'epochs'"):
        get_task("planted-lp").replace(epochs=3)


def _short_run(task, official, out, **kw):
    kw = dict(max_epochs=1, min_epochs=0, batch_size=1, bootstrap=20, progress=False, log=lambda *a, **k: None) | kw
    return run_task(task, official, FIXTURES[task.dataset], out, **kw)


@pytest.mark.parametrize("name", list(TASKS))
def test_each_task_runs_one_short_epoch_on_its_fixture_and_writes_the_table(name, tiny_official, tmp_path):
    task = get_task(name)
    if task.dataset == "pastis-hd":
        # one fold (5) in every role keeps this loop short; the official folds: the next test
        task = task.replace(splits={r: dict(split="test") for r in ROLES})
    r = _short_run(task, tiny_official, tmp_path)
    assert 0.0 <= r["measured"] <= 100.0 and r["delta"] == pytest.approx(r["measured"] - PAPER[name], abs=0.011)
    assert r["epochs_run"] == 1 and r["best_epoch"] == 0 and r["partial"]
    assert math.isfinite(r["history"][0]["train_loss"]) and math.isfinite(r["history"][0]["val_loss"])
    assert r["ci95"][0] <= r["measured"] <= r["ci95"][1]
    assert all(r["splits"][role]["items"] > 0 for role in ROLES)
    rows = json.loads((tmp_path / "reproduction.json").read_text())
    assert [row["task"] for row in rows] == [name] and rows[0]["paper"] == PAPER[name]
    md = (tmp_path / "reproduction.md").read_text()
    assert f"| {name} (partial) |" in md and f"{PAPER[name]:.1f}" in md and "results.png" in md
    assert json.loads((tmp_path / f"{name}.json").read_text())["checkpoint_sha256"] == r["checkpoint_sha256"]


def test_pastis_tasks_run_on_the_official_folds(tiny_official, tmp_path):
    """Train on folds 1-3, validate on fold 4, test on fold 5 (the official split), dates past day 365 included."""
    r = _short_run(get_task("pastis-hd-cls-lp"), tiny_official, tmp_path)
    assert {k: v["items"] for k, v in r["splits"].items()} == {"train": 4, "val": 1, "test": 1}
    assert [r["splits"][k]["reader"]["split"] for k in ROLES] == ["train", "val", "test"]
    assert math.isfinite(r["measured"]) and math.isfinite(r["history"][0]["val_loss"])


def test_rows_of_several_runs_fill_one_table(tiny_official, tmp_path):
    _short_run(get_task("planted-lp"), tiny_official, tmp_path)
    _short_run(get_task("planted-ft"), tiny_official, tmp_path)
    rows = json.loads((tmp_path / "reproduction.json").read_text())
    assert [r["task"] for r in rows] == ["planted-lp", "planted-ft"]
    md = (tmp_path / "reproduction.md").read_text().splitlines()
    assert md[0].startswith("| task | protocol | metric | paper | measured | Δ | 95 % CI | seed |")
    assert sum(line.startswith("| planted-") for line in md) == 2


@pytest.mark.slow
def test_cost_estimate_counts_flops_on_the_real_input_sizes():
    from anysat_lite.probe.cost import DATASETS, disk_gb, estimate, flops_per_tile

    # FLAIR evaluation: five 500 px windows of the same size as a training crop, with more S2 dates
    train = flops_per_tile("flair-seg-lp", "train", size="nano")
    ev = flops_per_tile("flair-seg-lp", "eval", size="nano")
    assert train > 1e9 and ev > 5 * train
    e = estimate("treesatai-ts-ft", tflops=100.0, size="nano")
    f = DATASETS["treesatai-ts"]
    fwd = e["forward_gflops_train_tile"] * 1e9
    assert e["train_factor"] == 3.0 and estimate("treesatai-ts-lp", size="nano")["train_factor"] == 1.0
    assert estimate("planted-lp", size="nano")["train_factor"] == 2.0  # pad values train through the encoder
    assert e["epoch_pflops"] * 1e15 == pytest.approx(3 * fwd * f.tiles_train + fwd * f.tiles_val)
    assert e["hours_max_epochs"] == pytest.approx((200 * e["epoch_pflops"] * 1e15 + fwd * f.tiles_test) / 1e14 / 3600)
    assert disk_gb("treesatai-ts") == pytest.approx(50_381 * 897_347 / 1e9, rel=1e-3)  # the sample tile's 3 files
    assert disk_gb("planted") is None


def test_cost_train_dates_follow_the_tasks_temporal_dropout():
    """The training items' numbers of dates in the cost facts are what the reader keeps from the evaluation
    items' dates at the task's temporal dropout (PLANTED: MODIS too, ALOS at 90 %; they read 17, 4 and 60)."""
    import numpy as np

    from anysat_lite.data.planted import PlantedDataset
    from anysat_lite.data.readers import choose_dates
    from anysat_lite.probe.cost import DATASETS

    for task, dataset in (("planted-lp", "planted"), ("flair-seg-lp", "flair")):
        dropout = get_task(task).splits["train"]["temporal_dropout"]
        facts = DATASETS[dataset]
        for s, shape in facts.train.items():
            if len(shape) == 4:
                keep = PlantedDataset.alos_keep if s == "alos" else 1 - dropout
                kept = choose_dates(facts.eval[s][0], np.random.default_rng(0), None, keep)
                assert shape[0] == len(kept), (dataset, s, shape[0], len(kept))


def test_a_per_epoch_selection_is_a_partial_row_and_says_why(tiny_official, tmp_path):
    r = _short_run(get_task("planted-lp"), tiny_official, tmp_path, bootstrap=0, val_metric="per-epoch")
    metric = get_task("planted-lp").metric
    assert r["partial"] and r["val_metric"] == "per-epoch" and f"val_{metric}_pooled" in r["history"][0]
    md = (tmp_path / "reproduction.md").read_text()
    assert "partial run (max_epochs=1, min_epochs=0, batch_size=1, val_metric=per-epoch); not comparable" in md
