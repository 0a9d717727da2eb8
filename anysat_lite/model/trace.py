"""What happens inside one forward pass: the intermediate tensors of every stage, recorded with forward hooks.

:func:`trace_pipeline` runs the model once on a sample, exactly as :meth:`AnySat.forward` does, and keeps
what the stages hand each other (nothing is recomputed beside the model)::

    sensor inputs ──projectors──▶ sub-patch maps ──grouped into patches──▶ sub-patch transformer
        ──▶ one token per patch and sensor ──+ positions──▶ joint transformer ──▶ fusion
        ──▶ outputs

``anysat_lite.viz.plot_pipeline`` draws it with the shape at every arrow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..data.contract import prepare_input, split_key
from .tokenizer import subpatch_layout

__all__ = ["PipelineTrace", "trace_pipeline"]


@dataclass
class PipelineTrace:
    """The stages of one forward pass of a sample with patches of ``patch_size`` metres.

    Attributes:
        sensors: the sensors of the sample, in input order.
        kinds: ``{sensor: "image" | "series"}`` (which projector: conv+MLP or L-TAE).
        inputs: ``{sensor: shape}``, ``[B, C, H, W]`` or ``[B, T, C, H, W]``.
        projected: ``{sensor: [B, Hs, Ws, D]}`` the projector's map of sub-patch tokens.
        grouped: ``{sensor: (B*h*w, g*g, D)}`` the sub-patch sequences the sub-patch transformer reads.
        subpatch_m: ``{sensor: metres}`` the spacing of the sub-patches (their position code unit).
        patch_tokens: ``[B, M*N, D]`` the joint transformer's input (one token per patch and sensor, with
            position codes), ``M`` spatial sensors, ``N = h*w`` patches.
        joint: ``[B, 1 + M*N, D]`` its output (cls first).
        fusion_weights: ``[B, heads, 1 + N, 1 + M*N]`` how each fused query (cls, then patches) attends to
            the joint tokens.
        fused: ``[B, 1 + N, D]`` the fusion block's output: the tile token and one token per patch.
        outputs: ``{mode: shape}`` of :meth:`AnySat.forward` for ``tile``, ``patch``, ``all`` and ``dense``.
        grid: the patch grid ``(h, w)``.
        patch_size: ``P`` in metres.
        dense_sensor: the sensor of the ``dense`` output.
    """

    sensors: list[str]
    kinds: dict[str, str]
    inputs: dict[str, tuple[int, ...]]
    projected: dict[str, Tensor]
    grouped: dict[str, tuple[int, ...]]
    subpatch_m: dict[str, float]
    patch_tokens: Tensor
    joint: Tensor
    fusion_weights: Tensor
    fused: Tensor
    outputs: dict[str, tuple[int, ...]] = field(default_factory=dict)
    grid: tuple[int, int] = (0, 0)
    patch_size: int = 0
    dense_sensor: str | None = None


@torch.no_grad()
def trace_pipeline(
    model, x: Mapping[str, Tensor], patch_size: int, output_modality: str | None = None, outputs: bool = True
) -> PipelineTrace:
    """Run ``model`` on ``x`` (``output="dense"``) and record every stage (see :class:`PipelineTrace`).

    ``outputs=True`` also runs the ``tile``, ``patch`` and ``all`` modes to record their shapes.
    Tensors are detached and moved to the CPU.
    """
    x, P = prepare_input(model, x, patch_size)
    sensors = [k for k in x if split_key(k)[1] is None and k in model.sensors]
    spatial = [s for s in sensors if not model.sensors[s].one_token_per_tile]
    dense = output_modality or spatial[0]
    rec: dict = {"projected": {}}
    hooks = []

    def keep_projection(name):
        def hook(module, args, out):
            rec["projected"][name] = out.detach().float().cpu()

        return hook

    def keep_joint(module, args, out):
        rec["patch_tokens"], rec["joint"] = args[0].detach().float().cpu(), out.detach().float().cpu()

    def keep_fusion_weights(module, args):
        rec["fusion_weights"] = module.weights(*args[:3]).detach().float().cpu()

    def keep_fused(module, args, out):
        rec["fused"] = out.detach().float().cpu()

    try:
        for s in sensors:
            hooks.append(model.projectors[s].register_forward_hook(keep_projection(s)))
        hooks.append(model.joint.register_forward_hook(keep_joint))
        hooks.append(model.fusion.attn.register_forward_pre_hook(keep_fusion_weights))
        hooks.append(model.fusion.register_forward_hook(keep_fused))
        dense_out = model(x, P, output="dense", output_modality=dense)
    finally:
        for h in hooks:
            h.remove()
    shapes = {"dense": tuple(dense_out.shape)}
    if outputs:
        for mode in ("tile", "patch", "all"):
            shapes[mode] = tuple(model(x, P, output=mode).shape)
    grouped, spacing = {}, {}
    B = next(iter(rec["projected"].values())).shape[0]
    h, w = None, None
    for s in spatial:
        lay = subpatch_layout(model.sensors[s], P, model.config.subpatch_order)
        Hs, Ws = rec["projected"][s].shape[1] * lay.upsample, rec["projected"][s].shape[2] * lay.upsample
        h, w = Hs // lay.g, Ws // lay.g
        grouped[s] = (B * h * w, lay.g * lay.g, model.embed_dim)
        spacing[s] = lay.spacing_m
    return PipelineTrace(
        sensors=sensors,
        kinds={s: model.sensors[s].kind for s in sensors},
        inputs={s: tuple(x[s].shape) for s in sensors},
        projected=rec["projected"],
        grouped=grouped,
        subpatch_m=spacing,
        patch_tokens=rec["patch_tokens"],
        joint=rec["joint"],
        fusion_weights=rec["fusion_weights"],
        fused=rec["fused"],
        outputs=shapes,
        grid=(h, w),
        patch_size=P,
        dense_sensor=dense,
    )
