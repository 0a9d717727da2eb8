"""Sinusoidal position encodings: 2-D grid positions in metres and dates in days (day-of-year for most datasets).

AnySat scales every position by a physical length, so that the same code means the same
ground distance whatever the sensor or patch size:

* inside a patch, sub-patch ``(row, col)`` sits at ``(row, col) * subpatch_m`` metres (10 m cells when a
  coarse sensor's map is upsampled, see ``tokenizer.py``);
* on the tile, patch ``(row, col)`` sits at ``(row, col) * P / 10`` (units of 10 m).

The first half of the channels encodes the column, the second half the row (the official
code builds its grid with ``meshgrid(..., indexing="xy")``); each half is ``[sin, cos]``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["sincos_1d", "grid_sincos_2d", "doy_encoding", "doy_code_periods"]


def sincos_1d(pos: Tensor, dim: int) -> Tensor:
    """``pos [...]`` (float) -> ``[..., dim]`` = ``[sin(pos * w_k), cos(pos * w_k)]``, ``w_k = 10000^(-2k/dim)``."""
    if dim % 2:
        raise ValueError(f"sincos_1d needs an even dim, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float32, device=pos.device) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    out = pos.reshape(-1, 1).float() * omega[None, :]
    return torch.cat([out.sin(), out.cos()], dim=1).reshape(*pos.shape, dim)


def grid_sincos_2d(dim: int, rows: int, cols: int, spacing: float, device=None) -> Tensor:
    """Encoding of a ``rows x cols`` grid, row-major, positions times ``spacing`` -> ``[rows*cols, dim]``."""
    if dim % 4:
        raise ValueError(f"grid_sincos_2d needs dim divisible by 4, got {dim}")
    r, c = torch.meshgrid(
        torch.arange(rows, dtype=torch.float32, device=device),
        torch.arange(cols, dtype=torch.float32, device=device),
        indexing="ij",
    )
    code = torch.cat([sincos_1d(c * spacing, dim // 2), sincos_1d(r * spacing, dim // 2)], dim=-1)  # [rows, cols, dim]
    return code.reshape(rows * cols, dim)


def doy_encoding(dates: Tensor, dim: int, period: int, repeat: int) -> Tensor:
    """L-TAE date encoding: ``dates [B, T]`` (whole days, e.g. day-of-year) -> ``[B, T, dim * repeat]``.

    Channel ``i`` is ``sin`` (even ``i``) or ``cos`` (odd ``i``) of ``date / period^(2*(i//2)/dim)``;
    the ``dim``-channel code is tiled ``repeat`` times (one copy per L-TAE head).
    """
    i = torch.arange(dim, dtype=torch.float32, device=dates.device)
    denom = torch.pow(float(period), 2 * torch.div(i, 2, rounding_mode="floor") / dim)
    table = dates[..., None].float() / denom
    table = torch.where((torch.arange(dim, device=dates.device) % 2) == 0, table.sin(), table.cos())
    return table.repeat(*([1] * (table.dim() - 1)), repeat)


def doy_code_periods(dim: int, period: int) -> list[float]:
    """Periods in days of the ``dim // 2`` sine/cosine pairs of :func:`doy_encoding`, shortest first.

    Pair ``j`` turns ``date / period^(2j/dim)`` radians: it repeats every ``2 pi period^(2j/dim)``
    days.  A code whose longest period is under a year gives two dates months apart the same
    code: at the official width each L-TAE head has ``dim = 768 / 16 = 48`` channels (longest
    period about 5 years); a 64-wide encoder with 16 heads has ``dim = 4`` (120 days).
    """
    return [2 * math.pi * float(period) ** (2 * j / dim) for j in range(dim // 2)]
