"""Metrics log (CSV + JSON lines) and the training-curve figure."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path

from ..files import atomic_write

__all__ = ["MetricLog", "read_metrics", "plot_metrics"]


class MetricLog:
    """Appends one row per logged step to ``metrics.csv`` and ``metrics.jsonl`` in ``folder``.

    ``resume_step`` drops rows logged after that step (a run killed after its last checkpoint).
    Besides the losses and schedules: ``val_loss`` (on validation steps), ``batch`` (global batch),
    ``seconds`` since the start, and the pace averaged over the steps since the previous row:
    ``step_s`` (wall seconds per step, data wait included), ``data_wait_s`` (seconds per step
    spent waiting for the batch), ``samples_per_s``, and ``peak_mem_mb`` (CUDA: the most memory
    allocated since the previous row; CPU: the process's maximum resident set so far).
    ``tensorboard`` also writes the numbers as TensorBoard scalars (needs the ``tensorboard`` package).
    """

    FIELDS = (
        "step",
        "loss",
        "jepa_loss",
        "contrastive_loss",
        "val_loss",
        "lr",
        "wd",
        "momentum",
        "std",
        "erank",
        "cos",
        "place_cos",
        "dataset",
        "patch_size",
        "batch",
        "seconds",
        "step_s",
        "data_wait_s",
        "samples_per_s",
        "peak_mem_mb",
    )

    def __init__(self, folder: str | Path, resume_step: int | None = None, tensorboard: bool = False):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.board = None
        self.csv, self.jsonl = self.folder / "metrics.csv", self.folder / "metrics.jsonl"
        if resume_step is None:
            for p in (self.csv, self.jsonl):
                p.unlink(missing_ok=True)
        else:
            self._rewrite([r for r in read_metrics(self.folder) if int(r["step"]) <= resume_step])
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                from ..errors import UserError

                raise UserError(
                    "train.tensorboard=true needs the tensorboard package; install it (pip install "
                    "tensorboard) or set train.tensorboard=false"
                ) from None
            purge = None if resume_step is None else resume_step + 1  # events a killed run wrote after it
            self.board = SummaryWriter(str(self.folder / "tensorboard"), purge_step=purge)

    def _csv_rows(self, f, rows, header: bool) -> None:
        w = csv.DictWriter(f, fieldnames=self.FIELDS, extrasaction="ignore")
        if header:
            w.writeheader()
        w.writerows({k: row.get(k, "") for k in self.FIELDS} for row in rows)

    def _json_rows(self, f, rows) -> None:
        f.writelines(json.dumps({k: v for k, v in row.items() if k in self.FIELDS}) + "\n" for row in rows)

    def _rewrite(self, rows: list[Mapping]) -> None:
        """Replace both files by ``rows``, each file whole or not at all: a resume interrupted here keeps the
        old log (``metrics.jsonl`` is the one read back, so the next resume trims it again)."""

        def write_csv(tmp: str) -> None:
            with open(tmp, "w", newline="") as f:
                self._csv_rows(f, rows, header=True)

        def write_jsonl(tmp: str) -> None:
            with open(tmp, "w") as f:
                self._json_rows(f, rows)

        atomic_write(self.csv, write_csv)
        atomic_write(self.jsonl, write_jsonl)

    def write(self, row: Mapping) -> None:
        new = not self.csv.exists()
        with self.csv.open("a", newline="") as f:
            self._csv_rows(f, [row], header=new)
        with self.jsonl.open("a") as f:
            self._json_rows(f, [row])
        if self.board is not None:
            for k, v in row.items():
                if k in self.FIELDS and k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.board.add_scalar(k, v, int(row["step"]))
            self.board.flush()

    def close(self) -> None:
        if self.board is not None:
            self.board.close()


def read_metrics(folder: str | Path) -> list[dict]:
    """The rows of ``<folder>/metrics.jsonl`` (none when it is missing); a damaged line is a :class:`UserError`."""
    from ..errors import UserError

    p = Path(folder) / "metrics.jsonl"
    if not p.exists():
        return []
    rows = []
    for n, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise UserError(
                f"{p} line {n}: not a JSON row ({e.msg}), expected one row per logged step; delete that line "
                "(or move the file away to start the log again) and rerun"
            ) from None
    return rows


def _warn_thresholds(folder: Path) -> dict[str, float]:
    """The run's collapse-warning thresholds (``jepa.warn_*`` of its ``config.yaml``); empty when absent."""
    import yaml

    try:
        jepa = yaml.safe_load((folder / "config.yaml").read_text()).get("jepa") or {}
    except (OSError, AttributeError, yaml.YAMLError):
        return {}
    return {k: float(jepa[f"warn_{k}"]) for k in ("std", "cos", "erank") if jepa.get(f"warn_{k}") is not None}


def plot_metrics(folder: str | Path, out: str | Path | None = None):
    """Loss terms and collapse monitors against step, with the run's warning thresholds dashed; saved to
    ``training_curves.png`` (or ``out``)."""
    import matplotlib.pyplot as plt

    folder = Path(folder)
    rows = read_metrics(folder)
    fig, axes = plt.subplots(1, 6, figsize=(22, 3.6), layout="constrained")
    fig.suptitle(f"Pretraining curves of {folder.name}: losses per patch size, collapse monitors of the EMA target")
    panels = [
        ("jepa_loss", "JEPA loss (smooth L1)"),
        ("contrastive_loss", "MIL-NCE loss"),
        ("std", "std per dimension"),
        ("cos", "tile cosine similarity"),
        ("erank", "effective rank"),
        ("place_cos", "cosine between places of a tile"),
    ]
    sizes = sorted({r["patch_size"] for r in rows if r.get("patch_size") not in (None, "")})
    datasets = sorted({r["dataset"] for r in rows if r.get("dataset") not in (None, "")})
    # one line per patch size and dataset: their losses live on different scales (the demo's S2-alone steps
    # have fewer tokens and no sensor pairs, so their MIL-NCE is lower than the three-sensor steps')
    groups = [(d, P) for d in datasets or [None] for P in sizes or [None]]
    mon = [r for r in rows if r.get("std") not in (None, "")]
    thresholds = _warn_thresholds(folder)
    for ax, (key, label) in zip(axes, panels):
        if key.endswith("loss"):
            for i, (d, P) in enumerate(groups):
                sel = [r for r in rows if (P is None or r["patch_size"] == P) and (d is None or r["dataset"] == d)]
                if not sel:  # e.g. a dataset trained at one of the patch sizes only
                    continue
                name = ", ".join(([d] if len(datasets) > 1 else []) + ([f"P = {P:g} m"] if P else [])) or "all steps"
                style = ["-", "--", ":", "-."][datasets.index(d) % 4] if d is not None else "-"
                ax.plot([r["step"] for r in sel], [r[key] for r in sel], ls=style, color=f"C{i % 10}", label=name)
        elif sel := [r for r in mon if r.get(key) not in (None, "")]:
            ax.plot([r["step"] for r in sel], [r[key] for r in sel], color="C2", label="EMA target")
            if key in thresholds:
                ax.axhline(thresholds[key], color="C3", ls="--", lw=1, label=f"warning threshold {thresholds[key]:g}")
        ax.set_title(label)
        ax.set_xlabel("step")
        ax.set_ylabel(label.split(" (")[0])
        if ax.lines:
            ax.legend(fontsize=8)
    out = Path(out) if out else folder / "training_curves.png"
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)
    return out
