"""What reproducing a row of the paper costs: FLOPs on the real input sizes, an estimated GPU time, disk space.

* :func:`flops_per_tile` counts the FLOPs of one tile through the base encoder and the task's head
  with ``torch.utils.flop_counter.FlopCounterMode`` on the ``meta`` device (shapes only, nothing is
  computed), at the task's patch size and with the input sizes of :data:`DATASETS` (real tile sizes;
  the numbers of dates are stated assumptions where they vary).
* :func:`estimate` turns them into the FLOPs of an epoch (training: 3x the forward pass for
  fine-tuning, 1x for linear probing, 2x when the pad values train through the frozen encoder; plus
  the validation pass) and into hours at an assumed sustained throughput, for the fewest (50) and
  the most (200) epochs the official early stopping allows.  **These are estimates, not
  measurements**: data loading, small kernels and the Python overhead are not in them.
* :func:`disk_gb` estimates the space of each dataset from its tile count and file sizes.

``python -m anysat_lite.probe.cost`` prints the runbook's table (``docs/reproduction.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .tasks import TASKS, TaskConfig, get_task

__all__ = ["DatasetFacts", "DATASETS", "flops_per_tile", "estimate", "disk_gb", "runbook_table", "ASSUMED_TFLOPS"]

ASSUMED_TFLOPS = 100.0
"""Assumed sustained throughput of one H100 in fp16 mixed precision, TFLOP/s (about a tenth of its dense
peak: the encoder's many small per-pixel and per-patch matrices keep it far from the peak)."""

_README = "official README (tile counts)"
_LEN = "configs/dataset/{}.yaml len: (train split)"


@dataclass(frozen=True)
class DatasetFacts:
    """Sizes of one dataset: tile counts and the shapes of one tile as the model receives it.

    ``train`` / ``eval``: sensor -> shape without batch axis (``[T, C, H, W]`` or ``[C, H, W]``) of a
    training item (after the official crops and date dropout) and of a validation/test item.
    ``val`` and ``test`` tile counts are each taken as half of ``total - train`` where the split sizes
    are not given in the official repository.
    """

    tiles_total: int
    tiles_train: int
    train: dict
    eval: dict
    sources: tuple[str, ...]
    assumptions: tuple[str, ...] = ()
    file_bytes_per_tile: dict = field(default_factory=dict)

    @property
    def tiles_val(self) -> int:
        return (self.tiles_total - self.tiles_train) // 2

    @property
    def tiles_test(self) -> int:
        return self.tiles_total - self.tiles_train - self.tiles_val


DATASETS: dict[str, DatasetFacts] = {
    "treesatai-ts": DatasetFacts(
        50_381,
        38_520,
        train={"aerial": (4, 300, 300), "s2": (146, 10, 6, 6), "s1-asc": (60, 2, 6, 6)},
        eval={"aerial": (4, 300, 300), "s2": (146, 10, 6, 6), "s1-asc": (60, 2, 6, 6)},
        sources=(_README, _LEN.format("TreeSAT")),
        assumptions=("dates: 146 S2 and 60 S1-asc, the counts of the real tile in data/treesatai_ts_sample",),
        file_bytes_per_tile={"aerial/*.tif + sentinel/*.h5 + s1-asc/*.pth": "data/treesatai_ts_sample"},
    ),
    "pastis-hd": DatasetFacts(
        2_433,
        1_455,
        train={"spot": (3, 1280, 1280), "s2": (20, 10, 128, 128), "s1": (20, 3, 128, 128)},
        eval={"spot": (3, 1280, 1280), "s2": (50, 10, 128, 128), "s1": (70, 3, 128, 128)},
        sources=(_README, _LEN.format("Pastis"), "configs/dataset/Pastis.yaml temporal_dropout: 20 (train dates)"),
        assumptions=(
            "validation/test dates: 50 S2 (assumed; the series vary in length) and 70 S1 (the PASTIS-HD "
            "dataset card: about 70 Sentinel-1 observations per orbit)",
        ),
        file_bytes_per_tile={
            "S2 int16 [50, 10, 128, 128]": 50 * 10 * 128 * 128 * 2,
            "S1A and S1D float32 [70, 3, 128, 128] each": 2 * 70 * 3 * 128 * 128 * 4,
            "SPOT uint8 [3, 1280, 1280]": 3 * 1280 * 1280,
            "ANNOTATIONS [3, 128, 128] (taken as int32)": 3 * 128 * 128 * 4,
        },
    ),
    "flair": DatasetFacts(
        77_762,
        49_230,
        train={"aerial-flair": (5, 500, 500), "s2": (15, 10, 10, 10)},
        eval={"aerial-flair": (5, 500, 500), "s2": (50, 10, 10, 10)},
        sources=(_README, _LEN.format("FLAIR"), "configs/dataset/FLAIR.yaml temporal_dropout: 0.7 (train dates)"),
        assumptions=(
            "S2 dates: 50 per super-patch (assumed), 15 left after the 70 % train-time dropout",
            "validation and test: the 512 px tile as five 500 px windows (official forward_test)",
        ),
        file_bytes_per_tile={"aerial uint8 [5, 512, 512]": 5 * 512 * 512, "mask uint8 [512, 512]": 512 * 512},
    ),
    "planted": DatasetFacts(
        1_346_662,
        1_075_701,
        train={
            "s2": (16, 10, 12, 12),
            "s1": (16, 3, 12, 12),
            "l7": (16, 6, 4, 4),
            "alos": (3, 3, 4, 4),
            "modis": (42, 7, 1, 1),
        },
        eval={
            "s2": (24, 10, 12, 12),
            "s1": (24, 3, 12, 12),
            "l7": (24, 6, 4, 4),
            "alos": (4, 3, 4, 4),
            "modis": (60, 7, 1, 1),
        },
        sources=(_README, _LEN.format("Planted"), "configs/dataset/Planted.yaml temporal_dropout: 0.3 (train dates)"),
        assumptions=(
            "dates (assumed, not read from the data): 24 for S2, S1 and Landsat 7, 4 for ALOS, 60 for "
            "MODIS; int(70 %) of them kept in training, MODIS included (ALOS: int(90 %)): 16, 3 and 42",
        ),
    ),
}


def _inputs(shapes: dict, batch: int = 1) -> dict:
    from ..sensors import SENSORS

    x = {}
    for s, shape in shapes.items():
        x[s] = torch.empty(batch, *shape, device="meta")
        if SENSORS[s].is_series:
            x[f"{s}_dates"] = torch.zeros(batch, shape[0], dtype=torch.long, device="meta")
    return x


_MODELS: dict = {}
_FLOPS: dict = {}


def _meta_model(size: str) -> torch.nn.Module:
    """The encoder of a named size on the meta device (weights have shapes but no values), built once."""
    from ..config import model_config
    from ..model import AnySat

    if size not in _MODELS:
        model = AnySat(model_config(size)).to("meta")
        model.check_values = False
        _MODELS[size] = model
    return _MODELS[size]


def flops_per_tile(task: str | TaskConfig, phase: str = "train", size: str = "base") -> float:
    """Forward FLOPs of one tile (encoder of ``size`` + head) at the task's patch size; ``phase`` ``"train"`` or
    ``"eval"`` (FLAIR eval: the five test windows)."""
    from torch.utils.flop_counter import FlopCounterMode

    from .heads import DenseHead, TaskModel, TileHead

    task = get_task(task)
    key = (task.name, phase, size)
    if TASKS.get(task.name) is task and key in _FLOPS:
        return _FLOPS[key]
    facts = DATASETS[task.dataset]
    shapes = {s: facts.train[s] if phase == "train" else facts.eval[s] for s in task.sensors}
    enc = _meta_model(size)
    D = enc.embed_dim
    head = (
        TileHead(D, task.num_classes)
        if task.head == "tile"
        else DenseHead(2 * D, task.num_classes, task.pixels_per_subpatch)
    ).to("meta")
    model = TaskModel(enc, head, task.patch_size, dense_sensor=task.dense_sensor).eval()
    windows = 5 if phase == "eval" and task.window else 1
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(_inputs(shapes))
    flops = float(counter.get_total_flops()) * windows
    if TASKS.get(task.name) is task:
        _FLOPS[key] = flops
    return flops


def estimate(task: str | TaskConfig, tflops: float = ASSUMED_TFLOPS, size: str = "base") -> dict:
    """FLOPs per epoch and estimated hours for the fewest and the most epochs of the official protocol."""
    task = get_task(task)
    facts = DATASETS[task.dataset]
    fwd_train, fwd_eval = flops_per_tile(task, "train", size), flops_per_tile(task, "eval", size)
    pads_train = task.frozen and any(kw.get("pixel_masks") for kw in task.splits.values())
    factor = 3.0 if not task.frozen else (2.0 if pads_train else 1.0)
    val_tiles = facts.tiles_test if task.splits["val"]["split"] == "test" else facts.tiles_val
    epoch = factor * fwd_train * facts.tiles_train + fwd_eval * val_tiles
    test = fwd_eval * facts.tiles_test
    hours = [(n * epoch + test) / (tflops * 1e12) / 3600 for n in (task.min_epochs, task.max_epochs)]
    return {
        "task": task.name,
        "forward_gflops_train_tile": fwd_train / 1e9,
        "forward_gflops_eval_tile": fwd_eval / 1e9,
        "train_factor": factor,
        "epoch_pflops": epoch / 1e15,
        "hours_min_epochs": hours[0],
        "hours_max_epochs": hours[1],
        "tflops_assumed": tflops,
    }


def disk_gb(dataset: str, repo_root: str | Path | None = None) -> float | None:
    """Estimated size of a dataset on disk, GB (1e9 bytes): tile count x bytes per tile (TreeSatAI-TS: the
    sizes of the real tile in ``data/treesatai_ts_sample``; PASTIS-HD, FLAIR: the raw arrays of one tile,
    FLAIR without its Sentinel-2 super-patches); ``None`` when unknown (PLANTED)."""
    facts = DATASETS[dataset]
    if not facts.file_bytes_per_tile:
        return None
    total = 0
    for what in facts.file_bytes_per_tile.values():
        if isinstance(what, str):
            folder = Path(repo_root or Path(__file__).resolve().parents[2]) / what
            files = [p for p in folder.iterdir() if p.suffix in (".tif", ".h5", ".pth")] if folder.is_dir() else []
            if not files:
                return None
            total += sum(p.stat().st_size for p in files)
        else:
            total += what
    return total * facts.tiles_total / 1e9


def runbook_table(tflops: float = ASSUMED_TFLOPS) -> str:
    """Markdown table of :func:`estimate` for every task, and the datasets' sizes."""
    lines = [
        f"| task | forward GFLOPs per tile (train / eval) | x | PFLOPs per epoch | estimated hours at "
        f"{tflops:g} TFLOP/s, 50 - 200 epochs |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in TASKS:
        e = estimate(name, tflops)
        lines.append(
            f"| {name} | {e['forward_gflops_train_tile']:.1f} / {e['forward_gflops_eval_tile']:.1f} | "
            f"{e['train_factor']:g} | {e['epoch_pflops']:.2f} | {e['hours_min_epochs']:.1f} - "
            f"{e['hours_max_epochs']:.1f} |"
        )
    lines += ["", "| dataset | tiles (train / val / test) | disk, GB (estimate) | assumptions |", "|---|---|---:|---|"]
    for name, f in DATASETS.items():
        gb = disk_gb(name)
        lines.append(
            f"| {name} | {f.tiles_train:,} / {f.tiles_val:,} / {f.tiles_test:,} | "
            f"{'unknown' if gb is None else f'{gb:.0f}'} | {'; '.join(f.assumptions)} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(runbook_table())
