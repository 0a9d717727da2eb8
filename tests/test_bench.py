"""The benchmark script runs and writes the numbers it promises (no timing assertions)."""

import json
import re

import pytest

from anysat_lite.bench import add_mfu
from anysat_lite.cli import main


@pytest.mark.slow
def test_bench_writes_json(tmp_path, capsys):
    out = tmp_path / "new" / "bench.json"  # a missing folder is created
    assert (
        main(
            [
                "bench",
                "--sizes",
                "nano",
                "--no-sweeps",
                "--repeats",
                "1",
                "--rounds",
                "2",
                "--batch",
                "1",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    data = json.loads(out.read_text())
    assert data["machine"]["torch"] and data["machine"]["matmul_peak_flops"] > 0
    res = data["results"][0]["result"]
    for key in (
        "forward_ms",
        "forward_backward_ms",
        "patch_tokens_per_s",
        "subpatch_tokens_per_s",
        "peak_memory_mb",
        "forward_flops",
        "achieved_flops_forward_backward",
    ):
        assert res[key] > 0, key
    # two processes, one timed repetition each: the reported median is taken over both
    assert res["processes"] == 2 and len(res["forward_backward_times_ms"]) == 2
    assert min(res["forward_backward_times_ms"]) <= res["forward_backward_ms"] <= max(res["forward_backward_times_ms"])
    assert "matmul peak" in capsys.readouterr().out


@pytest.mark.slow
def test_bench_pretraining_mode(tmp_path, capsys):
    out = tmp_path / "pre.json"
    args = ["--pretrain", "cpu-demo", "--steps", "2", "--workers", "0", "2", "--set", "train.batch_size=12"]
    assert main(["bench", *args, "--profile", "--json", str(out)]) == 0
    runs = json.loads(out.read_text())["pretraining"]
    profiled = runs.pop()  # the profiled run of the timed steps comes last
    assert profiled["profiled"] and profiled["result"]["batch_size"] == 12
    prof = profiled["result"]["profile"]
    assert prof["optimizer_steps"] == 2  # the two timed steps' optimiser steps, and nothing of a third step
    assert prof["wall_s"] > 0 and prof["device_busy"] is None  # no GPU here
    assert "aten::" in prof["table"] and "Self CPU" in prof["table"]
    assert {r["result"]["batch_size"] for r in runs} == {12}  # --set reaches every timed run
    assert [(r["preset"], r["workers"], r["result"]["workers"]) for r in runs] == [
        ("cpu-demo", 0, 0),
        ("cpu-demo", 2, 2),
    ]
    # the data wait per step, read in the training process and by two workers (same steps, same FLOPs)
    assert all(0 <= r["result"]["data_wait_ms"] < 1000 / r["result"]["steps_per_s"] for r in runs)  # within a step
    assert runs[0]["result"]["flops_per_step"] == runs[1]["result"]["flops_per_step"]
    res = runs[0]["result"]
    assert res["steps_per_s"] > 0 and res["peak_memory_mb"] > 0 and res["model"] == "D64/depth2/heads4"
    # MFU from a second run counting the same steps: FLOPs / timed seconds / measured matmul peak
    assert res["flops_per_step"] > 1e9 and res["matmul_peak_flops"] > 0
    assert res["achieved_flops"] == pytest.approx(2 * res["flops_per_step"] / res["timed_s"])
    assert 0 < res["mfu"] < 1 and res["mfu"] == pytest.approx(res["achieved_flops"] / res["matmul_peak_flops"])
    out = capsys.readouterr().out
    assert "steps/s" in out and "MFU" in out and out.count("data wait") == 2
    assert "cpu-demo profiled: 2 steps in " in out


QUICK = ["--sizes", "nano", "--no-sweeps", "--repeats", "1", "--rounds", "1", "--batch", "1"]


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["--json", "bench.json"], r"--json bench.json: the file exists; write elsewhere, or replace it with --force$"),
        (["--json", "afile/b.json"], r"--json afile/b.json: afile is a file, expected a folder"),
        (["--device", "gpu"], r"--device gpu: expected cpu, cuda or cuda:N .*; e.g. --device cuda$"),
        (["--device", "cuda:99"], r"--device cuda:99: this machine has .*--device cpu$"),
        (["--sizes", "nano", "huge"], r"--sizes nano huge: 'huge' is not a model size; choose from nano, tiny"),
        (["--sweep-size", "xl"], r"--sweep-size xl: 'xl' is not a model size"),
        (["--pretrain", "nosuch"], r"--pretrain nosuch: 'nosuch' is not a preset; choose from cpu-demo, "),
        (["--repeats", "0"], r"--repeats 0: expected an integer >= 1, got 0; e.g. --repeats 2$"),
        (["--pretrain", "cpu-demo", "--steps", "0"], r"--steps 0: expected an integer >= 1, got 0"),
        (["--batch", "0"], r"--batch 0: expected an integer >= 1, got 0"),
        (["--pretrain", "cpu-demo", "--workers", "0", "-1"], r"--workers -1: expected an integer >= 0, got -1"),
        (
            ["--pretrain", "cpu-demo", "--set", "train.steps=50"],
            r"--set train.steps=50: the bench sets train.steps itself \(its option: --steps\); leave it out of --set$",
        ),
        (
            ["--pretrain", "cpu-demo", "--set", "train.out_dir=runs/x"],
            r"--set train.out_dir=runs/x: the bench sets train.out_dir itself; leave it out of --set$",
        ),
        (
            ["--pretrain", "cpu-demo", "--set", "train.lr=abc"],
            r"config train.lr: expected a number, got 'abc'",
        ),
        (["--pretrain", "--set", "train.stepz=3"], r"unknown config key\(s\) \['stepz'\] in train .*train.steps\?"),
        (["--profile"], r"error: --profile: profiles pretraining steps only; add --pretrain PRESET"),
        (["--set", "train.compile=true"], r"--set train.compile=true: applies to pretraining runs only; add --"),
        (["--official", "afile"], r"--official afile: expected a folder holding model.py .*leave --official out$"),
    ],
)
def test_bench_mistakes_are_one_line_before_any_work(tmp_path, monkeypatch, capsys, args, pattern):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bench.json").write_text("earlier results")
    (tmp_path / "afile").write_text("a file, not a folder")
    assert main(["bench", *QUICK, *args]) == 2
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1 and re.search(pattern, err), err
    assert "matmul peak" not in out and (tmp_path / "bench.json").read_text() == "earlier results"


def test_bench_default_json_is_a_new_file_each_run(tmp_path, monkeypatch):
    from anysat_lite.bench import _check_args, build_parser

    monkeypatch.chdir(tmp_path)
    (tmp_path / "bench.json").write_text("earlier results")  # what the old default would have met
    args = build_parser().parse_args(["--device", "cpu", "--sizes", "nano"])
    _check_args(args)
    assert re.fullmatch(r"runs/bench/bench-\d{8}-\d{6}\.json", args.json), args.json
    args.json = "bench.json"  # a file named by the user is still refused without --force
    with pytest.raises(ValueError, match="the file exists"):
        _check_args(args)


def test_mfu_uses_the_timed_steps_only():
    timed = {"steps": 2, "timed_s": 4.0, "steps_per_s": 0.5}
    res = add_mfu(timed, {"flops_per_step": [99e12, 1e12, 3e12]}, peak=1e12, datasheet_peak=2e12)
    assert res["flops_per_step"] == 2e12 and res["achieved_flops"] == 1e12  # (1 + 3) TFLOP / 4 s
    assert res["mfu"] == 1.0 and res["mfu_datasheet"] == 0.5
    with pytest.raises(ValueError, match="counting run"):
        add_mfu(timed, {"flops_per_step": [1e12, 1e12]}, peak=1e12)


def test_training_peak_is_the_largest_row_not_the_last():
    """On CUDA the loop resets the allocator's peak after every metrics row: the run's peak is the largest
    row's (the bench once read the allocator's peak after the run, which saw none of the steps, only the final
    checkpoint and export: 2.7 GB for a base-cuda run whose rows peaked near 30 GB)."""
    from anysat_lite.bench import training_peak_mb

    rows = [{"peak_mem_mb": 27562.7}, {"peak_mem_mb": "28773.4"}, {"peak_mem_mb": 5116.1}]
    assert training_peak_mb(rows) == 28773.4


def test_step_profiler_covers_the_steps_after_its_start_and_up_to_its_last():
    import torch

    from anysat_lite.bench import StepProfiler

    a = torch.randn(32, 32)
    prof = StepProfiler(after=0, last=2)
    torch.linalg.det(a)  # during step 0: before the window
    prof.on_step_end(0, None)  # the window opens here...
    torch.linalg.qr(a)  # step 1
    prof.on_step_end(1, None)
    torch.linalg.qr(a)  # step 2
    prof.on_step_end(2, None)  # ...and closes here
    torch.linalg.svd(a)  # after it
    table = prof.summary["table"]
    assert "aten::linalg_qr" in table and "det" not in table and "svd" not in table
    assert prof.summary["steps"] == 2 and prof.summary["optimizer_steps"] == 0
