"""The JEPA pretraining module: context encoder, EMA target encoder, predictor, losses.

One training step on a batch (all randomness from explicit generators)::

    targets  = LN(target_encoder(x, all dates, all patches))[target blocks]     # no gradient (normalise_targets)
    tokens   = context_encoder.tokenize(drop_dates(x))                           # [B, M, N, D]
    context  = tokens[:, :, context block] with modality masking -> joint + fusion
    pred     = predictor(context, positions of context and target blocks)
    loss     = smooth_l1(pred, targets) + w * MIL-NCE(tokens)                      # latent space only
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import Config
from ..data.contract import sensor_entries, split_key
from ..errors import UserError
from ..model import AnySat
from ..sensors import SENSORS
from .ema import ema_update, make_target
from .losses import latent_loss, mil_nce
from .masks import Masks, drop_dates, modality_mask, shift_bands
from .monitors import collapse_monitors
from .predictor import Predictor, gather_tokens

__all__ = ["JEPA", "batch_mean_token", "gather_context", "normalise_targets"]


def batch_mean_token(h: Tensor) -> Tensor:
    """``h [B, N, D]`` -> ``[1, 1, D]``: the mean token of the (global, under DDP) batch."""
    mean = h.mean(dim=(0, 1), keepdim=True)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        mean = mean.clone()
        dist.all_reduce(mean)
        mean /= dist.get_world_size()
    return mean


def normalise_targets(h: Tensor, center: bool = False, standardise: bool = False) -> Tensor:
    """The regression targets from the target encoder's patch outputs ``h [B, N, D]``: layer-normed, as in
    I-JEPA and AnySat.  Two ablations, off by default (docs/seeds.md measures them): ``center`` subtracts the
    batch's mean token before the layer norm; ``standardise`` then scales each dimension to zero mean and unit
    standard deviation over the batch's tokens (of every process under DDP)."""
    if center:
        h = h - batch_mean_token(h)
    h = F.layer_norm(h, (h.shape[-1],))
    if standardise:
        h = h - batch_mean_token(h)
        h = h / (batch_mean_token(h**2) + 1e-4).sqrt()
    return h


def gather_context(tokens: Tensor, ctx_idx: Tensor, official_offset: bool = False) -> Tensor:
    """What the context encoder reads: every sensor's token at each context patch.

    ``tokens [B, M, N, D]`` (position codes added), ``ctx_idx [B, Kc]`` -> ``[B, M, Kc, D]``.

    ``official_offset`` reproduces the official gather (``JEPAAny.forward_encoder`` and ``apply_masks``)
    for a sample without MODIS: it drops the first of the ``M N`` sensor tokens (the slot a MODIS token
    would hold) and then reads sensor ``i``'s context patch ``m`` at flat position ``1 + m + i (N - 1)``,
    the token of patch ``m + 1 - i`` (of the neighbouring sensor where that leaves ``[0, N)``), which
    keeps its own position code.  The first sensor reads the patch after each context patch, the third
    the one before: the context sees parts of the target blocks.  The official code never trains one
    sensor alone (it would read past the end); one sensor is gathered by patch.
    """
    B, M, N, D = tokens.shape
    if official_offset and M > 1:
        sensor = torch.arange(M, device=ctx_idx.device)[None, :, None]
        flat = 1 + ctx_idx[:, None, :] + (N - 1) * sensor  # [B, M, Kc] into the M N tokens
        return gather_tokens(tokens.reshape(B, M * N, D), flat.reshape(B, -1)).view(B, M, -1, D)
    return torch.gather(tokens, 2, ctx_idx[:, None, :, None].expand(B, M, -1, D))


def check_masks(masks: Masks, grid: tuple[int, int], batch: int, patch_size) -> None:
    """Refuse masks drawn for another patch grid or batch (they would index the wrong patches, or fail deep
    inside the predictor)."""
    if not isinstance(masks, Masks):
        raise UserError(
            f"masks: expected the Masks a sampler draws, got {type(masks).__name__}; "
            f"e.g. masks = MultiBlockMaskSampler()({batch}, {tuple(grid)}, torch.Generator().manual_seed(0))"
        )
    if tuple(masks.grid) != tuple(grid) or masks.context.shape[0] != batch:
        raise UserError(
            f"masks drawn for {masks.context.shape[0]} tiles on a {tuple(masks.grid)} patch grid, but this batch "
            f"has {batch} tiles on a {tuple(grid)} grid (P = {patch_size} m); draw them for it: "
            f"sampler({batch}, {tuple(grid)}, generator)"
        )


class JEPA(nn.Module):
    """AnySat JEPA. ``online`` = the trainable parts (encoder, predictor, modality mask token).

    Args:
        cfg: full :class:`~anysat_lite.config.Config` (``model`` and ``jepa`` sections are used).
        sensors: sensors to build projectors for (default: all registered).
    """

    def __init__(self, cfg: Config, sensors=None):
        super().__init__()
        if not isinstance(cfg, Config):
            raise UserError(
                f"JEPA takes the full Config (model and jepa sections), got {type(cfg).__name__} {cfg!r:.40}; "
                "e.g. JEPA(get_config('cpu-demo'))"
            )
        self.cfg = cfg
        self.encoder = AnySat(cfg.model, sensors=sensors)
        D = self.encoder.embed_dim
        self.predictor = Predictor(
            D, cfg.jepa.predictor_depth, cfg.jepa.predictor_heads, attend_over=cfg.model.attend_over
        )
        self.modality_token = nn.Parameter(torch.zeros(1, 1, D))
        nn.init.trunc_normal_(self.modality_token, std=0.02)
        self.target = make_target(self.encoder)

    def online_parameters(self):
        """Parameters updated by the optimiser (everything except the EMA target)."""
        return [p for n, p in self.named_parameters() if not n.startswith("target.")]

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        ema_update(self.target, self.encoder, momentum)

    def forward(
        self,
        x: Mapping[str, Tensor],
        patch_size: int,
        masks: Masks,
        generators: Mapping[str, torch.Generator],
        monitor: bool = False,
        rows: slice | None = None,
        global_batch: int | None = None,
        return_intermediates: bool = False,
    ) -> dict[str, Tensor]:
        """Losses of one step.

        Args:
            x: normalised batch in the sample contract (targets keys are ignored).
            patch_size: metres.
            masks: context / target indices for this (local) batch (:class:`~.masks.Masks`).
            generators: ``{"dates": g, "modalities": g, "views": g}`` for date dropping, modality
                masking and the second date draws of the date-view MIL-NCE (``"views"`` optional).
            monitor: also return the monitors of :func:`~anysat_lite.jepa.collapse_monitors`.
            rows, global_batch: under DDP, this process's rows of the global batch (random draws
                are made for the global batch so that results do not depend on the process count).
            return_intermediates: also return ``out["intermediates"]``, the tensors of the step
                (for notebooks 03 and 04; the losses are the same either way):

                * ``target_out`` ``[B, 1 + N, D]``: target encoder on the full sample (cls first);
                * ``targets`` ``[n_t, B, Kt, D]``: its patch outputs at the target blocks, layer-normed
                  (:func:`normalise_targets`);
                * ``context_sample``: the sample after date dropping (what the context encoder reads);
                * ``tokens`` ``[B, M, N, D]``: context-side patch tokens per modality (before positions);
                * ``replaced`` ``[B, M, Kc]`` bool: context tokens replaced by the modality mask token;
                * ``context_tokens`` ``[B, M, Kc, D]``: the joint transformer's input (positions added);
                * ``context_out`` ``[B, 1 + Kc, D]``: context encoder output (cls first);
                * ``predictions`` ``[n_t, B, Kt, D]``: the predictor's output;
                * ``date_views`` ``[B, S, 2, N, D]`` or ``None``: for each of the ``S`` time series,
                  its tokens in ``tokens`` and those of a second draw of its dates, which the
                  date-view MIL-NCE compares where ``jepa.single_sensor_views`` (one sensor) or
                  ``jepa.series_views`` (several) asks for it.
        Returns:
            dict with ``loss``, ``jepa_loss``, ``contrastive_loss`` (tensors) and monitors (floats).
        """
        jc = self.cfg.jepa
        missing = {"dates", "modalities"} - set(generators) if isinstance(generators, Mapping) else None
        if missing is None or missing:
            raise UserError(
                f"generators: expected a dict with torch.Generator entries 'dates' and 'modalities' (and "
                f"optionally 'views'), got {generators!r:.60}; e.g. {{k: torch.Generator().manual_seed(i) "
                "for i, k in enumerate(('dates', 'modalities', 'views'))}"
            )
        sample = sensor_entries(x, self.encoder.sensors)
        # Targets: every patch, every date, from the EMA encoder (or, to show collapse, the online one).
        if jc.target not in ("ema", "online"):
            raise ValueError(f"jepa.target must be 'ema' or 'online', got {jc.target!r}")
        with torch.no_grad() if jc.target == "ema" else contextlib.nullcontext():  # full [B, 1 + N, D]
            full, full_ts = (self.target if jc.target == "ema" else self.encoder).encode_all(sample, patch_size)
        check_masks(masks, full_ts.grid, full.shape[0], patch_size)
        h = normalise_targets(full[:, 1:].float(), jc.center_targets, jc.standardise_targets)
        targets = torch.stack([gather_tokens(h, t) for t in masks.targets])  # [n_t, B, Kt, D]

        # Context: fewer dates, the context block, some modalities replaced by a mask token.
        ctx_sample = drop_dates(sample, jc.date_drop_ratio, generators["dates"], rows, global_batch)
        ts = self.encoder.tokenize(ctx_sample, patch_size)
        B, M, N, D = ts.tokens.shape
        pos, coords = self.encoder.patch_positions(ts.grid, ts.scale, ts.tokens.device)
        tokens = ts.tokens + pos.to(ts.tokens.dtype)
        ctx_idx = masks.context
        kept = gather_context(tokens, ctx_idx, jc.context_gather == "official" and ts.modis is None)  # [B, M, Kc, D]
        replaced = modality_mask(
            global_batch or B, M, ctx_idx.shape[1], jc.modality_mask_ratio, generators["modalities"], rows
        )
        kept = torch.where(
            replaced.to(kept.device, non_blocking=True)[..., None], self.modality_token.to(kept.dtype), kept
        )
        qpos = gather_tokens(pos[None].expand(B, -1, -1), ctx_idx)
        ctx = self.encoder.encode(kept, qpos, coords[ctx_idx], ts.modis)  # [B, 1 + Kc, D]

        pred = self.predictor(ctx[:, 1:], pos, ctx_idx, masks.targets)  # [n_t, B, Kt, D]
        out: dict = {"jepa_loss": latent_loss(pred, targets)}
        # MIL-NCE between the sensors at each place (AnySat), and between two date draws of each
        # time series where jepa.single_sensor_views (one sensor) or jepa.series_views (several) asks.
        views = None
        series = [s for s in ts.sensors if SENSORS[s].is_series and not SENSORS[s].one_token_per_tile]
        if series and "views" in generators and (jc.series_views if M > 1 else jc.single_sensor_views):
            dated = {k: v for k, v in sample.items() if split_key(k)[0] in series}
            second = drop_dates(dated, jc.date_drop_ratio, generators["views"], rows, global_batch)
            second = shift_bands(second, jc.view_band_shift, generators["views"], rows, global_batch)
            other = self.encoder.tokenize(second, patch_size)
            first = ts.tokens[:, [ts.sensors.index(s) for s in other.sensors]]
            views = torch.stack([first, other.tokens], dim=2)  # [B, S, 2, N, D]
        terms, everywhere = [], jc.contrastive_scope == "global"
        if jc.contrastive and jc.contrastive_weight > 0:
            if M >= 2:
                terms.append(mil_nce(ts.tokens, jc.contrastive_tau, distributed=everywhere))
            if views is not None:  # one term per series, averaged
                draws = [
                    mil_nce(views[:, i], jc.contrastive_tau, distributed=everywhere) for i in range(views.shape[1])
                ]
                terms.append(torch.stack(draws).mean())
        out["contrastive_loss"] = sum(terms) if terms else torch.zeros((), device=pred.device)
        out["loss"] = out["jepa_loss"] + jc.contrastive_weight * out["contrastive_loss"]
        if monitor:  # on the layer-normed targets without centring or standardising: comparable between settings
            out.update(collapse_monitors(F.layer_norm(full[:, 1:].float(), (full.shape[-1],)), full[:, 0]))
        if return_intermediates:
            out["intermediates"] = {
                "target_out": full,
                "targets": targets,
                "context_sample": ctx_sample,
                "tokens": ts.tokens,
                "replaced": replaced,
                "context_tokens": kept,
                "context_out": ctx,
                "predictions": pred,
                "date_views": views,
            }
        return out
