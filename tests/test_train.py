"""Pretraining loop: learning, resume after a crash, DDP equivalence, checkpoints."""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_helpers import KILL_ENV

from anysat_lite.bench import FlopCounter
from anysat_lite.config import get_config
from anysat_lite.errors import UserError
from anysat_lite.train import load_checkpoint, load_encoder, pretrain, save_checkpoint
from anysat_lite.train.metrics import read_metrics

HELPERS = Path(__file__).with_name("train_helpers.py")

# A small world and model that train in seconds on 2 CPU cores.
TINY = [
    "data.n_tiles=48",
    "data.tile_m=40",
    "data.n_dates=6",
    "data.datasets=[{name: synthetic, patch_sizes: [10, 20]}]",
    "train.batch_size=8",
    "train.warmup_steps=3",
    "train.log_every=1",
    "train.ckpt_every=4",
    "jepa.monitor_every=5",
    "probe.patch_sizes=[20]",
    "probe.modality_sets=[[all]]",
    "probe.seg_epochs=5",
]


# two local processes on gloo, as `torchrun --standalone --nproc_per_node 2`
TORCHRUN_2 = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _run_cli(args, env_extra=None, check=True):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "anysat_lite", *args], env=env, capture_output=True, text=True, check=check, timeout=600
    )


def _run_helper(args, env_extra=None, check=True):
    """``tests/train_helpers.py`` (pretraining with test-only callbacks) in a subprocess."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, str(HELPERS), *args], env=env, capture_output=True, text=True, check=check, timeout=600
    )


@pytest.mark.slow
def test_short_cpu_demo_run_lowers_the_loss_and_writes_its_files(tmp_path):
    cfg = get_config("cpu-demo", TINY + ["train.steps=40", f"train.out_dir={tmp_path}", "jepa.monitor_every=1"])
    summary = pretrain(cfg, progress=False)
    rows = read_metrics(tmp_path)
    assert len(rows) == 40
    first = sum(r["jepa_loss"] for r in rows[:5]) / 5
    last = sum(r["jepa_loss"] for r in rows[-5:]) / 5
    assert last < 0.7 * first, (first, last)  # the JEPA loss falls clearly
    assert min(r["std"] for r in rows) > 0.05  # target embeddings do not collapse
    assert all(-1 <= r["place_cos"] <= 1 for r in rows)  # logged at every monitored step
    assert "place_cos" in (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert summary["steps"] == 40 and (tmp_path / "training_curves.png").stat().st_size > 10_000
    assert {p.name for p in tmp_path.iterdir()} >= {
        "last.pt",
        "step-000040.pt",
        "encoder.safetensors",
        "encoder.json",
        "metrics.csv",
        "config.yaml",
        "summary.json",
    }
    encoder, meta = load_encoder(tmp_path / "encoder")
    assert meta["sensors"] == ["aerial", "s2", "s1-asc"] and "synthetic" in meta["norm_stats"]
    ck = load_checkpoint(tmp_path / "last.pt")  # weights_only=True load
    assert ck["step"] == 40 and "rng" in ck and "optimizer" in ck


@pytest.mark.slow
def test_resume_after_a_kill_reproduces_the_uninterrupted_run(tmp_path):
    common = ["--config", "cpu-demo", "--set", "train.steps=12"] + sum((["--set", o] for o in TINY), [])
    ref, crash = tmp_path / "ref", tmp_path / "crash"
    _run_cli(["pretrain", "--quiet"] + common + ["--set", f"train.out_dir={ref}"])
    killed = _run_helper(common + ["--set", f"train.out_dir={crash}"], env_extra={KILL_ENV: "9"}, check=False)
    assert killed.returncode == -9  # SIGKILL after step 9
    assert not (crash / "encoder.safetensors").exists()
    assert load_checkpoint(crash / "last.pt")["step"] == 8  # last checkpoint before the kill
    assert max(r["step"] for r in read_metrics(crash)) == 9  # steps 8-9 were logged, then lost
    left = crash / ".step-000012.pt.0a1b2c3d.tmp.pt"  # a checkpoint write the kill cut short
    left.write_bytes(b"partial")
    (crash / "probe_results.json").write_text("{}")  # probed at step 8
    resumed = _run_cli(["pretrain", "--quiet"] + common + ["--set", f"train.out_dir={crash}", "--resume"])
    assert not left.exists() and "probe_results.* describe the encoder of an earlier step" in resumed.stdout
    a, b = read_metrics(ref), read_metrics(crash)
    assert [r["step"] for r in b] == list(range(12))
    for ra, rb in zip(a, b):
        assert ra["loss"] == rb["loss"] and ra["jepa_loss"] == rb["jepa_loss"], ra["step"]  # bit for bit
    wa = load_checkpoint(ref / "last.pt")["model"]
    wb = load_checkpoint(crash / "last.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (ref, crash))
    keys = ("first_jepa_loss", "collapse_warnings", "collapsed")
    assert {k: sa[k] for k in keys} == {k: sb[k] for k in keys}  # the steps before the resume count
    # stopped after the last checkpoint, before the encoders and the summary: --resume writes them
    for name in ("encoder.safetensors", "encoder-online.json", "summary.json"):
        (crash / name).unlink()
    _run_cli(["pretrain", "--quiet"] + common + ["--set", f"train.out_dir={crash}", "--resume"])
    assert torch.equal(load_encoder(crash / "encoder")[0].state_dict()["joint.cls_token"], wa["target.joint.cls_token"])
    sc = json.loads((crash / "summary.json").read_text())
    assert {k: sc[k] for k in keys} == {k: sa[k] for k in keys} and sc["start_step"] == 12
    assert [r["step"] for r in read_metrics(crash)] == list(range(12))
    done = _run_cli(["pretrain", "--quiet"] + common + ["--set", f"train.out_dir={crash}", "--resume"], check=False)
    assert done.returncode == 2 and "the run is finished" in done.stderr


@pytest.mark.slow
def test_flop_counting_counts_each_step_and_changes_nothing_else(tmp_path):
    over = TINY + ["train.steps=4", "jepa.monitor_every=0"]
    pretrain(get_config("cpu-demo", over + [f"train.out_dir={tmp_path / 'a'}"]), progress=False)
    counter = FlopCounter()
    pretrain(get_config("cpu-demo", over + [f"train.out_dir={tmp_path / 'b'}"]), progress=False, callbacks=[counter])
    a, b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert [r["loss"] for r in a] == [r["loss"] for r in b]  # the same steps, bit for bit
    flops = counter.per_step
    assert len(flops) == 4 and min(flops) > 1e8
    # counted per step: these four steps draw both patch sizes, whose token counts (and FLOPs) differ
    by_patch = {p: {f for r, f in zip(b, flops) if r["patch_size"] == p} for p in (10, 20)}
    assert by_patch[10] and by_patch[20] and not by_patch[10] & by_patch[20]


@pytest.mark.slow
def test_ddp_two_gloo_processes_match_one_process(tmp_path):
    common = ["--config", "cpu-demo", "--quiet", "--set", "train.steps=4", "--set", "model.dropout=0.0"] + sum(
        (["--set", o] for o in TINY), []
    )
    one, two = tmp_path / "one", tmp_path / "two"
    _run_cli(["pretrain", *common, "--set", f"train.out_dir={one}"])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [
            *TORCHRUN_2,
            "-m",
            "anysat_lite",
            "pretrain",
            *common,
            "--set",
            f"train.out_dir={two}",
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
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


@pytest.mark.slow
def test_bf16_autocast_on_cpu_tracks_fp32(tmp_path):
    """The opt-in CPU speed path (README, Benchmarks): bf16 autocast gives the fp32 losses to bf16 precision."""
    losses = {}
    for amp in ("none", "bf16"):
        cfg = get_config("cpu-demo", TINY + ["train.steps=6", f"train.out_dir={tmp_path / amp}", f"train.amp={amp}"])
        pretrain(cfg, progress=False)
        losses[amp] = [r["jepa_loss"] for r in read_metrics(tmp_path / amp)]
    assert len(losses["bf16"]) == 6 and all(torch.isfinite(torch.tensor(losses["bf16"])))
    assert losses["bf16"] != losses["none"]  # autocast was on
    assert losses["bf16"] == pytest.approx(losses["none"], rel=0.05)


def test_checkpoints_are_atomic_and_weights_only(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint({"w": torch.ones(2), "step": 3, "meta": {"a": [1, 2]}}, path)
    assert load_checkpoint(path)["step"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temporary file left
    torch.save({"bad": object()}, tmp_path / "evil.pt")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_checkpoint(tmp_path / "evil.pt")  # arbitrary objects refused


@pytest.mark.slow
def test_multi_dataset_batches(tmp_path):
    """Two datasets with different sensors: each batch comes from one of them, drawn by weight."""
    from anysat_lite.data.datasets import BatchPlanner, build_dataset

    two = TINY + [
        "data.datasets=[{name: synthetic, weight: 1.0, patch_sizes: [10, 20]}, "
        "{name: 'synthetic:hd', sensors: [spot, s2, s1], weight: 3.0, patch_sizes: [20]}]"
    ]
    cfg = get_config("cpu-demo", two + ["train.steps=12", f"train.out_dir={tmp_path}"])
    bundles = [build_dataset(s, cfg.data) for s in cfg.data.datasets]
    planner = BatchPlanner(bundles, 8, seed=0)
    plans = [planner.plan(s) for s in range(400)]
    share = sum(p.dataset == 1 for p in plans) / len(plans)
    assert 0.68 < share < 0.82  # weights 1 : 3
    assert all(p.patch_size == 20 for p in plans if p.dataset == 1)
    assert {p.patch_size for p in plans if p.dataset == 0} == {10, 20}
    fresh = BatchPlanner(bundles, 8, seed=0)
    fresh.plan(3)
    assert fresh.plan(7) == plans[7]  # a pure function of (seed, step): not of the calls made before
    pretrain(cfg, progress=False)
    rows = read_metrics(tmp_path)
    assert {r["dataset"] for r in rows} == {"synthetic", "synthetic:hd"}
    _, meta = load_encoder(tmp_path / "encoder")
    assert meta["sensors"] == ["aerial", "spot", "s2", "s1-asc", "s1"]  # union of both datasets, registry order


@pytest.mark.long
def test_torch_compile_matches_eager(tmp_path):
    """Optional torch.compile path (about a minute of compilation on CPU): same losses as eager."""
    from anysat_lite.config import SMOKE_OVERRIDES

    common = SMOKE_OVERRIDES + ["train.steps=4", "model.dropout=0.0"]
    pretrain(get_config("cpu-demo", common + [f"train.out_dir={tmp_path / 'c'}", "train.compile=true"]), progress=False)
    pretrain(get_config("cpu-demo", common + [f"train.out_dir={tmp_path / 'e'}"]), progress=False)
    for a, b in zip(read_metrics(tmp_path / "c"), read_metrics(tmp_path / "e")):
        assert a["jepa_loss"] == pytest.approx(b["jepa_loss"], rel=1e-4, abs=1e-6)


@pytest.mark.slow
def test_the_same_losses_with_0_and_2_dataloader_workers(tmp_path):
    over = TINY + ["train.steps=4", "jepa.monitor_every=0"]
    for w in (0, 2):
        pretrain(
            get_config("cpu-demo", over + [f"train.out_dir={tmp_path / str(w)}", f"data.num_workers={w}"]),
            progress=False,
        )
    a, b = read_metrics(tmp_path / "0"), read_metrics(tmp_path / "2")
    assert [r["loss"] for r in a] == [r["loss"] for r in b] and len(a) == 4  # bit for bit
    # the pace of every logged step: wall time, time waiting for the batch, samples/s, peak memory
    for r in a + b:
        assert 0 <= r["data_wait_s"] < r["step_s"] and r["samples_per_s"] > 0 and r["peak_mem_mb"] > 0
        assert r["batch"] == 8


@pytest.mark.slow
def test_dataloader_workers_started_by_forkserver(tmp_path):
    """Python 3.14 starts worker processes with forkserver on Linux (fork until 3.13), which pickles the step
    batches over to the workers: with it, two workers give the losses of reading in the training process."""
    over = TINY + ["train.steps=4", "jepa.monitor_every=0"]
    code = (
        "import sys, torch.multiprocessing as mp; mp.set_start_method(sys.argv[1]); "
        "from anysat_lite.config import get_config; from anysat_lite.train import pretrain; "
        "pretrain(get_config('cpu-demo', sys.argv[2:]), progress=False)"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for method, workers in (("fork", 0), ("forkserver", 2)):  # with 0 workers no process is started
        out = f"train.out_dir={tmp_path / method}"
        cmd = [sys.executable, "-c", code, method, *over, out, f"data.num_workers={workers}"]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
    a, b = read_metrics(tmp_path / "fork"), read_metrics(tmp_path / "forkserver")
    assert [r["loss"] for r in a] == [r["loss"] for r in b] and len(a) == 4


def _one_step_state(tmp_path, accum: int):
    """Model, optimiser and first batch of a TINY run with ``accum`` micro-batches (built as pretrain does)."""
    from anysat_lite.train.distributed import DistInfo
    from anysat_lite.train.loop import Run, build_data, build_state

    cfg = get_config(
        "cpu-demo",
        TINY
        + [
            "train.steps=2",
            "model.dropout=0.0",
            "jepa.contrastive=false",
            f"train.accum_steps={accum}",
            f"train.out_dir={tmp_path / str(accum)}",
        ],
    )
    run = Run(cfg, DistInfo(), tmp_path / str(accum), None, 0)
    data = build_data(cfg, run)
    torch.manual_seed(0)
    state = build_state(cfg, run, data)
    return state, data, next(iter(data.loader))


def test_gradient_accumulation_2x4_equals_1x8(tmp_path):
    from anysat_lite.train.loop import forward_backward

    grads, losses = {}, {}
    for accum in (1, 2):
        state, data, sb = _one_step_state(tmp_path, accum)
        assert sb["global_batch"] == 8
        res = forward_backward(state, sb, data.planner)
        losses[accum] = res["jepa_loss"].item()
        grads[accum] = {n: p.grad.clone() for n, p in state.model.named_parameters() if p.grad is not None}
    assert losses[2] == pytest.approx(losses[1], abs=1e-6)
    assert grads[1].keys() == grads[2].keys() and len(grads[1]) > 20
    worst = max((grads[1][n] - grads[2][n]).abs().max().item() for n in grads[1])
    assert worst < 1e-6, worst


def test_accumulation_must_divide_the_batch(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"train.accum_steps=3 must divide the batch of each process; dataset "
        r"synthetic has 8",
    ):
        pretrain(
            get_config("cpu-demo", TINY + ["train.steps=1", "train.accum_steps=3", f"train.out_dir={tmp_path}"]),
            progress=False,
        )


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_nan_on_one_process_stops_every_process(tmp_path):
    """Rank 1's loss turns NaN at step 2: both processes leave with the error within seconds, instead of rank 0
    waiting in the next collective until gloo's timeout (30 minutes)."""
    import time

    for attempt in range(3):  # the free port may be taken by another program before rank 0 listens on it
        out_dir = tmp_path / f"attempt-{attempt}"
        args = ["--config", "cpu-demo", "--set", "train.steps=6", "--set", f"train.out_dir={out_dir}"] + sum(
            (["--set", o] for o in TINY), []
        )
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(_free_port()),
            "ANYSAT_LITE_TEST_NAN_AT": "1:2",
        }
        procs = [
            subprocess.Popen(
                [sys.executable, str(HELPERS), *args],
                env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for r in (0, 1)
        ]
        try:
            outputs = [p.communicate(timeout=300)[0] for p in procs]
        finally:
            for p in procs:
                p.kill()
        ended = time.time()
        if not any("address already in use" in out.lower() for out in outputs):
            break
    assert [p.returncode for p in procs] == [3, 3], [out[-2000:] for out in outputs]
    assert ended - float((out_dir / "nan-injected.txt").read_text()) < 120  # a hang would last 30 minutes
    for r in (0, 1):
        msg = (out_dir / f"error-rank{r}.txt").read_text()
        assert msg.startswith("non-finite loss (") and "at step 2 on process(es) [1] of 2: every process stops" in msg
    assert max(row["step"] for row in read_metrics(out_dir)) == 1


@pytest.mark.slow
def test_ddp_resume_restores_every_process_rng(tmp_path):
    """With dropout on, a 2-process run killed after a checkpoint and resumed gives the uninterrupted run's
    losses bit for bit: each process gets back its own generator state."""
    common = ["--config", "cpu-demo", "--set", "train.steps=6", "--set", "train.ckpt_every=3"] + sum(
        (["--set", o] for o in TINY if not o.startswith("train.ckpt_every")), []
    )
    torchrun = [*TORCHRUN_2, str(HELPERS)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref, crash = tmp_path / "ref", tmp_path / "crash"
    subprocess.run(
        torchrun + common + ["--set", f"train.out_dir={ref}"], env=env, check=True, capture_output=True, timeout=600
    )
    killed = subprocess.run(
        torchrun + common + ["--set", f"train.out_dir={crash}"],
        env={**env, KILL_ENV: "4"},
        capture_output=True,
        timeout=600,
    )
    assert killed.returncode != 0 and load_checkpoint(crash / "last.pt")["step"] == 3
    rng = load_checkpoint(crash / "last.pt")["rng"]["ranks"]
    assert len(rng) == 2 and not torch.equal(rng[0]["torch"], rng[1]["torch"])  # one state per process
    subprocess.run(
        torchrun + common + ["--set", f"train.out_dir={crash}", "--resume"],
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    a, b = read_metrics(ref), read_metrics(crash)
    assert [r["step"] for r in b] == list(range(6))
    assert [r["loss"] for r in a] == [r["loss"] for r in b]


def test_keep_last_checkpoints(tmp_path):
    pretrain(
        get_config(
            "cpu-demo", TINY + ["train.steps=5", "train.ckpt_every=1", "train.keep_last=2", f"train.out_dir={tmp_path}"]
        ),
        progress=False,
    )
    assert sorted(p.name for p in tmp_path.glob("step-*.pt")) == ["step-000004.pt", "step-000005.pt"]
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 5


@pytest.mark.slow
def test_anysat_recipe_constant_lr_reduced_on_a_validation_plateau(tmp_path):
    """AdamW at a constant lr with weight decay on every parameter; the validation loss every 2 steps.  At a
    learning rate this small the validation loss moves by less than ReduceLROnPlateau's relative threshold
    (1e-4) between validations: a plateau, and the lr drops by plateau_factor (by more than the scheduler's
    eps of 1e-8; a second drop, to 1.5e-10, would be smaller than eps and is skipped as in torch)."""
    cfg = get_config(
        "cpu-demo",
        TINY
        + [
            "train.steps=8",
            "train.recipe=anysat",
            "train.lr=1.5e-8",
            "train.val_every=2",
            "train.val_batches=2",
            "train.plateau_patience=0",
            "train.plateau_factor=0.1",
            "train.weight_decay=0.05",
            "train.min_lr=0",
            f"train.out_dir={tmp_path}",
        ],
    )
    pretrain(cfg, progress=False)
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows if "val_loss" in r] == [1, 3, 5, 7]
    assert {r["wd"] for r in rows} == {0.05}
    val = [r["val_loss"] for r in rows if "val_loss" in r]
    assert all(abs(a - b) < 1e-4 * b for a, b in zip(val, val[1:]))
    # the validation at step 3 does not improve on step 1's by the threshold (> patience 0): lr x 0.1 from step 4
    assert [r["lr"] for r in rows] == pytest.approx([1.5e-8] * 4 + [1.5e-9] * 4, rel=1e-9)
    ck = load_checkpoint(tmp_path / "last.pt")
    assert len(ck["optimizer"]["param_groups"]) == 1 and ck["optimizer"]["param_groups"][0]["weight_decay"] == 0.05
    assert ck["plateau"]["factor"] == 0.1 and ck["plateau"]["_last_lr"] == pytest.approx([1.5e-9], rel=1e-9)


def test_the_anysat_plateau_stops_at_train_min_lr():
    from anysat_lite.train.loop import lr_plateau

    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    over = ["train.lr=1e-3", "train.min_lr=4e-4", "train.plateau_patience=0", "train.plateau_factor=0.1"]
    tc = get_config("geoplex", over).train
    plateau = lr_plateau(opt, tc)
    for _ in range(3):
        plateau.step(1.0)  # no improvement after the first validation
    assert opt.param_groups[0]["lr"] == pytest.approx(4e-4)  # 1e-3 -> max(1e-4, 4e-4)
    assert get_config("geoplex").train.min_lr == 0.0 and lr_plateau(opt, get_config("cpu-demo").train) is None


def test_the_rasters_dataset_pretrains_from_a_manifest(tmp_path):
    from test_rasters_dataset import make_manifest

    make_manifest(tmp_path / "tiles")
    cfg = get_config(
        "cpu-demo",
        TINY
        + [
            "train.steps=2",
            f"train.out_dir={tmp_path / 'run'}",
            f"data.datasets=[{{name: rasters, path: {tmp_path / 'tiles'}, patch_sizes: [10], batch_size: 2}}]",
        ],
    )
    summary = pretrain(cfg, progress=False)
    rows = read_metrics(tmp_path / "run")
    assert [r["dataset"] for r in rows] == ["rasters", "rasters"] and [r["batch"] for r in rows] == [2, 2]
    assert summary["steps_per_dataset"] == {"rasters": 2}
    _, meta = load_encoder(tmp_path / "run" / "encoder")
    assert meta["sensors"] == ["aerial", "s2", "s1-asc"] and set(meta["norm_stats"]["rasters"]) == set(meta["sensors"])


GEOPLEX = [
    "pretrain",
    "--config",
    "geoplex",
    "--quiet",
    "--set",
    "data.root=tests/data",
    "--set",
    "model.size=nano",
    "--set",
    "train.steps=8",
    "--set",
    "data.num_workers=0",
]


def _pretrain_geoplex(launcher: list[str], out_dir, *extra: str) -> None:
    """``<launcher> -m anysat_lite pretrain`` with the geoplex preset on the repository's fixtures."""
    cmd = [*launcher, "-m", "anysat_lite", *GEOPLEX, *extra, "--set", f"train.out_dir={out_dir}"]
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.slow
def test_geoplex_preset_on_the_fixtures_touches_every_dataset(tmp_path):
    """The acceptance run: one epoch of the five fixture datasets (official mixing: every dataset's batches once)."""
    _pretrain_geoplex([sys.executable], tmp_path, "--set", "train.val_every=4")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["steps_per_dataset"]) == {"treesatai-ts", "pastis-hd", "flair", "planted", "s2naip-urban"}
    assert [row["step"] for row in read_metrics(tmp_path) if "val_loss" in row] == [3, 7]
    _, meta = load_encoder(tmp_path / "encoder")
    assert len(meta["sensors"]) == 11 and set(meta["norm_stats"]) == set(summary["steps_per_dataset"])


@pytest.mark.slow
def test_geoplex_preset_on_the_fixtures_with_two_gloo_processes(tmp_path):
    _pretrain_geoplex(TORCHRUN_2, tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["world_size"] == 2 and set(summary["steps_per_dataset"]) == {
        "treesatai-ts",
        "pastis-hd",
        "flair",
        "planted",
        "s2naip-urban",
    }


@pytest.mark.slow
def test_ddp_matches_one_process_on_series_of_different_lengths(tmp_path):
    """TreeSatAI-TS tiles have different numbers of dates: each process pads its rows to the longest series of the
    *global* batch, so the date draws and the losses are those of one process."""
    root = Path(__file__).resolve().parents[1]
    common = (
        ["--config", "cpu-demo", "--quiet", "--set", "train.steps=3", "--set", "model.dropout=0.0"]
        + sum((["--set", o] for o in TINY if not o.startswith("data.datasets")), [])
        + [
            "--set",
            "data.datasets=[{name: treesatai-ts, path: tests/data/treesatai_ts, patch_sizes: [10], tile_m: 30, "
            "batch_size: 4}]",
        ]
    )
    one, two = tmp_path / "one", tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, "-m", "anysat_lite", "pretrain", *common, "--set", f"train.out_dir={one}"],
        cwd=root,
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    subprocess.run(
        [
            *TORCHRUN_2,
            "-m",
            "anysat_lite",
            "pretrain",
            *common,
            "--set",
            f"train.out_dir={two}",
        ],
        cwd=root,
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    a, b = read_metrics(one), read_metrics(two)
    assert len(a) == len(b) == 3 and {r["dataset"] for r in a} == {"treesatai-ts"}
    for ra, rb in zip(a, b):
        assert rb["jepa_loss"] == pytest.approx(ra["jepa_loss"], rel=1e-4, abs=1e-6)
        assert rb["contrastive_loss"] == pytest.approx(ra["contrastive_loss"], rel=1e-4, abs=1e-6)


def test_tensorboard_is_optional(tmp_path):
    import importlib.util

    cfg = get_config("cpu-demo", TINY + ["train.steps=2", "train.tensorboard=true", f"train.out_dir={tmp_path}"])
    if importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(UserError, match=r"train.tensorboard=true needs the tensorboard package; install it"):
            pretrain(cfg, progress=False)
        assert not (tmp_path / "metrics.csv").exists()  # refused before anything ran
    else:
        pretrain(cfg, progress=False)
        assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


# --- train.device: the devices a run may name, refused with one line where this machine lacks them ----------------


def test_train_device_accepts_mps_and_cuda_index_in_the_config():
    from anysat_lite.config import ConfigError

    for name in ("mps", "cuda:1", "auto", "cpu"):
        assert get_config("cpu-demo", [f"train.device={name}"]).train.device == name
    for name in ("gpu", "cuda:x", "mps:0"):  # what the rule refuses, so the loop above tests the rule
        with pytest.raises(ConfigError, match=r"train.device"):
            get_config("cpu-demo", [f"train.device={name}"])


@pytest.mark.parametrize(
    "device, message",
    [
        ("mps", r"^train.device=mps: this machine has no MPS \(Apple GPU\) device; use train.device=cpu or auto$"),
        ("cuda", r"^train.device=cuda: this machine has no CUDA device; use train.device=cpu or auto$"),
        ("cuda:3", r"^train.device=cuda:3: this machine has no CUDA device"),
    ],
)
def test_init_distributed_refuses_a_device_this_machine_lacks(monkeypatch, device, message):
    from anysat_lite.train.distributed import init_distributed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(UserError, match=message):
        init_distributed(device)


def test_init_distributed_mps_is_one_process_and_cuda_n_names_the_gpu(monkeypatch):
    from anysat_lite.train import distributed

    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match=r"^train.device=mps runs one process, got WORLD_SIZE=2 \(torchrun\)"):
        distributed.init_distributed("mps")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.init_distributed("mps").device == torch.device("mps")
    # cuda:N alone takes GPU N (not LOCAL_RANK's), and a GPU beyond the machine's count is refused
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    assert distributed.init_distributed("cuda:1").device == torch.device("cuda", 1) and chosen == [1]
    with pytest.raises(UserError, match=r"^train.device=cuda:2: this machine has 2 CUDA device\(s\), cuda:0 to cuda:1"):
        distributed.init_distributed("cuda:2")
    # under torchrun each process takes its LOCAL_RANK's GPU, whatever N says (the process group is faked here)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)
    chosen.clear()
    assert distributed.init_distributed("cuda:0").device == torch.device("cuda", 1) and chosen == [1]


def test_probes_run_on_the_device_train_device_names(monkeypatch):
    from anysat_lite.train.distributed import device_for as _device_of

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert [_device_of(d) for d in ("auto", "cpu", "cuda", "cuda:1", "mps")] == ["cpu"] * 5
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert [_device_of(d) for d in ("auto", "cpu", "cuda", "cuda:1", "cuda:5", "mps")] == [
        "cuda",
        "cpu",
        "cuda",
        "cuda:1",
        "cuda",
        "mps",
    ]


def test_training_curves_draw_one_loss_line_per_dataset_and_patch_size(tmp_path, monkeypatch):
    """The S2-alone batches of the demo get lines of their own instead of zigzagging the three-sensor ones."""
    import json

    import matplotlib.figure

    from anysat_lite.train.metrics import plot_metrics

    rows = [
        {
            "step": s,
            "jepa_loss": 0.1,
            "contrastive_loss": 3.0 if d.endswith("s2") else 12.0,
            "dataset": d,
            "patch_size": P,
        }
        for s, (d, P) in enumerate([("synthetic", 10), ("synthetic", 20), ("synthetic:s2", 20), ("synthetic", 10)])
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    figures = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: figures.append(fig))
    plot_metrics(tmp_path)
    mil_nce = figures[0].axes[1]
    lines = {line.get_label(): list(line.get_ydata()) for line in mil_nce.lines}
    assert lines == {
        "synthetic, P = 10 m": [12.0, 12.0],
        "synthetic, P = 20 m": [12.0],
        "synthetic:s2, P = 20 m": [3.0],
    }


def test_sensors_the_model_leaves_out_are_noted(tmp_path, capsys):
    """model.sensors narrower than the dataset: the other sensors are not read by the model; the run says so."""
    cfg = get_config("cpu-demo", TINY + ["train.steps=1", "model.sensors=[s2]", f"train.out_dir={tmp_path}"])
    pretrain(cfg, progress=False)
    out = capsys.readouterr().out
    assert (
        "note: dataset synthetic: aerial, s1-asc not in model.sensors (s2): left out of pretraining "
        "(data.datasets[0].sensors says which sensors to read)" in out
    ), out


def test_a_resume_interrupted_while_trimming_the_metric_log_keeps_the_log(tmp_path, monkeypatch):
    import anysat_lite.train.metrics as metrics

    log = metrics.MetricLog(tmp_path)
    for step in range(200):
        log.write({"step": step, "loss": 1.0 / (step + 1)})
    before = {p: (tmp_path / p).read_bytes() for p in ("metrics.csv", "metrics.jsonl")}
    dumps, calls = metrics.json.dumps, []

    def interrupted(*args, **kwargs):  # Ctrl-C halfway through the rows
        calls.append(1)
        if len(calls) == 50:
            raise KeyboardInterrupt
        return dumps(*args, **kwargs)

    monkeypatch.setattr(metrics.json, "dumps", interrupted)
    with pytest.raises(KeyboardInterrupt):
        metrics.MetricLog(tmp_path, resume_step=120)
    # the log read back is whole (it was rewritten row by row: the interrupt left 49 of 200 rows)
    assert (tmp_path / "metrics.jsonl").read_bytes() == before["metrics.jsonl"]
    monkeypatch.setattr(metrics.json, "dumps", dumps)
    log = metrics.MetricLog(tmp_path, resume_step=120)
    log.write({"step": 121, "loss": 0.5})
    assert [int(r["step"]) for r in metrics.read_metrics(tmp_path)] == list(range(122))
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 1 + 122
