"""Load checkpoints of the official AnySat code (github gastruc/AnySat) into :class:`AnySat`.

The released ``AnySat.pth`` holds, under ``"state_dict"``, the state dict of the official
``AnyModule``.  :func:`convert_official_state_dict` renames its keys with the table
below; :func:`load_official` builds a matching model and loads the weights, failing
loudly on any missing, unexpected or mis-shaped key.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import torch

from ..config import MODEL_SIZES, ModelConfig

__all__ = ["convert_official_state_dict", "load_official", "OfficialCheckpointError"]


class OfficialCheckpointError(KeyError):
    """The official state dict does not map one-to-one onto this model."""

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


def _official_depth(keys) -> int:
    idx = [int(m.group(1)) for k in keys if (m := re.fullmatch(r"blocks\.(\d+)\..+", k))]
    if not idx:
        raise OfficialCheckpointError("no 'blocks.<i>.' keys: this is not an official AnyModule state dict")
    return max(idx)  # the last block is the fusion block


def convert_official_key(key: str, depth: int) -> str:
    for pattern, repl in _RULES:
        pattern = pattern.replace("{J}", str(depth))
        if re.fullmatch(pattern, key):
            return re.sub(pattern, repl, key)
    raise OfficialCheckpointError(f"official key {key!r} has no counterpart in anysat_lite")


def convert_official_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename every key of an official ``AnyModule`` state dict (values untouched)."""
    depth = _official_depth(state_dict)
    out = {}
    for k, v in state_dict.items():
        new = convert_official_key(k, depth)
        if new in out:
            raise OfficialCheckpointError(f"two official keys map onto {new!r}")
        out[new] = v
    return out


def official_model_config(state_dict: Mapping[str, torch.Tensor], num_heads: int | None = None) -> ModelConfig:
    """Infer the :class:`ModelConfig` of an official state dict (width, depth, sensors, L-TAE sizes)."""
    D = state_dict["cls_token"].shape[-1]
    depth = _official_depth(state_dict)
    if num_heads is None:
        known = {v["embed_dim"]: v["num_heads"] for v in MODEL_SIZES.values()}
        if D not in known:
            raise OfficialCheckpointError(f"cannot infer the number of heads for width {D}; pass num_heads=")
        num_heads = known[D]
    sensors = sorted({m.group(1) for k in state_dict if (m := re.match(r"projector_([^.]+)\.", k))})
    ltae_heads, ltae_dk = 16, 8
    for k, v in state_dict.items():
        if k.endswith("attention_heads.Q"):
            ltae_heads, ltae_dk = v.shape
            break
    return ModelConfig(embed_dim=D, depth=depth, num_heads=num_heads, ltae_heads=ltae_heads, ltae_dk=ltae_dk,
                       sensors=sensors)


def load_official(state_dict_or_path, model=None, num_heads: int | None = None):
    """Build (or fill) an :class:`~anysat_lite.model.AnySat` from an official checkpoint.

    Args:
        state_dict_or_path: an official ``AnyModule`` state dict, a checkpoint dict holding it
            under ``"state_dict"``, or a path to such a file (read with ``weights_only=True``).
        model: an existing model to load into (default: a new one of the inferred size).
        num_heads: attention heads, when the width is not one of the official sizes.
    Returns:
        the model in eval mode, weights in float32.
    """
    from .anysat import AnySat

    sd = state_dict_or_path
    if isinstance(sd, (str, Path)):
        sd = torch.load(sd, map_location="cpu", weights_only=True)
    if "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
        sd = sd["state_dict"]
    if model is None:
        model = AnySat(official_model_config(sd, num_heads))
    converted = convert_official_state_dict(sd)
    own = model.state_dict()
    missing = sorted(set(own) - set(converted))
    unexpected = sorted(set(converted) - set(own))
    wrong = [f"{k}: checkpoint {tuple(converted[k].shape)} vs model {tuple(own[k].shape)}"
             for k in set(own) & set(converted) if converted[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise OfficialCheckpointError(
            "official checkpoint does not match the model:\n"
            + (f"  missing in checkpoint: {missing}\n" if missing else "")
            + (f"  unexpected in checkpoint: {unexpected}\n" if unexpected else "")
            + (f"  shape mismatches: {sorted(wrong)}\n" if wrong else ""))
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in converted.items()}, strict=True)
    return model.eval()
