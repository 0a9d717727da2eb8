"""Target encoder as an exponential moving average (EMA) of the context encoder.

``target <- m * target + (1 - m) * online`` after every optimiser step, with the momentum
``m`` rising linearly from ``ema[0]`` (0.996) to ``ema[1]`` (1.0) over training (I-JEPA).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["momentum_at", "make_target", "ema_update"]


def momentum_at(step: int, total_steps: int, start: float = 0.996, end: float = 1.0) -> float:
    """Linear momentum schedule (``step`` in ``[0, total_steps]``)."""
    t = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return start + (end - start) * t


def make_target(encoder: nn.Module) -> nn.Module:
    """A frozen deep copy of ``encoder`` (projectors included)."""
    target = copy.deepcopy(encoder)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """In-place EMA of every parameter (buffers are copied)."""
    t_params = list(target.parameters())
    o_params = [p.detach() for p in online.parameters()]
    if len(t_params) != len(o_params):
        raise RuntimeError("target and online encoders have different parameter lists")
    for t, o in zip(t_params, o_params):
        t.mul_(momentum).add_(o, alpha=1.0 - momentum)
    for tb, ob in zip(target.buffers(), online.buffers()):
        tb.copy_(ob)
