"""Pretraining loop, schedules, checkpoints, distributed helpers and metric logs."""

from .checkpoint import export_encoder, load_checkpoint, load_encoder, save_checkpoint
from .loop import pretrain

__all__ = ["pretrain", "save_checkpoint", "load_checkpoint", "export_encoder", "load_encoder"]
