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

import pickle
import re
from pathlib import Path
from typing import Mapping

import torch

from ..config import MODEL_SIZES, ModelConfig
from ..errors import UserError

__all__ = ["convert_official_state_dict", "to_official_state_dict", "official_encoder_state", "load_official",
           "official_model_config", "OfficialCheckpointError", "OFFICIAL_FORMATS"]


class OfficialCheckpointError(UserError, KeyError):
    """The official state dict does not map one-to-one onto this model (a one-line message)."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


# (official pattern, our name); ``{J}`` is the index of the fusion block (= depth).
_RULES: list[tuple[str, str]] = [
    (r"cls_token", r"joint.cls_token"),
    (r"projector_(?P<s>[^.]+)\.patch_embed\.weight", r"projectors.\g<s>.conv.weight"),
    (r"projector_(?P<s>[^.]+)\.mlp\.(?P<r>.+)", r"projectors.\g<s>.mlp.\g<r>"),
    (r"projector_(?P<s>[^.]+)\.pad_parameter", r"projectors.\g<s>.pad_value"),
    (r"projector_(?P<s>[^.]+)\.patch_embed\.inconv\.(?P<r>.+)", r"projectors.\g<s>.ltae.input_mlp.\g<r>"),
    (r"projector_(?P<s>[^.]+)\.patch_embed\.attention_heads\.Q", r"projectors.\g<s>.ltae.query"),
    (r"projector_(?P<s>[^.]+)\.patch_embed\.attention_heads\.fc1_k\.(?P<r>.+)", r"projectors.\g<s>.ltae.key.\g<r>"),
    (r"projector_(?P<s>[^.]+)\.patch_embed\.(?P<n>in_norm|out_norm)\.(?P<r>.+)", r"projectors.\g<s>.ltae.\g<n>.\g<r>"),
    (r"projector_(?P<s>[^.]+)\.patch_embed\.mlp\.(?P<r>.+)", r"projectors.\g<s>.ltae.output_mlp.\g<r>"),
    (r"spatial_encoder\.cls_token", r"subpatch_encoder.cls_token"),
    (r"spatial_encoder\.predictor_blocks\.(?P<i>\d+)\.attn\.rpe_k\.lookup_table_weight",
     r"subpatch_encoder.blocks.\g<i>.attn.rpe.weight"),
    (r"spatial_encoder\.predictor_blocks\.(?P<i>\d+)\.(?P<r>.+)", r"subpatch_encoder.blocks.\g<i>.\g<r>"),
    (r"spatial_encoder\.predictor_norm\.(?P<r>.+)", r"subpatch_encoder.norm.\g<r>"),
    (r"blocks\.{J}\.attn\.rpe_k\.lookup_table_weight", r"fusion.attn.rpe.weight"),
    (r"blocks\.{J}\.(?P<r>.+)", r"fusion.\g<r>"),
    (r"blocks\.(?P<i>\d+)\.(?P<r>.+)", r"joint.blocks.\g<i>.\g<r>"),
]


def _inverse_rule(pattern: str, repl: str) -> tuple[str, str]:
    """The rule that maps ``repl``'s names back to ``pattern``'s: each ``\\g<name>`` of ``repl`` becomes the
    named group of ``pattern`` (same sub-pattern), and each group of ``pattern`` becomes ``\\g<name>``."""
    groups = dict(re.findall(r"\(\?P<(\w+)>([^()]*)\)", pattern))
    parts = re.split(r"(\\g<\w+>|\{J\})", repl)
    inv_pattern = "".join(f"(?P<{p[3:-1]}>{groups[p[3:-1]]})" if p.startswith("\\g<") else
                          p if p == "{J}" else re.escape(p) for p in parts)
    inv_repl = re.sub(r"\(\?P<(\w+)>[^()]*\)", r"\\g<\1>", pattern).replace("\\.", ".")
    return inv_pattern, inv_repl


_INVERSE_RULES: list[tuple[str, str]] = [_inverse_rule(p, r) for p, r in _RULES]

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
        raise OfficialCheckpointError(f"expected a state dict (a mapping of names to tensors), got "
                                      f"{type(state_dict).__name__}; pass the official AnySat.pth or its state dict")
    for name, prefix, dropped in OFFICIAL_FORMATS:
        if f"{prefix}cls_token" not in state_dict:
            continue
        inner = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        rest = [k for k in state_dict if not k.startswith(prefix)]
        unknown = [k for k in rest if not k.startswith(dropped)] if dropped else rest
        if unknown:
            raise OfficialCheckpointError(
                f"{name}: keys outside {prefix or 'the AnyModule'!r}: {_keys_hint(unknown)}; expected only "
                f"{', '.join(repr(d + '*') for d in dropped) or 'AnyModule keys'} beside them; "
                "pass the encoder's state dict alone")
        if prefix == "model.":   # the hub wrapper's second copy of the sub-patch transformer
            differ = [k for k in rest if f"model.{k}" not in state_dict or
                      not torch.equal(state_dict[k], state_dict[f"model.{k}"])]
            if differ:
                raise OfficialCheckpointError(
                    f"{name}: {_keys_hint(differ)} differ from their 'model.' twins; expected the wrapper's two "
                    "references to one sub-patch transformer; pass the 'model.*' part alone")
        return inner, name
    raise OfficialCheckpointError(
        f"not an official AnySat state dict: no 'cls_token' key under any known prefix (found {_keys_hint(state_dict)})"
        "; expected the released AnySat.pth ('cls_token', 'blocks.0...'), the torch.hub wrapper's state dict "
        "('model.cls_token') or an official pretraining checkpoint ('target_encoder.cls_token')")


def _official_depth(keys) -> int:
    idx = [int(m.group(1)) for k in keys if (m := re.fullmatch(r"blocks\.(\d+)\..+", k))]
    if not idx:
        raise OfficialCheckpointError("no 'blocks.<i>.' keys: this is not an official AnyModule state dict; "
                                      "pass the released AnySat.pth or its 'state_dict'")
    return max(idx)  # the last block is the fusion block


def _rename(key: str, rules, depth: int, what: str) -> str:
    for pattern, repl in rules:
        pattern, repl = pattern.replace("{J}", str(depth)), repl.replace("{J}", str(depth))
        if re.fullmatch(pattern, key):
            return re.sub(pattern, repl, key)
    raise OfficialCheckpointError(f"{what} key {key!r} has no counterpart in "
                                  f"{'anysat_lite' if what == 'official' else 'the official AnyModule'}; "
                                  "expected the keys of an AnySat encoder (see anysat_lite/model/official.py)")


def convert_official_key(key: str, depth: int) -> str:
    return _rename(key, _RULES, depth, "official")


def convert_official_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename every key of an official ``AnyModule`` state dict (values untouched)."""
    depth = _official_depth(state_dict)
    out = {}
    for k, v in state_dict.items():
        new = convert_official_key(k, depth)
        if new in out:
            raise OfficialCheckpointError(f"two official keys map onto {new!r}; expected one official key per "
                                          "anysat_lite key")
        out[new] = v
    return out


def to_official_state_dict(model_or_state: torch.nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An ``anysat_lite`` encoder's state dict in the official ``AnyModule`` format (the inverse of
    :func:`convert_official_state_dict`); save it as ``{"state_dict": ...}`` to mimic ``AnySat.pth``."""
    sd = model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module) else model_or_state
    depth = 1 + max((int(m.group(1)) for k in sd if (m := re.fullmatch(r"joint\.blocks\.(\d+)\..+", k))), default=-1)
    return {_rename(k, _INVERSE_RULES, depth, "anysat_lite"): v.detach().clone() for k, v in sd.items()}


def official_model_config(state_dict: Mapping[str, torch.Tensor], num_heads: int | None = None) -> ModelConfig:
    """Infer the :class:`ModelConfig` of an official state dict (width, depth, sensors, L-TAE sizes)."""
    if "cls_token" not in state_dict:
        state_dict = official_encoder_state(state_dict)[0]
    D = state_dict["cls_token"].shape[-1]
    depth = _official_depth(state_dict)
    if num_heads is None:
        known = {v["embed_dim"]: v["num_heads"] for v in MODEL_SIZES.values()}
        if D not in known:
            raise OfficialCheckpointError(f"cannot infer the number of heads for width {D} (known widths: "
                                          f"{sorted(known)}); pass num_heads=")
        num_heads = known[D]
    sensors = sorted({m.group(1) for k in state_dict if (m := re.match(r"projector_([^.]+)\.", k))})
    ltae_heads, ltae_dk = 16, 8
    for k, v in state_dict.items():
        if k.endswith("attention_heads.Q"):
            ltae_heads, ltae_dk = v.shape
            break
    return ModelConfig(embed_dim=D, depth=depth, num_heads=num_heads, ltae_heads=ltae_heads, ltae_dk=ltae_dk,
                       sensors=sensors)


def _read(path: str | Path) -> Mapping:
    path = Path(path)
    if not path.is_file():
        raise OfficialCheckpointError(f"{path}: no such file; expected the official AnySat.pth (download it from "
                                      "https://huggingface.co/g-astruc/AnySat/resolve/main/models/AnySat.pth)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        first = " ".join(str(e).split())[:160]
        raise OfficialCheckpointError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: {first}); "
                                      "expected the official AnySat.pth (a state dict saved with torch.save)") from None


def load_official(state_dict_or_path, model=None, num_heads: int | None = None):
    """Build (or fill) an :class:`~anysat_lite.model.AnySat` from an official checkpoint.

    Args:
        state_dict_or_path: an official state dict in any wrapping of :data:`OFFICIAL_FORMATS` (the
            released ``AnySat.pth``, the torch.hub wrapper's ``state_dict()``, an official pretraining
            checkpoint), optionally under ``"state_dict"``, a path to such a file (read with
            ``weights_only=True``), or an official module itself (e.g. the model ``torch.hub.load`` returns).
        model: an existing model to load into (default: a new one of the inferred size).
        num_heads: attention heads, when the width is not one of the official sizes.
    Returns:
        the model in eval mode, weights in float32.
    """
    from .anysat import AnySat

    sd = state_dict_or_path
    if isinstance(sd, (str, Path)):
        sd = _read(sd)
    elif isinstance(sd, torch.nn.Module):
        sd = sd.state_dict()
    sd, _ = official_encoder_state(sd)
    if model is None:
        model = AnySat(official_model_config(sd, num_heads))
    converted = convert_official_state_dict(sd)
    own = model.state_dict()
    missing = sorted(set(own) - set(converted))
    unexpected = sorted(set(converted) - set(own))
    wrong = sorted(f"{k}: checkpoint {tuple(converted[k].shape)} vs model {tuple(own[k].shape)}"
                   for k in set(own) & set(converted) if converted[k].shape != own[k].shape)
    if missing or unexpected or wrong:
        parts = [f"missing in checkpoint: {_keys_hint(missing)}" if missing else "",
                 f"unexpected in checkpoint: {_keys_hint(unexpected)}" if unexpected else "",
                 f"shape mismatches: {_keys_hint(wrong)}" if wrong else ""]
        raise OfficialCheckpointError("official checkpoint does not match the model: "
                                      + "; ".join(p for p in parts if p)
                                      + "; build the model with official_model_config(state_dict) or pass model=None")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in converted.items()}, strict=True)
    return model.eval()
