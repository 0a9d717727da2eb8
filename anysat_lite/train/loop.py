"""JEPA pretraining loop: one function from the CPU demo to multi-GPU ``torchrun``.

``pretrain(get_config("cpu-demo"))`` runs on a laptop; ``torchrun --nproc_per_node 8 -m
anysat_lite pretrain --config base-cuda`` runs the same code with DistributedDataParallel,
bf16 autocast and (optionally) ``torch.compile``.  Every step's data, masks, dropped dates
and masked modalities are drawn for the *global* batch from generators seeded by
``(seed, step)``; each process takes its rows.  Hence a run resumed from a checkpoint, or
split over several processes, computes the same losses as an uninterrupted single run.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from ..config import Config, config_to_dict, save_config
from ..data.contract import validate_sample
from ..data.datasets import BatchPlanner, build_dataset, collate
from ..jepa import JEPA, build_mask_sampler, collapse_warnings, momentum_at
from ..model import compile_blocks
from ..sensors import SENSORS
from .checkpoint import export_encoder, save_checkpoint
from .distributed import barrier, cleanup, init_distributed
from .metrics import MetricLog, plot_metrics
from .rundir import prepare_run_dir
from .schedules import cosine, lr_at

__all__ = ["pretrain", "build_pretraining_data", "FAULT_ENV"]

FAULT_ENV = "ANYSAT_LITE_FAULT_AT_STEP"  # test hook: SIGKILL the process right after this step


def build_pretraining_data(cfg: Config, main: bool = True):
    """Bundles of every dataset of ``cfg.data`` (the main process fills the cache first)."""
    if main:
        bundles = [build_dataset(spec, cfg.data) for spec in cfg.data.datasets]
    barrier()
    if not main:
        bundles = [build_dataset(spec, cfg.data) for spec in cfg.data.datasets]
    for b in bundles:
        bad = [p for p in b.patch_sizes if b.tile_m % p or b.tile_m // p < 2]
        if bad:
            raise ValueError(f"dataset {b.name}: patch size(s) {bad} m must divide its {b.tile_m:g} m tiles into at "
                             "least 2 x 2 patches (JEPA needs a grid to mask); set data.datasets[i].patch_sizes")
    return bundles


def _param_groups(model: JEPA):
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad or n.startswith("target."):
            continue
        (no_decay if p.ndim < 2 or n.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": 0.0, "apply_wd": True},
            {"params": no_decay, "weight_decay": 0.0, "apply_wd": False}]


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _all_mean(values: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        dist.all_reduce(values)
        values /= world
    return values


def pretrain(cfg: Config, resume: bool | str | Path = False, progress: bool = True, count_flops: bool = False,
             force: bool = False) -> dict:
    """Run JEPA pretraining as configured; returns a summary dict (also written to ``summary.json``).

    Outputs in ``cfg.train.out_dir``: ``config.yaml``, ``last.pt`` and ``step-XXXXXX.pt``
    checkpoints, ``metrics.csv``/``metrics.jsonl``, ``training_curves.png``,
    ``encoder.safetensors`` + ``encoder.json`` (the EMA target encoder, which the official code
    evaluates downstream) and ``encoder-online.*`` (the context encoder, for comparison).

    Collapse monitors (``std``, ``erank``, ``cos``) are logged every ``jepa.monitor_every`` steps;
    crossing a ``jepa.warn_*`` threshold prints a warning once per monitor, and the summary
    lists every warning (``collapse_warnings``) and whether the last check was still flagged
    (``collapsed``).

    ``count_flops`` adds ``flops_per_step`` to the summary: each step's floating-point operations
    (forward and backward of target encoder, context encoder and predictor; matmuls, convolutions
    and attention, as counted by :class:`torch.utils.flop_counter.FlopCounterMode`) on this
    process.  Counting slows the steps down and changes nothing else (same losses), so
    ``anysat-lite bench --pretrain`` counts in a second run of the same steps to get the MFU.
    """
    tc, jc = cfg.train, cfg.jepa
    info = init_distributed(tc.device)
    if tc.threads and info.device.type == "cpu":
        torch.set_num_threads(tc.threads)
    out = Path(tc.out_dir)
    # resume: True (<out>/last.pt) or a checkpoint path; force: replace a run in out (see train/rundir.py)
    ck = prepare_run_dir(out, cfg, resume, force, main=info.main, map_location=info.device)
    if info.main:
        save_config(cfg, out / "config.yaml")
    torch.manual_seed(tc.seed + info.rank)

    bundles = build_pretraining_data(cfg, info.main)
    sensors = cfg.model.sensors or sorted({s for b in bundles for s in b.sensors}, key=list(SENSORS).index)
    model = JEPA(cfg, sensors=sensors).to(info.device)
    model.encoder.check_values = model.target.check_values = False  # batches are validated on the CPU below
    opt = torch.optim.AdamW(_param_groups(model), lr=tc.lr, betas=(0.9, 0.999))
    planner = BatchPlanner(bundles, tc.batch_size, tc.seed)
    sampler = build_mask_sampler(jc)
    if tc.batch_size % info.world:
        raise ValueError(f"train.batch_size={tc.batch_size} must be divisible by the {info.world} processes")

    start = 0
    last = out / "last.pt"
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        start = int(ck["step"])
        _set_rng_state({k: (v.cpu() if torch.is_tensor(v) else [t.cpu() for t in v]) for k, v in ck["rng"].items()})
    log = MetricLog(out, resume_step=start - 1 if start > 0 else None) if info.main else None

    net = model
    if info.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[info.local_rank] if info.device.type == "cuda" else None, find_unused_parameters=True)
    step_fn = net
    if tc.compile:
        compile_blocks(model)  # transformer blocks and L-TAEs in place; names and checkpoints unchanged
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(tc.amp)
    if tc.amp not in ("none", "bf16", "fp16"):
        raise ValueError(f"train.amp must be none, bf16 or fp16, got {tc.amp!r}")
    scaler = torch.amp.GradScaler(info.device.type, enabled=tc.amp == "fp16")
    fault = int(os.environ.get(FAULT_ENV, "-1"))
    local_b = tc.batch_size // info.world
    rows = slice(info.rank * local_b, (info.rank + 1) * local_b)

    t0 = time.time()
    first_loss = None
    flops: list[int] = []
    warned: dict[str, dict] = {}
    flagged_now: dict[str, str] = {}
    bar = tqdm(range(start, tc.steps), initial=start, total=tc.steps, disable=not (progress and info.main),
               desc=f"pretrain {cfg.name}", dynamic_ncols=True)
    row = {}
    for step in bar:
        model.train()
        plan = planner.plan(step)
        bundle = bundles[plan.dataset]
        items = [bundle.train[i] for i in plan.shard(info.rank, info.world)]
        batch = bundle.stats.apply(collate(items))
        validate_sample({k: v for k, v in batch.items() if k.split("_")[0] in SENSORS})
        batch = _to(batch, info.device)
        grid = (int(bundle.tile_m // plan.patch_size),) * 2
        masks = sampler(tc.batch_size, grid, planner.generator(step, 1)).shard(rows.start, rows.stop).to(info.device)
        gens = {"dates": planner.generator(step, 2), "modalities": planner.generator(step, 3),
                "views": planner.generator(step, 4)}
        lr = lr_at(step, tc.steps, tc.lr, tc.min_lr, tc.warmup_steps)
        wd = cosine(step, tc.steps, tc.weight_decay, tc.final_weight_decay)
        for g in opt.param_groups:
            g["lr"] = lr
            g["weight_decay"] = wd if g["apply_wd"] else 0.0
        monitor = info.main and jc.monitor_every > 0 and (step % jc.monitor_every == 0 or step == tc.steps - 1)
        counter = FlopCounterMode(display=False) if count_flops else contextlib.nullcontext()
        with counter:
            with torch.autocast(info.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                res = step_fn(batch, plan.patch_size, masks, gens, monitor=monitor, rows=rows,
                              global_batch=tc.batch_size)
            loss = res["loss"]
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {loss.item()} at step {step}")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
        if count_flops:
            flops.append(counter.get_total_flops())
        if tc.grad_clip > 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.online_parameters(), tc.grad_clip)
        scaler.step(opt)
        scaler.update()
        m = momentum_at(step + 1, tc.steps, *jc.ema)
        model.update_target(m)

        terms = _all_mean(torch.stack([res["loss"].detach().float(), res["jepa_loss"].detach().float(),
                                       res["contrastive_loss"].detach().float()]), info.world).tolist()
        if first_loss is None:
            first_loss = terms[1]
        if info.main:
            row = {"step": step, "loss": terms[0], "jepa_loss": terms[1], "contrastive_loss": terms[2], "lr": lr,
                   "wd": wd, "momentum": m, "dataset": bundle.name, "patch_size": plan.patch_size,
                   "seconds": round(time.time() - t0, 3)}
            for k in ("std", "erank", "cos"):
                if k in res:
                    row[k] = res[k]
            if monitor:
                flagged_now = collapse_warnings(res, jc.warn_std, jc.warn_erank, jc.warn_cos)
                for k, msg in flagged_now.items():
                    if k not in warned:
                        warned[k] = {"step": step, "message": msg}
                        tqdm.write(f"warning: step {step}: {msg}: the representation may be collapsing "
                                   "(see notebook 03)")
            if step % tc.log_every == 0 or step == tc.steps - 1 or monitor:
                log.write(row)
            bar.set_postfix(loss=f"{terms[0]:.4f}", jepa=f"{terms[1]:.4f}", P=plan.patch_size)
        done = step + 1
        if info.main and (done % tc.ckpt_every == 0 or done == tc.steps):
            state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": done, "rng": _rng_state(),
                     "config": config_to_dict(cfg), "norm_stats": {b.name: b.stats.to_dict() for b in bundles},
                     "sensors": sensors}
            save_checkpoint(state, last)
            save_checkpoint(state, out / f"step-{done:06d}.pt")
        if step == fault:
            os.kill(os.getpid(), signal.SIGKILL)
    elapsed = time.time() - t0
    summary = {}
    if info.main:
        meta = {"model": config_to_dict(cfg)["model"] | {"sensors": sensors}, "sensors": sensors,
                "sensor_facts": {s: _sensor_facts(s) for s in sensors},
                "norm_stats": {b.name: b.stats.to_dict() for b in bundles}, "config_name": cfg.name,
                "steps": tc.steps}
        export_encoder(model.target, out / "encoder", meta | {"weights": "ema-target"})
        export_encoder(model.encoder, out / "encoder-online", meta | {"weights": "online"})
        plot_metrics(out)
        summary = {"preset": cfg.name, "steps": tc.steps, "start_step": start, "world_size": info.world,
                   "first_jepa_loss": first_loss, "final": row, "seconds": round(elapsed, 2),
                   "steps_per_second": round((tc.steps - start) / max(elapsed, 1e-9), 3),
                   "out_dir": str(out), "collapse_warnings": warned, "collapsed": sorted(flagged_now)}
        if count_flops:
            summary["flops_per_step"] = flops
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
    barrier()
    cleanup()
    return summary


def _sensor_facts(name: str) -> dict:
    from dataclasses import asdict
    return asdict(SENSORS[name])
