"""Pretraining loop: learning, resume after a crash, DDP equivalence, checkpoints."""
import json
import os
import pickle
import subprocess
import sys

import pytest
import torch

from anysat_lite.config import get_config
from anysat_lite.train import load_checkpoint, load_encoder, pretrain, save_checkpoint
from anysat_lite.train.loop import FAULT_ENV
from anysat_lite.train.metrics import read_metrics

# A small world and model that train in seconds on 2 CPU cores.
TINY = ["data.n_tiles=48", "data.tile_m=40", "data.n_dates=6", "data.datasets=[{name: synthetic, patch_sizes: [10, 20]}]",
        "train.batch_size=8", "train.warmup_steps=3", "train.log_every=1", "train.ckpt_every=4", "jepa.monitor_every=5",
        "probe.patch_sizes=[20]", "probe.modality_sets=[[all]]", "probe.linear_epochs=30", "probe.seg_epochs=5"]


def _run_cli(args, env_extra=None, check=True):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "anysat_lite", *args], env=env, capture_output=True, text=True,
                          check=check, timeout=600)


def test_cpu_demo_learns_without_collapsing(tmp_path):
    cfg = get_config("cpu-demo", TINY + ["train.steps=40", f"train.out_dir={tmp_path}", "jepa.monitor_every=1"])
    summary = pretrain(cfg, progress=False)
    rows = read_metrics(tmp_path)
    assert len(rows) == 40
    first = sum(r["jepa_loss"] for r in rows[:5]) / 5
    last = sum(r["jepa_loss"] for r in rows[-5:]) / 5
    assert last < 0.7 * first, (first, last)                   # the JEPA loss falls clearly
    assert min(r["std"] for r in rows) > 0.05                  # target embeddings do not collapse
    assert summary["steps"] == 40 and (tmp_path / "training_curves.png").stat().st_size > 10_000
    assert {p.name for p in tmp_path.iterdir()} >= {"last.pt", "step-000040.pt", "encoder.safetensors",
                                                    "encoder.json", "metrics.csv", "config.yaml", "summary.json"}
    encoder, meta = load_encoder(tmp_path / "encoder")
    assert meta["sensors"] == ["aerial", "s2", "s1-asc"] and "synthetic" in meta["norm_stats"]
    ck = load_checkpoint(tmp_path / "last.pt")        # weights_only=True load
    assert ck["step"] == 40 and "rng" in ck and "optimizer" in ck


def test_resume_after_a_kill_reproduces_the_uninterrupted_run(tmp_path):
    common = ["pretrain", "--config", "cpu-demo", "--quiet", "--set", "train.steps=12"] + sum((["--set", o] for o in TINY), [])
    ref, crash = tmp_path / "ref", tmp_path / "crash"
    _run_cli(common + ["--set", f"train.out_dir={ref}"])
    killed = _run_cli(common + ["--set", f"train.out_dir={crash}"], env_extra={FAULT_ENV: "9"}, check=False)
    assert killed.returncode != 0                                  # SIGKILL after step 9
    assert not (crash / "encoder.safetensors").exists()
    assert load_checkpoint(crash / "last.pt")["step"] == 8         # last checkpoint before the kill
    assert max(r["step"] for r in read_metrics(crash)) == 9        # steps 8-9 were logged, then lost
    _run_cli(common + ["--set", f"train.out_dir={crash}", "--resume"])
    a, b = read_metrics(ref), read_metrics(crash)
    assert [r["step"] for r in b] == list(range(12))
    for ra, rb in zip(a, b):
        assert ra["loss"] == rb["loss"] and ra["jepa_loss"] == rb["jepa_loss"], ra["step"]   # bit for bit
    wa = load_checkpoint(ref / "last.pt")["model"]
    wb = load_checkpoint(crash / "last.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_flop_counting_counts_each_step_and_changes_nothing_else(tmp_path):
    over = TINY + ["train.steps=4", "jepa.monitor_every=0"]
    plain = pretrain(get_config("cpu-demo", over + [f"train.out_dir={tmp_path / 'a'}"]), progress=False)
    counted = pretrain(get_config("cpu-demo", over + [f"train.out_dir={tmp_path / 'b'}"]), progress=False,
                       count_flops=True)
    assert "flops_per_step" not in plain
    a, b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert [r["loss"] for r in a] == [r["loss"] for r in b]           # the same steps, bit for bit
    flops = counted["flops_per_step"]
    assert len(flops) == 4 and min(flops) > 1e8
    # counted per step: these four steps draw both patch sizes, whose token counts (and FLOPs) differ
    by_patch = {p: {f for r, f in zip(b, flops) if r["patch_size"] == p} for p in (10, 20)}
    assert by_patch[10] and by_patch[20] and not by_patch[10] & by_patch[20]


def test_ddp_two_gloo_processes_match_one_process(tmp_path):
    common = ["--config", "cpu-demo", "--quiet", "--set", "train.steps=4", "--set", "model.dropout=0.0"] + \
        sum((["--set", o] for o in TINY), [])
    one, two = tmp_path / "one", tmp_path / "two"
    _run_cli(["pretrain", *common, "--set", f"train.out_dir={one}"])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
                    "anysat_lite", "pretrain", *common, "--set", f"train.out_dir={two}"], env=env, check=True,
                   capture_output=True, text=True, timeout=600)
    summary = json.loads((two / "summary.json").read_text())
    assert summary["world_size"] == 2
    a, b = read_metrics(one), read_metrics(two)
    assert len(a) == len(b) == 4
    for ra, rb in zip(a, b):
        assert rb["jepa_loss"] == pytest.approx(ra["jepa_loss"], rel=1e-4, abs=1e-6)
        assert rb["contrastive_loss"] == pytest.approx(ra["contrastive_loss"], rel=1e-4, abs=1e-6)
    wa, wb = load_checkpoint(one / "last.pt")["model"], load_checkpoint(two / "last.pt")["model"]
    worst = max((wa[k] - wb[k]).abs().max().item() for k in wa if wa[k].is_floating_point())
    assert worst < 1e-4, worst


def test_bf16_autocast_on_cpu_tracks_fp32(tmp_path):
    """The opt-in CPU speed path (README, Benchmarks): bf16 autocast gives the fp32 losses to bf16 precision."""
    losses = {}
    for amp in ("none", "bf16"):
        cfg = get_config("cpu-demo", TINY + ["train.steps=6", f"train.out_dir={tmp_path / amp}", f"train.amp={amp}"])
        pretrain(cfg, progress=False)
        losses[amp] = [r["jepa_loss"] for r in read_metrics(tmp_path / amp)]
    assert len(losses["bf16"]) == 6 and all(torch.isfinite(torch.tensor(losses["bf16"])))
    assert losses["bf16"] != losses["none"]                                 # autocast was on
    assert losses["bf16"] == pytest.approx(losses["none"], rel=0.05)


def test_checkpoints_are_atomic_and_weights_only(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint({"w": torch.ones(2), "step": 3, "meta": {"a": [1, 2]}}, path)
    assert load_checkpoint(path)["step"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]       # no temporary file left
    torch.save({"bad": object()}, tmp_path / "evil.pt")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_checkpoint(tmp_path / "evil.pt")                      # arbitrary objects refused


def test_multi_dataset_batches(tmp_path):
    """Two datasets with different sensors: each batch comes from one of them, drawn by weight."""
    from anysat_lite.data.datasets import BatchPlanner, build_dataset

    two = TINY + ["data.datasets=[{name: synthetic, weight: 1.0, patch_sizes: [10, 20]}, "
                  "{name: 'synthetic:hd', sensors: [spot, s2, s1], weight: 3.0, patch_sizes: [20]}]"]
    cfg = get_config("cpu-demo", two + ["train.steps=12", f"train.out_dir={tmp_path}"])
    bundles = [build_dataset(s, cfg.data) for s in cfg.data.datasets]
    planner = BatchPlanner(bundles, 8, seed=0)
    plans = [planner.plan(s) for s in range(400)]
    share = sum(p.dataset == 1 for p in plans) / len(plans)
    assert 0.68 < share < 0.82                                    # weights 1 : 3
    assert all(p.patch_size == 20 for p in plans if p.dataset == 1)
    assert {p.patch_size for p in plans if p.dataset == 0} == {10, 20}
    assert planner.plan(7) == planner.plan(7)                     # a pure function of (seed, step)
    pretrain(cfg, progress=False)
    rows = read_metrics(tmp_path)
    assert {r["dataset"] for r in rows} == {"synthetic", "synthetic:hd"}
    _, meta = load_encoder(tmp_path / "encoder")
    assert meta["sensors"] == ["aerial", "spot", "s2", "s1-asc", "s1"]  # union of both datasets, registry order


@pytest.mark.slow
def test_torch_compile_matches_eager(tmp_path):
    """Optional torch.compile path (about a minute of compilation on CPU): same losses as eager."""
    from anysat_lite.config import SMOKE_OVERRIDES

    common = SMOKE_OVERRIDES + ["train.steps=4", "model.dropout=0.0"]
    pretrain(get_config("cpu-demo", common + [f"train.out_dir={tmp_path / 'c'}", "train.compile=true"]), progress=False)
    pretrain(get_config("cpu-demo", common + [f"train.out_dir={tmp_path / 'e'}"]), progress=False)
    for a, b in zip(read_metrics(tmp_path / "c"), read_metrics(tmp_path / "e")):
        assert a["jepa_loss"] == pytest.approx(b["jepa_loss"], rel=1e-4, abs=1e-6)
