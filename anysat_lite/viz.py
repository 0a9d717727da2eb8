"""Figures used by the notebooks (the notebooks call these; the logic lives here)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .sensors import SENSORS

__all__ = ["rgb", "show_sample", "draw_patch_grid", "token_table", "plot_token_counts", "plot_masks",
           "plot_modality_mask", "plot_date_drop", "plot_ema_schedule", "plot_segmentation"]

_RGB = {"aerial": (0, 1, 2), "aerial-flair": (0, 1, 2), "spot": (0, 1, 2), "naip": (0, 1, 2), "s2": (2, 1, 0)}


def rgb(x, sensor: str, date: int | None = None) -> np.ndarray:
    """``[C, H, W]`` (or ``[T, C, H, W]`` with ``date``) -> ``[H, W, 3]`` in [0, 1], 2-98 % stretched."""
    x = torch.as_tensor(x).float()
    if x.dim() == 4:
        x = x[date if date is not None else x.shape[0] // 2]
    bands = _RGB.get(sensor, (0, min(1, x.shape[0] - 1), min(2, x.shape[0] - 1)))
    img = x[list(bands)].permute(1, 2, 0).numpy()
    lo, hi = np.percentile(img, 2), np.percentile(img, 98)
    return np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)


def draw_patch_grid(ax, extent_m, patch_m: float, pixel_m: float, color="yellow", lw=1.0):
    """Patch boundaries every ``patch_m`` metres on an image shown with pixels of ``pixel_m`` metres."""
    H, W = (extent_m, extent_m) if np.isscalar(extent_m) else extent_m
    for v in np.arange(0, W + 1e-6, patch_m):
        ax.axvline(v / pixel_m - 0.5, color=color, lw=lw)
    for v in np.arange(0, H + 1e-6, patch_m):
        ax.axhline(v / pixel_m - 0.5, color=color, lw=lw)


def show_sample(sample: dict, b: int = 0, sensors: Sequence[str] | None = None, patch_m: float | None = None,
                axes=None, date: int | None = None):
    """One tile, one panel per sensor at its own resolution (optional patch grid)."""
    import matplotlib.pyplot as plt

    sensors = [s for s in (sensors or [k for k in sample if k in SENSORS]) if not SENSORS[s].one_token_per_tile]
    if axes is None:
        _, axes = plt.subplots(1, len(sensors), figsize=(3.2 * len(sensors), 3.4))
    axes = np.atleast_1d(axes)
    for ax, s in zip(axes, sensors):
        x = sample[s][b]
        sen = SENSORS[s]
        if s in _RGB:
            ax.imshow(rgb(x, s, date))
        else:
            img = torch.as_tensor(x).float()
            img = img[date if date is not None else img.shape[0] // 2][0] if sen.is_series else img[0]
            ax.imshow(img.numpy(), cmap="gray")
        H = x.shape[-2] * sen.gsd
        title = f"{s}: {x.shape[-2]}x{x.shape[-1]} px @ {sen.gsd:g} m"
        if sen.is_series:
            title += f", T={x.shape[0]}"
        ax.set_title(title, fontsize=9)
        if patch_m:
            draw_patch_grid(ax, (H, x.shape[-1] * sen.gsd), patch_m, sen.gsd)
        ax.set_xticks([])
        ax.set_yticks([])
    return axes


def token_table(sensors: Sequence[str], patch_sizes: Sequence[int], tile_m: float, order: str = "geometric") -> list[dict]:
    """Sub-patches per patch and tokens per tile for each sensor and patch size."""
    from .model.tokenizer import subpatch_layout

    rows = []
    for P in patch_sizes:
        n_patches = int(tile_m // P) ** 2
        for s in sensors:
            sen = SENSORS[s]
            if sen.one_token_per_tile:
                rows.append({"patch_m": P, "sensor": s, "subpatch_m": sen.subpatch_m, "g": 1, "patches": 1,
                             "subpatch_tokens": 1})
                continue
            lay = subpatch_layout(sen, P, order)
            rows.append({"patch_m": P, "sensor": s, "subpatch_m": lay.spacing_m, "g": lay.g, "patches": n_patches,
                         "subpatch_tokens": n_patches * lay.g ** 2})
    return rows


def plot_token_counts(sensors: Sequence[str], patch_sizes: Sequence[int], tile_m: float, ax=None):
    """Log-scale: sub-patch tokens per tile (per sensor) and joint-transformer tokens against patch size."""
    import matplotlib.pyplot as plt

    rows = token_table(sensors, patch_sizes, tile_m)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    for s in sensors:
        r = [x for x in rows if x["sensor"] == s]
        ax.plot([x["patch_m"] for x in r], [x["subpatch_tokens"] for x in r], "o-", label=f"{s} sub-patches")
    spatial = [s for s in sensors if not SENSORS[s].one_token_per_tile]
    ax.plot(patch_sizes, [1 + len(spatial) * int(tile_m // P) ** 2 for P in patch_sizes], "k--",
            label="joint transformer tokens")
    ax.set_xlabel("patch size (m)")
    ax.set_ylabel(f"tokens per {tile_m:g} m tile")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    return ax


def plot_masks(masks_by_name: dict, sample: int = 0, axes=None):
    """One panel per mask strategy: context (blue), target blocks (warm colours), unused (white)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    from .jepa.masks import masks_to_grid

    cmap = ListedColormap(["white", "#3b6fb6", "#e4572e", "#f3a712", "#a8c686", "#9b5de5", "#00b4d8"])
    if axes is None:
        _, axes = plt.subplots(1, len(masks_by_name), figsize=(3.2 * len(masks_by_name), 3.3))
    for ax, (name, m) in zip(np.atleast_1d(axes), masks_by_name.items()):
        ax.imshow(masks_to_grid(m, sample).numpy(), cmap=cmap, vmin=0, vmax=6)
        ax.set_title(f"{name}\ncontext {m.context.shape[1]}, targets {len(m.targets)}x{m.targets[0].shape[1]}",
                     fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    return axes


def plot_modality_mask(masked: torch.Tensor, sensors: Sequence[str], grid, sample: int = 0, axes=None):
    """``masked [B, M, K]`` over a full grid -> one panel per modality (black = replaced by the mask token)."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, len(sensors), figsize=(2.6 * len(sensors), 2.8))
    for m, (ax, s) in enumerate(zip(np.atleast_1d(axes), sensors)):
        ax.imshow((~masked[sample, m]).view(*grid).numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{s}: {(~masked[sample, m]).sum().item()}/{masked.shape[-1]} kept", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    return axes


def plot_date_drop(dates_before: torch.Tensor, dates_after: torch.Tensor, ax=None, label: str = ""):
    """Dates of one series before/after dropping, on a day-of-year axis."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 1.8))
    ax.eventplot([dates_before.numpy(), dates_after.numpy()], lineoffsets=[1, 0], colors=["#999", "#e4572e"])
    ax.set_yticks([0, 1])
    ax.set_yticklabels(["context encoder", "target encoder"])
    ax.set_xlim(0, 366)
    ax.set_xlabel(f"day of year {label}")
    return ax


def plot_ema_schedule(total_steps: int, start: float = 0.996, end: float = 1.0, ax=None):
    import matplotlib.pyplot as plt

    from .jepa.ema import momentum_at

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3))
    steps = np.arange(total_steps + 1)
    ax.plot(steps, [momentum_at(int(s), total_steps, start, end) for s in steps])
    ax.set_xlabel("step")
    ax.set_ylabel("EMA momentum m")
    ax.set_title("target <- m * target + (1 - m) * online", fontsize=9)
    return ax


def plot_segmentation(image: np.ndarray, truth: torch.Tensor, pred: torch.Tensor, classes: Sequence[str], axes=None):
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(10, 3.4))
    axes[0].imshow(image)
    axes[0].set_title("image")
    for ax, lab, t in ((axes[1], truth, "labels"), (axes[2], pred, "dense probe")):
        im = ax.imshow(lab.numpy(), cmap="tab10", vmin=0, vmax=9, interpolation="nearest")
        ax.set_title(t)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    cb = plt.colorbar(im, ax=axes, ticks=range(len(classes)), fraction=0.03)
    cb.ax.set_yticklabels(classes, fontsize=7)
    return axes


# --- notebooks 02-05: mask statistics, pretraining runs, schedules, contrastive pairs ------------------------------

def plot_context_statistics(stats: dict, axes=None):
    """Context size per grid for several mask settings, from :func:`anysat_lite.jepa.context_statistics`.

    ``stats``: ``{setting name: [statistics dict per grid]}``.  Left: the mean share of the grid the
    context encoder sees (%); right: the share of steps whose context is a single patch and (hatched)
    the share with at least four patches (%).
    """
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    names = list(stats)
    grids = [r["grid"] for r in stats[names[0]]]
    x = np.arange(len(grids))
    width = 0.8 / len(names)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, name in enumerate(names):
        rows = {r["grid"]: r for r in stats[name]}
        c = colours[j % len(colours)]
        share = [100 * rows[g]["mean_share"] for g in grids]
        axes[0].bar(x + j * width, share, width, color=c, label=name)
        for xi, v in zip(x + j * width, share):
            axes[0].text(xi, v + 1, f"{v:.0f}", ha="center", fontsize=7)
        axes[1].bar(x + j * width - width / 4, [100 * rows[g]["p_one"] for g in grids], width / 2, color=c,
                    label=f"{name}: exactly 1 patch")
        axes[1].bar(x + j * width + width / 4, [100 * rows[g]["p_at_least_4"] for g in grids], width / 2, color=c,
                    hatch="//", edgecolor="white", label=f"{name}: at least 4 patches")
    for ax in axes:
        ax.set_xticks(x + width * (len(names) - 1) / 2)
        ax.set_xticklabels(grids)
        ax.set_xlabel("patch grid of the tile (rows x columns of patches)")
        ax.set_ylim(0, 110)
    axes[0].set_ylabel("mean context share of the grid (%)")
    axes[0].set_title("How much of the tile the context encoder sees")
    axes[1].set_ylabel("share of steps (%)")
    axes[1].set_title("Steps whose context is one patch / at least 4 patches")
    axes[0].legend(fontsize=8, loc="upper right")
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return axes


_MONITOR_LABELS = {"jepa_loss": ("JEPA loss (smooth-L1)", "loss (target units)"),
                   "contrastive_loss": ("MIL-NCE loss", "loss (nats per anchor)"),
                   "std": ("target std per dimension", "std (layer-normed units)"),
                   "erank": ("effective rank of the targets (RankMe)", "effective rank (dimensions)"),
                   "cos": ("mean cosine between tile embeddings", "cosine similarity")}


def plot_monitor_runs(runs: dict, keys: Sequence[str] = ("jepa_loss", "std", "erank", "cos"),
                      thresholds: dict | None = None, axes=None):
    """Compare pretraining runs: one panel per logged quantity against the step.

    ``runs``: ``{run name: rows of anysat_lite.train.metrics.read_metrics}``; ``thresholds``:
    ``{key: value}`` drawn as dashed lines (the collapse warnings of ``JEPAConfig.warn_*``).
    """
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, len(keys), figsize=(3.9 * len(keys), 3.3))
    axes = np.atleast_1d(axes)
    for ax, key in zip(axes, keys):
        for name, rows in runs.items():
            sel = [r for r in rows if r.get(key) not in (None, "")]
            ax.plot([r["step"] for r in sel], [float(r[key]) for r in sel], label=name)
        if thresholds and key in thresholds:
            ax.axhline(thresholds[key], color="black", ls="--", lw=1, label=f"warning at {thresholds[key]:g}")
        title, ylabel = _MONITOR_LABELS.get(key, (key, key))
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.set_xlabel("training step")
        ax.legend(fontsize=7)
    return axes


def plot_schedules(cfg, axes=None):
    """The learning rate, weight decay and EMA momentum of every step of ``cfg.train`` / ``cfg.jepa``
    (:mod:`anysat_lite.train.schedules`, :func:`anysat_lite.jepa.momentum_at`), as the loop sets them."""
    import matplotlib.pyplot as plt

    from .jepa.ema import momentum_at
    from .train.schedules import cosine, lr_at

    tc = cfg.train
    steps = np.arange(tc.steps)
    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(12, 3.1))
    axes[0].plot(steps, [lr_at(int(s), tc.steps, tc.lr, tc.min_lr, tc.warmup_steps) for s in steps])
    axes[0].axvline(tc.warmup_steps, color="grey", ls=":", lw=1, label=f"end of warm-up (step {tc.warmup_steps})")
    axes[0].set_title("learning rate: linear warm-up, cosine decay")
    axes[0].set_ylabel("learning rate")
    axes[0].legend(fontsize=7)
    axes[1].plot(steps, [cosine(int(s), tc.steps, tc.weight_decay, tc.final_weight_decay) for s in steps])
    axes[1].set_title("weight decay (cosine)")
    axes[1].set_ylabel("AdamW weight decay")
    axes[2].plot(steps, [momentum_at(int(s) + 1, tc.steps, *cfg.jepa.ema) for s in steps])
    axes[2].set_title("EMA momentum m (linear)")
    axes[2].set_ylabel("momentum m")
    for ax in axes:
        ax.set_xlabel("training step")
    return axes


def contrastive_pairs(n_modalities: int, batch: int, n_patches: int) -> torch.Tensor:
    """Role of every (anchor, other) pair of MIL-NCE's ``L = M B N`` tokens, rows in modality-major order
    (modality, tile, patch): ``[L, L]`` long, 0 = negative (in the denominator only), 1 = positive (same tile
    and patch, another modality: numerator and denominator), 2 = left out (same tile and modality)."""
    M, B, N = n_modalities, batch, n_patches
    mod = torch.arange(M).repeat_interleave(B * N)
    tile = torch.arange(B).repeat_interleave(N).repeat(M)
    patch = torch.arange(N).repeat(M * B)
    same_tile = tile[:, None] == tile[None, :]
    same_mod = mod[:, None] == mod[None, :]
    role = torch.zeros(M * B * N, M * B * N, dtype=torch.long)
    role[same_tile & ~same_mod & (patch[:, None] == patch[None, :])] = 1
    role[same_tile & same_mod] = 2
    return role


def plot_contrastive_pairs(n_modalities: int, batch: int, n_patches: int, sensors: Sequence[str] | None = None,
                           ax=None):
    """The ``[L, L]`` pair roles of :func:`contrastive_pairs` as a picture, with a legend."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    role = contrastive_pairs(n_modalities, batch, n_patches)
    context = globals().get("PATCH_COLOURS", {}).get("context", "#2f6db5")   # the context colour of the masks
    colours = ["white", context, "#9a9a9a"]
    if ax is None:
        _, ax = plt.subplots(figsize=(5.2, 4.6))
    L = role.shape[0]
    ax.imshow(role.numpy(), cmap=ListedColormap(colours), vmin=0, vmax=2, extent=(-0.5, L - 0.5, L - 0.5, -0.5))
    block = batch * n_patches
    for k in range(1, n_modalities):
        ax.axhline(k * block - 0.5, color="black", lw=0.8)
        ax.axvline(k * block - 0.5, color="black", lw=0.8)
    names = list(sensors) if sensors else [f"modality {m}" for m in range(n_modalities)]
    ticks = [(m + 0.5) * block - 0.5 for m in range(n_modalities)]
    ax.set_xticks(ticks)
    ax.set_xticklabels(names, fontsize=8)
    ax.set_yticks(ticks)
    ax.set_yticklabels(names, fontsize=8, rotation=90, va="center")
    ax.set_xlabel(f"other token (modality, then tile, then patch; {L} tokens)")
    ax.set_ylabel("anchor token")
    ax.set_title(f"MIL-NCE pairs: {n_modalities} modalities x {batch} tiles x {n_patches} patches")
    ax.legend(handles=[Patch(facecolor=colours[1], label="positive (same place, other modality)"),
                       Patch(facecolor=colours[0], edgecolor="black", label="negative (denominator only)"),
                       Patch(facecolor=colours[2], label="left out (same tile and modality)")],
              fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return ax


def ema_memory(total_steps: int, ema=(0.996, 1.0)) -> np.ndarray:
    """``[total_steps + 1]``: the weight of the initial target parameters after each step,
    ``prod_{s <= t} m_s`` with the loop's momenta ``m_s = momentum_at(s, total_steps, *ema)``, ``s = 1..t``."""
    from .jepa.ema import momentum_at

    m = np.array([momentum_at(s, total_steps, *ema) for s in range(1, total_steps + 1)], dtype=np.float64)
    return np.concatenate([[1.0], np.cumprod(m)])


def plot_ema_memory(runs: dict, ax=None):
    """How much of its initialisation the EMA target keeps along training, for several schedules.

    ``runs``: ``{name: (total_steps, (m_start, m_end))}``; the x axis is the fraction of training done.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.4))
    for name, (steps, ema) in runs.items():
        w = ema_memory(steps, ema)
        ax.plot(np.arange(steps + 1) / steps, w, label=f"{name}: {steps} steps, m {ema[0]:g} -> {ema[1]:g}")
    ax.set_yscale("log")
    ax.set_xlabel("fraction of training done (step / total steps)")
    ax.set_ylabel("weight of the initial target (log scale)")
    ax.set_title("What the EMA target keeps of its random initialisation")
    ax.legend(fontsize=7)
    return ax


__all__ += ["plot_context_statistics", "plot_monitor_runs", "plot_schedules", "contrastive_pairs",
            "plot_contrastive_pairs", "ema_memory", "plot_ema_memory"]
