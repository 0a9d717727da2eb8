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

__all__ = ["PipelineTrace", "trace_pipeline", "fusion_shares", "fusion_locality"]


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
        joint: ``[B, p + M*N, D]`` its output (the ``p`` prefix tokens first: cls, then MODIS when present).
        fusion_weights: ``[B, heads, p + N, p + M*N]`` how each fused query (the ``p`` prefix queries: cls,
            and MODIS when present; then the patches) attends to the joint tokens.
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
    A sample the model would refuse is refused first, with the model's own message (:meth:`AnySat.validate`).
    Tensors are detached and moved to the CPU.
    """
    x, P = prepare_input(model, x, patch_size)
    model.validate(x, P)  # the sample checks of AnySat.forward, before this function reads the sample
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


def _mean_pairwise_cosine(tokens: Tensor) -> float:
    """``tokens [B, N, D]`` -> mean cosine similarity between the ``N (N - 1)`` ordered pairs of one item."""
    t = torch.nn.functional.normalize(tokens.float(), dim=-1)
    n = t.shape[1]
    sims = t @ t.transpose(1, 2)
    return ((sims.sum((1, 2)) - sims.diagonal(dim1=1, dim2=2).sum(1)) / (n * (n - 1))).mean().item()


def fusion_shares(trace: PipelineTrace) -> Tensor:
    """``[B, p + N, M, N]``: the fusion's attention (mean over heads) from each query (``p`` prefix queries, then
    the ``N`` patches) to each of the ``M`` spatial sensors' tokens at each of the ``N`` locations."""
    M, (h, w) = len([s for s in trace.sensors if s in trace.grouped]), trace.grid
    weights = trace.fusion_weights.float().mean(1)  # [B, p + N, p + M*N]
    return weights[..., weights.shape[-1] - M * h * w :].reshape(*weights.shape[:2], M, h * w)


def fusion_locality(trace: PipelineTrace) -> dict:
    """How local the fusion of a traced batch is: where its queries look, and how alike its outputs are.

    * ``cls_share``: ``{sensor: share}`` of the tile (cls) query's attention on each sensor's tokens,
      mean over heads and items (the prefix tokens take the rest);
    * ``own_location``: mean share of a patch query's attention on the tokens of its own location (all
      sensors), beside ``uniform_location = M / (p + M N)``, what a query spread evenly over all the tokens
      (``p`` prefix tokens, ``M`` sensors' tokens at ``N`` locations) gives it;
    * ``fused_patch_cosine``: mean cosine similarity between two fused patch tokens of the same tile
      (1 = every location of a tile gets the same token);
    * ``joint_patch_cosine``: the same for the joint transformer's tokens of one sensor, before the fusion.

    Needs a grid of at least two patches.
    """
    sensors = [s for s in trace.sensors if s in trace.grouped]
    M, (h, w) = len(sensors), trace.grid
    N = h * w
    if N < 2:
        raise ValueError(f"fusion_locality needs at least 2 patches per tile, the trace has a {h} x {w} grid")
    per_sensor = fusion_shares(trace)  # [B, p + N, M, N]
    cls_share = per_sensor[:, 0].sum(-1).mean(0)  # [M]
    patch = per_sensor[:, -N:]  # [B, N, M, N]: query location, sensor, key location
    own = patch.diagonal(dim1=1, dim2=3).sum(1).mean().item()  # [B, M, N] -> sum over sensors
    joint = trace.joint[:, -M * N :].reshape(-1, M, N, trace.joint.shape[-1])
    return {
        "cls_share": {s: cls_share[m].item() for m, s in enumerate(sensors)},
        "own_location": own,
        "uniform_location": M / trace.fusion_weights.shape[-1],
        "fused_patch_cosine": _mean_pairwise_cosine(trace.fused[:, 1:]),
        "joint_patch_cosine": _mean_pairwise_cosine(joint.flatten(0, 1)),
    }
