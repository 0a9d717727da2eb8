"""The heads of the official AnySat evaluation, and the encoder + head model they train.

Both heads are ``LayerNorm -> Linear`` (the official ``Fine`` networks with ``inter_dim: []``, in
``src/models/networks/Fine_tuning.py`` and ``Fine_tuning_FLAIR.py``):

* :class:`TileHead` classifies the tile token (the cls token, official ``pooling_method: token``):
  ``[B, D] -> [B, K]``.
* :class:`DenseHead` classifies every sub-patch of one sensor from ``output="dense"`` (the patch's
  fused token concatenated with the sub-patch token, ``2D`` channels, official ``keep_subpatch``);
  each sub-patch predicts a ``p x p`` block of label pixels (``p = 1`` for PASTIS-HD, where a
  Sentinel-2 sub-patch is one label pixel; ``p = 10`` for FLAIR, where a 2 m aerial sub-patch covers
  10 x 10 label pixels of 0.2 m, official ``proj_size: 10``): ``[B, Hs, Ws, 2D] -> [B, K, Hs p, Ws p]``.

:class:`TaskModel` runs the encoder and a head on a batch; with ``frozen=True`` (linear probing)
the encoder runs without gradients.  It also reproduces two details of the official evaluation:
pixels flagged invalid by a ``<sensor>_valid`` mask get the projector's learned pad value (PLANTED),
and FLAIR's test tiles (512 px) are scored as the mean logits of five 500 px windows.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ..data.contract import split_key
from ..sensors import SENSORS

__all__ = ["TileHead", "DenseHead", "TaskModel", "window_offsets"]


class TileHead(nn.Module):
    """``LayerNorm(D) -> Linear(D, K)`` on the tile token: ``[B, D] -> [B, K]`` logits."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.norm(x))


class DenseHead(nn.Module):
    """``LayerNorm(F) -> Linear(F, p * p * K)`` per sub-patch: ``[B, Hs, Ws, F] -> [B, K, Hs * p, Ws * p]`` logits.

    The ``p * p * K`` outputs of a sub-patch are read as ``[p (rows), p (columns), K]``: output
    ``(i p + j) K + k`` is the logit of class ``k`` at pixel ``(i, j)`` of the sub-patch's block, the
    layout of the official head.
    """

    def __init__(self, dim: int, num_classes: int, pixels_per_subpatch: int = 1):
        super().__init__()
        self.num_classes, self.p = num_classes, pixels_per_subpatch
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_classes * pixels_per_subpatch**2)

    def forward(self, x: Tensor) -> Tensor:
        B, Hs, Ws, _ = x.shape
        p, K = self.p, self.num_classes
        y = self.fc(self.norm(x)).view(B, Hs, Ws, p, p, K)  # [B, Hs, Ws, p, p, K]
        return y.permute(0, 5, 1, 3, 2, 4).reshape(B, K, Hs * p, Ws * p)  # [B, K, Hs p, Ws p]


def window_offsets(size: int, window: int) -> list[tuple[int, int]]:
    """Top-left corners of the official test windows: the four corners and the centre (5 windows of
    ``window`` px in a tile of ``size`` px; FLAIR: 500 in 512, offsets 0, 12 and 6)."""
    far, mid = size - window, (size - window) // 2
    return [(0, 0), (0, far), (far, 0), (far, far), (mid, mid)]


class TaskModel(nn.Module):
    """Encoder + head: a batch dict (sensors, dates, masks; no targets) -> logits.

    Args:
        encoder: an :class:`~anysat_lite.model.AnySat`.
        head: a :class:`TileHead` (``output="tile"``) or :class:`DenseHead` (``output="dense"``).
        patch_size: patch side in metres.
        dense_sensor: the sensor whose sub-patches the dense head classifies.
        frozen: linear probing: the encoder's parameters are frozen and it runs under ``torch.no_grad``
            (it keeps the train/eval mode of this module, as in the official code, where Lightning puts the
            frozen encoder in train mode).  Parameters set trainable again afterwards (the pad values, see
            :func:`~.protocol.build_task_model`) make it run with gradients.
        window: for a dense image sensor, the side (px) the model is trained on; a larger input is
            scored as the mean logits of the five windows of :func:`window_offsets` (official FLAIR test).
    """

    def __init__(
        self,
        encoder: nn.Module,
        head: nn.Module,
        patch_size: int,
        dense_sensor: str | None = None,
        frozen: bool = False,
        window: int | None = None,
    ):
        super().__init__()
        self.encoder, self.head = encoder, head
        self.patch_size, self.dense_sensor, self.frozen, self.window = int(patch_size), dense_sensor, frozen, window
        if frozen:
            for p in encoder.parameters():
                p.requires_grad_(False)

    def fill_invalid(self, x: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Replace the values of invalid pixels (``<sensor>_valid`` False) by the sensor projector's pad value
        and drop the ``_valid`` keys (official PLANTED: ``masked_fill`` with ``pad_parameter``)."""
        out = {k: v for k, v in x.items() if split_key(k)[1] != "valid"}
        for key in x:
            s, suffix = split_key(key)
            if suffix == "valid":
                pad = self.encoder.projectors[s].pad_value.to(out[s].dtype)
                out[s] = torch.where(x[key].bool(), out[s], pad)
        return out

    def _logits(self, x: dict[str, Tensor]) -> Tensor:
        output = "tile" if isinstance(self.head, TileHead) else "dense"
        needs_grad = not self.frozen or any(p.requires_grad for p in self.encoder.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and needs_grad):
            feats = self.encoder(x, self.patch_size, output=output, output_modality=self.dense_sensor)
        return self.head(feats)

    def forward(self, x: Mapping[str, Tensor]) -> Tensor:
        """``x``: a batch in the sample contract (plus optional ``<sensor>_valid``) -> logits
        ``[B, K]`` (tile head) or ``[B, K, H, W]`` (dense head)."""
        x = self.fill_invalid(x)
        s = self.dense_sensor
        if self.window is None or s is None or x[s].shape[-1] == self.window:
            return self._logits(x)
        size = x[s].shape[-1]
        if SENSORS[s].is_series or x[s].shape[-2] != size or size < self.window:
            raise ValueError(
                f"{s}: sliding windows need a square image of at least {self.window} px, got {list(x[s].shape)}"
            )
        total = count = None
        for top, left in window_offsets(size, self.window):
            part = dict(x)
            part[s] = x[s][..., top : top + self.window, left : left + self.window]
            y = self._logits(part)  # [B, K, h, w] for the window
            if total is None:
                scale = y.shape[-1] / self.window
                full = int(round(size * scale))
                total = y.new_zeros(*y.shape[:2], full, full)
                count = y.new_zeros(1, 1, full, full)
            t, l_, h = int(round(top * scale)), int(round(left * scale)), y.shape[-1]
            total[..., t : t + h, l_ : l_ + h] += y
            count[..., t : t + h, l_ : l_ + h] += 1
        return total / count
