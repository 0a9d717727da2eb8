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
