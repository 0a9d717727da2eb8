"""Masking for JEPA pretraining: which patches, modalities and dates the context encoder sees.

* :class:`MultiBlockMaskSampler` — I-JEPA's multi-block sampler on the patch grid: ``n_targets``
  blocks to predict (same size for the whole batch, drawn by scale and aspect ratio) and one
  large context block with the targets removed.  AnySat: 4 targets, scale 0.2–0.8, aspect
  0.75–1.5; context 0.85–1.0, no overlap.  The same indices apply to every modality.
  :func:`context_statistics` measures how much of a grid the context keeps (on small grids
  the AnySat numbers leave a single patch: see notebook 02).
* :class:`RandomMaskSampler` and :class:`SingleBlockMaskSampler` — baselines for comparison.
* :func:`modality_mask` — at every kept location one random modality stays, and a share of
  the others is replaced by a learned mask token.
* :func:`drop_dates` — each time series loses a share of its dates (context encoder only).

Every function takes an explicit ``torch.Generator`` so that a step's masks are a pure
function of ``(seed, step)`` (resumable, identical across processes).  The draws are made on the
CPU and copied to the batch's device with ``non_blocking=True``, and nothing is read back: on a GPU
the training step then never waits mid-step for the kernels queued before it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from ..data.contract import KEY_SUFFIXES
from ..errors import UserError
from ..sensors import SENSORS

__all__ = [
    "Masks",
    "MultiBlockMaskSampler",
    "RandomMaskSampler",
    "SingleBlockMaskSampler",
    "build_mask_sampler",
    "context_overlaps",
    "context_statistics",
    "modality_mask",
    "drop_dates",
    "shift_bands",
    "masks_to_grid",
]


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

    def shard(self, start: int, stop: int) -> Masks:
        """The masks of tiles ``start:stop`` of the batch (a process's or a micro-batch's rows)."""
        return Masks(self.context[start:stop], [t[start:stop] for t in self.targets], self.grid)

    def to(self, device) -> Masks:
        return Masks(
            self.context.to(device, non_blocking=True),
            [t.to(device, non_blocking=True) for t in self.targets],
            self.grid,
        )


def _check_range(where: str, name: str, value, ok, expected: str, example: str) -> None:
    """Refuse ``name=value`` of ``where`` (e.g. ``RandomMaskSampler``) unless ``ok(value)``: one line."""
    try:
        good = not isinstance(value, (str, bool)) and bool(ok(value))
    except (TypeError, ValueError, IndexError):
        good = False
    if not good:
        raise UserError(f"{where}: {name}={value!r}: expected {expected}; e.g. {name}={example}")


def _check_pair(where: str, name: str, value, ok, text: str, example: str) -> None:
    """A ``(low, high)`` range, as the config's ``jepa.*`` pairs: two numbers, ``low <= high``, each ``ok``."""
    _check_range(
        where,
        name,
        value,
        lambda v: len(v) == 2 and all(ok(float(x)) for x in v) and v[0] <= v[1],
        f"(low, high) with low <= high, {text}",
        example,
    )


def _check_draw(where: str, batch_size, grid, generator) -> tuple[int, int]:
    """The ``(h, w)`` grid of a sampler call, after refusing a batch size below 1, a grid that is not two whole
    numbers, and a generator that is not a ``torch.Generator``; one line each."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise UserError(
            f"{where}: batch_size={batch_size!r}: expected a whole number >= 1; draw masks for the tiles of the "
            "batch, e.g. 8"
        )
    if (
        not isinstance(grid, (tuple, list, torch.Size))
        or len(grid) != 2
        or not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) for n in grid)
    ):
        raise UserError(f"{where}: grid={grid!r}: expected the patch grid (h, w) as two whole numbers; e.g. (6, 6)")
    if not isinstance(generator, torch.Generator):
        raise UserError(
            f"{where}: generator={generator!r}: expected a torch.Generator; e.g. torch.Generator().manual_seed(0)"
        )
    h, w = int(grid[0]), int(grid[1])
    if h * w < 2:
        raise UserError(f"JEPA masking needs at least 2 patches, the grid is {h}x{w}; use a smaller patch size")
    return h, w


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
    m[top : top + bh, left : left + bw] = True
    return m


class MultiBlockMaskSampler:
    """I-JEPA multi-block masks, every knob an argument (defaults: AnySat's pretraining numbers).

    One step draws, for the whole batch, the size of the target blocks and of the context
    block; then, per sample, ``n_targets`` target positions and a context block that is cut
    out of the grid minus the targets.  As in I-JEPA and the official AnySat collator:

    * a block's area is ``int(scale * h * w)`` patches and its height/width ratio ``aspect``;
      scale and aspect come from **one** uniform draw ``r`` (``scale = lo + r (hi - lo)``,
      ``aspect = lo + r (hi - lo)``, so large blocks are also the tall ones).  This is what the
      I-JEPA *code* does; the I-JEPA paper only says that both are random in their ranges,
      which reads as two independent draws;
    * blocks stay strictly inside the grid (height < h, width < w), so a context block on a
      3 x 3 grid is at most 2 x 2;
    * **constraint relaxation**: if the context keeps fewer than ``min_keep`` patches, it is
      redrawn; after every ``timeout`` failed draws one more target block is ignored when the
      context is cut (the context may then overlap that target).

    Two departures from that code: a block is at least 1 x 1 (the official code can draw an empty
    one), and where the samples of a batch keep different numbers of context patches, each keeps a
    random subset of the smallest number (I-JEPA and the official collator keep the first indices
    in row-major order, i.e. the top rows of the context).

    Args:
        n_targets: target blocks per sample (AnySat: 4).
        target_scale: range of a target block's area as a fraction of the grid (AnySat: 0.2-0.8).
        target_aspect: range of its height/width ratio (AnySat: 0.75-1.5).
        context_scale: range of the (square) context block's area (AnySat: 0.85-1.0).
        min_keep: minimum number of context patches per sample.  The official collator asks for
            ``len > min_keep`` with ``min_keep = 0``, i.e. at least one patch: our ``min_keep=1``.
        allow_overlap: keep target patches in the context (AnySat: no).
        context: ``"block"`` (I-JEPA, AnySat) or ``"complement"``: the context block is the whole
            grid, so the context is every patch outside the targets.  For grids too small for a
            block strictly inside them (the CPU demo; see notebook 02).
        relax: apply the constraint relaxation above (I-JEPA, AnySat).  Without it, a sample whose
            context cannot keep ``min_keep`` patches raises an error.
        timeout: failed draws before one target is ignored (I-JEPA: 20).
    """

    def __init__(
        self,
        n_targets: int = 4,
        target_scale=(0.2, 0.8),
        target_aspect=(0.75, 1.5),
        context_scale=(0.85, 1.0),
        min_keep: int = 1,
        allow_overlap: bool = False,
        context: str = "block",
        relax: bool = True,
        timeout: int = 20,
    ):
        if context not in ("block", "complement"):
            raise UserError(f"context must be 'block' or 'complement', got {context!r}")
        if n_targets < 1 or min_keep < 1 or timeout < 1:
            raise UserError(f"n_targets, min_keep and timeout must be >= 1, got {n_targets}, {min_keep}, {timeout}")
        where = type(self).__name__
        _check_pair(where, "target_scale", target_scale, lambda x: 0 < x <= 1, "in (0, 1]", "(0.2, 0.8)")
        _check_pair(where, "target_aspect", target_aspect, lambda x: x > 0, "> 0", "(0.75, 1.5)")
        _check_pair(where, "context_scale", context_scale, lambda x: 0 < x <= 1, "in (0, 1]", "(0.85, 1.0)")
        self.n_targets, self.target_scale, self.target_aspect = n_targets, tuple(target_scale), tuple(target_aspect)
        self.context_scale, self.min_keep, self.allow_overlap = tuple(context_scale), min_keep, allow_overlap
        self.context, self.relax, self.timeout = context, relax, timeout

    @staticmethod
    def block_size(g: torch.Generator, grid, scale, aspect) -> tuple[int, int]:
        """Block ``(height, width)`` in patches: area ``int(scale * h * w)``, ratio ``aspect``, strictly inside
        the grid where the grid allows it, at least 1 x 1 (the official code may return an empty block)."""
        h, w = grid
        r = float(torch.rand(1, generator=g))
        s = scale[0] + r * (scale[1] - scale[0])
        ar = aspect[0] + r * (aspect[1] - aspect[0])
        keep = int(h * w * s)
        bh = min(int(round(math.sqrt(keep * ar))), h - 1)
        bw = min(int(round(math.sqrt(keep / ar))), w - 1)
        return max(bh, 1), max(bw, 1)

    def _context(self, g: torch.Generator, grid, size, targets: list[Tensor]) -> Tensor:
        """Boolean ``[h, w]`` context of one sample (see the class docstring for the relaxation)."""
        excluded = [] if self.allow_overlap else targets
        ignored = 0
        for _ in range(self.timeout * (len(excluded) + 1)):
            for _ in range(self.timeout):
                c = _block(g, grid, *size)
                for b in excluded[: len(excluded) - ignored]:
                    c = c & ~b
                if int(c.sum()) >= self.min_keep:
                    return c
            if not self.relax or ignored == len(excluded):
                break
            ignored += 1
        raise ValueError(
            f"no context of at least min_keep={self.min_keep} patches fits a {size[0]}x{size[1]} "
            f"context block on a {grid[0]}x{grid[1]} grid with {len(excluded)} target block(s) "
            f"excluded{'' if self.relax else ' (relax=False)'}; lower min_keep or the target scale"
        )

    def __call__(self, batch_size: int, grid: tuple[int, int], generator: torch.Generator) -> Masks:
        """Masks of ``batch_size`` tiles on a ``grid = (h, w)`` of patches: ``context [B, Kc]``, ``n_targets``
        tensors ``[B, Kt]`` (equal sizes across the batch; see the class docstring)."""
        h, w = grid = _check_draw(type(self).__name__, batch_size, grid, generator)
        g = generator
        tb = self.block_size(g, grid, self.target_scale, self.target_aspect)
        cb = grid if self.context == "complement" else self.block_size(g, grid, self.context_scale, (1.0, 1.0))
        contexts, targets = [], [[] for _ in range(self.n_targets)]
        for _ in range(batch_size):
            blocks = [_block(g, grid, *tb) for _ in range(self.n_targets)]
            contexts.append(self._context(g, grid, cb, blocks).flatten().nonzero().squeeze(1))
            for t, b in zip(targets, blocks):
                t.append(b.flatten().nonzero().squeeze(1))
        return Masks(_equalise(contexts, g), [_equalise(t, g) for t in targets], grid)


def context_statistics(
    sampler, grid: tuple[int, int], steps: int = 200, batch_size: int = 8, seed: int = 0
) -> dict[str, float]:
    """How much of the grid the context encoder sees under ``sampler`` (over ``steps`` batches).

    Returns ``mean_patches`` and ``mean_share`` (context patches per sample, and as a share of
    the grid), ``p_one`` and ``p_at_least_4`` (share of steps whose context has exactly one /
    at least four patches), ``mean_target_patches`` (patches per target block) and
    ``overlap_share`` (share of samples whose context holds a target patch: :func:`context_overlaps`).
    """
    g = torch.Generator().manual_seed(seed)
    grid = _check_draw("context_statistics", batch_size, grid, g)
    n = grid[0] * grid[1]
    k, kt, overlaps = [], [], 0
    for _ in range(steps):
        m = sampler(batch_size, grid, g)
        k.append(m.context.shape[1])
        kt.append(m.targets[0].shape[1])
        overlaps += int(context_overlaps(m).sum())
    k = torch.tensor(k, dtype=torch.float64)
    return {
        "grid": f"{grid[0]}x{grid[1]}",
        "mean_patches": float(k.mean()),
        "mean_share": float(k.mean() / n),
        "p_one": float((k == 1).double().mean()),
        "p_at_least_4": float((k >= 4).double().mean()),
        "mean_target_patches": float(torch.tensor(kt, dtype=torch.float64).mean()),
        "overlap_share": overlaps / (steps * batch_size),
    }


def context_overlaps(masks: Masks) -> Tensor:
    """``[B]`` booleans: whether a sample's context holds a patch of one of its target blocks (the predictor
    could then copy part of its answer; happens with ``allow_overlap`` or after constraint relaxation)."""
    targets = torch.cat(masks.targets, dim=1)  # [B, n_targets * Kt]
    return (masks.context[:, :, None] == targets[:, None, :]).any(dim=2).any(dim=1)


class RandomMaskSampler:
    """Context = a random ``keep`` share of the patches, target = all the others (one block)."""

    def __init__(self, keep: float = 0.5):
        _check_range("RandomMaskSampler", "keep", keep, lambda v: 0 < v <= 1, "a share of the patches in (0, 1]", "0.5")
        self.keep = keep

    def __call__(self, batch_size: int, grid, generator: torch.Generator) -> Masks:
        """``context [B, k]`` (a random ``keep`` share of the ``h * w`` patches) and one target ``[B, h * w - k]``."""
        h, w = grid = _check_draw("RandomMaskSampler", batch_size, grid, generator)
        n = h * w
        k = min(n - 1, max(1, int(round(self.keep * n))))
        perm = torch.stack([torch.randperm(n, generator=generator) for _ in range(batch_size)])
        return Masks(perm[:, :k].sort(1).values, [perm[:, k:].sort(1).values], grid)


class SingleBlockMaskSampler(MultiBlockMaskSampler):
    """One rectangular target block per sample; the context is exactly every patch outside it.

    The block is drawn as in :class:`MultiBlockMaskSampler` (area ``int(scale * h * w)``, ratio
    ``aspect``, the same size for the whole batch) and, like every block there, kept strictly
    inside the grid: at most ``(h - 1) x (w - 1)`` patches, whatever the scale.  So on a grid of at
    least 2 x 2 the context, the complement of the block, always holds at least ``h + w - 1``
    patches (one full row and one full column), and on small grids the target covers less than
    ``target_scale`` asks: on a 3 x 3 grid at most 2 x 2 = 4 of the 9 patches.
    """

    def __init__(self, target_scale=(0.2, 0.8), target_aspect=(0.75, 1.5)):
        super().__init__(n_targets=1, target_scale=target_scale, target_aspect=target_aspect, context="complement")


def build_mask_sampler(cfg):
    """Sampler from a :class:`~anysat_lite.config.JEPAConfig`."""
    if cfg.mask == "multiblock":
        return MultiBlockMaskSampler(
            cfg.n_targets,
            cfg.target_scale,
            cfg.target_aspect,
            cfg.context_scale,
            cfg.min_keep,
            cfg.allow_overlap,
            cfg.context,
            cfg.relax,
        )
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


def modality_mask(
    batch: int, n_modalities: int, n_locations: int, ratio: float, generator: torch.Generator, rows: slice | None = None
) -> Tensor:
    """AnySat modality masking -> ``[B, M, K]`` bool, True where the token is replaced by the mask token.

    Every location keeps one random modality; of the remaining ``K * (M - 1)`` tokens a
    random ``1 - ratio`` share is kept too.  ``rows`` selects this process's share when
    ``batch`` is the global batch (the draw is the same on every process).
    """
    _check_range("modality_mask", "ratio", ratio, lambda v: 0 <= v <= 1, "a share in [0, 1]", "0.5")
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


def _series(sample: Mapping[str, Tensor]):
    """``(key, [B, T, C, H, W])`` of the time-series sensors of a sample."""
    return [(k, x) for k, x in sample.items() if k in SENSORS and SENSORS[k].is_series]


def _global_draw(draw, shape: tuple[int, ...], generator: torch.Generator, rows: slice | None) -> Tensor:
    """``draw(*shape)`` for the global batch (first dimension), then this process's ``rows`` of it."""
    noise = draw(*shape, generator=generator)
    return noise[rows] if rows is not None else noise


def drop_dates(
    sample: Mapping[str, Tensor],
    ratio: float,
    generator: torch.Generator,
    rows: slice | None = None,
    global_batch: int | None = None,
) -> dict[str, Tensor]:
    """Keep a random ``1 - ratio`` share (at least one) of every series' dates.

    Padding never stands in for a tile's dates: padded dates (day 0 and masked: what batching writes
    where a series is shorter than the batch's longest) are drawn last for a tile whose draw would
    keep none of its real dates, and stay masked.  Where every kept date of a tile is masked (all
    cloudy), the kept real dates are marked valid (the L-TAE needs a date to attend to; the
    official code masks no date at all).  Series without padding keep the plain draw.

    With ``global_batch``/``rows`` the random draw is made for the global batch and the
    ``rows`` of this process are used (identical results with or without DDP).
    """
    out = dict(sample)
    if ratio <= 0:
        return out
    for key, x in _series(sample):
        B, T = x.shape[:2]
        keep = max(1, int(T * (1 - ratio)))
        if keep >= T:
            continue
        noise = _global_draw(torch.rand, (global_batch or B, T), generator, rows).to(x.device, non_blocking=True)
        dates, mask = sample.get(f"{key}_dates"), sample.get(f"{key}_mask")
        real = dates > 0 if dates is not None else torch.ones(B, T, dtype=torch.bool, device=x.device)  # not padding...
        if mask is not None:
            real = real | mask.bool()  # ...and day 0 itself where the mask calls it valid (PASTIS counts from 0)
        stranded = real.any(1) & ~real.gather(1, noise.argsort(dim=1)[:, :keep]).any(1)
        noise = torch.where(stranded[:, None], noise + (~real).float(), noise)  # noise < 1: real dates first
        idx = noise.argsort(dim=1)[:, :keep].sort(dim=1).values
        out[key] = torch.gather(x, 1, idx.view(B, keep, *([1] * (x.dim() - 2))).expand(B, keep, *x.shape[2:]))
        for suffix in KEY_SUFFIXES:
            k2 = f"{key}_{suffix}"
            if k2 in sample:
                out[k2] = torch.gather(sample[k2], 1, idx)
        if f"{key}_mask" in out:  # every kept date masked: the real ones become valid (all, if none is real)
            m = out[f"{key}_mask"].bool()
            kept_real = real.gather(1, idx)
            fallback = torch.where(kept_real.any(1, keepdim=True), kept_real, torch.ones_like(m))
            out[f"{key}_mask"] = torch.where(m.any(1, keepdim=True), m, fallback)
    return out


def shift_bands(
    sample: Mapping[str, Tensor],
    sigma: float,
    generator: torch.Generator,
    rows: slice | None = None,
    global_batch: int | None = None,
) -> dict[str, Tensor]:
    """Add one random offset per (tile, band) to every series: ``x[b, :, c] + sigma * eps[b, c]``.

    ``sample`` is normalised (about unit variance per band), so ``sigma`` is in standard deviations;
    the same offset is added to every date and pixel of a tile, i.e. a change of the tile's
    spectral level that leaves its phenology (how the bands change over the year) intact.
    Draws are made for the global batch, as in :func:`drop_dates`.  ``sigma <= 0``: unchanged.
    """
    out = dict(sample)
    if sigma <= 0:
        return out
    for key, x in _series(sample):
        B, _, C = x.shape[:3]
        eps = _global_draw(torch.randn, (global_batch or B, C), generator, rows)
        out[key] = x + sigma * eps.to(x.device, x.dtype, non_blocking=True).view(B, 1, C, *([1] * (x.dim() - 3)))
    return out
