"""The official AnySat evaluation protocol: released weights -> a task's paper number.

:func:`run_task` does, for one :class:`~.tasks.TaskConfig`, what the official code does with
``python src/train.py exp=<Dataset>_AnySat_FT`` (the Lightning ``Module`` of ``src/models/module.py``
with the callbacks and trainer of ``configs/``):

1. **data** — the task's reader (:mod:`anysat_lite.data.registry`) on the official layout, one per
   split; each item standardised with the official statistics (``NORM_<sensor>_patch.json``, or
   computed the official way on the train split when a file is missing; PASTIS: the statistics of
   the split's folds), then a batch pads every time series to its longest one with zeros and date 0
   and no mask (the official ``collate_fn``).  All dates of every item are used, except the official
   train-time date dropout of the task's reader settings.  Training batches are shuffled (PLANTED:
   drawn by class density) and the last incomplete batch is dropped, for training and, as in the
   official data module, for validation.
2. **model** — :func:`~anysat_lite.model.official.load_official` (official sub-patch order) with the
   L-TAE settings of the official fine-tuning encoder (date period 366, no dropout inside the L-TAE
   but its attention dropout), and a :class:`~.heads.TileHead` or :class:`~.heads.DenseHead`.
   Linear probing freezes the encoder (it still runs in train mode during training epochs).
3. **training** — AdamW on the trainable parameters, the task's schedule stepped once per epoch,
   fp16 autocast with loss scaling on a GPU (official ``precision: 16``).
4. **selection** — after each epoch the validation metric, pooled over every validation pass so far
   as the official metric is (never reset; :func:`_fit`); the weights of the epoch with the best
   (strictly greater) value are kept; training stops once 10 epochs (``patience``) in a row did not
   improve it, but not before 50 epochs (``min_epochs``), at most 200.
5. **test** — the kept weights on the test split; the metric is accumulated batch by batch from
   counts (never from stored features), with a 95 % bootstrap interval over test tiles.

Everything is streamed: one batch of inputs and features is alive at a time; the test split keeps
per-tile decisions (classification) or per-tile confusion matrices (segmentation) for the interval.
"""

from __future__ import annotations

import inspect
import math
import random
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from ..data.contract import sensor_entries, split_key
from ..data.normalization import NormStats, per_tile_norm_stats
from ..data.registry import get_dataset
from ..errors import UserError, check_device, check_output_files
from ..files import sha256_of
from ..model.official import load_official
from ..model.projectors import SeriesProjector
from ..sensors import SENSORS
from .heads import DenseHead, TaskModel, TileHead
from .metrics import (
    bootstrap_interval,
    f1_from_counts,
    miou_from_confusion,
    multiclass_counts,
    multilabel_counts,
    multilabel_decision,
)
from .tasks import TaskConfig, get_task

__all__ = [
    "run_task",
    "check_run_settings",
    "check_table_files",
    "build_splits",
    "split_norm_stats",
    "Standardised",
    "collate_padded",
    "build_task_model",
    "finetuning_encoder",
    "task_loss",
    "Scorer",
    "EpochSelection",
    "warmup_cosine_lr",
    "train_epoch",
    "evaluate",
    "ROLES",
]

ROLES = ("train", "val", "test")


# --- 1. data ---------------------------------------------------------------------------------------
def build_splits(task: TaskConfig, root: str | Path, seed: int, allow_pickle: bool = False) -> dict[str, Dataset]:
    """The task's reader on ``root`` for each role (``train``, ``val``, ``test``), with the preset's settings.

    ``allow_pickle``: PLANTED's reader may unpickle object arrays in its ``.npz`` files, as the official
    reader does (only for files you trust: a pickle can run code).
    """
    cls = get_dataset(task.dataset)
    extra = {}
    if allow_pickle:
        if "allow_pickle" not in inspect.signature(cls).parameters:
            raise UserError(
                f"--allow-pickle: the {task.dataset} reader reads no pickled files, expected a PLANTED task, got "
                f"{task.name}; leave --allow-pickle out"
            )
        extra = {"allow_pickle": True}
    root = Path(root)
    if not root.is_dir():
        raise UserError(
            f"--data {root}: no such folder; expected the {task.dataset} folder in its official layout "
            f"(see docs/reproduction.md)"
        )
    return {role: cls(root, sensors=task.sensors, seed=seed, **task.splits[role], **extra) for role in ROLES}


def split_norm_stats(
    datasets: Mapping[str, Dataset], root: str | Path, sensors: Sequence[str]
) -> tuple[dict[str, NormStats], dict[str, str]]:
    """Official statistics per role and where each sensor's came from.

    Each sensor's ``NORM_<sensor>_patch.json`` is read with the reader module's ``official_norm_stats``
    (PASTIS: averaged over the folds of the split, as the official reader does).  Sensors without a file
    get, as in the official readers, statistics computed on the train split with the official formula
    (the reader module's ``compute_norm_stats`` when it has one, else
    :func:`~anysat_lite.data.normalization.per_tile_norm_stats` on the train items), in one pass over the
    data; nothing is written to the data folder.
    """
    reader = sys.modules[type(datasets["train"]).__module__]
    official = reader.official_norm_stats
    takes_folds = "folds" in inspect.signature(official).parameters

    def read(s: str, ds: Dataset) -> dict:
        kw = {"folds": ds.folds} if takes_folds and hasattr(ds, "folds") else {}
        return official(root, [s], **kw).to_dict()[s]

    missing, source = [], {}
    for s in sensors:
        try:
            read(s, datasets["train"])
            source[s] = f"NORM_{s}_patch.json" + (" (the folds of each split)" if takes_folds else "")
        except FileNotFoundError:
            missing.append(s)
            source[s] = "computed on the train split with the official formula (no NORM file)"
    computed: dict = {}
    if missing:
        compute = getattr(reader, "compute_norm_stats", None)
        stats = compute(root, missing) if compute else per_tile_norm_stats(datasets["train"], missing)
        computed = stats.to_dict()
    out = {role: {s: computed[s] if s in computed else read(s, ds) for s in sensors} for role, ds in datasets.items()}
    return {role: NormStats.from_dict(d) for role, d in out.items()}, source


class Standardised(Dataset):
    """Items of ``dataset`` with every sensor standardised by ``stats`` (the official readers do it per item)."""

    def __init__(self, dataset: Dataset, stats: NormStats):
        self.dataset, self.stats = dataset, stats

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        return self.stats.apply(self.dataset[i], batched=False)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)


def collate_padded(items: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """Stack items; time series of different lengths are padded at the end with zeros and date 0, no mask
    (the official ``collate_fn``: the padded dates enter the L-TAE like real ones).  ``<sensor>_valid``
    pixel masks are padded with False."""
    out = {}
    for key in items[0]:
        values = [torch.as_tensor(it[key]) for it in items]
        T = max(v.shape[0] for v in values) if values[0].dim() else 0
        sensor = split_key(key)[0]
        if sensor in SENSORS and SENSORS[sensor].is_series and any(v.shape[0] != T for v in values):
            values = [torch.cat([v, v.new_zeros((T - v.shape[0],) + v.shape[1:])]) for v in values]
        out[key] = torch.stack(values)
    return out


def _loader(
    ds: Dataset,
    batch_size: int,
    *,
    train: bool,
    drop_last: bool,
    seed: int,
    num_workers: int,
    weights: np.ndarray | None = None,
) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    sampler = None
    if weights is not None:
        sampler = WeightedRandomSampler(
            torch.as_tensor(weights, dtype=torch.double), num_samples=len(ds), replacement=True, generator=g
        )
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        drop_last=drop_last,
        collate_fn=collate_padded,
        num_workers=num_workers,
        generator=g,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
    )


# --- 2. model --------------------------------------------------------------------------------------
def finetuning_encoder(encoder: torch.nn.Module, task: TaskConfig) -> torch.nn.Module:
    """Give the loaded encoder the L-TAE settings of the official fine-tuning encoder (``Any_Base.yaml``):
    date period ``task.ltae_period`` and dropout ``task.projector_dropout`` in the input MLP and after
    the output MLP (the attention dropout, 0.1, is kept).  ``None`` leaves a setting as loaded."""
    for proj in encoder.projectors.values():
        if not isinstance(proj, SeriesProjector):
            continue
        if task.ltae_period is not None:
            proj.ltae.period = task.ltae_period
        if task.projector_dropout is not None:
            for name, m in proj.ltae.named_modules():
                if isinstance(m, torch.nn.Dropout) and name != "attn_drop":
                    m.p = task.projector_dropout
    return encoder


def build_task_model(
    task: TaskConfig, official, device: torch.device | str = "cpu", attend_over: str | None = None
) -> TaskModel:
    """Released weights (path or state dict, any official wrapping) + the task's head, on ``device``;
    ``attend_over`` as :func:`~anysat_lite.model.official.load_official`'s."""
    encoder = finetuning_encoder(load_official(official, attend_over=attend_over), task)
    missing = [s for s in task.sensors if s not in encoder.projectors]
    if missing:
        raise UserError(
            f"the checkpoint has no projector for {missing}; task {task.name} needs "
            f"{', '.join(task.sensors)}; pass the released AnySat.pth (it has all 11 sensors)"
        )
    D = encoder.embed_dim
    if task.head == "tile":
        head = TileHead(D, task.num_classes)
    else:
        head = DenseHead(2 * D, task.num_classes, task.pixels_per_subpatch)
    model = TaskModel(
        encoder, head, task.patch_size, dense_sensor=task.dense_sensor, frozen=task.frozen, window=task.window
    )
    if task.frozen and any(kw.get("pixel_masks") for kw in task.splits.values()):
        # Official quirk kept: the projector's forward re-enables the gradient of its pad parameter whenever
        # pixel masks are given, and the optimiser holds every parameter, so linear probing on PLANTED also
        # trains the pad values (and back-propagates through the frozen encoder to reach them).
        for s in task.sensors:
            if isinstance(encoder.projectors[s], SeriesProjector):
                encoder.projectors[s].pad_value.requires_grad_(True)
    return model.to(device)


# --- 3. loss, metric, schedule ---------------------------------------------------------------------
def task_loss(task: TaskConfig, logits: Tensor, target: Tensor) -> Tensor:
    """The official loss of the task (fp32): BCE with logits (multi-label), cross-entropy (single label), or
    per-pixel cross-entropy with void ``-1`` ignored and the ``ignore_classes`` weighted 0 (the official
    ``CrossEntropyWeighted``: a weighted mean, so the weight-0 pixels leave both sums)."""
    logits = logits.float()
    if task.loss == "bce":
        return F.binary_cross_entropy_with_logits(logits, target.float())
    if task.loss == "ce":
        return F.cross_entropy(logits, target.long())
    weight = torch.ones(task.num_classes, device=logits.device)
    weight[list(task.ignore_classes)] = 0
    target = target.long()
    total = F.cross_entropy(logits, target, weight=weight, ignore_index=-1, reduction="sum")
    counted = weight[target.clamp_min(0)][target >= 0].sum()
    return total / counted if counted > 0 else total * 0.0


class Scorer:
    """The task's metric, accumulated batch by batch from counts.

    ``update(logits, target)`` adds a batch; ``value()`` is the metric in ``[0, 1]``; with
    ``keep_items`` the per-tile decisions (classification) or confusion matrices (segmentation)
    are kept for :meth:`interval`.
    """

    def __init__(self, task: TaskConfig, keep_items: bool = False):
        self.task, self.keep_items = task, keep_items
        K = task.num_classes
        self.total = torch.zeros((K, K) if task.target == "segmentation" else (3, K), dtype=torch.long)
        self.items: list[tuple[Tensor, Tensor]] = []

    def update(self, logits: Tensor, target: Tensor) -> None:
        task, K = self.task, self.task.num_classes
        logits, target = logits.detach().float().cpu(), target.detach().cpu()
        if task.target == "multilabel":
            pred, target = multilabel_decision(logits), target.bool()
            self.total += multilabel_counts(pred, target)
        elif task.target == "label":
            pred, target = logits.argmax(1), target.long()
            self.total += multiclass_counts(pred, target, K)
        else:
            pred, target = logits.argmax(1).flatten(1), target.long().flatten(1)  # [B, H*W]
            bad = target[(target < -1) | (target >= K)]
            if len(bad):
                raise ValueError(f"segmentation target holds class {int(bad[0])}; expected -1 (void) or 0..{K - 1}")
            keep = target >= 0
            item = torch.arange(len(target))[:, None].expand_as(target)[keep]
            flat = item * K * K + target[keep] * K + pred[keep]
            pred = torch.bincount(flat, minlength=len(target) * K * K).view(-1, K, K)  # [B, K, K] per tile
            target = torch.zeros(len(pred))
            self.total += pred.sum(0)
        if self.keep_items:
            self.items.append((pred, target))

    def _score(self, total: Tensor) -> float:
        if self.task.metric == "miou":
            return miou_from_confusion(total, self.task.ignore_classes)["miou"]
        return f1_from_counts(total)[self.task.metric.split("-")[1]]

    def value(self) -> float:
        return self._score(self.total)

    def details(self) -> dict:
        if self.task.metric == "miou":
            return miou_from_confusion(self.total, self.task.ignore_classes)
        return f1_from_counts(self.total)

    def interval(self, n_boot: int = 1000, seed: int = 0) -> tuple[float, float] | None:
        """95 % percentile-bootstrap interval of the metric over the kept test tiles."""
        if not self.items or n_boot <= 0:
            return None
        pred = torch.cat([p for p, _ in self.items])
        target = torch.cat([t for _, t in self.items])
        K = self.task.num_classes
        if self.task.target == "multilabel":

            def metric(p, t):
                return self._score(multilabel_counts(p, t))
        elif self.task.target == "label":

            def metric(p, t):
                return self._score(multiclass_counts(p, t, K))
        else:

            def metric(p, t):
                return self._score(p.sum(0))

        return bootstrap_interval(metric, pred, target, n_boot, seed=seed)


class EpochSelection:
    """Model selection and early stopping as the official callbacks do them.

    ``ModelCheckpoint(mode="max", save_top_k=1)`` keeps the epoch whose validation metric is strictly
    greater than every earlier one; ``EarlyStopping(patience)`` signals a stop once ``patience``
    epochs in a row were not strictly better (or the metric is NaN), and the trainer's
    ``min_epochs`` defers that stop until ``min_epochs`` epochs have run.
    """

    def __init__(self, patience: int, min_epochs: int):
        self.patience, self.min_epochs = patience, min_epochs
        self.best, self.best_epoch, self.wait, self.signal, self.epochs = -math.inf, -1, 0, False, 0

    def update(self, value: float) -> bool:
        """Record one epoch's validation metric; True when it is the new best."""
        epoch, self.epochs = self.epochs, self.epochs + 1
        if not math.isnan(value) and value > self.best:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            return True
        self.wait += 1
        self.signal = self.signal or self.wait >= self.patience or math.isnan(value)
        return False

    @property
    def stop(self) -> bool:
        """Training ends after the current epoch."""
        return self.signal and self.epochs >= self.min_epochs


def warmup_cosine_lr(epoch: int, base_lr: float, warmup_epochs: int, max_epochs: int) -> float:
    """Learning rate of ``epoch`` (0-based) under pl_bolts' ``LinearWarmupCosineAnnealingLR`` stepped per epoch
    (``warmup_start_lr = eta_min = 0``, the official ``Classif.yaml``): ``epoch * base / (warmup - 1)`` during
    the warm-up (so the first epoch trains with 0), then a cosine from ``base`` at ``warmup`` to 0 at ``max_epochs``."""
    if epoch < warmup_epochs:
        return epoch * base_lr / max(1, warmup_epochs - 1)
    span = max(1, max_epochs - warmup_epochs)
    return 0.5 * base_lr * (1 + math.cos(math.pi * (epoch - warmup_epochs) / span))


# --- 4. loops --------------------------------------------------------------------------------------
def _split_batch(batch: Mapping[str, Tensor], task: TaskConfig, device) -> tuple[dict[str, Tensor], Tensor]:
    x = {k: v.to(device, non_blocking=True) for k, v in sensor_entries(batch, set(task.sensors)).items()}
    return x, batch[task.target].to(device, non_blocking=True)


def _autocast(device: torch.device, amp: str | None):
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(amp or "")
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def _batches(loader, limit: int | None, progress: bool, desc: str):
    from tqdm import tqdm

    total = len(loader) if limit is None else min(limit, len(loader))
    for i, batch in enumerate(tqdm(loader, total=total, disable=not progress, desc=desc, leave=False)):
        if i >= total:
            break
        yield batch


def train_epoch(
    model: TaskModel, loader, task: TaskConfig, optimizer, scaler, device, amp, limit=None, progress=False
) -> float:
    """One epoch over ``loader``; returns the mean training loss (weighted by batch size)."""
    model.train()
    total, n = 0.0, 0
    for batch in _batches(loader, limit, progress, "train"):
        x, y = _split_batch(batch, task, device)
        with _autocast(device, amp):
            logits = model(x)
        loss = task_loss(task, logits, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total, n = total + loss.item() * len(y), n + len(y)
    return total / max(n, 1)


@torch.no_grad()
def evaluate(
    model: TaskModel, loader, task: TaskConfig, device, amp=None, limit=None, keep_items=False, progress=False
) -> tuple[float, float, Scorer]:
    """Score ``loader``: (metric in ``[0, 1]``, mean loss, the :class:`Scorer`)."""
    model.eval()
    scorer = Scorer(task, keep_items)
    total, n = 0.0, 0
    for batch in _batches(loader, limit, progress, "eval"):
        x, y = _split_batch(batch, task, device)
        with _autocast(device, amp):
            logits = model(x)
        total, n = total + task_loss(task, logits, y).item() * len(y), n + len(y)
        scorer.update(logits, y)
    if n == 0:
        raise UserError("an evaluation split gave no batch; check the split is not empty (or raise --limit-batches)")
    return scorer.value(), total / n, scorer


# --- 5. the whole run ------------------------------------------------------------------------------
def _trained(model: TaskModel, task: TaskConfig) -> torch.nn.Module:
    """The part of the model that training changes: the head (linear probing; the pad values too when they
    train, see :func:`build_task_model`) or everything (fine-tuning)."""
    return model.head if task.frozen and not any(p.requires_grad for p in model.encoder.parameters()) else model


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# run_task's counts: the probe --official flag that sets each, its smallest value and an example
_COUNTS = {
    "max_epochs": ("--epochs", 1, "200 (official)"),
    "min_epochs": ("--min-epochs", 0, "50 (official)"),
    "batch_size": ("--batch-size", 1, "32"),
    "num_workers": ("--num-workers", 0, "0 (read in the main process)"),
    "limit_batches": ("--limit-batches", 1, "2 (a smoke run)"),
    "bootstrap": ("--bootstrap", 0, "1000 (official-style interval) or 0 (none)"),
}


def _check_counts(**values) -> None:
    """Refuse a count of :data:`_COUNTS` below its smallest value (``None``: the default, always fine)."""
    for name, value in values.items():
        flag, low, example = _COUNTS[name]
        if value is not None and value < low:
            raise UserError(f"{name} (probe {flag}): expected an integer >= {low}, got {value}; e.g. {flag} {example}")


def _task_with_overrides(task: str | TaskConfig, **overrides) -> tuple[TaskConfig, dict]:
    """The task preset with the given (non-``None``) overrides, and those overrides."""
    task = get_task(task)
    changes = {k: v for k, v in overrides.items() if v is not None}
    task = task.replace(**changes) if changes else task
    return task, changes


def check_run_settings(
    task: str | TaskConfig,
    *,
    max_epochs: int | None = None,
    min_epochs: int | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    num_workers: int | None = None,
    limit_batches: int | None = None,
    bootstrap: int = 1000,
    val_metric: str = "pooled",
) -> tuple[TaskConfig, dict]:
    """Refuse settings of :func:`run_task` that are out of range or contradict each other, before any work;
    returns the task preset with the overrides and those overrides (``probe --official`` checks every task
    with it before running the first)."""
    task, changes = _task_with_overrides(
        task, max_epochs=max_epochs, min_epochs=min_epochs, batch_size=batch_size, seed=seed
    )
    _check_counts(
        max_epochs=task.max_epochs,
        min_epochs=task.min_epochs,
        batch_size=task.batch_size,
        num_workers=num_workers,
        limit_batches=limit_batches,
        bootstrap=bootstrap,
    )
    if min_epochs is not None and task.min_epochs > task.max_epochs:
        most = f"--epochs {max_epochs}" if max_epochs is not None else f"the {task.max_epochs} epochs of {task.name}"
        raise UserError(
            f"min_epochs (probe --min-epochs) {min_epochs}: expected at most max_epochs ({most}), got {min_epochs} "
            f"(no early stop before epoch {min_epochs} of a run of at most {task.max_epochs} epochs); lower "
            f"--min-epochs to {task.max_epochs} or less, or raise --epochs to {min_epochs} or more"
        )
    if val_metric not in VAL_METRICS:
        raise UserError(
            f"--val-metric {val_metric}: expected one of {', '.join(VAL_METRICS)}; e.g. --val-metric pooled"
        )
    return task, changes


def check_table_files(out_dir: str | Path, force: bool = False) -> None:
    """Refuse, unless ``force``, a ``reproduction.{json,md}`` in ``out_dir`` that is not the table of the result
    rows there (edited, or written by something else): :func:`run_task` rebuilds both from the rows."""
    from .paper_table import read_results, table_texts

    out = Path(out_dir)
    texts = table_texts(read_results(out) if out.is_dir() else [])

    def unchanged(path: Path) -> bool:
        try:
            return path.read_text(encoding="utf-8") == texts[path.name]
        except (OSError, UnicodeDecodeError):
            return False

    note = (
        " and does not match the results in that folder (edited, written by something else, or a run stopped "
        "before rebuilding it),"
    )
    check_output_files("--out", out, texts, force, "the run", note, unchanged)


def _runtime(device: str | None, amp: str | None, num_workers: int | None) -> tuple[torch.device, str | None, int]:
    """Device (CUDA when available), autocast (``"auto"``: fp16 on CUDA) and data-loading processes."""
    dev = check_device("--device", device)
    amp = ("fp16" if dev.type == "cuda" else None) if amp == "auto" else amp
    if amp not in (None, "fp16", "bf16"):
        raise UserError(f"amp must be 'fp16', 'bf16', 'auto' or None, got {amp!r}")
    workers = (8 if dev.type == "cuda" else 0) if num_workers is None else num_workers
    return dev, amp, workers


def _task_loaders(task: TaskConfig, datasets, wrapped, workers: int) -> tuple[dict[str, DataLoader], bool]:
    """Train, val and test loaders (the official drop-last rules) and whether validation drops its last batch."""
    B = task.batch_size
    if len(datasets["train"]) < B:
        raise UserError(
            f"the train split has {len(datasets['train'])} items, fewer than the batch size {B} (the "
            "official loader drops the last incomplete batch); pass a smaller --batch-size"
        )
    val_drop_last = len(datasets["val"]) >= B
    weights = datasets["train"].density_weights() if task.density_sampling else None
    loaders = {
        "train": _loader(
            wrapped["train"], B, train=True, drop_last=True, seed=task.seed, num_workers=workers, weights=weights
        ),
        "val": _loader(wrapped["val"], B, train=False, drop_last=val_drop_last, seed=task.seed, num_workers=workers),
        "test": _loader(wrapped["test"], B, train=False, drop_last=False, seed=task.seed, num_workers=workers),
    }
    return loaders, val_drop_last


VAL_METRICS = ("pooled", "per-epoch")
SANITY_BATCHES = 2  # Lightning's num_sanity_val_steps, which the official trainer config leaves at its default


def _fit(
    model: TaskModel,
    task: TaskConfig,
    loaders,
    train_set,
    dev,
    amp,
    limit_batches,
    progress,
    log,
    val_metric: str = "pooled",
) -> tuple[list[dict], EpochSelection]:
    """Train with validation after every epoch; returns the epoch history and the selection, and leaves the
    weights of the best validation epoch in ``model``.

    ``val_metric`` is the validation metric that selects the epoch and stops training:

    * ``"pooled"`` (the official behaviour): the official ``Module`` updates its validation metric in
      every validation step and never resets it, so the value logged after epoch ``e`` scores the
      predictions of every validation pass so far, the trainer's sanity check (2 batches of the
      untrained head, before epoch 0) included; checkpoint selection and early stopping read that
      running value.
    * ``"per-epoch"``: each epoch's own validation predictions only.

    The validation loss that drives ``ReduceLROnPlateau`` is per epoch in both (Lightning averages it
    over the epoch).  The history records the selection's value (``val_<metric>``) and each epoch's
    own (``val_<metric>_epoch``); the pooled value also with ``per-epoch``.
    """
    pooled = Scorer(task)
    if val_metric == "pooled":  # the sanity check: its predictions stay in the official metric's state
        sanity = SANITY_BATCHES if limit_batches is None else min(SANITY_BATCHES, limit_batches)
        pooled.total += evaluate(model, loaders["val"], task, dev, amp, sanity)[2].total
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=task.lr, weight_decay=task.weight_decay)
    plateau = (
        torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.1, patience=10)
        if task.schedule == "plateau"
        else None
    )
    scaler = torch.amp.GradScaler(dev.type, enabled=amp == "fp16")
    selection, best_state, history = EpochSelection(task.patience, task.min_epochs), None, []
    for epoch in range(task.max_epochs):
        te = time.time()
        if task.schedule == "warmup-cosine":
            for group in optimizer.param_groups:
                group["lr"] = warmup_cosine_lr(epoch, task.lr, task.warmup_epochs, task.max_epochs)
        lr = optimizer.param_groups[0]["lr"]
        train_set.set_epoch(epoch)
        train_loss = train_epoch(model, loaders["train"], task, optimizer, scaler, dev, amp, limit_batches, progress)
        epoch_value, val_loss, scorer = evaluate(
            model, loaders["val"], task, dev, amp, limit_batches, progress=progress
        )
        pooled.total += scorer.total
        value = pooled.value() if val_metric == "pooled" else epoch_value
        improved = selection.update(value)
        if improved:
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in _trained(model, task).state_dict().items()}
        if plateau is not None:
            plateau.step(val_loss)
        history.append(
            {
                "epoch": epoch,
                "lr": lr,
                "train_loss": round(train_loss, 5),
                "val_loss": round(val_loss, 5),
                f"val_{task.metric}": round(100 * value, 3),  # the selection's (val_metric)
                f"val_{task.metric}_epoch": round(100 * epoch_value, 3),
                f"val_{task.metric}_pooled": round(100 * pooled.value(), 3),
                "seconds": round(time.time() - te, 1),
            }
        )
        log(
            f"epoch {epoch:3d}  lr {lr:.2e}  train loss {train_loss:.4f}  val loss {val_loss:.4f}  "
            f"val {task.metric_name} {100 * value:.2f}"
            + (f" (this epoch {100 * epoch_value:.2f})" if val_metric == "pooled" else "")
            + f"{'  *' if improved else ''}  ({time.time() - te:.0f} s)"
        )
        if selection.stop:
            break
    if best_state is not None:
        _trained(model, task).load_state_dict(best_state)
    return history, selection


def run_task(
    task: str | TaskConfig,
    official,
    data: str | Path,
    out_dir: str | Path | None = None,
    *,
    device: str | None = None,
    seed: int | None = None,
    max_epochs: int | None = None,
    min_epochs: int | None = None,
    batch_size: int | None = None,
    num_workers: int | None = None,
    amp: str | None = "auto",
    limit_batches: int | None = None,
    bootstrap: int = 1000,
    progress: bool = True,
    log=print,
    allow_pickle: bool = False,
    val_metric: str = "pooled",
    attend_over: str | None = None,
) -> dict:
    """Reproduce one row of the paper: train and select on the task's splits, score its test split.

    Args:
        task: a preset name of :data:`~.tasks.TASKS` or a :class:`~.tasks.TaskConfig`.
        official: the released ``AnySat.pth`` (path) or an official state dict (any wrapping).
        data: the dataset folder in its official layout.
        out_dir: where ``<task>.json`` and the combined ``reproduction.{json,md}`` table go (None: not written).
        device: ``"cuda"``, ``"cpu"``... (default: CUDA when available).
        seed: default the preset's (official 32).
        max_epochs, min_epochs, batch_size: override the preset (e.g. a one-epoch smoke run).
        num_workers: data-loading processes (default 8 on CUDA as the official trainer, 0 on the CPU).
        amp: ``"fp16"`` (official), ``"bf16"``, ``None``; ``"auto"``: fp16 on CUDA, none on the CPU.
        limit_batches: at most this many batches per epoch and split (smoke runs; the row is marked partial).
        bootstrap: resamples of the test tiles for the 95 % interval (0: none).
        allow_pickle: let the PLANTED reader unpickle object arrays (:func:`build_splits`).
        val_metric: ``"pooled"`` (official: the validation metric accumulates over every validation pass)
            or ``"per-epoch"``; see :func:`_fit`.
        attend_over: ``"tokens"`` (the official code without flash-attn) or ``"heads"`` (with flash-attn, as
            the official configs ask; docs/reproduction.md, "Known differences").
    Returns:
        the result row (also written to ``out_dir``), see :mod:`~.paper_table`.
    """
    from .paper_table import write_result

    t0 = time.time()
    task, changes = check_run_settings(
        task,
        max_epochs=max_epochs,
        min_epochs=min_epochs,
        batch_size=batch_size,
        seed=seed,
        num_workers=num_workers,
        limit_batches=limit_batches,
        bootstrap=bootstrap,
        val_metric=val_metric,
    )
    dev, amp, workers = _runtime(device, amp, num_workers)
    _seed_everything(task.seed)
    official_path = Path(official) if isinstance(official, (str, Path)) else None
    model = build_task_model(task, official, dev, attend_over)  # checkpoint mistakes before reading any data

    datasets = build_splits(task, data, task.seed, allow_pickle)
    stats, norm_source = split_norm_stats(datasets, data, task.sensors)
    wrapped = {role: Standardised(datasets[role], stats[role]) for role in ROLES}
    loaders, val_drop_last = _task_loaders(task, datasets, wrapped, workers)
    log(
        f"{task.name}: {task.protocol}, {sum(p.numel() for p in model.parameters() if p.requires_grad):,} "
        f"trainable parameters, splits {', '.join(f'{r} {len(datasets[r])}' for r in ROLES)}, "
        f"batch {task.batch_size}, device {dev}" + (f", amp {amp}" if amp else "")
    )

    t_train = time.time()
    history, selection = _fit(
        model, task, loaders, wrapped["train"], dev, amp, limit_batches, progress, log, val_metric
    )
    train_seconds = time.time() - t_train

    t_test = time.time()
    value, _, scorer = evaluate(
        model, loaders["test"], task, dev, amp, limit_batches, keep_items=True, progress=progress
    )
    ci = scorer.interval(bootstrap, seed=task.seed)
    measured = 100 * value
    paper = task.paper.value
    result = {
        "task": task.name,
        "dataset": task.dataset,
        "protocol": task.protocol,
        "metric": task.metric_name,
        "paper": paper,
        "paper_approximate": task.paper.approximate,
        "paper_source": task.paper.source,
        "paper_note": task.paper.note,
        "measured": round(measured, 2),
        "delta": None if paper is None else round(measured - paper, 2),
        "ci95": None if ci is None else [round(100 * ci[0], 2), round(100 * ci[1], 2)],
        "seed": task.seed,
        "epochs_run": len(history),
        "best_epoch": selection.best_epoch,
        "best_val": round(100 * selection.best, 3) if selection.best > -math.inf else None,
        "val_metric": val_metric,
        "attend_over": attend_over or "tokens",  # a new model from the checkpoint: load_official's default
        "splits": {r: {"items": len(datasets[r]), "reader": {k: v for k, v in task.splits[r].items()}} for r in ROLES},
        "val_drop_last": val_drop_last,
        "batch_size": task.batch_size,
        "patch_size_m": task.patch_size,
        "sensors": list(task.sensors),
        "normalisation": norm_source,
        "device": str(dev),
        "amp": amp,
        "limit_batches": limit_batches,
        "overrides": changes,
        "partial": limit_batches is not None or bool(set(changes) - {"seed"}) or val_metric != "pooled",
        "checkpoint": str(official_path) if official_path else None,
        "checkpoint_sha256": sha256_of(official_path) if official_path else None,
        "seconds": {
            "total": round(time.time() - t0, 1),
            "train": round(train_seconds, 1),
            "test": round(time.time() - t_test, 1),
        },
        "test_details": {
            k: ([round(v, 4) for v in val] if isinstance(val, list) else round(val, 5))
            for k, val in scorer.details().items()
        },
        "history": history,
        "official_configs": list(task.official_configs),
        "notes": list(task.notes),
        "settings": {
            "lr": task.lr,
            "weight_decay": task.weight_decay,
            "schedule": task.schedule,
            "max_epochs": task.max_epochs,
            "min_epochs": task.min_epochs,
            "patience": task.patience,
            "ltae_period": task.ltae_period,
            "projector_dropout": task.projector_dropout,
        },
    }
    log(
        f"{task.name}: test {task.metric_name} {measured:.2f}"
        + (f" (paper {paper}, delta {measured - paper:+.2f})" if paper is not None else "")
    )
    if out_dir is not None:
        write_result(result, out_dir)
    return result
