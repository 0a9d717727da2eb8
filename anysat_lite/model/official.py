"""Load checkpoints of the official AnySat code (github gastruc/AnySat) into :class:`AnySat`.

The released ``AnySat.pth`` holds, under ``"state_dict"``, the state dict of the official
``AnyModule``.  :func:`convert_official_state_dict` renames its keys with the table
below; :func:`load_official` builds a matching model and loads the weights, failing
loudly on any missing, unexpected or mis-shaped key.  :func:`to_official_state_dict` goes
the other way, e.g. to write a random-weight stand-in for the released file.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import torch

from ..config import MODEL_SIZES, ModelConfig

__all__ = ["convert_official_state_dict", "to_official_state_dict", "load_official", "OfficialCheckpointError",
           "RELEASED_URL"]

# Where the official code (hubconf.AnySat.from_pretrained) downloads the released base model from.
RELEASED_URL = "https://huggingface.co/g-astruc/AnySat/resolve/main/models/AnySat.pth"


class OfficialCheckpointError(KeyError):
    """The official state dict does not map one-to-one onto this model."""

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
    ("spatial_encoder.predictor_blocks.{i}.attn.rpe_k.lookup_table_weight",
     "subpatch_encoder.blocks.{i}.attn.rpe.weight"),
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
        parts = re.split(r"\{(\w)\}", src.replace("{J}", str(depth)))     # literal, field, literal, field, ...
        pattern = "".join(re.escape(p) if n % 2 == 0 else f"(?P<{p}>{_FIELDS[p]})" for n, p in enumerate(parts))
        m = re.fullmatch(pattern, key)
        if m:
            return dst.replace("{J}", str(depth)).format(**m.groupdict())
    return None


def _official_depth(keys) -> int:
    idx = [int(m.group(1)) for k in keys if (m := re.fullmatch(r"blocks\.(\d+)\..+", k))]
    if not idx:
        raise OfficialCheckpointError("no 'blocks.<i>.' keys: this is not an official AnyModule state dict")
    return max(idx)  # the last block is the fusion block


def convert_official_key(key: str, depth: int) -> str:
    new = _rename(key, depth)
    if new is None:
        raise OfficialCheckpointError(f"official key {key!r} has no counterpart in anysat_lite")
    return new


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
            raise OfficialCheckpointError(f"key {key!r} has no counterpart in the official AnyModule")
        out[name] = value
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
