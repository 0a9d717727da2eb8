"""AnySat encoder: any sensors, any GSD, any patch size in metres -> tile / patch / dense features.

Pipeline (one file per stage in this package)::

    sample dict ──projectors──▶ sub-patch maps [B, Hs, Ws, D] per sensor      (projectors.py, ltae.py)
                ──tokenizer───▶ [B·h·w, g², D] sub-patches of P-metre patches   (tokenizer.py)
                ──sub-patch encoder──▶ one token per patch and sensor [B, M, N, D] (subpatch_encoder.py)
                ──+ patch positions (× P/10)──▶ joint transformer [B, 1+M·N, D]  (joint_encoder.py)
                ──fusion (cross-attention)──▶ [cls, N fused tokens] [B, 1+N, D]  (fusion.py)

(With a MODIS token the joint transformer holds ``2+M·N`` tokens.)  Outputs of
:meth:`AnySat.forward` (``P`` the patch size in metres, ``h = H_m / P``, ``w = W_m / P``):

* ``"tile"``  ``[B, D]``           the cls token
* ``"patch"`` ``[B, h, w, D]``     one fused token per patch
* ``"all"``   ``[B, 1 + h*w, D]``  cls then patches (flattened, row-major)
* ``"dense"`` ``[B, h*g, w*g, 2D]`` per sub-patch of ``output_modality``: its patch's fused
  token concatenated with the sub-patch token (``g`` = sub-patches per patch side; a coarse sensor whose
  map is upsampled to 10 m cells, see ``tokenizer.py``, gives one per 10 m cell)

The stages call a few kernels of :mod:`anysat_lite.kernels` (attention, the projector's
convolution, ...); ``ANYSAT_LITE_REFERENCE=1`` runs their textbook forms instead.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..config import MODEL_SIZES, ConfigError, ModelConfig, UnknownKeyError, model_config
from ..data.contract import (
    KEY_SUFFIXES,
    SampleError,
    check_patch_size,
    prepare_input,
    split_key,
    validate_sample,
)
from ..errors import UserError, did_you_mean
from ..kernels import batched_calls
from ..sensors import SENSORS, Sensor, get_sensor
from .blocks import Block
from .fusion import FusionBlock, fusion_buckets
from .irpe import grid_coords
from .joint_encoder import JointEncoder
from .ltae import LTAE
from .posenc import grid_sincos_2d
from .projectors import build_projector
from .subpatch_encoder import SubPatchEncoder
from .tokenizer import SubPatchLayout, group_subpatches, subpatch_layout, ungroup_subpatches

__all__ = ["AnySat", "TokenSet", "OUTPUTS", "compile_blocks"]

OUTPUTS = ("tile", "patch", "all", "dense")

# Input values beyond this magnitude make the encoder's float32 (or bfloat16) arithmetic overflow: the
# norms square them (the square of 1.8e19 is beyond float32), after weights that may scale them up.
_LARGEST_INPUT = 1e15


@dataclass
class TokenSet:
    """Per-modality patch tokens of one batch, before the joint transformer.

    Attributes:
        tokens: ``[B, M, N, D]`` patch tokens of the ``M`` spatial sensors (no position code yet).
        sensors: names of the ``M`` sensors, in input order.
        modis: ``[B, D]`` one-per-tile token (MODIS) or ``None``.
        grid: patch grid ``(h, w)``; ``N = h * w``.
        scale: patch size in units of 10 m (``P / 10``), the spacing of patch position codes.
        subpatches: for sensors asked with ``keep_subpatches``: ``(tokens [B, h, w, g*g, D], layout)``.
    """

    tokens: Tensor
    sensors: list[str]
    modis: Tensor | None
    grid: tuple[int, int]
    scale: float
    subpatches: dict[str, tuple[Tensor, SubPatchLayout]] = field(default_factory=dict)


class AnySat(nn.Module):
    """The AnySat encoder.

    Args:
        config: a :class:`~anysat_lite.config.ModelConfig` or a size name (``nano``, ``tiny``,
            ``small``, ``base``); a config gets the checks of :func:`~anysat_lite.config.model_config`.
        sensors: sensors to build projectors for (default: ``config.sensors`` or every
            sensor registered now).  More can be added later with :meth:`add_sensor`.
    """

    def __init__(self, config: ModelConfig | str = "base", sensors: Iterable[str] | None = None):
        super().__init__()
        if not isinstance(config, (str, ModelConfig)):
            raise UserError(
                f"AnySat(config): expected a size name (nano, tiny, small, base) or a ModelConfig, got "
                f"{config!r}; e.g. AnySat('nano')"
            )
        if isinstance(sensors, str):
            raise UserError(
                f"AnySat(sensors=...): expected a list of sensor names, got the string {sensors!r}; "
                f"e.g. sensors=[{sensors!r}]"
            )
        if sensors is not None and not isinstance(sensors, Iterable):
            raise UserError(
                f"AnySat(sensors=...): expected a list of sensor names, got {sensors!r}; e.g. sensors=['s2']"
            )
        cfg = _model_config(config)
        self.config = cfg
        D = cfg.embed_dim
        self.embed_dim = D
        self.sensors: dict[str, Sensor] = {}
        # Value checks (finite data, date ranges) read the data; training loops that validated
        # their batches on the CPU turn them off to keep the step free of device syncs.
        self.check_values = True
        self.projectors = nn.ModuleDict()
        for name in sensors if sensors is not None else (cfg.sensors or list(SENSORS)):
            self.add_sensor(name)
        rates = torch.linspace(0, cfg.drop_path, cfg.depth + 1).tolist()
        self.subpatch_encoder = SubPatchEncoder(D, cfg.depth, cfg.num_heads, cfg.mlp_ratio, cfg.drop_path)
        self.joint = JointEncoder(
            D, cfg.depth, cfg.num_heads, cfg.mlp_ratio, drop_path=rates[:-1], attend_over=cfg.attend_over
        )
        self.fusion = FusionBlock(D, cfg.num_heads, cfg.mlp_ratio, drop_path=rates[-1])

    # --- sensors ----------------------------------------------------------------------
    def add_sensor(self, sensor: str | Sensor) -> None:
        """Build the projector of a (registered) sensor; its kind decides conv+MLP or L-TAE."""
        if not isinstance(sensor, (str, Sensor)):
            raise UserError(
                f"sensor {sensor!r}: expected a sensor name or a Sensor, got {type(sensor).__name__}; "
                f"give one of the registered sensors: {', '.join(SENSORS)}"
            )
        s = get_sensor(sensor) if isinstance(sensor, str) else sensor
        if s.name in self.projectors:
            return
        self.sensors[s.name] = s
        c = self.config
        proj = build_projector(s, self.embed_dim, c.ltae_heads, c.ltae_dk, c.dropout, c.ltae_in_width)
        ref = next(self.parameters(), None)
        if ref is not None:
            proj = proj.to(device=ref.device, dtype=ref.dtype)
        self.projectors[s.name] = proj

    # --- stages -------------------------------------------------------------------------
    def validate(self, x: Mapping[str, Tensor], patch_size) -> tuple[list[str], tuple[int, int], int]:
        """Check a sample against the contract and this model; return (sensors, grid, batch)."""
        missing = [
            k
            for k in x
            if split_key(k)[0] not in self.sensors
            and split_key(k)[0] in SENSORS
            and split_key(k)[1] in (None, *KEY_SUFFIXES)  # validate_sample names 's1_asc' (for 's1-asc')
        ]
        if missing:
            raise SampleError(
                f"{missing[0]!r}: this model has no projector for sensor {split_key(missing[0])[0]!r} "
                f"(it has: {', '.join(self.sensors)}); call model.add_sensor(...) first"
            )
        info = validate_sample(x, self.sensors, check_values=self.check_values and not torch.compiler.is_compiling())
        if info.extent_m is None:
            raise SampleError(
                f"the sample holds only one-token-per-tile sensors ({', '.join(info.sensors)}); "
                "add at least one sensor with spatial extent"
            )
        per_tile = [n for n in info.sensors if self.sensors[n].one_token_per_tile]
        if len(per_tile) > 1:
            raise SampleError(f"at most one one-token-per-tile sensor per sample, got {per_tile}")
        for name, largest in info.max_abs.items():
            if largest > _LARGEST_INPUT and x[name].dtype in (torch.float32, torch.bfloat16):
                raise SampleError(
                    f"{name}: values up to {largest:.3g} in magnitude, expected at most {_LARGEST_INPUT:.0e}: "
                    f"larger ones overflow the encoder's {str(x[name].dtype).removeprefix('torch.')} arithmetic "
                    "(NaN/inf features); standardise the input and fill nodata values (e.g. -3.4e38, 1e20, also "
                    "in masked dates) with 0"
                )
        grid = check_patch_size(patch_size, info.extent_m)
        for name in info.sensors:
            if not self.sensors[name].one_token_per_tile:
                try:
                    subpatch_layout(self.sensors[name], int(patch_size), self.config.subpatch_order)
                except ValueError as e:
                    raise SampleError(str(e)) from None
        return info.sensors, grid, info.batch

    def tokenize(self, x: Mapping[str, Tensor], patch_size: int, keep_subpatches: Iterable[str] = ()) -> TokenSet:
        """Projectors + sub-patch encoder: sample dict -> :class:`TokenSet`.

        1. Each sensor's projector turns its pixels into a sub-patch map ``[B, Hs, Ws, D]``.
        2. The map is cut into the ``h x w`` patches of ``patch_size`` metres, ``g x g`` sub-patches
           each: ``[B*h*w, g*g, D]`` (a one-token-per-tile sensor is averaged into ``[B, 1, D]``).
        3. The shared sub-patch encoder turns each patch into one token per sensor.  Sensors
           with the same sub-patch grid go through it together
           (:func:`~anysat_lite.kernels.batched_calls`).
        """
        names, (h, w), B = self.validate(x, patch_size)
        P = int(patch_size)
        keep = set(keep_subpatches)
        calls, layouts = [], {}
        for name in names:
            s = self.sensors[name]
            valid = x.get(f"{name}_mask")
            fmap = self.projectors[name](x[name], x.get(f"{name}_dates"), None if valid is None else valid.bool())
            if s.one_token_per_tile:
                calls.append((fmap.mean(dim=(1, 2))[:, None, :], (1, s.subpatch_m, False)))  # [B, 1, D]
            else:
                layout = layouts[name] = subpatch_layout(s, P, self.config.subpatch_order)
                seq = group_subpatches(fmap, layout).flatten(0, 2)  # [B*h*w, g*g, D]
                calls.append((seq, (layout.g, layout.spacing_m, name in keep)))
        # per sensor: (patch tokens [B*h*w, D] (or [B, D]), sub-patch tokens [B*h*w, g*g, D] or None)
        encoded = dict(zip(names, batched_calls(self.subpatch_encoder, calls)))
        spatial = list(layouts)
        tokens = torch.stack([encoded[n][0].view(B, h * w, -1) for n in spatial], dim=1)  # [B, M, N, D]
        modis = next((encoded[n][0] for n in names if n not in layouts), None)  # [B, D] or None
        subpatches = {n: (encoded[n][1].reshape(B, h, w, -1, self.embed_dim), layouts[n]) for n in spatial if n in keep}
        return TokenSet(tokens, spatial, modis, (h, w), P / 10, subpatches)

    def patch_positions(self, grid: tuple[int, int], scale: float, device=None) -> tuple[Tensor, Tensor]:
        """Position codes ``[N, D]`` (spacing ``scale``) and grid coordinates ``[N, 2]`` of the patch grid."""
        h, w = grid
        return grid_sincos_2d(self.embed_dim, h, w, scale, device=device), grid_coords(h, w, device=device)

    def encode(self, tokens: Tensor, query_pos: Tensor, coords: Tensor, modis: Tensor | None = None) -> Tensor:
        """Joint transformer + fusion.

        Args:
            tokens: ``[B, M, K, D]`` positioned patch tokens (``K`` kept locations).
            query_pos: ``[1|B, K, D]`` position codes of the kept locations.
            coords: ``[K, 2]`` or ``[B, K, 2]`` grid coordinates of the kept locations.
            modis: ``[B, D]`` one-per-tile token or ``None``.
        Returns:
            ``[B, 1 + K, D]``: cls then one fused token per kept location.
        """
        B, M, K, D = tokens.shape
        prefix = None if modis is None else modis[:, None, :].to(tokens.dtype)
        x = self.joint(tokens.reshape(B, M * K, D), prefix)
        n_prefix = 1 + (modis is not None)
        qpos = torch.cat([query_pos.new_zeros(query_pos.shape[0], n_prefix, D), query_pos], dim=1)
        return self.fusion(x, qpos, fusion_buckets(coords, M, n_prefix), n_prefix)

    def encode_all(
        self, x: Mapping[str, Tensor], patch_size: int, keep_subpatches: Iterable[str] = ()
    ) -> tuple[Tensor, TokenSet]:
        """Every patch of a sample through the whole encoder: (``[B, 1 + N, D]``, its :class:`TokenSet`)."""
        x, patch_size = prepare_input(self, x, patch_size)  # dtypes, 1-D dates, patch size type, memory (contract.py)
        ts = self.tokenize(x, patch_size, keep_subpatches)
        pos, coords = self.patch_positions(ts.grid, ts.scale, ts.tokens.device)
        return self.encode(ts.tokens + pos.to(ts.tokens.dtype), pos[None], coords, ts.modis), ts

    # --- public forward ---------------------------------------------------------------
    def forward(
        self,
        x: Mapping[str, Tensor],
        patch_size: int,
        output: str | tuple[str, ...] = "tile",
        output_modality: str | None = None,
    ) -> Tensor | dict[str, Tensor]:
        """Encode a sample dict (see :mod:`anysat_lite.data.contract`) with patches of ``patch_size`` metres.

        ``output`` names one output (returns its tensor) or a tuple of them (returns ``{name: tensor}``,
        all from one pass of the encoder).  ``output_modality`` names the sensor of ``"dense"`` (default:
        the sample's first sensor with sub-patches).
        """
        names = _output_names(output)
        dense_sensor = None
        if "dense" in names and isinstance(x, Mapping):  # a non-dict sample is refused by encode_all
            dense_sensor = self._dense_sensor(x, output_modality)
        out, ts = self.encode_all(x, patch_size, keep_subpatches=[dense_sensor] if dense_sensor else [])
        B, (h, w) = out.shape[0], ts.grid

        def make(name: str) -> Tensor:
            if name == "tile":
                return out[:, 0]
            if name == "patch":
                return out[:, 1:].reshape(B, h, w, -1)
            if name == "all":
                return out
            subs, layout = ts.subpatches[dense_sensor]
            fused = out[:, 1:].reshape(B, h, w, 1, -1).expand(-1, -1, -1, subs.shape[3], -1)
            return ungroup_subpatches(torch.cat([fused, subs], dim=-1), layout)

        return make(output) if isinstance(output, str) else {name: make(name) for name in names}

    def _dense_sensor(self, x: Mapping, output_modality) -> str:
        """The sensor whose sub-patches ``output="dense"`` returns: ``output_modality``, checked against this
        model and the sample ``x``, or by default the sample's first sensor with sub-patches."""
        sample = [k for k in x if isinstance(k, str) and split_key(k)[1] is None]
        dense = [k for k in sample if k in self.sensors and not self.sensors[k].one_token_per_tile]
        if output_modality in (None, ""):  # the official default is ""
            if not dense:
                held = [f"{k} (one token per tile)" if self._per_tile(k) else k for k in sample]
                raise SampleError(
                    "output='dense' needs a sensor with sub-patches (any sensor not summarised as one token per "
                    f"tile), got a sample of {', '.join(held) or 'no sensor'}; add one (this model has "
                    f"{', '.join(self.sensors)}) or ask for output='tile'"
                )
            return dense[0]
        if not isinstance(output_modality, str) or output_modality not in self.sensors:
            known = isinstance(output_modality, str) and output_modality in SENSORS
            got = (
                "a sensor this model has no projector for"
                if known
                else "an unknown sensor"
                if isinstance(output_modality, str)
                else f"a {type(output_modality).__name__}"
            )
            raise SampleError(
                f"output_modality {output_modality!r}: expected one of the sample's sensors with sub-patches "
                f"({', '.join(dense) or 'none'}), got {got} (the model has {', '.join(self.sensors)}); "
                + ("call model.add_sensor(...) first, or " if known else "")
                + "name one of the sample's sensors"
            )
        if self.sensors[output_modality].one_token_per_tile:
            raise SampleError(
                f"{output_modality}: one token per tile, it has no dense output; expected one of the sample's "
                f"sensors with sub-patches ({', '.join(dense) or 'none'}) as output_modality"
            )
        if output_modality not in sample:
            raise SampleError(
                f"output_modality {output_modality!r} is not in the sample (sensors: {sample}); expected one of "
                f"its sensors with sub-patches ({', '.join(dense) or 'none'})"
            )
        return output_modality

    def _per_tile(self, name: str) -> bool:
        s = self.sensors.get(name, SENSORS.get(name))
        return s is not None and s.one_token_per_tile

    # --- speed ---------------------------------------------------------------------------
    def compile_blocks(self) -> AnySat:
        """Compile the transformer blocks, the fusion block and the L-TAEs in place (see :func:`compile_blocks`)."""
        compile_blocks(self)
        return self


def _model_config(config: ModelConfig | str) -> ModelConfig:
    """The checked :class:`ModelConfig` of ``AnySat(config)``: a size name, or a config run through the checks
    of :func:`~anysat_lite.config.model_config` (types, ranges, head counts that divide ``embed_dim``)."""
    if isinstance(config, str):
        if config not in MODEL_SIZES:
            raise UnknownKeyError(
                f"AnySat({config!r}): unknown model size, expected one of {', '.join(MODEL_SIZES)} or a "
                f"ModelConfig; {did_you_mean(config, MODEL_SIZES)}e.g. AnySat('nano')"
            )
        return model_config(config)
    try:  # every field given as an override of a size, so that every field is checked
        return model_config("base", **{f.name: getattr(config, f.name) for f in dataclasses.fields(config)})
    except ConfigError as e:  # model_config words its examples as calls of itself
        message = re.sub(r"model_config\('base', ", "ModelConfig(", str(e).replace("model_config: ", "", 1))
        raise type(e)(f"AnySat(ModelConfig(...)): {message}") from None


def _output_names(output) -> tuple[str, ...]:
    """The outputs ``forward(output=...)`` asks for, as a tuple of names of :data:`OUTPUTS`."""
    names = (output,) if isinstance(output, str) else tuple(output) if isinstance(output, (tuple, list)) else None
    bad = None if names is None else next((o for o in names if o not in OUTPUTS), None)
    if names and bad is None:
        return names
    raise UserError(
        f"output must be one of {', '.join(OUTPUTS)} or a tuple of them, got {output!r}; "
        f"{did_you_mean(bad, OUTPUTS)}e.g. output='tile' or output=('tile', 'patch')"
    )


def compile_blocks(module: nn.Module) -> nn.Module:
    """``torch.compile`` every :class:`~.blocks.Block`, :class:`~.fusion.FusionBlock` and :class:`~.ltae.LTAE`
    of ``module`` in place (``nn.Module.compile``: parameter names and checkpoints unchanged).

    The glue between them (validation, grouping, masking, gathers) stays eager.  The sub-patch
    encoder stays eager too: one of its blocks sees sequences of very different lengths (5 and
    101 tokens at P = 20 m), which made inductor's CPU backward fail a stride check (torch 2.13).
    Works on any module holding AnySat parts, e.g. a whole JEPA (encoders and predictor).
    """

    def visit(m: nn.Module) -> None:
        for child in m.children():
            if isinstance(child, SubPatchEncoder):
                continue
            if isinstance(child, (Block, FusionBlock, LTAE)):
                child.compile()
            else:
                visit(child)

    visit(module)
    return module
