"""Lightweight Temporal Attention Encoder (L-TAE, Garnot & Landrieu 2020), per pixel.

Each pixel's series ``[T, C]`` is lifted by an input MLP to ``d`` channels, optionally
GroupNorm-ed, given a day-of-year sinusoidal code, and pooled over time by ``n_head``
*learned master queries* (one per head; each head attends over the dates and averages its
own ``d / n_head`` channels).  The concatenated heads go through an output MLP and a
GroupNorm.  Numbers and layer order follow AnySat's ``utils/ltae.py``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .layers import Dropout, GroupNorm
from .posenc import doy_encoding

__all__ = ["LTAE"]


def _mlp_groupnorm(widths: list[int], dropout: float | None) -> nn.Sequential:
    """``Linear -> GroupNorm(4) -> ReLU (-> Dropout)`` for each consecutive pair of ``widths``."""
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), GroupNorm(4, b), nn.ReLU()]
        if dropout is not None:
            layers.append(Dropout(dropout))
    return nn.Sequential(*layers)


class LTAE(nn.Module):
    """``x [N, T, C]``, ``dates [N, T]``, ``valid [N, T]`` (optional) -> ``[N, out_dim]``.

    Dates are whole days: the day of the year, or days since the dataset's origin (PASTIS).

    Args:
        in_channels: bands ``C``.
        mlp_in: widths of the input MLP (the last one is the attention width ``d``);
            AnySat uses ``[D/8, D/2, D, 2D, D]``.
        out_dim: output width ``D``.
        n_head, d_k: number of master queries and their key width (AnySat: 16, 8).
        period: ``T`` of the day-of-year code (367; 366 for Landsat 8).
        in_norm: GroupNorm(``n_head``) over channels x dates after the input MLP.
        dropout: dropout after each layer of the input MLP and after the output MLP.
        attn_dropout: dropout of the attention weights (official: 0.1).
    """

    def __init__(
        self,
        in_channels: int,
        mlp_in: list[int],
        out_dim: int,
        n_head: int = 16,
        d_k: int = 8,
        period: int = 367,
        in_norm: bool = False,
        dropout: float = 0.2,
        attn_dropout: float = 0.1,
    ):
        super().__init__()
        d = mlp_in[-1]
        if d % n_head:
            raise ValueError(f"L-TAE width {d} must be divisible by its {n_head} heads")
        self.n_head, self.d_k, self.d_model, self.period = n_head, d_k, d, period
        self.input_mlp = _mlp_groupnorm([in_channels, *mlp_in], dropout)
        self.in_norm = GroupNorm(n_head, d) if in_norm else nn.Identity()
        self.query = nn.Parameter(torch.randn(n_head, d_k) * math.sqrt(2.0 / d_k))
        self.key = nn.Linear(d, n_head * d_k)
        nn.init.normal_(self.key.weight, std=math.sqrt(2.0 / d_k))
        self.attn_drop = Dropout(attn_dropout)
        self.output_mlp = _mlp_groupnorm([d, out_dim], None)
        self.dropout = Dropout(dropout)
        self.out_norm = GroupNorm(n_head, out_dim)

    def _features_and_attention(self, x: Tensor, dates: Tensor, valid: Tensor | None) -> tuple[Tensor, Tensor]:
        """Dated features ``h [N, T, d]`` and the master queries' attention ``[N, heads, T]`` (before dropout).

        ``attn[n, i, t] = softmax_t(q_i . k_t / sqrt(d_k))`` with ``k_t = W_k h_t`` and ``h_t`` = the lifted
        values of date ``t`` plus the sinusoidal code of its date (in days); invalid dates get a score of -1000.
        """
        N, T, C = x.shape
        h = self.input_mlp(x.reshape(N * T, C)).view(N, T, self.d_model)
        h = self.in_norm(h.transpose(1, 2)).transpose(1, 2)
        h = h + doy_encoding(dates, self.d_model // self.n_head, self.period, self.n_head).to(h.dtype)
        k = self.key(h).view(N, T, self.n_head, self.d_k)
        scores = torch.einsum("hd,nthd->nht", self.query.to(k.dtype), k) / math.sqrt(self.d_k)
        if valid is not None:
            scores = scores.masked_fill(~valid[:, None, :], -1e3)
        return h, scores.softmax(dim=-1)

    def attention(self, x: Tensor, dates: Tensor, valid: Tensor | None = None) -> Tensor:
        """The weights each head gives each date: ``[N, heads, T]``, rows summing to 1 (no dropout).

        The same numbers :meth:`forward` pools the dates with (there, with attention dropout in training).
        """
        return self._features_and_attention(x, dates, valid)[1]

    def forward(self, x: Tensor, dates: Tensor, valid: Tensor | None = None) -> Tensor:
        """``x [N, T, C]``, ``dates [N, T]`` (day of year), ``valid [N, T]`` bool or ``None`` -> ``[N, out_dim]``."""
        N, T, C = x.shape
        h, attn = self._features_and_attention(x, dates, valid)
        attn = self.attn_drop(attn)  # [N, heads, T]
        v = h.view(N, T, self.n_head, self.d_model // self.n_head)
        out = torch.einsum("nht,nthc->nhc", attn, v).reshape(N, self.d_model)
        return self.out_norm(self.dropout(self.output_mlp(out)))
