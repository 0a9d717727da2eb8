"""Load checkpoints of the official AnySat code (github gastruc/AnySat) into :class:`AnySat`.

The official encoder is the ``AnyModule`` of ``src/models/networks/encoder/Any_multi.py``.  Its
state dict reaches users in three wrappings, all accepted by :func:`load_official`:

* the released ``AnySat.pth``: ``{"state_dict": <AnyModule keys>}`` (``cls_token``, ``blocks.0...``);
* the torch.hub wrapper (``hubconf.AnySat``, what ``torch.hub.load("gastruc/anysat", ...)`` returns):
  its ``state_dict()`` holds the ``AnyModule`` under ``model.`` and, because the wrapper also keeps the
  sub-patch transformer as its own attribute, a second copy of it under ``spatial_encoder.``;
* a Lightning checkpoint of the official pretraining (``src/models/module_JEPA.py``): the EMA target
  encoder under ``target_encoder.`` (what the official fine-tuning configs load), the online encoder
  under ``model.encoder.`` and the predictor under ``model.predictor.``.

:func:`convert_official_state_dict` renames the ``AnyModule`` keys with the table below;
:func:`to_official_state_dict` is its inverse (an ``anysat_lite`` model written in the official
format, e.g. a small random checkpoint for tests).  Anything that does not map one-to-one fails with a
one-line :class:`OfficialCheckpointError` naming the keys and what to do.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch

from ..config import MODEL_SIZES, ModelConfig
from ..errors import UserError

__all__ = [
    "convert_official_state_dict",
    "to_official_state_dict",
    "official_encoder_state",
    "load_official",
    "official_model_config",
    "OfficialCheckpointError",
    "OFFICIAL_FORMATS",
    "RELEASED_URL",
]

# Where the official code (hubconf.AnySat.from_pretrained) downloads the released base model from.
RELEASED_URL = "https://huggingface.co/g-astruc/AnySat/resolve/main/models/AnySat.pth"


class OfficialCheckpointError(UserError, KeyError):
    """The official state dict does not map one-to-one onto this model (a one-line message)."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


# (official name, our name) templates, tried in order.  Fields: {s} a sensor, {i} a block index,
# {n} in_norm or out_norm, {r} the rest of the key; {J} is the index of the fusion block (= depth).
_RULES: list[tuple[str, str]] = [
    ("cls_token", "joint.cls_token"),
    ("projector_{s}.patch_embed.weight", "projectors.{s}.conv.weight"),
    ("projector_{s}.mlp.{r}", "projectors.{s}.mlp.{r}"),
    ("projector_{s}.pad_parameter", "projectors.{s}.pad_value"),
    ("projector_{s}.patch_embed.inconv.{r}", "projectors.{s}.ltae.input_mlp.{r}"),
    ("projector_{s}.patch_embed.attention_heads.Q", "projectors.{s}.ltae.query"),
    ("projector_{s}.patch_embed.attention_heads.fc1_k.{r}", "projectors.{s}.ltae.key.{r}"),
    ("projector_{s}.patch_embed.{n}.{r}", "projectors.{s}.ltae.{n}.{r}"),
    ("projector_{s}.patch_embed.mlp.{r}", "projectors.{s}.ltae.output_mlp.{r}"),
    ("spatial_encoder.cls_token", "subpatch_encoder.cls_token"),
    (
        "spatial_encoder.predictor_blocks.{i}.attn.rpe_k.lookup_table_weight",
        "subpatch_encoder.blocks.{i}.attn.rpe.weight",
    ),
    ("spatial_encoder.predictor_blocks.{i}.{r}", "subpatch_encoder.blocks.{i}.{r}"),
    ("spatial_encoder.predictor_norm.{r}", "subpatch_encoder.norm.{r}"),
    ("blocks.{J}.attn.rpe_k.lookup_table_weight", "fusion.attn.rpe.weight"),
    ("blocks.{J}.{r}", "fusion.{r}"),
    ("blocks.{i}.{r}", "joint.blocks.{i}.{r}"),
]
_FIELDS = {"s": r"[^.]+", "i": r"\d+", "n": r"in_norm|out_norm", "r": r".+"}


def _rename(key: str, depth: int, official_to_ours: bool = True) -> str | None:
    """The other side's name of ``key`` by the first matching template of :data:`_RULES` (``None``: no match)."""
    for official, ours in _RULES:
        src, dst = (official, ours) if official_to_ours else (ours, official)
        parts = re.split(r"\{(\w)\}", src.replace("{J}", str(depth)))  # literal, field, literal, field, ...
        pattern = "".join(re.escape(p) if n % 2 == 0 else f"(?P<{p}>{_FIELDS[p]})" for n, p in enumerate(parts))
        m = re.fullmatch(pattern, key)
        if m:
            return dst.replace("{J}", str(depth)).format(**m.groupdict())
    return None


# How an AnyModule state dict is wrapped: (name, prefix of the AnyModule keys, prefixes of keys that are left out)
OFFICIAL_FORMATS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("AnyModule state dict (released AnySat.pth)", "", ()),
    ("torch.hub wrapper (hubconf.AnySat)", "model.", ("spatial_encoder.",)),
    ("official pretraining checkpoint (EMA target encoder)", "target_encoder.", ("model.",)),
)


def _keys_hint(keys) -> str:
    keys = list(keys)
    shown = ", ".join(repr(k) for k in keys[:3])
    return f"{shown}{', ...' if len(keys) > 3 else ''} ({len(keys)} key{'s' if len(keys) != 1 else ''})"


def official_encoder_state(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """The ``AnyModule`` state dict inside any official wrapping (module docstring), and the wrapping's name.

    Keys of the hub wrapper's second copy of the sub-patch transformer (``spatial_encoder.*``) must
    equal their ``model.spatial_encoder.*`` twins; the pretraining checkpoint's online encoder and
    predictor (``model.*``) are left out, as the official fine-tuning leaves them out.
    """
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
        state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, Mapping) or not state_dict:
        raise OfficialCheckpointError(
            f"expected a state dict (a mapping of names to tensors), got "
            f"{type(state_dict).__name__}; pass the official AnySat.pth or its state dict"
        )
    for name, prefix, dropped in OFFICIAL_FORMATS:
        if f"{prefix}cls_token" not in state_dict:
            continue
        inner = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
        rest = [k for k in state_dict if not k.startswith(prefix)]
        unknown = [k for k in rest if not k.startswith(dropped)] if dropped else rest
        if unknown:
            raise OfficialCheckpointError(
                f"{name}: keys outside {prefix or 'the AnyModule'!r}: {_keys_hint(unknown)}; expected only "
                f"{', '.join(repr(d + '*') for d in dropped) or 'AnyModule keys'} beside them; "
                "pass the encoder's state dict alone"
            )
        if prefix == "model.":  # the hub wrapper's second copy of the sub-patch transformer
            differ = [
                k
                for k in rest
                if f"model.{k}" not in state_dict or not torch.equal(state_dict[k], state_dict[f"model.{k}"])
            ]
            if differ:
                raise OfficialCheckpointError(
                    f"{name}: {_keys_hint(differ)} differ from their 'model.' twins; expected the wrapper's two "
                    "references to one sub-patch transformer; pass the 'model.*' part alone"
                )
        return inner, name
    raise OfficialCheckpointError(
        f"not an official AnySat state dict: no 'cls_token' key under any known prefix (found {_keys_hint(state_dict)})"
        "; expected the released AnySat.pth ('cls_token', 'blocks.0...'), the torch.hub wrapper's state dict "
        "('model.cls_token') or an official pretraining checkpoint ('target_encoder.cls_token')"
    )


def _official_depth(keys) -> int:
    idx = [int(m.group(1)) for k in keys if (m := re.fullmatch(r"blocks\.(\d+)\..+", k))]
    if not idx:
        raise OfficialCheckpointError(
            "no 'blocks.<i>.' keys: this is not an official AnyModule state dict; "
            "pass the released AnySat.pth or its 'state_dict'"
        )
    return max(idx)  # the last block is the fusion block


def convert_official_key(key: str, depth: int) -> str:
    new = _rename(key, depth)
    if new is None:
        raise OfficialCheckpointError(
            f"official key {key!r} has no counterpart in anysat_lite; "
            "expected the keys of an AnySat encoder (see anysat_lite/model/official.py)"
        )
    return new


def convert_official_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename every key of an official ``AnyModule`` state dict (values untouched)."""
    depth = _official_depth(state_dict)
    out = {}
    for k, v in state_dict.items():
        new = convert_official_key(k, depth)
        if new in out:
            raise OfficialCheckpointError(
                f"two official keys map onto {new!r}; expected one official key per anysat_lite key"
            )
        out[new] = v
    return out


def to_official_state_dict(model_or_state_dict) -> dict[str, torch.Tensor]:
    """Our :class:`~anysat_lite.model.AnySat` (or its state dict) -> the official ``AnyModule`` key names.

    The inverse of :func:`convert_official_state_dict` (values untouched): :func:`load_official` of the
    result gives back the same model.  Writes official-format checkpoints, e.g. a random-weight stand-in for
    the released ``AnySat.pth``: ``torch.save({"state_dict": to_official_state_dict(model)}, path)``.
    """
    sd = model_or_state_dict.state_dict() if hasattr(model_or_state_dict, "state_dict") else model_or_state_dict
    depth = 1 + max((int(m.group(1)) for k in sd if (m := re.fullmatch(r"joint\.blocks\.(\d+)\..+", k))), default=-1)
    out = {}
    for key, value in sd.items():
        name = _rename(key, depth, official_to_ours=False)
        if name is None:
            raise OfficialCheckpointError(
                f"key {key!r} has no counterpart in the official AnyModule; "
                "expected the keys of an anysat_lite AnySat encoder"
            )
        out[name] = value.detach().clone()
    return out


def official_model_config(state_dict: Mapping[str, torch.Tensor], num_heads: int | None = None) -> ModelConfig:
    """Infer the :class:`ModelConfig` of an official state dict (width, depth, sensors, L-TAE sizes)."""
    if "cls_token" not in state_dict:
        state_dict = official_encoder_state(state_dict)[0]
    D = state_dict["cls_token"].shape[-1]
    depth = _official_depth(state_dict)
    if num_heads is None:
        known = {v["embed_dim"]: v["num_heads"] for v in MODEL_SIZES.values()}
        if D not in known:
            raise OfficialCheckpointError(
                f"cannot infer the number of heads for width {D} (known widths: {sorted(known)}); pass num_heads="
            )
        num_heads = known[D]
    sensors = sorted({m.group(1) for k in state_dict if (m := re.match(r"projector_([^.]+)\.", k))})
    ltae_heads, ltae_dk = 16, 8
    for k, v in state_dict.items():
        if k.endswith("attention_heads.Q"):
            ltae_heads, ltae_dk = v.shape
            break
    return ModelConfig(
        embed_dim=D, depth=depth, num_heads=num_heads, ltae_heads=ltae_heads, ltae_dk=ltae_dk, sensors=sensors
    )


def _read(path: str | Path) -> Mapping:
    path = Path(path)
    if not path.is_file():
        what = "a folder" if path.is_dir() else "no such file"
        raise OfficialCheckpointError(
            f"{path}: {what}; expected the official AnySat.pth file (download it from {RELEASED_URL})"
        )
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load fails on foreign or damaged files with many types (KeyError, IndexError...)
        from ..train.checkpoint import unreadable  # here: the train package imports this one

        raise OfficialCheckpointError(
            f"{unreadable(path, e)}; expected the official AnySat.pth, a state dict saved with torch.save "
            f"(download it from {RELEASED_URL})"
        ) from None
    if isinstance(sd, Mapping) and {"model", "optimizer", "step"} <= set(sd):
        raise OfficialCheckpointError(
            f"{path}: an anysat-lite training checkpoint, not an official AnySat state dict; probe it with "
            f"anysat-lite probe --checkpoint {path} (Python: anysat_lite.train.checkpoint.load_encoder)"
        )
    return sd


def load_official(state_dict_or_path, model=None, num_heads: int | None = None, attend_over: str | None = None):
    """Build (or fill) an :class:`~anysat_lite.model.AnySat` from an official checkpoint.

    Args:
        state_dict_or_path: an official state dict in any wrapping of :data:`OFFICIAL_FORMATS` (the
            released ``AnySat.pth``, the torch.hub wrapper's ``state_dict()``, an official pretraining
            checkpoint), optionally under ``"state_dict"``, a path to such a file (read with
            ``weights_only=True``), or an official module itself (e.g. the model ``torch.hub.load`` returns).
        model: an existing model to load into (default: a new one of the inferred size).  A size name
            ("nano") is refused: the size is read from the checkpoint.
        num_heads: attention heads, when the width is not one of the official sizes.
        attend_over: ``"tokens"`` (the official code without flash-attn, as its README loads the weights) or
            ``"heads"`` (the official code with flash-attn, ``torch.hub.load``'s default: no token of the joint
            transformer sees another; :mod:`anysat_lite.model.blocks`); ``None``: the given model's own setting,
            or ``"tokens"`` for a new model.
    Returns:
        the model in eval mode, weights in float32.
    """
    from .anysat import AnySat

    if model is not None and not isinstance(model, AnySat):
        hint = " (the size is read from the checkpoint)" if isinstance(model, str) else ""
        raise UserError(
            f"load_official(model={model!r:.40}): expected an AnySat model to load into, or None{hint}; leave it "
            "out for a new model of the checkpoint's size, e.g. load_official(path)"
        )
    from ..config import ATTEND_OVER

    if attend_over is not None and attend_over not in ATTEND_OVER:
        raise UserError(
            f"load_official(attend_over={attend_over!r}): expected one of {', '.join(ATTEND_OVER)}; e.g. "
            "attend_over='tokens' (the official code without flash-attn)"
        )
    if model is not None and attend_over not in (None, model.config.attend_over):
        raise UserError(
            f"load_official(attend_over={attend_over!r}): the model given attends over "
            f"{model.config.attend_over!r}, expected the same; leave attend_over out, or build the model with it"
        )
    sd = state_dict_or_path
    if isinstance(sd, (str, Path)):
        sd = _read(sd)
    elif isinstance(sd, torch.nn.Module):
        sd = sd.state_dict()
    sd, _ = official_encoder_state(sd)
    if model is None:
        cfg = official_model_config(sd, num_heads)
        cfg.attend_over = attend_over or "tokens"
        model = AnySat(cfg)
    converted = convert_official_state_dict(sd)
    own = model.state_dict()
    missing = sorted(set(own) - set(converted))
    unexpected = sorted(set(converted) - set(own))
    wrong = sorted(
        f"{k}: checkpoint {tuple(converted[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(converted)
        if converted[k].shape != own[k].shape
    )
    if missing or unexpected or wrong:
        parts = [
            f"missing in checkpoint: {_keys_hint(missing)}" if missing else "",
            f"unexpected in checkpoint: {_keys_hint(unexpected)}" if unexpected else "",
            f"shape mismatches: {_keys_hint(wrong)}" if wrong else "",
        ]
        raise OfficialCheckpointError(
            "official checkpoint does not match the model: "
            + "; ".join(p for p in parts if p)
            + "; build the model with official_model_config(state_dict) or pass model=None"
        )
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in converted.items()}, strict=True)
    return model.eval()
