"""JEPA pretraining: one function from the CPU demo to multi-GPU ``torchrun``.

``pretrain(get_config("cpu-demo"))`` runs on a laptop; ``torchrun --nproc_per_node 8 -m
anysat_lite pretrain --config geoplex --set data.root=/data`` runs the same code with
DistributedDataParallel, mixed precision and DataLoader workers.  A run reads as its steps::

    run   = start_run(cfg, resume, force)     # processes, run folder, checkpoint to continue from
    data  = build_data(cfg, run)              # datasets, batch plans, DataLoaders of step batches
    state = build_state(cfg, run, data)       # model, optimiser, schedules (restored when resuming)
    for sb in data.loader:                    # this process's share of one step's global batch
        res = train_step(state, sb, ...)      # forward + backward (micro-batches), optimiser, EMA
        validate(state, data)                 # every train.val_every steps
        log row; save_training_checkpoint(state, data)
    export(state, data)                       # EMA target encoder (+ the online one); then the summary

Every step's data, masks, dropped dates and masked modalities are drawn for the *global* batch
from generators seeded by ``(seed, step)``; each process takes its rows.  Hence a run resumed
from a checkpoint, read by any number of DataLoader workers, or split over several processes
(with ``jepa.contrastive_scope=global``) computes the same losses as an uninterrupted
single-process run.  Dropout draws from each process's own generator, saved per process in the
checkpoints.

``callbacks`` watch the loop from outside: objects with ``on_step_start(step, state)`` (called
once the step's batch is there) and/or ``on_step_end(step, state)`` (called when the step is
logged, validated and checkpointed); the benchmark counts FLOPs this way
(:class:`anysat_lite.bench.FlopCounter`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import resource
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from ..config import Config, check_config, config_to_dict, save_config
from ..data.datasets import BatchPlanner, DatasetBundle, build_dataset, pad_series
from ..data.pipeline import StepBatches, step_loader
from ..errors import UserError
from ..files import write_text_atomic
from ..jepa import JEPA, build_mask_sampler, collapse_warnings, momentum_at
from ..model import compile_blocks
from ..sensors import SENSORS
from .checkpoint import export_encoder, prune_checkpoints, save_checkpoint
from .distributed import DistInfo, all_max, all_mean, barrier, cleanup, gather_objects, init_distributed, ranks_where
from .metrics import MetricLog, plot_metrics, read_metrics
from .rundir import (
    PROBE_REPORT_FILES,
    clear_run_dir,
    keep_earlier_config,
    prepare_run_dir,
    remove_temporary_files,
    run_lock,
)
from .schedules import cosine, lr_at

__all__ = [
    "pretrain",
    "build_pretraining_data",
    "start_run",
    "build_data",
    "build_state",
    "train_step",
    "forward_backward",
    "validate",
    "NonFiniteLossError",
    "Run",
    "Data",
    "State",
]


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite on some process; every process stops with this error."""


# --- 1. the run: processes, folder, checkpoint ----------------------------------------------
@dataclass
class Run:
    cfg: Config
    info: DistInfo
    out: Path
    checkpoint: dict | None  # the checkpoint to continue from, or None
    start: int  # first step to run


def start_run(cfg: Config, resume: bool | str | Path = False, force: bool = False) -> Run:
    """Join the process group, pick the device, check the run folder and load the checkpoint to resume."""
    tc = cfg.train
    if tc.tensorboard and importlib.util.find_spec("tensorboard") is None:  # every process, before any collective
        raise UserError(
            "train.tensorboard=true needs the tensorboard package; install it (pip install "
            "tensorboard) or set train.tensorboard=false"
        )
    info = init_distributed(tc.device)
    if tc.threads and info.device.type == "cpu":
        torch.set_num_threads(tc.threads)
    if info.device.type == "cuda" and tc.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True  # TensorFloat-32 for float32 matmuls and convolutions
        torch.backends.cudnn.allow_tf32 = True
    out = Path(tc.out_dir)
    # resume: True (<out>/last.pt) or a checkpoint path; force: replace a run in out (see train/rundir.py)
    ck = prepare_run_dir(out, cfg, resume, force, main=info.main, map_location="cpu")
    torch.manual_seed(tc.seed + info.rank)
    return Run(cfg, info, out, ck, int(ck["step"]) if ck is not None else 0)


# --- 2. the data: datasets, batch plans, loaders ----------------------------------------------
def _fit_patch_sizes(bundle: DatasetBundle) -> list[str]:
    """Keep the patch sizes that cut the bundle's tiles into at least 2 x 2 patches; lines naming the dropped."""
    fit = [p for p in bundle.patch_sizes if bundle.tile_m % p == 0 and bundle.tile_m // p >= 2]
    if not fit:
        raise ValueError(
            f"dataset {bundle.name}: patch size(s) {bundle.patch_sizes} m must divide its "
            f"{bundle.tile_m:g} m tiles into at least 2 x 2 patches (JEPA needs a grid to mask); "
            "set data.datasets[i].patch_sizes"
        )
    dropped = [p for p in bundle.patch_sizes if p not in fit]
    bundle.patch_sizes = fit
    return (
        [
            f"dataset {bundle.name}: patch size(s) {dropped} m left out (fewer than 2 x 2 patches on its "
            f"{bundle.tile_m:g} m tiles)"
        ]
        if dropped
        else []
    )


def build_pretraining_data(cfg: Config, main: bool = True) -> tuple[list[DatasetBundle], list[str]]:
    """Bundles of every dataset of ``cfg.data`` (the main process fills the caches first), and notes
    on what had to be adapted to the data (patch sizes that do not fit a dataset's tiles)."""
    if main:
        bundles = [build_dataset(spec, cfg.data) for spec in cfg.data.datasets]
    barrier()
    if not main:
        bundles = [build_dataset(spec, cfg.data) for spec in cfg.data.datasets]
    names = [b.name for b in bundles]
    for b in bundles:
        if names.count(b.name) > 1:
            b.name = f"{b.name}:{names[: bundles.index(b)].count(b.name)}"  # distinct keys for stats and logs
    notes = [line for b in bundles for line in _fit_patch_sizes(b)]
    return bundles, notes


@dataclass
class Data:
    bundles: list[DatasetBundle]
    sensors: list[str]  # the model's sensors (registry order)
    planner: BatchPlanner
    loader: torch.utils.data.DataLoader  # step batches from run.start to train.steps
    val_planner: BatchPlanner | None
    val_loader: torch.utils.data.DataLoader | None


def build_data(cfg: Config, run: Run) -> Data:
    """Datasets, the train (and validation) batch plans, and DataLoaders over step-indexed batches."""
    dc, tc, info = cfg.data, cfg.train, run.info
    bundles, notes = build_pretraining_data(cfg, info.main)
    sensors = cfg.model.sensors or sorted({s for b in bundles for s in b.sensors}, key=list(SENSORS).index)
    notes += [
        f"dataset {b.name}: {', '.join(unused)} not in model.sensors ({', '.join(sensors)}): left out of pretraining "
        f"(data.datasets[{i}].sensors says which sensors to read)"
        for i, b in enumerate(bundles)
        if (unused := [s for s in b.sensors if s not in sensors])
    ]
    planner = BatchPlanner(bundles, tc.batch_size, tc.seed, dc.mixing, info.world, "train", dc.epoch_steps)
    notes += planner.adjusted()
    bad = [(b.name, n) for b, n in zip(bundles, planner.batch_sizes) if (n // info.world) % tc.accum_steps]
    if bad:
        raise ValueError(
            f"train.accum_steps={tc.accum_steps} must divide the batch of each process; dataset "
            f"{bad[0][0]} has {bad[0][1] // info.world}; change train.accum_steps or the batch sizes"
        )
    sampler = build_mask_sampler(cfg.jepa)
    pin = dc.pin_memory and info.device.type == "cuda"
    opts = dict(
        num_workers=dc.num_workers,
        pin_memory=pin,
        prefetch_factor=dc.prefetch_factor,
        persistent_workers=dc.persistent_workers,
    )
    train = StepBatches(bundles, planner, sampler, run.start, tc.steps, info.rank, info.world, dc.seed)
    val_planner = val_loader = None
    if tc.val_every:
        with_val = [b for b in bundles if b.val is not None and len(b.val)]
        if not with_val:
            raise ValueError("train.val_every > 0 but no dataset has a validation split; set train.val_every=0")
        notes += [
            f"dataset {b.name}: no validation split{f' ({why})' if (why := b.absent.get('val')) else ''}; left out "
            "of the validation loss"
            for b in bundles
            if b not in with_val
        ]
        # the same mixing as training; official: one pass over the validation splits, at most val_batches batches
        val_planner = BatchPlanner(
            with_val, tc.batch_size, tc.seed, dc.mixing, info.world, "val", tc.val_batches, salt=1
        )
        n_val = val_planner.epoch_steps if dc.mixing == "official" else tc.val_batches
        val = StepBatches(with_val, val_planner, sampler, 0, n_val, info.rank, info.world, dc.seed)
        val_loader = step_loader(val, **opts)
    if info.main:
        for line in notes:
            tqdm.write(f"note: {line}")
    return Data(bundles, sensors, planner, step_loader(train, **opts), val_planner, val_loader)


# --- 3. the model and its optimisation ----------------------------------------------------
@dataclass
class State:
    cfg: Config
    run: Run
    model: JEPA
    net: torch.nn.Module  # model, or its DistributedDataParallel wrapper
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None  # the anysat recipe's lr reduction
    amp_dtype: torch.dtype | None
    step: int = 0  # next step to run
    last: dict = field(default_factory=dict)  # the last step's outputs (losses, monitors, schedules)


def _param_groups(model: JEPA, recipe: str, weight_decay: float) -> list[dict]:
    """I-JEPA: weight decay (scheduled) on weights only, not on biases and norms; AnySat: on every parameter."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad and not n.startswith("target.")]
    if recipe == "anysat":
        return [{"params": [p for _, p in params], "weight_decay": weight_decay, "apply_wd": True}]
    decay = [p for n, p in params if not (p.ndim < 2 or n.endswith(".bias"))]
    no_decay = [p for n, p in params if p.ndim < 2 or n.endswith(".bias")]
    return [
        {"params": decay, "weight_decay": 0.0, "apply_wd": True},
        {"params": no_decay, "weight_decay": 0.0, "apply_wd": False},
    ]


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if torch.backends.mps.is_available():
        state["mps"] = torch.mps.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([t.cpu() for t in state["cuda"]])
    if "mps" in state and torch.backends.mps.is_available():
        torch.mps.set_rng_state(state["mps"].cpu())


def _restore_rng(saved: dict, info: DistInfo) -> None:
    """This process's generators from a checkpoint: its own state when the process count is the same
    (``{"ranks": [...]}``, one entry per process); older single-state checkpoints give it to every process."""
    if "ranks" not in saved:
        _set_rng_state(saved)
        return
    ranks = saved["ranks"]
    if len(ranks) != info.world and info.main:
        tqdm.write(
            f"note: the checkpoint was written by {len(ranks)} process(es), this run has {info.world}: "
            "dropout draws differ from the uninterrupted run"
        )
    _set_rng_state(ranks[info.rank % len(ranks)])


def lr_plateau(opt: torch.optim.Optimizer, tc) -> torch.optim.lr_scheduler.ReduceLROnPlateau | None:
    """The anysat recipe's learning-rate reduction on plateaus of the validation loss (``None`` for
    ``ijepa``): times ``plateau_factor`` after ``plateau_patience`` validations without improvement,
    never below ``min_lr`` (the ``geoplex`` preset's 0.0 is the official default)."""
    if tc.recipe != "anysat":
        return None
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="min", factor=tc.plateau_factor, patience=tc.plateau_patience, min_lr=tc.min_lr
    )


def build_state(cfg: Config, run: Run, data: Data) -> State:
    """Model, optimiser, gradient scaler and learning-rate plateau; restored from the run's checkpoint."""
    tc, info = cfg.train, run.info
    model = JEPA(cfg, sensors=data.sensors).to(info.device)
    model.encoder.check_values = model.target.check_values = False  # batches are validated when read
    opt = torch.optim.AdamW(_param_groups(model, tc.recipe, tc.weight_decay), lr=tc.lr, betas=(0.9, 0.999))
    plateau = lr_plateau(opt, tc)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(tc.amp)
    scaler = torch.amp.GradScaler(info.device.type, enabled=tc.amp == "fp16")
    ck = run.checkpoint
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        if plateau is not None and "plateau" in ck:
            plateau.load_state_dict(ck["plateau"])
        if "scaler" in ck:
            scaler.load_state_dict(ck["scaler"])
        _restore_rng(ck["rng"], info)
    net = model
    if info.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[info.local_rank] if info.device.type == "cuda" else None, find_unused_parameters=True
        )
    if tc.compile:
        compile_blocks(model)  # blocks and L-TAEs of encoders and predictor in place; names and checkpoints unchanged
    return State(cfg, run, model, net, opt, scaler, plateau, amp_dtype, run.start)


# --- 4. one training step -----------------------------------------------------------------------
def _to(x: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in x.items()}


def _on_device(sb: dict, device) -> dict:
    """A step batch on the device, its series padded to the longest of the *global* batch (so that date
    draws, ``[global batch, T]``, do not depend on how the batch is split over processes)."""
    batch = sb["batch"]
    series = sorted(k for k in batch if k in SENSORS and SENSORS[k].is_series)
    lengths = all_max([batch[s].shape[1] for s in series], device)
    batch = pad_series(batch, dict(zip(series, lengths)))
    return dict(sb, batch=_to(batch, device), masks=sb["masks"].to(device))


def _generators(planner: BatchPlanner, step: int) -> dict[str, torch.Generator]:
    """The step's generators of date dropping, modality masking and the single-sensor second view."""
    return {
        "dates": planner.generator(step, 2),
        "modalities": planner.generator(step, 3),
        "views": planner.generator(step, 4),
    }


def _check_finite(loss: float, step: int, info: DistInfo) -> None:
    bad = ranks_where(not math.isfinite(loss), info.device)
    if bad:
        raise NonFiniteLossError(
            f"non-finite loss ({loss if info.rank in bad else 'on another process'}) at "
            f"step {step} on process(es) {bad} of {info.world}: every process stops; lower "
            "train.lr, try train.amp=none or bf16, or resume from an earlier checkpoint"
        )


def forward_backward(state: State, sb: dict, planner: BatchPlanner, monitor: bool = False) -> dict:
    """Losses of one step's batch ``sb`` (a :class:`~anysat_lite.data.pipeline.StepBatches` item on the
    device) and their gradients, accumulated over ``train.accum_steps`` micro-batches.

    Each micro-batch draws from fresh copies of the step's generators and keeps its rows of the
    global draws, so the gradient equals that of the whole batch, except for the terms that couple
    the tiles of a batch: MIL-NCE's negatives and the batch statistics of ``jepa.center_targets`` and
    ``jepa.standardise_targets`` are those of the micro-batch (exact with ``jepa.contrastive=false`` and
    neither of those).  Returns the losses averaged over
    micro-batches (tensors, not read back here: :func:`train_step` checks them) and, with ``monitor``, the
    collapse monitors of the first micro-batch.
    """
    info, k = state.run.info, state.cfg.train.accum_steps
    batch, masks, B, P, step = sb["batch"], sb["masks"], sb["global_batch"], sb["patch_size"], sb["step"]
    b = B // info.world
    mb = b // k
    totals: dict = {}
    for j in range(k):
        lo, hi = j * mb, (j + 1) * mb
        part = {key: v[lo:hi] for key, v in batch.items()} if k > 1 else batch
        rows = slice(info.rank * b + lo, info.rank * b + hi)
        sync = state.net.no_sync() if j < k - 1 and state.net is not state.model else contextlib.nullcontext()
        with sync:
            with torch.autocast(info.device.type, dtype=state.amp_dtype, enabled=state.amp_dtype is not None):
                res = state.net(
                    part,
                    P,
                    masks.shard(lo, hi),
                    _generators(planner, step),
                    monitor=monitor and j == 0,
                    rows=rows,
                    global_batch=B,
                )
            state.scaler.scale(res["loss"] / k).backward()
        for key, v in res.items():
            if torch.is_tensor(v):
                totals[key] = totals.get(key, 0) + v.detach().float() / k
            elif j == 0:
                totals[key] = v
    return totals


def _schedule(state: State, step: int) -> dict:
    """Set this step's learning rate and weight decay (I-JEPA recipe) or read them (AnySat recipe)."""
    tc = state.cfg.train
    if tc.recipe == "anysat":  # constant, reduced on plateaus by state.plateau after validations
        return {"lr": state.opt.param_groups[0]["lr"], "wd": tc.weight_decay}
    lr = lr_at(step, tc.steps, tc.lr, tc.min_lr, tc.warmup_steps)
    wd = cosine(step, tc.steps, tc.weight_decay, tc.final_weight_decay)
    for g in state.opt.param_groups:
        g["lr"] = lr
        g["weight_decay"] = wd if g["apply_wd"] else 0.0
    return {"lr": lr, "wd": wd}


def train_step(state: State, sb: dict, planner: BatchPlanner, monitor: bool = False) -> dict:
    """One optimisation step on ``sb``: schedules, forward and backward, clipping, AdamW, EMA of the target.

    Returns the step's losses averaged over processes (floats), its schedules and the monitors.
    """
    tc, step = state.cfg.train, sb["step"]
    state.model.train()
    sched = _schedule(state, step)
    state.opt.zero_grad(set_to_none=True)
    res = forward_backward(state, sb, planner, monitor)
    losses = torch.stack([res["loss"], res["jepa_loss"], res["contrastive_loss"]])
    local = losses.tolist()  # the step's one wait for the device, before any update from a non-finite loss
    _check_finite(local[0], step, state.run.info)
    terms = all_mean(losses).tolist() if state.run.info.world > 1 else local
    if tc.grad_clip > 0:
        state.scaler.unscale_(state.opt)
        torch.nn.utils.clip_grad_norm_(state.model.online_parameters(), tc.grad_clip)
    state.scaler.step(state.opt)
    state.scaler.update()
    m = momentum_at(step + 1, tc.steps, *state.cfg.jepa.ema)
    state.model.update_target(m)
    out = {"loss": terms[0], "jepa_loss": terms[1], "contrastive_loss": terms[2], **sched, "momentum": m}
    out.update({key: res[key] for key in ("std", "erank", "cos", "place_cos") if key in res})
    state.step = step + 1
    state.last = out
    return out


@torch.no_grad()
def validate(state: State, data: Data) -> float:
    """Mean loss over the validation batches, dropout off, averaged over processes.

    The batches, masks and date draws are the same at every validation: ``train.val_batches`` draws
    of the weighted mixing, or (official mixing) one pass over the validation splits in full batches,
    at most ``train.val_batches`` of them (the official ``stop_iteration_val``).
    """
    info = state.run.info
    state.model.eval()
    losses = []
    for sb in data.val_loader:
        sb = _on_device(sb, info.device)
        b = sb["global_batch"] // info.world
        with torch.autocast(info.device.type, dtype=state.amp_dtype, enabled=state.amp_dtype is not None):
            res = state.model(
                sb["batch"],
                sb["patch_size"],
                sb["masks"],
                _generators(data.val_planner, sb["step"]),
                rows=slice(info.rank * b, (info.rank + 1) * b),
                global_batch=sb["global_batch"],
            )
        losses.append(res["loss"].float())
    state.model.train()
    return all_mean(torch.stack(losses).mean()).item()


# --- 5. checkpoints and the exported encoders --------------------------------------------------
def save_training_checkpoint(state: State, data: Data) -> None:
    """``last.pt`` and ``step-XXXXXX.pt`` (keeping ``train.keep_last`` of those): weights, optimiser, step,
    every process's generator states, scaler, plateau, config, normalisation statistics, sensors."""
    run, cfg = state.run, state.cfg
    rng = gather_objects(_rng_state())  # a collective: every process takes part
    if not run.info.main:
        return
    ck = {
        "model": state.model.state_dict(),
        "optimizer": state.opt.state_dict(),
        "step": state.step,
        "rng": {"ranks": rng},
        "scaler": state.scaler.state_dict(),
        "config": config_to_dict(cfg),
        "norm_stats": {b.name: b.stats.to_dict() for b in data.bundles},
        "sensors": data.sensors,
    }
    if state.plateau is not None:
        ck["plateau"] = state.plateau.state_dict()
    save_checkpoint(ck, run.out / "last.pt")
    save_checkpoint(ck, run.out / f"step-{state.step:06d}.pt")
    prune_checkpoints(run.out, cfg.train.keep_last)


def export(state: State, data: Data) -> None:
    """``encoder.*``: the EMA target encoder (what the official code evaluates downstream);
    ``encoder-online.*``: the context encoder, for comparison; ``training_curves.png``."""
    cfg, out = state.cfg, state.run.out
    meta = {
        "model": config_to_dict(cfg)["model"] | {"sensors": data.sensors},
        "sensors": data.sensors,
        "sensor_facts": {s: asdict(SENSORS[s]) for s in data.sensors},
        "norm_stats": {b.name: b.stats.to_dict() for b in data.bundles},
        "config_name": cfg.name,
        "steps": cfg.train.steps,
    }
    export_encoder(state.model.target, out / "encoder", meta | {"weights": "ema-target"})
    export_encoder(state.model.encoder, out / "encoder-online", meta | {"weights": "online"})
    plot_metrics(out)


# --- 6. logging ---------------------------------------------------------------------------------
class _Pace:
    """Step time, data wait, samples per second and peak memory, averaged over the steps since the last row."""

    def __init__(self, device: torch.device):
        self.device, self.t = device, time.perf_counter()
        self.steps = self.wait = self.samples = 0

    def add(self, wait: float, samples: int) -> None:
        self.steps, self.wait, self.samples = self.steps + 1, self.wait + wait, self.samples + samples

    def row(self) -> dict:
        now = time.perf_counter()
        spent, n = now - self.t, max(self.steps, 1)
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        out = {
            "step_s": round(spent / n, 4),
            "data_wait_s": round(self.wait / n, 4),
            "samples_per_s": round(self.samples / max(spent, 1e-9), 2),
            "peak_mem_mb": round(peak, 1),
        }
        self.t, self.steps, self.wait, self.samples = now, 0, 0.0, 0
        return out


def _warn_collapse(res: dict, cfg: Config, step: int, warned: dict) -> dict:
    """Collapse flags of this step's monitors; prints a warning the first time each monitor is flagged."""
    jc = cfg.jepa
    flagged = collapse_warnings(res, jc.warn_std, jc.warn_erank, jc.warn_cos)
    for k, msg in flagged.items():
        if k not in warned:
            warned[k] = {"step": step, "message": msg}
            tqdm.write(f"warning: step {step}: {msg}: the representation may be collapsing (see notebook 03)")
    return flagged


def _logged_history(rows: list[dict], cfg: Config) -> tuple[float | None, dict, dict, dict]:
    """From the metric log of the steps before a resume: the first JEPA loss, the collapse warnings (first step
    of each), the flags of the last monitored step, and the last row (what the summary reports)."""
    jc, warned, flagged = cfg.jepa, {}, {}
    for r in rows:
        if any(k in r for k in ("std", "erank", "cos")):
            flagged = collapse_warnings(r, jc.warn_std, jc.warn_erank, jc.warn_cos)
            for k, msg in flagged.items():
                warned.setdefault(k, {"step": int(r["step"]), "message": msg})
    first = rows[0].get("jepa_loss") if rows and int(rows[0]["step"]) == 0 else None
    return first, warned, flagged, dict(rows[-1]) if rows else {}


# --- the loop -----------------------------------------------------------------------------------
def pretrain(
    cfg: Config, resume: bool | str | Path = False, progress: bool = True, force: bool = False, callbacks: Sequence = ()
) -> dict:
    """Run JEPA pretraining as configured; returns a summary dict (also written to ``summary.json``).

    Outputs in ``cfg.train.out_dir``: ``config.yaml``, ``last.pt`` and ``step-XXXXXX.pt``
    checkpoints, ``metrics.csv``/``metrics.jsonl`` (losses, schedules, validation loss, step time,
    data wait, samples/s, peak memory), ``training_curves.png``, ``encoder.safetensors`` +
    ``encoder.json`` (the EMA target encoder, which the official code evaluates downstream) and
    ``encoder-online.*`` (the context encoder, for comparison); ``tensorboard/`` with
    ``train.tensorboard``.

    Collapse monitors (``std``, ``erank``, ``cos``) and ``place_cos`` are logged every ``jepa.monitor_every`` steps;
    crossing a ``jepa.warn_*`` threshold prints a warning once per monitor, and the summary
    lists every warning (``collapse_warnings``) and whether the last check was still flagged
    (``collapsed``).  A non-finite loss on any process stops every process
    (:class:`NonFiniteLossError`).  ``callbacks``: see the module docstring.
    """
    run = start_run(check_config(cfg, "pretrain"), resume, force)
    with run_lock(run.out) if run.info.main else contextlib.nullcontext():
        return _train(cfg, run, progress, callbacks)


def _train(cfg: Config, run: Run, progress: bool, callbacks: Sequence) -> dict:
    """:func:`pretrain` once its run has started: data, model, the steps, the outputs."""
    tc, jc, info = cfg.train, cfg.jepa, run.info
    data = build_data(cfg, run)
    state = build_state(cfg, run, data)
    log = None
    if info.main:  # only once data and model are built: a run that cannot start leaves the folder as it was
        if run.checkpoint is None:
            clear_run_dir(run.out)  # --force: the old run's files go now, not before
        else:
            remove_temporary_files(run.out)  # of a killed write (the run's lock is ours)
            if run.start < tc.steps and any((run.out / name).exists() for name in PROBE_REPORT_FILES):
                tqdm.write(
                    f"note: {run.out}/probe_results.* describe the encoder of an earlier step; probe the new one "
                    f"when the run ends (anysat-lite probe --checkpoint {run.out / 'encoder'} --force)"
                )
        # the metric log of a resumed run is read before its config.yaml is rewritten
        log = MetricLog(run.out, resume_step=run.start - 1 if run.start > 0 else None, tensorboard=tc.tensorboard)
        kept = keep_earlier_config(run.out, cfg, run.start) if run.checkpoint is not None else None
        if kept:
            path, changed = kept
            more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
            tqdm.write(
                f"config.yaml: this resume changes {', '.join(changed[:3])}{more}; the file the steps before "
                f"{run.start} ran under is kept as {path}"
            )
        if kept or not (run.out / "config.yaml").is_file():  # a resume that changes nothing keeps the file as it is
            save_config(cfg, run.out / "config.yaml")
    pace = _Pace(info.device)
    t0 = time.time()
    first_loss, warned, flagged, row, per_dataset = None, {}, {}, {}, {}
    if info.main and run.start > 0:  # the summary covers the steps before the resume too
        first_loss, warned, flagged, row = _logged_history(read_metrics(run.out), cfg)
    bar = tqdm(
        total=tc.steps,
        initial=run.start,
        disable=not (progress and info.main),
        desc=f"pretrain {cfg.name}",
        dynamic_ncols=True,
    )
    batches = iter(data.loader)
    for step in range(run.start, tc.steps):
        t_wait = time.perf_counter()
        sb = next(batches)  # read by the workers, or here without them
        pace.add(time.perf_counter() - t_wait, sb["global_batch"])
        sb = _on_device(sb, info.device)
        per_dataset[sb["name"]] = per_dataset.get(sb["name"], 0) + 1
        for cb in callbacks:
            getattr(cb, "on_step_start", lambda *a: None)(step, state)
        monitor = info.main and jc.monitor_every > 0 and (step % jc.monitor_every == 0 or step == tc.steps - 1)
        res = train_step(state, sb, data.planner, monitor)
        first_loss = res["jepa_loss"] if first_loss is None else first_loss
        val_loss = validate(state, data) if tc.val_every and state.step % tc.val_every == 0 else None
        if state.plateau is not None and val_loss is not None:
            state.plateau.step(val_loss)
        if info.main:
            row = {
                "step": step,
                **res,
                "dataset": sb["name"],
                "patch_size": sb["patch_size"],
                "batch": sb["global_batch"],
                "seconds": round(time.time() - t0, 3),
            }
            if val_loss is not None:
                row["val_loss"] = val_loss
            if monitor:
                flagged = _warn_collapse(res, cfg, step, warned)
            if step % tc.log_every == 0 or step == tc.steps - 1 or monitor or val_loss is not None:
                log.write(row | pace.row())
            bar.set_postfix(loss=f"{res['loss']:.4f}", jepa=f"{res['jepa_loss']:.4f}", P=sb["patch_size"])
            bar.update()
        if state.step % tc.ckpt_every == 0 or state.step == tc.steps:
            save_training_checkpoint(state, data)
        for cb in callbacks:
            getattr(cb, "on_step_end", lambda *a: None)(step, state)
    bar.close()
    elapsed = time.time() - t0
    summary = {}
    if info.main:
        log.close()
        export(state, data)
        summary = {
            "preset": cfg.name,
            "steps": tc.steps,
            "start_step": run.start,
            "world_size": info.world,
            "first_jepa_loss": first_loss,
            "final": row,
            "seconds": round(elapsed, 2),
            "steps_per_second": round((tc.steps - run.start) / max(elapsed, 1e-9), 3),
            "steps_per_dataset": per_dataset,
            "out_dir": str(run.out),
            "collapse_warnings": warned,
            "collapsed": sorted(flagged),
        }
        write_text_atomic(run.out / "summary.json", json.dumps(summary, indent=1))
    barrier()
    cleanup()
    return summary
