"""Atomic checkpoints (write to a temporary file, then rename) loaded with ``weights_only=True``.

A training checkpoint holds only tensors and plain Python containers: model/EMA/optimizer
state dicts, step, RNG states, normalisation statistics and the config as a dict.  The
final encoder is exported as ``safetensors`` + a JSON sidecar (config, sensors, stats).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

__all__ = ["save_checkpoint", "load_checkpoint", "export_encoder", "load_encoder"]


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_checkpoint(obj: dict, path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically (a crash never leaves a half-written file)."""
    _atomic_write(Path(path), lambda tmp: torch.save(obj, tmp))


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    return torch.load(path, map_location=map_location, weights_only=True)


def export_encoder(encoder, path: str | Path, meta: dict) -> None:
    """Write ``<path>.safetensors`` (weights) and ``<path>.json`` (``meta``: config, sensors, stats...)."""
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    _atomic_write(path.with_suffix(".safetensors"), lambda tmp: save_file(state, tmp))
    _atomic_write(path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=1)))


def load_encoder(path: str | Path, device="cpu"):
    """Rebuild an exported encoder: returns ``(AnySat in eval mode, meta dict)``."""
    from ..config import ModelConfig
    from ..model import AnySat
    from ..sensors import SENSORS, register_sensor

    path = Path(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    for name, facts in meta.get("sensor_facts", {}).items():
        if name not in SENSORS:
            register_sensor(**facts)
    model = AnySat(ModelConfig(**meta["model"]), sensors=meta["sensors"])
    model.load_state_dict(load_file(str(path.with_suffix(".safetensors"))), strict=True)
    return model.to(device).eval(), meta
