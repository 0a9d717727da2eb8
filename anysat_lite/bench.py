"""``anysat-lite bench``: encoder speed, memory and FLOP/s, printed and saved as JSON.

Every measurement runs in a fresh subprocess (so the CPU peak-memory figure, the process's
maximum resident set, belongs to that measurement alone).  For each configuration it
reports the median forward and forward+backward time per batch (after two warm-up runs; timings
pooled over ``--rounds`` processes, interleaved between implementations), tokens per second (patch tokens
``B x M x N`` and sub-patch tokens), peak memory, FLOPs counted by
``torch.utils.flop_counter`` and the achieved FLOP/s with its ratio to the machine's
measured matmul peak.

``--official PATH`` also times the official AnySat implementation on the same weights and
inputs: PATH must be an importable folder exposing ``model.Hub(dim, depth, heads)`` with the
official ``AnyModule`` (the project does not ship that code; docs/benchmarks.md, section "On one H200",
prints such a wrapper).

``--pretrain`` times whole JEPA training steps of the presets instead: step time, the time each
step waits for its batch (once with the batches read in the training process, once by
``--workers`` DataLoader workers), peak memory, and the MFU (model FLOP utilisation: FLOPs per
step, counted in another run of the same steps by the :class:`FlopCounter` callback, over the
measured step time, as a share of the measured matmul peak of the compute dtype, and of the
datasheet bf16 peak on known GPUs).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from .errors import UserError, check_device, check_output_file
from .files import write_text_atomic

__all__ = ["main", "measure", "measure_pretraining", "add_mfu", "matmul_peak", "FlopCounter"]

SIZES = ("nano", "tiny", "small", "base")


def _sample(sensors, tile_m: int, T: int, B: int, device):
    from .data.contract import random_sample

    x = random_sample(sensors, tile_m, B, T, generator=torch.Generator().manual_seed(0))
    return {k: v.to(device) for k, v in x.items()}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device, n: int | None = None, dtype=torch.float32, repeats: int = 5) -> float:
    """Measured FLOP/s of a large square matmul, fastest of ``repeats`` (the reference for the
    achieved-FLOP/s ratio)."""
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def _build(impl: str, size: str, sensors, official_path: str | None, device):
    from .config import model_config
    from .model import AnySat
    from .model.official import load_official

    torch.manual_seed(0)
    if impl == "ours":  # every official sensor gets a projector, as in the official model (same memory)
        return AnySat(model_config(size)).to(device)
    sys.path.insert(0, official_path)
    from model import Hub  # the official implementation (outside this repository)

    cfg = model_config(size)
    off = Hub(dim=cfg.embed_dim, depth=cfg.depth, heads=cfg.num_heads)
    load_official(off.model.state_dict(), model=AnySat(model_config(size)))  # same architecture, key for key
    return off.to(device)


def measure(spec: dict) -> dict:
    """One configuration in this process: ``{impl, size, sensors, ...}`` -> timings, FLOPs, peak memory."""
    device = torch.device(spec.get("device") or ("cuda" if torch.cuda.is_available() else "cpu"))
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    model = _build(spec["impl"], spec["size"], spec["sensors"], spec.get("official"), device)
    x = _sample(spec["sensors"], spec["tile_m"], spec["T"], spec["batch"], device)
    P, reps = spec["patch"], spec["repeats"]
    amp = spec.get("amp") == "bf16"

    def fwd():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            return model(x, P, "all")

    def fwd_bwd():
        out = fwd()
        out.float().square().mean().backward()

    model.train()  # dropout layers present but the step is timed as in training
    for p in model.parameters():
        p.requires_grad_(True)
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        with torch.no_grad():
            fwd()
    flops = fc.get_total_flops()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    res = {}
    for name, fn, grad in (("forward", fwd, False), ("forward_backward", fwd_bwd, True)):
        with torch.set_grad_enabled(grad):
            for _ in range(2):  # warm-up
                fn()
                model.zero_grad(set_to_none=True)
            times = []
            for _ in range(reps):
                _sync(device)
                t = time.perf_counter()
                fn()
                _sync(device)
                times.append(time.perf_counter() - t)
                model.zero_grad(set_to_none=True)
        res[f"{name}_times_ms"] = [round(t * 1000, 3) for t in times]
    res.update(
        {
            "forward_flops": flops,
            "peak_memory_mb": round(
                torch.cuda.max_memory_allocated() / 2**20
                if device.type == "cuda"
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                1,
            ),
            "peak_memory_kind": "cuda max allocated" if device.type == "cuda" else "process max RSS",
        }
    )
    return res  # raw timings; the parent pools the processes of a configuration with summarise()


def summarise(spec: dict, runs: list[dict]) -> dict:
    """Pool the timings of one configuration's runs (processes): medians, throughput, FLOP/s, worst memory."""
    from .sensors import SENSORS

    res = dict(runs[0])
    for name in ("forward", "forward_backward"):
        pooled = sorted(t for r in runs for t in r[f"{name}_times_ms"])
        res[f"{name}_times_ms"] = pooled
        res[f"{name}_ms"] = pooled[len(pooled) // 2]  # median (upper one for an even count)
    res["peak_memory_mb"] = max(r["peak_memory_mb"] for r in runs)
    res["processes"] = len(runs)
    P = spec["patch"]
    n_patch = (spec["tile_m"] // P) ** 2
    spatial = [s for s in spec["sensors"] if not SENSORS[s].one_token_per_tile]
    patch_tokens = spec["batch"] * n_patch * len(spatial)
    sub_tokens = sum(spec["batch"] * n_patch * max(1, round(P / SENSORS[s].subpatch_m)) ** 2 for s in spatial)
    fb_s = res["forward_backward_ms"] / 1000
    res.update(
        {
            "achieved_flops_forward": res["forward_flops"] / (res["forward_ms"] / 1000),
            "achieved_flops_forward_backward": 3 * res["forward_flops"] / fb_s,  # backward ~ 2 x forward
            "patch_tokens_per_s": round(patch_tokens / fb_s, 1),
            "subpatch_tokens_per_s": round(sub_tokens / fb_s, 1),
        }
    )
    return res


class FlopCounter:
    """A pretraining callback: the floating-point operations of every step, counted by
    :class:`torch.utils.flop_counter.FlopCounterMode` from the moment the step's batch is there to
    the end of the step (forward and backward of target encoder, context encoder and predictor:
    matmuls, convolutions and attention; the optimiser's element-wise updates count nothing).
    Counting slows the steps down and changes nothing else (the same losses)."""

    def __init__(self):
        self.per_step: list[int] = []
        self._mode = None

    def on_step_start(self, step: int, state) -> None:
        from torch.utils.flop_counter import FlopCounterMode

        self._mode = FlopCounterMode(display=False)
        self._mode.__enter__()

    def on_step_end(self, step: int, state) -> None:
        self._mode.__exit__(None, None, None)
        self.per_step.append(self._mode.get_total_flops())


class StepProfiler:
    """A pretraining callback: :mod:`torch.profiler` from the end of step ``after`` to the end of step
    ``last`` (steps ``after + 1`` to ``last``, each with its wait for the batch and its copy to the device,
    as a bench run times them), summarised as the operators and kernels that take the time (``table``, the
    ``rows`` largest by self time on the GPU, or on the CPU without one), the optimiser steps seen (one per
    step: the window's check) and, on a GPU, how busy it was: the GPU's own work (kernels and memory copies)
    over the wall time of those steps (``device_busy``; 1 means the GPU never waited).  ``last`` must not be
    the run's final step, whose checkpoint would fall inside the window.  Profiling slows the steps down; its
    timings are read against each other, not against a timed run."""

    def __init__(self, after: int, last: int, rows: int = 25):
        self.after, self.last, self.rows = after, last, rows
        self.summary: dict = {}
        self._prof, self._t0 = None, 0.0
        self._cuda = torch.cuda.is_available()
        self._device = torch.device("cuda" if self._cuda else "cpu")

    def on_step_end(self, step: int, state) -> None:
        if step == self.after:
            self._start()
        elif step == self.last and self._prof is not None:
            self._stop()

    def _start(self) -> None:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self._cuda else [])
        _sync(self._device)
        self._t0 = time.perf_counter()
        self._prof = profile(activities=activities)
        self._prof.__enter__()

    def _stop(self) -> None:
        from torch.autograd import DeviceType

        _sync(self._device)
        wall = time.perf_counter() - self._t0
        self._prof.__exit__(None, None, None)
        events = self._prof.key_averages()
        steps = self.last - self.after
        # torch >= 2.4 names the device columns "device", earlier versions "cuda"
        new_names = not events or hasattr(events[0], "self_device_time_total")
        device_key = "self_device_time_total" if new_names else "self_cuda_time_total"
        # the GPU's own work; user annotations (e.g. the optimiser step's range) span kernels already counted
        gpu = [e for e in events if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)]
        gpu_s = sum(getattr(e, device_key) for e in gpu) / 1e6  # microseconds -> seconds
        self.summary = {
            "steps": steps,
            "optimizer_steps": sum(
                e.count for e in events if e.key.startswith("Optimizer.step#") and e.device_type == DeviceType.CPU
            ),
            "wall_s": round(wall, 4),
            "device_kernel_s": round(gpu_s, 4) if self._cuda else None,
            "device_busy": round(gpu_s / wall, 3) if self._cuda else None,
            "kernels_per_step": round(sum(e.count for e in gpu) / steps, 1) if self._cuda else None,
            "table": events.table(
                sort_by=device_key if self._cuda else "self_cpu_time_total",
                row_limit=self.rows,
                max_name_column_width=60,
            ),
        }


BENCH_OPTIONS = {"train.steps": "--steps", "data.num_workers": "--workers"}
"""The bench options that set some of the keys of :func:`bench_settings`."""


def bench_settings(spec: dict, out: str) -> dict[str, object]:
    """The config keys :func:`measure_pretraining` sets for every timed run, after the preset and ``--set``."""
    return {
        "train.steps": spec["steps"] + (2 if spec.get("profile") else 1),  # profiled: no final save inside
        "train.out_dir": out,
        "train.ckpt_every": 100000,
        "train.log_every": 1,
        "train.warmup_steps": 1,
        "train.val_every": 10**9,
        "data.num_workers": spec.get("workers", 0),
    }


def measure_pretraining(spec: dict) -> dict:
    """``spec = {preset, steps, overrides[, count_flops | profile][, workers]}``: a short pretraining run of a preset.

    Times ``steps`` steps after a first one (which also builds the data): steps/s, the seconds
    they took, the mean time a step waited for its batch (``data_wait_ms``, with ``workers``
    DataLoader workers), peak memory.  With ``count_flops`` the run counts every step's FLOPs
    instead (``flops_per_step``, first step included); its timings are then not meaningful.  With
    ``profile`` it profiles the timed steps instead (``profile``: see :class:`StepProfiler`).
    """
    import tempfile

    from .config import get_config
    from .train import pretrain
    from .train.distributed import device_for

    with tempfile.TemporaryDirectory() as out:
        cfg = get_config(
            spec["preset"],
            list(spec.get("overrides", [])) + [f"{k}={v}" for k, v in bench_settings(spec, out).items()],
        )
        counter = FlopCounter() if spec.get("count_flops") else None
        profiler = StepProfiler(0, spec["steps"]) if spec.get("profile") else None
        t0 = time.perf_counter()
        summary = pretrain(cfg, progress=False, callbacks=[cb for cb in (counter, profiler) if cb])
        total = time.perf_counter() - t0
        from .train.metrics import read_metrics

        rows = read_metrics(out)
        # steps after the first (which includes data generation / compilation / starting the workers)
        first, last = rows[0]["seconds"], rows[-1]["seconds"]
        wait = sum(r["data_wait_s"] for r in rows[1:]) / max(len(rows) - 1, 1)
    device = device_for(cfg.train.device)
    on_cuda = torch.device(device).type == "cuda"
    res = {
        "preset": spec["preset"],
        "steps": spec["steps"],
        "batch_size": cfg.train.batch_size,
        "model": f"D{cfg.model.embed_dim}/depth{cfg.model.depth}/heads{cfg.model.num_heads}",
        "steps_per_s": round(spec["steps"] / max(last - first, 1e-9), 3),
        "timed_s": round(last - first, 3),
        "wall_s": round(total, 1),
        "peak_memory_mb": training_peak_mb(rows),
        "device": device,
        "device_name": torch.cuda.get_device_name(torch.device(device)) if on_cuda else platform.machine(),
        "amp": cfg.train.amp,
        "final_jepa_loss": summary["final"]["jepa_loss"],
        "workers": cfg.data.num_workers,
        "data_wait_ms": round(1000 * wait, 3),
    }
    if counter is not None:
        res["flops_per_step"] = counter.per_step
    if profiler is not None:
        res["profile"] = profiler.summary
    return res


def training_peak_mb(rows: list[dict]) -> float:
    """The peak memory of a training run, MiB, from its ``metrics`` rows: the largest ``peak_mem_mb``.

    Each row holds the peak since the row before (CUDA: the loop resets the allocator's peak after
    every row; CPU: the process's maximum resident set, which only grows), so reading
    ``torch.cuda.max_memory_allocated()`` after the run would see none of its steps, only what
    came after the last row (the final checkpoint and the export).
    """
    return max(float(r["peak_mem_mb"]) for r in rows)


# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's datasheets, FLOP/s, by exact device name
# (as ``torch.cuda.get_device_name`` reports it); other devices get the MFU against the measured peak only.
DATASHEET_BF16_PEAK = {
    "NVIDIA H100 80GB HBM3": 989e12,  # H100 SXM5
    "NVIDIA H100 PCIe": 756e12,
    "NVIDIA H200": 989e12,
    "NVIDIA A100-SXM4-40GB": 312e12,
    "NVIDIA A100-SXM4-80GB": 312e12,
    "NVIDIA A100-PCIE-40GB": 312e12,
    "NVIDIA A100 80GB PCIe": 312e12,
    "NVIDIA L4": 121e12,
}


def add_mfu(timed: dict, counted: dict, peak: float, datasheet_peak: float | None = None) -> dict:
    """Model FLOP utilisation of a timed pretraining run, from a second run that counted the same steps.

    Both runs execute the same steps (data, masks and dates are drawn from ``(seed, step)``);
    the timed window is every step after the first.  ``peak`` is the measured matmul peak of
    the compute dtype; ``datasheet_peak`` the vendor's, when known.
    """
    flops = counted["flops_per_step"][1 : timed["steps"] + 1]
    if len(flops) != timed["steps"]:
        raise ValueError(
            f"the counting run has {len(counted['flops_per_step'])} steps, the timed run {timed['steps']} + 1"
        )
    achieved = sum(flops) / max(timed["timed_s"], 1e-9)
    out = dict(
        timed,
        flops_per_step=sum(flops) / len(flops),
        achieved_flops=achieved,
        matmul_peak_flops=peak,
        mfu=achieved / peak,
    )
    if datasheet_peak:
        out.update(datasheet_peak_flops=datasheet_peak, mfu_datasheet=achieved / datasheet_peak)
    return out


def _run_sub(spec: dict, timeout: int = 3600) -> dict:
    flag = "--one-pretrain" if "preset" in spec else "--one"
    r = subprocess.run(
        [sys.executable, "-m", "anysat_lite.bench", flag, json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if r.returncode != 0:
        return {"error": (r.stderr or r.stdout).strip().splitlines()[-1][:300]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def _row(spec, res, peak):
    if "error" in res:
        return f"{spec['impl']:8s} {spec['size']:5s} {spec['label']:34s} ERROR {res['error']}"
    ratio = res["achieved_flops_forward_backward"] / peak
    return (
        f"{spec['impl']:8s} {spec['size']:5s} {spec['label']:34s} fwd {res['forward_ms']:9.1f} ms  "
        f"fwd+bwd {res['forward_backward_ms']:9.1f} ms  {res['patch_tokens_per_s']:9.0f} patch-tok/s  "
        f"{res['peak_memory_mb']:8.0f} MB  {res['achieved_flops_forward_backward'] / 1e9:7.1f} GFLOP/s "
        f"({100 * ratio:4.1f} % of matmul peak)"
    )


def _check_args(args) -> torch.device:
    """Refuse mistakes before the benchmark runs (minutes): the device, sizes, presets and the --json file."""
    from .config import PRESETS, get_config

    device = check_device("--device", args.device)
    for option, names, known, what in (
        ("--sizes", args.sizes, SIZES, "a model size"),
        ("--sweep-size", [args.sweep_size], SIZES, "a model size"),
        ("--pretrain", args.pretrain or [], PRESETS, "a preset"),
    ):
        unknown = [n for n in names if n not in known]
        if unknown:
            raise UserError(f"{option} {' '.join(names)}: {unknown[0]!r} is not {what}; choose from {', '.join(known)}")
    for option, value, low in (
        ("--batch", args.batch, 1),
        ("--repeats", args.repeats, 1),
        ("--rounds", args.rounds, 1),
        ("--steps", args.steps, 1),
        ("--pretrain-batch", args.pretrain_batch, 1),
        ("--threads", args.threads, 1),
        *(("--workers", w, 0) for w in args.workers),
    ):
        if value is not None and value < low:
            raise UserError(f"{option} {value}: expected an integer >= {low}, got {value}; e.g. {option} {max(low, 2)}")
    if args.profile and args.pretrain is None:
        raise UserError("--profile: profiles pretraining steps only; add --pretrain PRESET or leave --profile out")
    if args.set and args.pretrain is None:
        raise UserError(
            f"--set {args.set[0]}: applies to pretraining runs only; add --pretrain PRESET or leave --set out"
        )
    for item in args.set:
        key = item.split("=", 1)[0].strip()
        if key in bench_settings({"steps": 1}, "."):  # measure_pretraining would replace it without a word
            option = f" (its option: {BENCH_OPTIONS[key]})" if key in BENCH_OPTIONS else ""
            raise UserError(f"--set {item}: the bench sets {key} itself{option}; leave it out of --set")
    for preset in _pretrain_presets(args) if args.pretrain is not None else []:
        get_config(preset, _pretrain_overrides(args))  # a bad override fails here, in one line, not in every run
    wrapper = Path(args.official or ".")
    if args.official is not None and not ((wrapper / "model.py").is_file() or (wrapper / "model").is_dir()):
        raise UserError(
            f"--official {args.official}: expected a folder holding model.py (a wrapper exposing Hub(dim, depth, "
            "heads) around the official AnyModule; docs/benchmarks.md, 'On one H200', prints one), found none; "
            "give that folder or leave --official out"
        )
    if args.json is None:  # a new file per run, so that a second run never meets the first one's results
        args.json = time.strftime("runs/bench/bench-%Y%m%d-%H%M%S.json")
    check_output_file("--json", args.json, args.force)
    return device


def _write_json(path: str, results: dict) -> None:
    write_text_atomic(path, json.dumps(results, indent=1))  # its folder created if missing
    print(f"\nwritten: {path}")


def build_parser() -> argparse.ArgumentParser:
    """The options of ``anysat-lite bench``."""
    from .cli import OneLineArgumentParser

    p = OneLineArgumentParser(
        prog="anysat-lite bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sizes", nargs="+", default=list(SIZES), help="model sizes for the standard input")
    p.add_argument("--sweep-size", default="nano", help="model size for the growing-work sweeps")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=7, help="timed repetitions per process")
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="processes per configuration and implementation, interleaved (ours, official, ours...); "
        "the median of all their timings is reported, which tames a noisy machine",
    )
    p.add_argument("--no-sweeps", action="store_true")
    p.add_argument("--official", help="folder with the official AnySat implementation (model.Hub) to compare")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--amp", choices=["none", "bf16"], default="none")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--json",
        default=None,
        help="where to write the results (its folder is created if missing; default: a new "
        "runs/bench/bench-YYYYMMDD-HHMMSS.json each run)",
    )
    p.add_argument("--force", action="store_true", help="replace the --json file if it exists")
    p.add_argument(
        "--pretrain",
        nargs="*",
        metavar="PRESET",
        help="time short pretraining runs of these presets instead (default: every preset this machine "
        "can run: cpu-demo, tiny, small, base, and base-cuda with a GPU): step time, peak memory, "
        "and the MFU from a second run that counts the same steps' FLOPs",
    )
    p.add_argument("--steps", type=int, default=5, help="timed pretraining steps per preset")
    p.add_argument(
        "--pretrain-batch",
        type=int,
        default=None,
        help="override the presets' global batch size (e.g. to fit the base presets on a CPU)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="with --pretrain: also profile the timed steps of each preset in one more run (torch.profiler): "
        "the operators and kernels that take the time and, on a GPU, the share of the time it was busy",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --pretrain: override a config value of every preset timed, as pretrain's --set does "
        "(repeatable; it wins over --pretrain-batch; train.steps, data.num_workers, train.out_dir and the "
        "logging and checkpoint intervals are the bench's), "
        "e.g. --set train.compile=true",
    )
    p.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[0, 2],
        help="DataLoader workers of the timed pretraining runs, one run each (default: 0 2); the data "
        "wait per step is reported for each",
    )
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--one-pretrain", help=argparse.SUPPRESS)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.one:
        print(json.dumps(measure(json.loads(args.one))))
        return 0
    if args.one_pretrain:
        print(json.dumps(measure_pretraining(json.loads(args.one_pretrain))))
        return 0
    device = _check_args(args)
    if args.pretrain is not None:
        return _bench_pretraining(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    peak = matmul_peak(device, dtype=torch.bfloat16 if args.amp == "bf16" else torch.float32)  # of the compute dtype
    machine = {
        "device": torch.cuda.get_device_name(0)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "matmul_peak_flops": peak,
        "amp": args.amp,
    }
    print(
        f"device {machine['device']} | threads {machine['threads']} | torch {machine['torch']} | "
        f"matmul peak {peak / 1e9:.1f} GFLOP/s"
    )
    std = dict(sensors=["aerial", "s2", "s1-asc"], tile_m=60, patch=20, T=12)
    specs = [dict(std, size=s, label="aerial+s2+s1-asc 60m P20 T12") for s in args.sizes]
    if not args.no_sweeps:
        for tile in (40, 80, 160, 320):
            specs.append(
                dict(
                    size=args.sweep_size,
                    sensors=["s2", "s1-asc"],
                    tile_m=tile,
                    patch=10,
                    T=12,
                    label=f"patches/tile {(tile // 10) ** 2:4d} (s2+s1, P10)",
                )
            )
        for sens in (["s2"], ["s2", "s1-asc"], ["s2", "s1-asc", "aerial"], ["s2", "s1-asc", "aerial", "spot"]):
            specs.append(
                dict(
                    size=args.sweep_size,
                    sensors=sens,
                    tile_m=60,
                    patch=20,
                    T=12,
                    label=f"sensors {len(sens)} ({'+'.join(sens)})",
                )
            )
        for T in (6, 12, 24, 60):
            specs.append(
                dict(size=args.sweep_size, sensors=["s2"], tile_m=60, patch=20, T=T, label=f"dates {T:2d} (s2)")
            )
    impls = ["ours"] + (["official"] if args.official else [])
    results = []
    for spec in specs:
        fulls = {
            impl: dict(
                spec,
                impl=impl,
                batch=args.batch,
                repeats=args.repeats,
                device=str(device),
                official=args.official,
                threads=args.threads,
                amp=args.amp,
            )
            for impl in impls
        }
        runs: dict[str, list[dict]] = {impl: [] for impl in impls}
        for _ in range(max(1, args.rounds)):
            for impl in impls:
                runs[impl].append(_run_sub(fulls[impl]))
        for impl in impls:
            errors = [r for r in runs[impl] if "error" in r]
            res = errors[0] if errors else summarise(fulls[impl], runs[impl])
            results.append({"spec": fulls[impl], "result": res})
            print(_row(fulls[impl], res, peak), flush=True)
    if args.official:
        print(
            "\nspeed-up (official time / ours), memory ratio (ours / official) and FLOP ratio (official / ours:\n"
            "the speed-up both would have at equal FLOP/s, i.e. what fewer operations alone buy):"
        )
        for i in range(0, len(results), 2):
            a, b = results[i]["result"], results[i + 1]["result"]
            if "error" in a or "error" in b:
                continue
            print(
                f"  {results[i]['spec']['size']:5s} {results[i]['spec']['label']:34s} "
                f"fwd x{b['forward_ms'] / a['forward_ms']:.2f}  "
                f"fwd+bwd x{b['forward_backward_ms'] / a['forward_backward_ms']:.2f}"
                f"  memory {a['peak_memory_mb'] / b['peak_memory_mb']:.2f}"
                f"  FLOPs x{b['forward_flops'] / a['forward_flops']:.2f}"
            )
    _write_json(args.json, {"machine": machine, "results": results})
    return 0


def _profile_report(preset: str, res: dict) -> str:
    """The printed summary of a profiled run: the GPU's busy share, then the profiler's table."""
    if "error" in res:
        return f"{preset:10s} profiled  ERROR {res['error']}"
    p = res["profile"]
    busy = (
        f", the GPU busy {100 * p['device_busy']:.0f} % of it ({p['device_kernel_s']:.3f} s of kernels and copies, "
        f"{p['kernels_per_step']:.0f} per step)"
        if p["device_busy"] is not None
        else ""
    )
    return f"\n{preset} profiled: {p['steps']} steps in {p['wall_s']:.3f} s{busy}\n{p['table']}"


def _pretrain_presets(args) -> list[str]:
    """The presets ``--pretrain`` times: those named, or every preset this machine runs on its own data
    (geoplex needs the datasets on disk, base-cuda a GPU)."""
    from .config import PRESETS

    gpu = torch.cuda.is_available()
    return args.pretrain or [p for p in PRESETS if p != "geoplex" and (p != "base-cuda" or gpu)]


def _pretrain_overrides(args) -> list[str]:
    """The overrides every timed preset gets, in order (``--set`` after ``--pretrain-batch``, so it wins;
    the bench's own settings, e.g. ``train.steps``, come after both in :func:`measure_pretraining`)."""
    over = [f"train.batch_size={args.pretrain_batch}"] if args.pretrain_batch else []
    over += args.set
    if not torch.cuda.is_available():
        over.append("train.device=cpu")
    return over


def _bench_pretraining(args) -> int:
    presets = _pretrain_presets(args)
    print(
        f"torch {torch.__version__} | threads {torch.get_num_threads()} | "
        f"{'GPU ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU only'}"
    )
    results, peaks = [], {}
    for preset in presets:
        spec = {"preset": preset, "steps": args.steps, "overrides": _pretrain_overrides(args)}
        counted = None
        for workers in args.workers:
            res = _run_sub(dict(spec, workers=workers))
            if "error" not in res and counted is None:  # the same steps again, counting their FLOPs (slower)
                counted = _run_sub(dict(spec, count_flops=True))
            if "error" not in res and "error" in counted:
                res["mfu_error"] = counted["error"]
            elif "error" not in res:
                key = (res["device"], res["amp"])
                if key not in peaks:
                    peaks[key] = matmul_peak(
                        torch.device(res["device"]), dtype=torch.bfloat16 if res["amp"] == "bf16" else torch.float32
                    )
                sheet = DATASHEET_BF16_PEAK.get(res["device_name"]) if res["amp"] == "bf16" else None
                res = add_mfu(res, counted, peaks[key], sheet)
            results.append({"preset": preset, "workers": workers, "result": res})
            if "error" in res:
                print(f"{preset:10s} workers {workers}  ERROR {res['error']}")
                continue
            mfu = ""
            if "mfu" in res:
                mfu = (
                    f"  {res['flops_per_step'] / 1e9:9.1f} GFLOP/step  {res['achieved_flops'] / 1e9:8.1f} GFLOP/s  "
                    f"MFU {100 * res['mfu']:4.1f} % of measured {res['amp'] if res['amp'] != 'none' else 'fp32'} "
                    f"matmul peak"
                    + (f" ({100 * res['mfu_datasheet']:.1f} % of datasheet)" if "mfu_datasheet" in res else "")
                )
            print(
                f"{preset:10s} {res['model']:22s} batch {res['batch_size']:4d}  workers {workers}  "
                f"{res['steps_per_s']:7.3f} steps/s  {1000 * res['timed_s'] / res['steps']:8.0f} ms/step  "
                f"data wait {res['data_wait_ms']:8.1f} ms/step  peak {res['peak_memory_mb']:8.0f} MB  "
                f"({res['device']})" + mfu,
                flush=True,
            )
        if args.profile:  # one more run of the same steps, profiled (with the last --workers count)
            prof = _run_sub(dict(spec, workers=args.workers[-1], profile=True))
            results.append({"preset": preset, "workers": args.workers[-1], "profiled": True, "result": prof})
            print(_profile_report(preset, prof), flush=True)
    _write_json(args.json, {"torch": torch.__version__, "pretraining": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
