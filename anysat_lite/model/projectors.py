"""Per-sensor projectors: raw pixels -> a map of sub-patch features ``[B, Hs, Ws, D]``.

* :class:`ImageProjector` (single-date imagery): a convolution with kernel = stride =
  ``subpatch_px`` (one output per sub-patch), then an MLP ``[D, 2D, D]``
  (``Linear -> LayerNorm -> ReLU`` per layer).
* :class:`SeriesProjector` (time series): a per-pixel :class:`~.ltae.LTAE`; each pixel is a
  sub-patch.

Which class a sensor gets is decided by its ``kind`` in the registry, never by its name.
"""

from __future__ import annotations

import torch
from einops import rearrange, repeat
from torch import Tensor, nn

from ..data.contract import broadcast_per_date, validate_sample
from ..kernels import blockwise_conv2d
from ..sensors import Sensor
from .ltae import LTAE

__all__ = ["ImageProjector", "SeriesProjector", "build_projector"]


class ImageProjector(nn.Module):
    """``[B, C, H, W] -> [B, H/px, W/px, D]`` with ``px = sensor.subpatch_px``."""

    def __init__(self, sensor: Sensor, dim: int):
        super().__init__()
        self.sensor = sensor.name
        px = sensor.subpatch_px
        self.conv = nn.Conv2d(sensor.n_bands, dim, kernel_size=px, stride=px, bias=False)
        widths = [dim, 2 * dim, dim]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.LayerNorm(b), nn.ReLU()]
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: Tensor, dates: Tensor | None = None, valid: Tensor | None = None) -> Tensor:
        """``x [B, C, H, W]`` -> ``[B, H/px, W/px, D]`` (``dates`` and ``valid`` are unused)."""
        return self.mlp(blockwise_conv2d(x, self.conv.weight))  # the conv, channels last: [B, H/px, W/px, D]


class SeriesProjector(nn.Module):
    """``[B, T, C, H, W]`` + ``dates [B, T]`` (+ ``valid [B, T]``) -> ``[B, H, W, D]``.

    Dates flagged invalid get their values replaced by a learned pad value (official
    behaviour) and are left out of the temporal attention.
    """

    def __init__(
        self,
        sensor: Sensor,
        dim: int,
        n_head: int = 16,
        d_k: int = 8,
        dropout: float | None = None,
        in_width: int | None = None,
    ):
        super().__init__()
        self.sensor, self.spec = sensor.name, sensor  # the spec: what attention() checks its inputs against
        self.ltae = LTAE(
            sensor.n_bands,
            [in_width or dim // 8, dim // 2, dim, 2 * dim, dim],
            dim,
            n_head=n_head,
            d_k=d_k,
            period=sensor.doy_period,
            in_norm=sensor.in_norm,
            dropout=sensor.dropout if dropout is None else dropout,
            attn_dropout=0.1 if dropout is None else dropout,  # official 0.1; an override (0: none at all) sets it
        )
        self.pad_value = nn.Parameter(torch.zeros(()))

    def _pixels(self, x: Tensor, dates: Tensor, valid: Tensor | None):
        """``[B, T, C, H, W]`` -> one series per pixel: ``[B*H*W, T, C]``, dates and valid ``[B*H*W, T]``."""
        B, T, C, H, W = x.shape
        if valid is not None:
            x = torch.where(valid[:, :, None, None, None], x, self.pad_value.to(x.dtype))
        pixels = rearrange(x, "b t c h w -> (b h w) t c")
        pix_dates = repeat(dates, "b t -> (b hw) t", hw=H * W)
        pix_valid = None if valid is None else repeat(valid, "b t -> (b hw) t", hw=H * W)
        return pixels, pix_dates, pix_valid

    def forward(self, x: Tensor, dates: Tensor, valid: Tensor | None = None) -> Tensor:
        B, T, C, H, W = x.shape
        return self.ltae(*self._pixels(x, dates, valid)).view(B, H, W, -1)

    def attention(self, x: Tensor, dates: Tensor, valid: Tensor | None = None) -> Tensor:
        """The L-TAE's attention over the dates of every pixel: ``[B, H, W, heads, T]`` (see :meth:`LTAE.attention`).

        ``x [B, T, C, H, W]``, ``dates [B, T]`` (or ``[T]``) in days, ``valid [B, T]`` (or ``[T]``) True/1 for the
        dates to attend to.  They are checked as :meth:`AnySat.forward` checks ``<sensor>``, ``<sensor>_dates`` and
        ``<sensor>_mask`` (the names its messages use): shapes, bands, finite values, a valid date per sample.
        """
        sample = {self.sensor: x, f"{self.sensor}_dates": dates}
        if valid is not None:
            sample[f"{self.sensor}_mask"] = valid
        sample = broadcast_per_date(sample)
        validate_sample(sample, {self.sensor: self.spec})
        dates, valid = sample[f"{self.sensor}_dates"], sample.get(f"{self.sensor}_mask")
        valid = None if valid is None else valid.bool()
        B, T, C, H, W = x.shape
        return self.ltae.attention(*self._pixels(x, dates, valid)).view(B, H, W, -1, T)


def build_projector(
    sensor: Sensor,
    dim: int,
    ltae_heads: int = 16,
    ltae_dk: int = 8,
    dropout: float | None = None,
    ltae_in_width: int | None = None,
) -> nn.Module:
    """Projector for ``sensor`` by its kind; ``dropout`` overrides the sensor's dropout rates."""
    if sensor.is_series:
        return SeriesProjector(sensor, dim, n_head=ltae_heads, d_k=ltae_dk, dropout=dropout, in_width=ltae_in_width)
    return ImageProjector(sensor, dim)
