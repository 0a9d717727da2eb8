"""Masking for JEPA pretraining: which patches, modalities and dates the context encoder sees.

* :class:`MultiBlockMaskSampler` — I-JEPA's multi-block sampler on the patch grid: ``n_targets``
  blocks to predict (same size for the whole batch, drawn by scale and aspect ratio) and one
  large context block with the targets removed.  AnySat: 4 targets, scale 0.2–0.8, aspect
  0.75–1.5; context 0.85–1.0, no overlap.  The same indices apply to every modality.
* :class:`RandomMaskSampler` and :class:`SingleBlockMaskSampler` — baselines for comparison.
* :func:`modality_mask` — at every kept location one random modality stays, and a share of
  the others is replaced by a learned mask token.
* :func:`drop_dates` — each time series loses a share of its dates (context encoder only).

Every function takes an explicit ``torch.Generator`` so that a step's masks are a pure
function of ``(seed, step)`` (resumable, identical across processes).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import Tensor

from ..sensors import SENSORS

__all__ = ["Masks", "MultiBlockMaskSampler", "RandomMaskSampler", "SingleBlockMaskSampler", "build_mask_sampler",
           "modality_mask", "drop_dates", "masks_to_grid"]


@dataclass
class Masks:
    """Index masks on the flattened patch grid (row-major).

    Attributes:
        context: ``[B, Kc]`` sorted indices of the patches the context encoder sees.
        targets: one ``[B, Kt]`` tensor of patch indices per target block.
        grid: ``(h, w)`` of the patch grid.
    """

    context: Tensor
    targets: list[Tensor]
    grid: tuple[int, int]

    def shard(self, start: int, stop: int) -> "Masks":
        return Masks(self.context[start:stop], [t[start:stop] for t in self.targets], self.grid)

    def to(self, device) -> "Masks":
        return Masks(self.context.to(device), [t.to(device) for t in self.targets], self.grid)


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + float(torch.rand(1, generator=g)) * (hi - lo)


def _randint(g: torch.Generator, hi: int) -> int:
    return int(torch.randint(hi, (1,), generator=g))


def _equalise(masks: list[Tensor], g: torch.Generator) -> Tensor:
    """Random subsets of equal size (the smallest) of per-sample index sets -> ``[B, K]`` sorted."""
    k = min(len(m) for m in masks)
    out = []
    for m in masks:
        if len(m) > k:
            m = m[torch.randperm(len(m), generator=g)[:k]]
        out.append(m.sort().values)
    return torch.stack(out)


def _block(g: torch.Generator, grid, bh: int, bw: int) -> Tensor:
    """Boolean ``[h, w]`` with one ``bh x bw`` block at a random position."""
    h, w = grid
    top, left = _randint(g, h - bh + 1), _randint(g, w - bw + 1)
    m = torch.zeros(h, w, dtype=torch.bool)
    m[top:top + bh, left:left + bw] = True
    return m


class MultiBlockMaskSampler:
    """I-JEPA multi-block masks (every knob is an argument).

    Args:
        n_targets: target blocks per sample.
        target_scale: range of a target block's area, as a fraction of the grid.
        target_aspect: range of its height/width ratio (log-uniform).
        context_scale: range of the context block's area (square).
        min_keep: minimum number of context patches per sample.
        allow_overlap: keep target patches in the context (I-JEPA default: no).
    """

    def __init__(self, n_targets: int = 4, target_scale=(0.2, 0.8), target_aspect=(0.75, 1.5),
                 context_scale=(0.85, 1.0), min_keep: int = 1, allow_overlap: bool = False):
        self.n_targets, self.target_scale, self.target_aspect = n_targets, tuple(target_scale), tuple(target_aspect)
        self.context_scale, self.min_keep, self.allow_overlap = tuple(context_scale), min_keep, allow_overlap

    @staticmethod
    def block_size(g: torch.Generator, grid, scale, aspect) -> tuple[int, int]:
        """Block ``(height, width)`` in patches: area ``scale * h * w``, ratio ``aspect``, strictly inside the grid
        when the grid allows it (as I-JEPA)."""
        h, w = grid
        s = _uniform(g, *scale)
        ar = math.exp(_uniform(g, math.log(aspect[0]), math.log(aspect[1])))
        keep = max(1, int(h * w * s))
        bh = max(1, int(round(math.sqrt(keep * ar))))
        bw = max(1, int(round(math.sqrt(keep / ar))))
        bh = min(bh, max(1, h - 1))
        bw = min(bw, max(1, w - 1))
        return bh, bw

    def __call__(self, batch_size: int, grid: tuple[int, int], generator: torch.Generator) -> Masks:
        h, w = grid
        if h * w < 2:
            raise ValueError(f"JEPA masking needs at least 2 patches, the grid is {h}x{w}; use a smaller patch size")
        g = generator
        tb = self.block_size(g, grid, self.target_scale, self.target_aspect)
        cb = self.block_size(g, grid, self.context_scale, (1.0, 1.0))
        contexts, targets = [], [[] for _ in range(self.n_targets)]
        for _ in range(batch_size):
            blocks = [_block(g, grid, *tb) for _ in range(self.n_targets)]
            ctx = None
            for _attempt in range(20):
                c = _block(g, grid, *cb)
                if not self.allow_overlap:
                    for b in blocks:
                        c = c & ~b
                if c.sum() >= self.min_keep:
                    ctx = c
                    break
            if ctx is None:  # targets cover the context: keep the complement, drop blocks if needed
                union = torch.zeros(h, w, dtype=torch.bool)
                for b in blocks:
                    union |= b
                ctx = ~union
                if ctx.sum() < self.min_keep:
                    ctx = ~blocks[0]
                    blocks = [blocks[0]] * self.n_targets
            contexts.append(ctx.flatten().nonzero().squeeze(1))
            for t, b in zip(targets, blocks):
                t.append(b.flatten().nonzero().squeeze(1))
        return Masks(_equalise(contexts, g), [_equalise(t, g) for t in targets], grid)


class RandomMaskSampler:
    """Context = a random ``keep`` share of the patches, target = all the others (one block)."""

    def __init__(self, keep: float = 0.5):
        self.keep = keep

    def __call__(self, batch_size: int, grid, generator: torch.Generator) -> Masks:
        n = grid[0] * grid[1]
        if n < 2:
            raise ValueError(f"JEPA masking needs at least 2 patches, the grid is {grid[0]}x{grid[1]}")
        k = min(n - 1, max(1, int(round(self.keep * n))))
        perm = torch.stack([torch.randperm(n, generator=generator) for _ in range(batch_size)])
        return Masks(perm[:, :k].sort(1).values, [perm[:, k:].sort(1).values], grid)


class SingleBlockMaskSampler(MultiBlockMaskSampler):
    """One target block; the context is everything else."""

    def __init__(self, target_scale=(0.2, 0.8), target_aspect=(0.75, 1.5)):
        super().__init__(n_targets=1, target_scale=target_scale, target_aspect=target_aspect,
                         context_scale=(1.0, 1.0), min_keep=1)


def build_mask_sampler(cfg):
    """Sampler from a :class:`~anysat_lite.config.JEPAConfig`."""
    if cfg.mask == "multiblock":
        return MultiBlockMaskSampler(cfg.n_targets, cfg.target_scale, cfg.target_aspect, cfg.context_scale,
                                     cfg.min_keep, cfg.allow_overlap)
    if cfg.mask == "random":
        return RandomMaskSampler(cfg.random_keep)
    if cfg.mask == "block":
        return SingleBlockMaskSampler(cfg.target_scale, cfg.target_aspect)
    raise ValueError(f"unknown mask kind {cfg.mask!r}; use multiblock, random or block")


def masks_to_grid(masks: Masks, sample: int = 0) -> Tensor:
    """Picture of one sample's masks ``[h, w]``: 0 unused, 1 context, 2.. target block index + 2."""
    h, w = masks.grid
    pic = torch.zeros(h * w, dtype=torch.long)
    for i, t in enumerate(masks.targets):
        pic[t[sample]] = i + 2
    pic[masks.context[sample]] = 1
    return pic.view(h, w)


def modality_mask(batch: int, n_modalities: int, n_locations: int, ratio: float, generator: torch.Generator,
                  rows: slice | None = None) -> Tensor:
    """AnySat modality masking -> ``[B, M, K]`` bool, True where the token is replaced by the mask token.

    Every location keeps one random modality; of the remaining ``K * (M - 1)`` tokens a
    random ``1 - ratio`` share is kept too.  ``rows`` selects this process's share when
    ``batch`` is the global batch (the draw is the same on every process).
    """
    B, M, K = batch, n_modalities, n_locations
    if rows is not None:
        return modality_mask(batch, n_modalities, n_locations, ratio, generator)[rows]
    masked = torch.zeros(B, M * K, dtype=torch.bool)
    if M < 2 or ratio <= 0:
        return masked.view(B, M, K)
    keep_one = torch.randint(M, (B, K), generator=generator) * K + torch.arange(K)
    n_more = int(K * (M - 1) * (1 - ratio))
    noise = torch.rand(B, M * K, generator=generator)
    noise.scatter_(1, keep_one, 2.0)  # never among the "more" draws
    more = noise.argsort(dim=1)[:, :n_more]
    keep = torch.zeros(B, M * K, dtype=torch.bool)
    keep.scatter_(1, keep_one, True)
    keep.scatter_(1, more, True)
    return (~keep).view(B, M, K)


def drop_dates(sample: Mapping[str, Tensor], ratio: float, generator: torch.Generator,
               rows: slice | None = None, global_batch: int | None = None) -> dict[str, Tensor]:
    """Keep a random ``1 - ratio`` share (at least one) of every series' dates.

    With ``global_batch``/``rows`` the random draw is made for the global batch and the
    ``rows`` of this process are used (identical results with or without DDP).
    """
    out = dict(sample)
    if ratio <= 0:
        return out
    for key, x in sample.items():
        if key not in SENSORS or not SENSORS[key].is_series:
            continue
        B, T = x.shape[:2]
        keep = max(1, int(T * (1 - ratio)))
        if keep >= T:
            continue
        noise = torch.rand(global_batch or B, T, generator=generator)
        noise = noise[rows] if rows is not None else noise
        idx = noise.argsort(dim=1)[:, :keep].sort(dim=1).values.to(x.device)
        out[key] = torch.gather(x, 1, idx.view(B, keep, *([1] * (x.dim() - 2))).expand(B, keep, *x.shape[2:]))
        for suffix in ("dates", "mask"):
            k2 = f"{key}_{suffix}"
            if k2 in sample:
                out[k2] = torch.gather(sample[k2], 1, idx)
        if f"{key}_mask" in out:  # never leave a sample without a valid date
            m = out[f"{key}_mask"].bool()
            out[f"{key}_mask"] = torch.where(m.any(1, keepdim=True), m, torch.ones_like(m))
    return out
