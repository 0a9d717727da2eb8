"""Atomic checkpoints (write to a temporary file, then rename) loaded with ``weights_only=True``.

A training checkpoint holds only tensors and plain Python containers: model/EMA/optimizer
state dicts, step, RNG states, normalisation statistics and the config as a dict.  The
final encoder is exported as ``safetensors`` + a JSON sidecar (config, sensors, stats).
Files that cannot be used (missing, empty, truncated, foreign) raise :class:`CheckpointError`,
one line naming the file and what to do.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import UserError, check_device
from ..files import atomic_write, write_text_atomic

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "prune_checkpoints",
    "export_encoder",
    "load_encoder",
    "resolve_encoder_path",
    "CheckpointError",
]


def save_checkpoint(obj: dict, path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically (a crash never leaves a half-written file)."""
    atomic_write(Path(path), lambda tmp: torch.save(obj, tmp))


def prune_checkpoints(folder: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the ``keep_last`` newest ``step-XXXXXX.pt`` of ``folder`` (``0`` keeps all); return them."""
    if keep_last <= 0:
        return []
    steps = sorted(Path(folder).glob("step-*.pt"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    old = steps[:-keep_last]
    for p in old:
        p.unlink(missing_ok=True)
    return old


def _looks_like(path: Path) -> str:
    """What a file that ``torch.load`` refused seems to be, for the message."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head[8:10] == b'{"':
        return "it looks like a safetensors file, an exported encoder: give its path without suffix"
    if head.lstrip()[:1] in (b"{", b"["):
        return "it looks like a JSON file, an encoder sidecar: give the encoder path without suffix"
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return "it is a PyTorch file, truncated or corrupt"
    return "it is not a PyTorch file"


def refused_global(error: Exception) -> str | None:
    """The Python object a weights-only ``torch.load`` refused, named as in the file (``object``,
    ``numpy.dtype``), or None for other errors.  torch >= 2.4 says "Unsupported global: GLOBAL object",
    torch 2.3 "Unsupported class __builtin__.object" (the pickle's own module name)."""
    found = re.search(r"Unsupported (?:global: GLOBAL|class) (\S+)", str(error))
    if not found:
        return None
    name = found.group(1).rstrip(".,;")
    return name.removeprefix("__builtin__.").removeprefix("builtins.")


def unreadable(path: Path, error: Exception) -> str:
    """``<path>: not a readable checkpoint (size, what it looks like[: the error's first words])``, for a
    file ``torch.load`` failed on.  The error is shown for PyTorch files only: unpickling a file of
    another kind fails with noise (``KeyError: 101``, ``pop from empty list``)."""
    kind = _looks_like(path)
    detail = ""
    found = refused_global(error)
    if found:  # a pickle of other objects than tensors: not truncated, refused by weights_only loading
        kind = f"it is a PyTorch file holding a Python object ({found}) besides tensors and plain containers"
    elif kind.startswith("it is a PyTorch file"):
        reason = (str(error).splitlines() or [""])[0].split(". ")[0]
        detail = f": {reason or type(error).__name__ + ', the file ends too early'}"
    return f"{path}: not a readable checkpoint ({path.stat().st_size} bytes, {kind}{detail})"


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """``torch.load(path, weights_only=True)``; a missing, empty, truncated or foreign file raises
    :class:`CheckpointError` naming the file and what to do."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; give a checkpoint file such as {path / 'last.pt'}")
    if not path.exists():
        raise CheckpointError(
            f"{path}: no such checkpoint file; check the path (training writes <out_dir>/last.pt and step-XXXXXX.pt)"
        )
    fix = "use an intact checkpoint (e.g. a step-*.pt beside it) or write it again"
    if path.stat().st_size == 0:
        problem = f"{path}: empty file (0 bytes), not a checkpoint"
        raise CheckpointError(f"{problem}; {fix}", problem)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = refused_global(e)
        if found:
            raise ForeignCheckpointError(
                f"{path}: Weights only load failed: the file holds a Python object ({found}) besides "
                "tensors and plain containers, so it was not written by anysat-lite; anysat-lite loads only "
                "its own .pt checkpoints and exported encoders (.safetensors + .json)"
            ) from None
        problem = unreadable(path, e)
    except Exception as e:  # torch.load fails on damaged files with many types (RuntimeError, EOFError, KeyError...)
        problem = unreadable(path, e)
    if "it is not a PyTorch file" in problem:
        fix = "check the path: give a checkpoint written by anysat-lite (last.pt, step-*.pt) or an exported encoder"
    raise CheckpointError(f"{problem}; {fix}", problem)


class CheckpointError(UserError):
    """A checkpoint or encoder file that cannot be used; the message names the file and what to do.

    ``problem`` is the message without the advice (callers that know better advice add their own).
    """

    def __init__(self, message: str, problem: str | None = None):
        super().__init__(message)
        self.problem = problem or message


class ForeignCheckpointError(CheckpointError, pickle.UnpicklingError):
    """A pickle holding arbitrary Python objects, refused by the weights-only loader."""


def export_encoder(encoder, path: str | Path, meta: dict) -> None:
    """Write ``<path>.safetensors`` (weights) and ``<path>.json`` (``meta``: config, sensors, stats...)."""
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    atomic_write(path.with_suffix(".safetensors"), lambda tmp: save_file(state, tmp))
    write_text_atomic(path.with_suffix(".json"), json.dumps(meta, indent=1))


TRAINING_SUFFIXES = (".pt", ".pth", ".ckpt")


def resolve_encoder_path(path: str | Path) -> Path:
    """The file(s) :func:`load_encoder` reads for ``path``: a training checkpoint (``.pt``), or the exported
    encoder's path without suffix (``runs/x/encoder`` for ``encoder.safetensors`` + ``encoder.json``).

    A folder stands for its ``encoder`` (or, without one, its ``last.pt``); ``encoder.safetensors`` or
    ``encoder.json`` stand for ``encoder``.
    """
    path = Path(path)
    if path.is_dir():
        if (path / "encoder.safetensors").exists() or (path / "encoder.json").exists():
            return path / "encoder"
        if (path / "last.pt").exists():
            return path / "last.pt"
        raise CheckpointError(
            f"{path}: folder without encoder.safetensors/.json or last.pt; give an exported "
            "encoder (e.g. runs/cpu-demo/encoder) or a training checkpoint (.pt)"
        )
    if path.suffix in (".safetensors", ".json"):
        return path.with_suffix("")
    if path.suffix in TRAINING_SUFFIXES:
        return path
    if not Path(f"{path}.safetensors").exists() and not Path(f"{path}.json").exists():
        if path.exists():
            raise CheckpointError(
                f"{path}: unknown kind of file; give an exported encoder without suffix "
                "(runs/x/encoder for encoder.safetensors + encoder.json) or a training "
                "checkpoint (.pt)"
            )
        raise CheckpointError(
            f"no encoder at {path} (neither {path}.safetensors nor {path}.json exists); give an "
            "exported encoder without suffix (e.g. runs/cpu-demo/encoder) or a training "
            "checkpoint (e.g. runs/cpu-demo/last.pt)"
        )
    return path


def load_encoder(path: str | Path, device="cpu"):
    """Rebuild an encoder: returns ``(AnySat in eval mode, meta dict)``.

    ``path`` is an exported encoder without suffix (``runs/x/encoder`` for ``encoder.safetensors`` +
    ``encoder.json``) or a training checkpoint (``runs/x/last.pt``, ``step-XXXXXX.pt``), whose EMA
    target encoder (keys ``target.*``) is preferred over the context encoder (``encoder.*``).
    ``meta["source"]`` says which weights were loaded; ``model.norm_stats`` holds the
    normalisation statistics of the training data (``{dataset: {sensor: {mean, std}}}``).
    ``device``: cpu, cuda or cuda:N (``None``: cuda when available, else cpu).
    """
    if not isinstance(path, (str, Path)):
        raise UserError(
            f"load_encoder: expected the path of an exported encoder or a checkpoint, got {type(path).__name__} "
            f'{path!r:.60}; e.g. load_encoder("runs/cpu-demo/encoder")'
        )
    device = check_device("device", device)  # before the files are read
    path = resolve_encoder_path(path)
    if path.suffix in TRAINING_SUFFIXES:
        model, meta = _encoder_from_training_checkpoint(path)
    else:
        model, meta = _encoder_from_export(path)
    model.norm_stats = meta.get("norm_stats") or {}
    return model.to(device).eval(), meta


def _build_encoder(model_cfg: dict, sensors, where: Path, sensor_facts: dict | None = None):
    from ..config import ModelConfig
    from ..model import AnySat
    from ..sensors import SENSORS, register_sensor

    for name, facts in (sensor_facts or {}).items():
        if name not in SENSORS:
            register_sensor(**facts)
    unknown = [s for s in sensors if s not in SENSORS]
    if unknown:
        raise CheckpointError(
            f"{where}: sensor(s) {unknown} are not registered in this session; register them "
            "with anysat_lite.register_sensor(...) before loading"
        )
    fields = {k: v for k, v in model_cfg.items() if k in ModelConfig.__dataclass_fields__}
    try:
        return AnySat(ModelConfig(**fields), sensors=sensors)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: the model settings {fields} do not build an encoder ({e})") from None


def _load_weights(model, state: dict, where: Path, described_by: str) -> None:
    """``load_state_dict(strict=True)`` with a one-line summary of what does not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        first = (
            f"e.g. {shapes[0]!r} {list(state[shapes[0]].shape)} in the file vs {list(own[shapes[0]].shape)}"
            if shapes
            else f"e.g. {(missing or unexpected)[0]!r}"
        )
        raise CheckpointError(
            f"{where}: the weights do not fit the model described by {described_by} "
            f"({len(missing)} missing, {len(unexpected)} unexpected, {len(shapes)} of another "
            f"shape; {first}); use files written together by the same run"
        )
    model.load_state_dict(state, strict=True)


def _encoder_from_export(path: Path):
    weights, sidecar = Path(f"{path}.safetensors"), Path(f"{path}.json")
    for f in (sidecar, weights):
        if not f.exists():
            other = weights if f is sidecar else sidecar
            raise CheckpointError(
                f"{f} not found (beside {other.name}); an exported encoder is the pair "
                f"{path.name}.safetensors + {path.name}.json: copy both"
            )
    try:
        meta = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(
            f"{sidecar}: not valid JSON ({e}; truncated?); re-export the encoder or copy the file again"
        ) from None
    if not isinstance(meta, dict) or not isinstance(meta.get("model"), dict) or "sensors" not in meta:
        keys = sorted(meta) if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(
            f"{sidecar}: not an anysat-lite encoder sidecar (expected keys 'model' and "
            f"'sensors', got {keys}); give the .json written with the .safetensors"
        )
    sensors = meta["sensors"]
    if not isinstance(sensors, list) or not all(isinstance(s, str) for s in sensors):
        raise CheckpointError(
            f'{sidecar}: \'sensors\' expected a list of sensor names, e.g. ["aerial", "s2"], got '
            f"{json.dumps(sensors)}; write the list of the encoder's sensors there, or export the encoder again"
        )
    model = _build_encoder(meta["model"], sensors, sidecar, meta.get("sensor_facts"))
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(
            f"{weights}: not a readable safetensors file ({weights.stat().st_size} bytes; {e}); "
            "the file is truncated or corrupt: copy or export it again"
        ) from None
    _load_weights(model, state, weights, sidecar.name)
    meta = dict(meta)
    meta.setdefault("source", f"exported encoder {weights}")
    return model, meta


def _encoder_from_training_checkpoint(path: Path):
    ck = load_checkpoint(path)
    if not isinstance(ck, dict) or not isinstance(ck.get("model"), dict) or not isinstance(ck.get("config"), dict):
        keys = sorted(ck) if isinstance(ck, dict) else type(ck).__name__
        raise CheckpointError(
            f"{path}: not an anysat-lite training checkpoint (expected keys 'model', 'config', "
            f"'step'..., got {keys}); give a last.pt/step-*.pt of anysat-lite pretrain or an "
            "exported encoder"
        )
    state = ck["model"]
    for prefix, what in (("target.", "EMA target encoder"), ("encoder.", "context encoder")):  # noqa: B007 (used below)
        sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if sub:
            break
    else:
        raise CheckpointError(f"{path}: the checkpoint holds no encoder weights (no 'target.*' or 'encoder.*' keys)")
    model_cfg = ck["config"].get("model") or {}
    sensors = ck.get("sensors") or model_cfg.get("sensors")
    if not sensors:
        raise CheckpointError(f"{path}: the checkpoint does not say which sensors the encoder has")
    model = _build_encoder(model_cfg, sensors, path)
    _load_weights(model, sub, path, f"its own config ({what})")
    step = ck.get("step")
    meta = {
        "model": {**model_cfg, "sensors": list(sensors)},
        "sensors": list(sensors),
        "norm_stats": ck.get("norm_stats") or {},
        "config_name": ck["config"].get("name"),
        "steps": step,
        "source": f"{what} of {path} (step {step})",
    }
    return model, meta
