"""Plain-dataclass configuration with named presets, YAML files and ``key=value`` overrides.

A :class:`Config` bundles ``model``, ``data``, ``jepa``, ``train`` and ``probe`` sections.
Presets go from a laptop to a GPU node by name only::

    cfg = get_config("cpu-demo")                      # nano model, embedded data, CPU, minutes
    cfg = get_config("base-cuda", ["train.steps=20000", "train.batch_size=128"])
    cfg = get_config("geoplex", ["data.root=/data"])  # the official GeoPlex run: five datasets, AnySat's recipe
    cfg = load_config("my_run.yaml")                  # YAML may name a preset: {preset: base-cuda, ...}

Model sizes follow the official torch.hub entry points (``get_default_config`` in AnySat's
``hubconf.py``): ``tiny`` (D=256, depth 2, 4 heads), ``small`` (512, 4, 8), ``base`` (768, 6, 12);
the official training configs' ``Any_Tiny`` / ``Any_Small`` are (192, 6, 3) / (384, 6, 6).
``nano`` (64, 2, 4) is the width of the parity fixtures and the CPU demo.  ``model.size=NAME``
(an override or a YAML key) sets the three numbers of a size at once, with AnySat's L-TAE numbers.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import inspect
import math
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import UnknownNameError, UserError, did_you_mean, not_utf8, yaml_problem
from .files import write_text_atomic

__all__ = [
    "ModelConfig",
    "DatasetSpec",
    "DataConfig",
    "JEPAConfig",
    "TrainConfig",
    "ProbeConfig",
    "Config",
    "MODEL_SIZES",
    "PRESETS",
    "SMOKE_OVERRIDES",
    "model_config",
    "get_config",
    "load_config",
    "apply_overrides",
    "config_to_dict",
    "config_from_dict",
    "validate_config",
    "validate_probe",
    "ConfigError",
    "UnknownKeyError",
    "RULES",
]


@dataclass
class ModelConfig:
    """Encoder size; the projector widths derive from ``embed_dim`` as in the official code."""

    embed_dim: int = 768
    depth: int = 6
    num_heads: int = 12
    mlp_ratio: float = 4.0
    ltae_heads: int = 16  # L-TAE master queries
    ltae_dk: int = 8  # L-TAE key width
    ltae_in_width: int | None = None  # first width of the L-TAE input MLP; None = embed_dim / 8 (official)
    drop_path: float = 0.0
    dropout: float | None = None  # projector dropout override, L-TAE attention's included; None = official values
    subpatch_order: str = "official"  # "official" (released weights) or "geometric" (see model/tokenizer.py)
    attend_over: str = "tokens"  # joint transformer and predictor: one of ATTEND_OVER (model/blocks.py)
    sensors: list[str] | None = None  # projectors to build; None = every registered sensor


ATTEND_OVER = ("tokens", "heads")  # "heads": the official code with flash-attn (model/blocks.py)

MODEL_SIZES: dict[str, dict] = {
    "nano": dict(embed_dim=64, depth=2, num_heads=4),
    "tiny": dict(embed_dim=256, depth=2, num_heads=4),
    "small": dict(embed_dim=512, depth=4, num_heads=8),
    "base": dict(embed_dim=768, depth=6, num_heads=12),
}


def model_config(size: str = "base", **overrides) -> ModelConfig:
    """The :class:`ModelConfig` of a named size (``nano``, ``tiny``, ``small``, ``base``)."""
    if not isinstance(size, str) or size not in MODEL_SIZES:
        raise UnknownKeyError(f"unknown model size {_show(size)}; choose one of {', '.join(MODEL_SIZES)}")
    try:  # the checks of a config's model section (unknown keys, types, ranges), in Python's words
        m = _build(ModelConfig, {**MODEL_SIZES[size], **overrides}, "model")
        for key in RULES:
            if key.startswith("model."):
                _check_rule(key, getattr(m, key.removeprefix("model.")))
        for heads in ("num_heads", "ltae_heads"):
            _check_divides(m.embed_dim, f"model.{heads}", getattr(m, heads))
    except ConfigError as e:
        raise type(e)(
            re.sub(
                r'--set "?model\.(\w+)=(.*?)"?$',
                lambda g: f"model_config({size!r}, {g[1]}={yaml.safe_load(g[2])!r})",
                str(e).replace("config model.", "model_config: "),
            )
        ) from None
    return m


@dataclass
class DatasetSpec:
    """One pretraining/probing dataset of a (possibly multi-dataset) mix.

    ``name`` is ``synthetic`` (the embedded world; ``synthetic:<tag>`` for a second one) or a
    name of the dataset registry (``treesatai-ts``, ``pastis-hd``, ``flair``, ``planted``,
    ``s2naip-urban``, ``rasters``, or one registered with
    :func:`anysat_lite.data.registry.register_dataset`); ``treesatai`` means ``treesatai-ts``.
    ``norm`` chooses the normalisation statistics: ``official`` (the dataset's
    ``NORM_<sensor>_patch.json`` files, computed the official way where a file is missing, as
    the official readers do), ``per-tile`` (always computed the official way: per-tile band
    means and standard deviations, averaged) or ``pixels`` (pooled mean and standard deviation
    of every pixel); computed statistics use up to ``data.norm_samples`` train tiles.
    """

    name: str = "synthetic"
    path: str | None = None  # the dataset's folder (or manifest); None = found under data.root
    weight: float = 1.0  # sampling weight of this dataset's batches
    patch_sizes: list[int] = field(default_factory=lambda: [10, 20])  # metres, one per batch
    sensors: list[str] | None = None  # subset of the dataset's sensors (None = all)
    batch_size: int | None = None  # global batch of this dataset's steps (None = train.batch_size)
    max_dates: int | None = None  # cap on the dates of each series on the train split (None = all)
    tile_m: float | None = None  # crop every item to this side in metres (None = the reader's tiles)
    norm: str = "pixels"  # official | per-tile | pixels
    options: dict | None = None  # keyword arguments of the reader class, e.g. {crop: center}


@dataclass
class DataConfig:
    datasets: list[DatasetSpec] = field(default_factory=lambda: [DatasetSpec()])
    root: str | None = None  # folder holding the datasets (PASTIS-R/, TreeSat/... or pastis_hd/...)
    mixing: str = "weighted"  # weighted: a dataset per step by weight | official: epochs without replacement
    epoch_steps: int | None = None  # official mixing: cap on the steps of an epoch (None = every batch)
    tile_m: int = 60  # synthetic tiles: side in metres
    n_tiles: int = 384  # synthetic tiles generated (train + val + test)
    n_dates: int = 12  # synthetic time-series length
    seed: int = 0  # synthetic world, and the crops / date subsets of the readers
    cache_dir: str | None = None  # default: ~/.cache/anysat_lite
    norm_samples: int = 256  # train tiles read to compute normalisation statistics (0 = all)
    num_workers: int = 0  # DataLoader worker processes (0 = read in the training process)
    prefetch_factor: int = 2  # batches each worker reads ahead
    persistent_workers: bool = True
    pin_memory: bool = True  # page-locked batches for faster copies to the GPU (CUDA only)


@dataclass
class JEPAConfig:
    """AnySat/GeoPlex JEPA recipe (I-JEPA multi-block masks + modality masking + date dropping).

    The defaults are AnySat's numbers except three (README, "Deviations"):

    * ``single_sensor_views``, which only acts where the official recipe has nothing to say: a
      batch with a single time-series sensor has no second modality for MIL-NCE, so its
      contrastive term compares two independent draws of that series' dates (``date_drop_ratio``
      each) at the same location.  Without it, JEPA alone collapses on one sensor at the demo's
      scale (notebook 03).
    * ``contrastive_scope``: MIL-NCE negatives from every process (``global``); the official code
      takes each process's own batch (``local``, kept by the ``geoplex`` preset).
    * ``context_gather``: the context encoder reads every sensor's token at the context patches
      (``by_patch``); the official code reads them one patch off (``official``,
      :func:`~anysat_lite.jepa.model.gather_context`).

    ``series_views`` (off by default, on in ``cpu-demo``) does the same in multi-sensor batches:
    each time series and a second draw of its dates form a contrastive term of their own, added
    to the sensors' MIL-NCE, so that two halves of a season must agree on what a place is.  It
    is a separate term on purpose: joined to the sensors' bag of positives, the second draw is
    the easy positive and MIL-NCE's log-sum-exp over positives stops aligning the sensors
    (notebook 03; :func:`~anysat_lite.jepa.sensor_alignment` measures it, notebook 04).  A
    deviation from the official recipe (README, "Deviations").

    ``view_band_shift`` (0, off, by default; 0.3 in ``cpu-demo``) shifts each band of the second
    date draw by one random offset per tile (:func:`~anysat_lite.jepa.shift_bands`), so that the
    two draws cannot be matched by a tile's spectral level alone and must agree on how it
    changes over the season.  A deviation from the official recipe (README, "Deviations").
    """

    mask: str = "multiblock"  # multiblock | random | block
    n_targets: int = 4
    target_scale: tuple[float, float] = (0.2, 0.8)
    target_aspect: tuple[float, float] = (0.75, 1.5)
    context_scale: tuple[float, float] = (0.85, 1.0)
    min_keep: int = 1  # official min_keep=0 with a strict ">": at least one patch
    allow_overlap: bool = False
    context: str = "block"  # block (I-JEPA, AnySat) | complement (all but the targets)
    context_gather: str = "by_patch"  # by_patch | official (sensor i reads patch m + 1 - i: README, "Deviations")
    relax: bool = True  # I-JEPA constraint relaxation when min_keep cannot be met
    random_keep: float = 0.5  # "random" masks: fraction of context patches
    modality_mask_ratio: float = 0.5  # share of the *other* modalities replaced by a mask token
    date_drop_ratio: float = 0.5  # share of each series' dates the context encoder drops
    predictor_depth: int = 4
    predictor_heads: int = 16
    ema: tuple[float, float] = (0.996, 1.0)
    target: str = "ema"  # "ema", or "online" (no EMA/stop-grad: shows collapse)
    contrastive: bool = True
    contrastive_weight: float = 1.0
    contrastive_tau: float = 0.1
    contrastive_scope: str = "global"  # global: tokens of every process | local: per process (official)
    single_sensor_views: bool = True  # one time series: MIL-NCE between two draws of its dates
    series_views: bool = False  # several sensors: also MIL-NCE between two date draws of each series
    view_band_shift: float = 0.0  # second date draw: + N(0, this^2) per (tile, band), in std units (0 = off)
    center_targets: bool = False  # subtract the batch's mean target token before the layer norm
    standardise_targets: bool = False  # after the layer norm: each dimension to zero mean, unit std over the batch
    monitor_every: int = 10
    warn_std: float = 0.1  # collapse warnings: target std per dimension below,
    warn_erank: float = 3.0  # effective rank (RankMe) below,
    warn_cos: float = 0.95  # mean tile cosine similarity above


@dataclass
class TrainConfig:
    """Optimisation.  ``recipe`` chooses the schedule:

    * ``ijepa``: AdamW, linear warm-up then cosine decay of the learning rate (``lr`` ->
      ``min_lr``), cosine weight decay (``weight_decay`` -> ``final_weight_decay``) on weights
      only (not biases and norms), as I-JEPA.
    * ``anysat``: the official AnySat optimisation: AdamW at a constant ``lr``, multiplied by
      ``plateau_factor`` when the validation loss has not improved for ``plateau_patience``
      validations (``ReduceLROnPlateau``, not below ``min_lr``; needs ``val_every``), weight decay ``weight_decay``
      on every parameter.  The GeoPlex preset adds the rest of the official numbers (lr 5e-5,
      decay 0.05, no clipping, fp16).
    """

    recipe: str = "ijepa"  # ijepa | anysat
    steps: int = 300
    batch_size: int = 16  # global batch (every process together) of datasets without their own
    accum_steps: int = 1  # micro-batches per step (gradient accumulation)
    lr: float = 1e-4
    min_lr: float = 1e-6
    warmup_steps: int = 20
    weight_decay: float = 0.04
    final_weight_decay: float = 0.04  # cosine weight-decay schedule end (I-JEPA: 0.04 -> 0.4)
    plateau_factor: float = 0.1  # anysat recipe: learning-rate factor on a plateau of the validation loss
    plateau_patience: int = 10  # anysat recipe: validations without improvement before reducing
    grad_clip: float = 1.0
    amp: str = "none"  # none | bf16 | fp16
    tf32: bool = True  # TensorFloat-32 for float32 matmuls and convolutions on CUDA
    compile: bool = False  # torch.compile the transformer blocks (optional; see train/loop.py)
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps (Apple GPU, one process)
    seed: int = 0
    log_every: int = 10
    val_every: int = 0  # validation loss every this many steps (0 = never)
    val_batches: int = 4  # validation batches (official mixing: at most this many, one pass)
    ckpt_every: int = 100
    keep_last: int = 0  # step-XXXXXX.pt checkpoints kept (0 = all); last.pt is always kept
    out_dir: str = "runs/cpu-demo"
    threads: int | None = None  # torch.set_num_threads on CPU (None = leave as is)
    tensorboard: bool = False  # also write TensorBoard scalars to out_dir/tensorboard (needs tensorboard)


@dataclass
class ProbeConfig:
    patch_sizes: list[int] = field(default_factory=lambda: [20])
    modality_sets: list[list[str]] = field(default_factory=lambda: [["all"]])
    linear_l2: float = 1e-4  # L2 penalty of the linear and multi-label probes (solved to convergence by L-BFGS)
    linear_iters: int = 1000  # cap on their L-BFGS iterations (they stop earlier once converged)
    knn_k: int = 10
    seg_epochs: int = 20
    seg_lr: float = 1e-2  # AdamW learning rate of the dense (segmentation) probe
    finetune_epochs: int = 0
    finetune_lr: float = 1e-4
    batch_size: int = 32  # tiles per batch of the encoders' feature passes and of fine-tuning
    seed: int = 0
    online: bool = True  # also probe the online (context) encoder when it was exported (tile probes)
    bootstrap: int = 1000  # resamples of the scored split for the 95 % intervals (0 = none)
    split: str = "test"  # split the probes score on: test, or val (to choose settings without looking at test)
    late_fusion: bool = False  # also probe each sensor's own tile token, concatenated ("... (late fusion)" rows)


@dataclass
class Config:
    name: str = "custom"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    jepa: JEPAConfig = field(default_factory=JEPAConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)


def _cpu_demo() -> Config:
    """The CPU demo: nano encoder, embedded world, minutes on 2 cores.

    Where it departs from AnySat's recipe, and why (README "Deviations"):

    * masks: on its 6 x 6 and 3 x 3 patch grids (60 m tiles, P = 10 and 20 m) AnySat's numbers
      leave the context encoder a single patch in most steps (``context_statistics``, notebook
      02).  The demo keeps I-JEPA's four target blocks, smaller (10-20 % of the grid), and lets
      the context be every other patch (``context="complement"``), at least 4 patches.
    * P = 30 m would give a 2 x 2 grid: too small to hide anything and keep a context.
    * schedule: 350 steps of 24 tiles at lr 1e-3 with warm-up and cosine decay instead of
      AnySat's constant 5e-5 over days (why 1e-3: README, "Deviations"; 24 tiles a step keep
      the demo within its time budget on 2 CPU cores, README); predictor depth 2 with 4 heads for the
      64-wide encoder.
    * data: like GeoPlex, a mixture of datasets with different sensors: three steps in four see
      the world's three sensors, one in four the same tiles through Sentinel-2 alone
      (``synthetic:s2``), so that the encoder also learns to describe a tile from S2 alone, the
      case of most users.
    * L-TAE: 4 master queries instead of 16, and a first input layer of 32 channels instead
      of D / 8 = 8: at D = 64 AnySat's numbers leave each head a date code whose longest period
      is 120 days (``model.posenc.doy_code_periods``) and a GroupNorm over pairs of channels
      after the first layer (notebook 01).
    * a contrastive term between two date draws of each time series in multi-sensor batches
      too, beside the sensors' MIL-NCE (``jepa.series_views``, see :class:`JEPAConfig`).
    * the second date draw of each series shifted by one offset per (tile, band) of 0.3
      standard deviations (``jepa.view_band_shift``): the world gives each parcel and tile a
      spectral level that holds all season, which would let the two draws be matched by level
      alone (its measured effect: docs/seeds.md).
    """
    return Config(
        name="cpu-demo",
        model=model_config("nano", subpatch_order="geometric", ltae_heads=4, ltae_in_width=32),
        data=DataConfig(
            datasets=[
                DatasetSpec("synthetic", patch_sizes=[10, 20], weight=3.0),
                DatasetSpec("synthetic:s2", patch_sizes=[10, 20], weight=1.0, sensors=["s2"]),
            ],
            tile_m=60,
            n_tiles=1000,
            n_dates=12,
        ),
        jepa=JEPAConfig(
            context="complement",
            target_scale=(0.1, 0.2),
            min_keep=4,
            predictor_depth=2,
            predictor_heads=4,
            series_views=True,
            view_band_shift=0.3,
        ),
        train=TrainConfig(
            steps=350,
            batch_size=24,
            lr=1e-3,
            min_lr=1e-6,
            warmup_steps=35,
            weight_decay=0.04,
            final_weight_decay=0.04,
            out_dir="runs/cpu-demo",
            ckpt_every=100,
            threads=2,
        ),
        probe=ProbeConfig(patch_sizes=[20], modality_sets=[["all"], ["s2"], ["s1-asc"], ["aerial"]], batch_size=16),
    )


def _sized(name: str, size: str, **train) -> Config:
    cfg = _cpu_demo()
    cfg.name = name
    cfg.model = model_config(size, subpatch_order="geometric")
    cfg.jepa = JEPAConfig()  # AnySat's mask numbers and predictor (see the cpu-demo docstring)
    cfg.train = dataclasses.replace(cfg.train, out_dir=f"runs/{name}", threads=None, **train)
    return cfg


def _base_cuda() -> Config:
    """``base`` on GPUs: bf16 autocast and 4 DataLoader workers per process (batches read in the training process
    leave the GPU waiting; measured in docs/benchmarks.md, "On one GPU")."""
    cfg = _sized("base-cuda", "base", **_BASE_RECIPE, amp="bf16", device="cuda")
    cfg.data = dataclasses.replace(cfg.data, num_workers=4)
    return cfg


# GeoPlex datasets as the official configs/dataset/GeoPlex.yaml: patch sizes (its "scales" times the
# 10 m of a Sentinel-2 pixel), batch sizes (per GPU there, global here), weights (configs/exp/GeoPlex_AnySat.yaml)
GEOPLEX_DATASETS = (
    dict(name="treesatai-ts", patch_sizes=[10, 20], batch_size=128, weight=1.0),
    dict(name="pastis-hd", patch_sizes=[40, 80, 160], batch_size=1, weight=1.0, max_dates=20),
    dict(name="flair", patch_sizes=[10, 20], batch_size=32, weight=1.0),
    dict(name="planted", patch_sizes=[30], batch_size=256, weight=2.0),
    dict(name="s2naip-urban", patch_sizes=[40, 80, 160], batch_size=2, weight=4.0),
)
GEOPLEX_EPOCH = 359046 // (10 * 2)  # official iterations per epoch: len(S2NAIP train) // (10 x its batch of 2)


def _geoplex() -> Config:
    """AnySat pretraining on GeoPlex as the official run (``configs/exp/GeoPlex_AnySat.yaml``).

    Five datasets read from ``data.root`` (``TreeSat/``, ``PASTIS-R/``, ``FLAIR/``, ``Planted/``,
    ``S2NAIP-urban/``, or the fixture names ``treesatai_ts/``...); each batch comes from one
    dataset and one patch size, datasets drawn by weight among those not yet exhausted in the
    epoch (``data.mixing=official``); official normalisation files; AnySat's optimisation
    (``train.recipe=anysat``: AdamW 5e-5 constant, plateau reduction x0.1 after 10 validations
    without improvement, weight decay 0.05 on every parameter, no clipping, fp16); MIL-NCE
    within each process (``jepa.contrastive_scope=local``); 200 epochs with a validation per epoch.
    The base encoder with every official sensor.  Deviations: README, "Deviations".
    """
    return Config(
        name="geoplex",
        model=model_config("base"),
        data=DataConfig(
            datasets=[DatasetSpec(norm="official", **d) for d in GEOPLEX_DATASETS],
            root="data",
            mixing="official",
            epoch_steps=GEOPLEX_EPOCH,
            num_workers=8,
        ),
        jepa=JEPAConfig(contrastive_scope="local"),
        train=TrainConfig(
            recipe="anysat",
            steps=200 * GEOPLEX_EPOCH,
            batch_size=128,
            lr=5e-5,
            min_lr=0.0,
            warmup_steps=0,
            weight_decay=0.05,
            final_weight_decay=0.05,
            grad_clip=0.0,
            amp="fp16",
            val_every=GEOPLEX_EPOCH,
            val_batches=82140 // (10 * 2),
            log_every=50,
            ckpt_every=GEOPLEX_EPOCH,
            keep_last=3,
            out_dir="runs/geoplex",
        ),
    )


# Smoke overrides for quick checks: a few small tiles, short series, short probes.  They shrink the data and
# the probes, not the model (the preset keeps its size) nor the number of steps (add train.steps=N).
SMOKE_OVERRIDES = [
    "data.n_tiles=32",
    "data.tile_m=40",
    "data.n_dates=6",
    "data.datasets=[{name: synthetic, patch_sizes: [10, 20]}]",
    "train.batch_size=8",
    "train.warmup_steps=2",
    "train.log_every=1",
    "probe.patch_sizes=[20]",
    "probe.seg_epochs=3",
    "probe.bootstrap=100",
]

# the base presets' schedule: I-JEPA style, weight decay rising from 0.04 to 0.4
_BASE_RECIPE = dict(
    steps=50000, batch_size=128, lr=1e-4, warmup_steps=2000, weight_decay=0.04, final_weight_decay=0.4, ckpt_every=2000
)

PRESETS = {
    "cpu-demo": _cpu_demo,
    "tiny": lambda: _sized("tiny", "tiny", steps=2000, batch_size=32, lr=2e-4, warmup_steps=100, ckpt_every=500),
    "small": lambda: _sized("small", "small", steps=10000, batch_size=64, lr=1e-4, warmup_steps=500, ckpt_every=1000),
    "base": lambda: _sized("base", "base", **_BASE_RECIPE),
    "base-cuda": _base_cuda,
    # add --set train.compile=true to try torch.compile
    "geoplex": _geoplex,
}


# --- (de)serialisation and overrides ------------------------------------------------------
def config_to_dict(cfg) -> dict:
    """Nested plain dict (tuples become lists), ready for YAML/JSON."""

    def plain(v):
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(dataclasses.asdict(cfg))


class ConfigError(UserError):
    """A config value, key or file that cannot be used; the message names the key, expected and received values."""


class UnknownKeyError(ConfigError, UnknownNameError):
    """A key, preset or model size that the config does not have (also a ``KeyError``, as before)."""


DATASETS_EXAMPLE = '--set "data.datasets=[{name: synthetic, sensors: [s2]}]"'


def _yaml(value) -> str:
    """``value`` as a one-line YAML flow value (what ``--set`` accepts)."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()


_NOUNS = {
    bool: ("a boolean (true/false)", "booleans"),
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    str: ("a text", "texts"),
    dict: ("a mapping {key: value}", "mappings"),
}


def _show(value) -> str:
    """A received value for a message: ``'abc'``, ``-4``, ``nan``, ``[10, 15]``, ``null``."""
    if value is None:
        return "null"
    text = repr(value) if isinstance(value, (str, float)) else _yaml(list(value) if isinstance(value, tuple) else value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


def _kind(hint, plural: bool = False) -> str:
    """Plain words for a field type: ``int`` -> "an integer", ``list[int]`` -> "a list of integers"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return f"{_kind([a for a in args if a is not type(None)][0], plural)} or null"
    if origin is list:
        return ("lists of " if plural else "a list of ") + _kind(args[0], plural=True)
    if origin is tuple:
        return ("pairs" if plural else "a pair") + f" [{', '.join(_kind(a) for a in args)}]"
    if hint is DatasetSpec:
        return "datasets {name: ..., sensors: [...], ...}" if plural else "a dataset {name: ..., ...}"
    if dataclasses.is_dataclass(hint):
        return "mappings" if plural else "a mapping"
    return _NOUNS[hint][1 if plural else 0] if hint in _NOUNS else str(hint)


def _coerce(value, hint, where: str):
    """Check ``value`` against the field type ``hint`` (``int``, ``float | None``, ``list[int]``...); convert
    the harmless cases (``2.0`` -> ``2``, ``5`` -> ``5.0``, ``"1e-4"`` -> ``0.0001`` as YAML 1.1 reads it)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)

    def bad():
        quote = ""
        if isinstance(value, bool) and str in (hint, *args):  # YAML 1.1 reads yes/no/on/off as booleans
            quote = f" (YAML reads yes/no/on/off as true/false: quote a text, --set '{where}=\"yes\"')"
        return ConfigError(f"config {where}: expected {_kind(hint)}, got {_show(value)}{quote}; e.g. {_example(where)}")

    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"config {where}: unsupported type {hint}")
        try:
            return _coerce(value, inner[0], where)
        except ConfigError:
            raise bad() from None
    if dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else _build(hint, value, where)
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise bad()
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise bad()
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise bad()
    if hint is dict:
        if isinstance(value, Mapping):
            return dict(value)
        raise bad()
    if hint in (int, float):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise bad() from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        if hint is float:
            return float(value)
        if isinstance(value, float) and not value.is_integer():
            raise bad()
        return int(value)
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad()
    return value


def coerce_reader_option(where: str, value, hint, reader: str):
    """``value`` of a reader option (``where``: ``data.datasets options.KEY (NAME)``) checked against the type
    ``hint`` of the reader's argument (``bool``, ``float``, ``Sequence[int] | None``, ``float | tuple[float,
    float] | None``, ``Literal[...]``...), the harmless cases converted as for a config field.  An argument only
    an object can fill (a class such as :class:`~anysat_lite.data.normalization.NormStats`) is refused, naming
    ``reader``; a type this check does not know passes unchanged (the reader checks it)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    union = origin in (typing.Union, types.UnionType)
    arms = [a for a in args if a is not type(None)] if union else [hint]
    nullable = union and len(arms) < len(args)
    if value is None and nullable:
        return None
    kinds = []
    for arm in map(_yaml_hint, arms):
        if arm is typing.Any:
            return value
        if arm is None:
            continue
        if typing.get_origin(arm) is typing.Literal:
            if value in typing.get_args(arm):
                return value
            kinds.append("one of " + ", ".join(map(str, typing.get_args(arm))))
            continue
        try:
            return _coerce(value, arm, where)
        except ConfigError:
            kinds.append(_kind(arm))
    if not kinds:
        name = " or ".join(getattr(a, "__name__", str(a)) for a in arms)
        raise ConfigError(
            f"config {where}: {reader} takes a {name} object there, which a config cannot hold, got "
            f"{_show(value)}; remove the option (in Python, pass the object to {reader} yourself)"
        )
    texts = isinstance(value, bool) and _kind(str) in kinds
    quote = " (YAML reads yes/no/on/off as true/false: quote a text)" if texts else ""
    expected = " or ".join(kinds + (["null"] if nullable else []))
    raise ConfigError(
        f"config {where}: expected {expected}, got {_show(value)}{quote}; correct it or remove the option"
    )


def _yaml_hint(hint):
    """The config field type that stands for a reader argument's type (``Sequence[int]`` -> ``list[int]``,
    ``tuple[int, ...]`` -> ``list[int]``, ``Path`` -> ``str``, a mapping -> ``dict``); ``None`` for a class
    only an object can fill; ``typing.Any`` for a type this check leaves to the reader."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any or origin is typing.Literal:
        return hint
    if hint in (dict, Mapping) or origin in (dict, Mapping):
        return dict
    if origin in (list, tuple, Sequence) and args:
        inner = [_yaml_hint(a) for a in args if a is not Ellipsis]
        if None in inner:
            return None
        if typing.Any in inner:
            return typing.Any
        return tuple[tuple(inner)] if origin is tuple and Ellipsis not in args else list[inner[0]]
    if hint is Path:
        return str
    if hint in _NOUNS:
        return hint
    return None if inspect.isclass(hint) and origin is None and hint not in (list, tuple) else typing.Any


# Keys of earlier versions, with what replaced them (an old run's config.yaml names what to edit).
RENAMED = {
    "probe.linear_epochs": "the linear probes are solved to convergence by L-BFGS; probe.linear_iters caps its "
    "iterations (default 1000) and probe.linear_l2 sets the penalty",
    "probe.linear_lr": "the linear probes need no learning rate (L-BFGS); the dense probe's is probe.seg_lr",
}


def _build(cls, data, where: str):
    """Instantiate dataclass ``cls`` from ``data`` recursively: unknown keys and mistyped values are refused."""
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"config {where or 'file'}: expected a mapping of keys to values, got {_show(data)}; "
            f"e.g. {_example(where + '.' + dataclasses.fields(cls)[0].name if where else 'train.steps')}"
        )
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    for k in unknown:
        key = f"{where}.{k}" if where else str(k)
        if key in RENAMED:
            raise UnknownKeyError(f"config key {key} was replaced: {RENAMED[key]}; edit it in your YAML or --set")
    if unknown:
        key = f"{where}.{unknown[0]}" if where else str(unknown[0])
        valid = sorted(fields | ({"size"} if where == "model" else set()))  # model.size: a size's three numbers
        close = difflib.get_close_matches(str(unknown[0]), valid, n=1)
        hint = f"did you mean {where + '.' if where else ''}{close[0]}? " if close else ""
        nested = [
            name
            for name, kind in typing.get_type_hints(cls).items()
            if isinstance(kind, type)
            and dataclasses.is_dataclass(kind)
            and unknown[0] in {g.name for g in dataclasses.fields(kind)}
        ]
        if nested:  # a section's key one level too high (``steps: 5`` for ``train: {steps: 5}``)
            keys = " or ".join(f"{where + '.' if where else ''}{n}.{unknown[0]}" for n in nested)
            hint = f"did you mean {keys} (nested under {' or '.join(nested)})? "
        elif ":" in str(unknown[0]):  # {name:treesatai} is one key in YAML flow style
            hint = f"YAML needs a space after ':' ({str(unknown[0]).replace(':', ': ', 1)}); "
        raise UnknownKeyError(
            f"unknown config key(s) {sorted(map(str, unknown))} in {where or 'config'} "
            f"({key}); {hint}valid: {', '.join(valid)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(value, hints[name], f"{where}.{name}" if where else name)
    return cls(**kwargs)


# Ranges of the values (types come from the dataclass fields).  Keys of data.datasets apply to every dataset.
def _finite(v) -> bool:
    """False for a NaN or infinite number (YAML .nan, .inf), also inside a pair such as jepa.target_scale."""
    return all(not isinstance(x, float) or math.isfinite(x) for x in (v if isinstance(v, (list, tuple)) else [v]))


def _ge(lo):
    return lambda v: v >= lo, f">= {lo:g}"


SEED_RULE = (lambda v: 0 <= v < 2**32, "an integer in [0, 2**32 - 1]")  # what numpy and torch generators take


def _gt(lo):
    return lambda v: v > lo, f"> {lo:g}"


def _unit(closed_hi: bool = True):
    return (lambda v: 0 <= v <= 1, "in [0, 1]") if closed_hi else (lambda v: 0 <= v < 1, "in [0, 1)")


def _choice(*names):
    return lambda v: v in names, "one of " + ", ".join(names)


def _pair(lo_ok, text):
    return lambda v: all(lo_ok(x) for x in v) and v[0] <= v[1], f"[low, high] with low <= high, {text}"


def _sensor_list(v):
    from .sensors import SENSORS

    return v is None or (len(v) > 0 and all(s in SENSORS for s in v) and len(set(v)) == len(v))


def _dataset_name(v):
    from .data.registry import canonical_name, dataset_names

    return v == "synthetic" or v.startswith("synthetic:") or canonical_name(v) in dataset_names()


def _dataset_names() -> str:
    from .data.registry import dataset_names

    return "synthetic, synthetic:<tag> or a registered dataset (" + ", ".join(dataset_names()) + ")"


_PATCHES = (
    lambda v: len(v) > 0 and all(p > 0 and p % 10 == 0 for p in v),
    "non-empty, each a positive multiple of 10 (metres), e.g. [10, 20]",
)
_SENSORS = (_sensor_list, "null (all) or registered sensor names, each once (anysat-lite info lists them)")
RULES: dict[str, tuple] = {
    "model.embed_dim": (lambda v: v >= 32 and v % 32 == 0, "a positive multiple of 32 (the L-TAE groups)"),
    "model.depth": _ge(1),
    "model.num_heads": _ge(1),
    "model.mlp_ratio": _gt(0),
    "model.ltae_heads": _ge(1),
    "model.ltae_dk": _ge(1),
    "model.ltae_in_width": (
        lambda v: v is None or (v >= 4 and v % 4 == 0),
        "null or a positive multiple of 4 (its GroupNorm groups)",
    ),
    "model.drop_path": _unit(False),
    "model.dropout": (lambda v: v is None or 0 <= v < 1, "null or in [0, 1)"),
    "model.subpatch_order": _choice("official", "geometric"),
    "model.attend_over": _choice(*ATTEND_OVER),
    "model.sensors": _SENSORS,
    "data.datasets": (lambda v: len(v) > 0, "at least one dataset"),
    "data.datasets.name": (_dataset_name, None),
    "data.datasets.path": (lambda v: v is None or v.strip() != "", "null or a folder path"),
    "data.datasets.weight": _gt(0),
    "data.datasets.patch_sizes": _PATCHES,
    "data.datasets.sensors": _SENSORS,
    "data.datasets.batch_size": (lambda v: v is None or v >= 1, "null (train.batch_size) or >= 1"),
    "data.datasets.max_dates": (lambda v: v is None or v >= 1, "null (every date) or >= 1"),
    "data.datasets.tile_m": (
        lambda v: v is None or (v > 0 and v % 10 == 0),
        "null (the reader's tiles) or a positive multiple of 10 (metres)",
    ),
    "data.datasets.norm": _choice("official", "per-tile", "pixels"),
    "data.datasets.options": (
        lambda v: v is None or all(isinstance(k, str) for k in v),
        "null or a mapping of keyword arguments of the reader, e.g. {crop: center}",
    ),
    "data.root": (lambda v: v is None or v.strip() != "", "null or a folder path"),
    "data.mixing": _choice("weighted", "official"),
    "data.epoch_steps": (lambda v: v is None or v >= 1, "null (every batch) or >= 1"),
    "data.tile_m": (lambda v: v > 0 and v % 10 == 0, "a positive multiple of 10 (metres)"),
    "data.n_tiles": _ge(3),
    "data.n_dates": _ge(1),
    "data.seed": SEED_RULE,
    "data.norm_samples": _ge(0),
    "data.num_workers": _ge(0),
    "data.prefetch_factor": _ge(1),
    "jepa.mask": _choice("multiblock", "random", "block"),
    "jepa.context": _choice("block", "complement"),
    "jepa.n_targets": (lambda v: 1 <= v <= 16, "from 1 to 16 (AnySat and I-JEPA draw 4)"),
    "jepa.target_scale": _pair(lambda x: 0 < x <= 1, "in (0, 1]"),
    "jepa.target_aspect": _pair(lambda x: x > 0, "> 0"),
    "jepa.context_scale": _pair(lambda x: 0 < x <= 1, "in (0, 1]"),
    "jepa.min_keep": _ge(1),
    "jepa.random_keep": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "jepa.modality_mask_ratio": _unit(),
    "jepa.date_drop_ratio": _unit(False),
    "jepa.predictor_depth": _ge(1),
    "jepa.predictor_heads": _ge(1),
    "jepa.ema": _pair(lambda x: 0 <= x <= 1, "in [0, 1]"),
    "jepa.target": _choice("ema", "online"),
    "jepa.contrastive_weight": _ge(0),
    "jepa.view_band_shift": _ge(0),
    "jepa.contrastive_tau": _gt(0),
    "jepa.contrastive_scope": _choice("global", "local"),
    "jepa.context_gather": _choice("by_patch", "official"),
    "jepa.monitor_every": _ge(0),
    "jepa.warn_std": _ge(0),
    "jepa.warn_erank": _ge(0),
    "jepa.warn_cos": (lambda v: -1 <= v <= 1, "in [-1, 1]"),
    "train.recipe": _choice("ijepa", "anysat"),
    "train.steps": _ge(1),
    "train.batch_size": _ge(1),
    "train.accum_steps": _ge(1),
    "train.lr": _gt(0),
    "train.min_lr": _ge(0),
    "train.warmup_steps": _ge(0),
    "train.weight_decay": _ge(0),
    "train.final_weight_decay": _ge(0),
    "train.plateau_factor": (lambda v: 0 < v < 1, "in (0, 1)"),
    "train.plateau_patience": _ge(0),
    "train.grad_clip": _ge(0),
    "train.amp": _choice("none", "bf16", "fp16"),
    "train.device": (
        lambda v: v in ("auto", "cpu", "cuda", "mps") or re.fullmatch(r"cuda:\d+", v) is not None,
        "auto, cpu, cuda, cuda:N or mps",
    ),
    "train.seed": SEED_RULE,
    "train.log_every": _ge(1),
    "train.val_every": _ge(0),
    "train.val_batches": _ge(1),
    "train.ckpt_every": _ge(1),
    "train.keep_last": _ge(0),
    "train.out_dir": (lambda v: v.strip() != "", "a folder path"),
    "train.threads": (lambda v: v is None or 1 <= v <= 1024, "null or in [1, 1024]"),
    "probe.patch_sizes": _PATCHES,
    "probe.modality_sets": (
        lambda v: len(v) > 0 and all(list(m) == ["all"] or _sensor_list(m) for m in v),
        "non-empty lists of registered sensor names, each once (anysat-lite info lists them), or [all]",
    ),
    "probe.linear_l2": _ge(0),
    "probe.linear_iters": _ge(1),
    "probe.seg_lr": _gt(0),
    "probe.knn_k": _ge(1),
    "probe.seg_epochs": _ge(1),
    "probe.finetune_epochs": _ge(0),
    "probe.finetune_lr": _gt(0),
    "probe.batch_size": _ge(1),
    "probe.seed": SEED_RULE,
    "probe.bootstrap": _ge(0),
    "probe.split": _choice("test", "val"),
}


def _default(where: str):
    """The dataclass default of ``section.key`` (for the examples in messages), or ``None``."""
    parts = re.sub(r"\[\d+\]", "", where).split(".")
    cls = {"model": ModelConfig, "data": DataConfig, "jepa": JEPAConfig, "train": TrainConfig, "probe": ProbeConfig}
    node = cls.get(parts[0])
    if node is None or len(parts) < 2:
        return None
    obj = node()
    for p in parts[1:]:
        if isinstance(obj, list) and obj and dataclasses.is_dataclass(obj[0]):
            obj = obj[0]
        if not hasattr(obj, p):
            return None
        obj = getattr(obj, p)
    return config_to_dict(obj) if dataclasses.is_dataclass(obj) else obj


def _example(where: str) -> str:
    """An override ``--set`` accepts for ``where`` (the field's default value)."""
    if where.startswith("data.datasets"):
        return DATASETS_EXAMPLE
    key = re.sub(r"\[\d+\]$", "", where)
    value = _default(key)
    if value is None:
        return f"--set {key}=null" if key.count(".") == 1 else "--set train.steps=300"
    text = _yaml(list(value) if isinstance(value, tuple) else value)
    return f'--set "{key}={text}"' if " " in text else f"--set {key}={text}"


def _check_rule(rule_key: str, value, where: str | None = None) -> None:
    """Refuse ``value`` (of the key ``where``, default ``rule_key``) unless it meets ``RULES[rule_key]``."""
    where = where or rule_key
    ok, expected = RULES[rule_key]
    expected = _dataset_names() if expected is None else expected
    try:
        good = bool(ok(value)) and _finite(value)
    except TypeError:
        good = False
    if not good:
        section, *_, name = rule_key.split(".")
        hint = typing.get_type_hints(
            DatasetSpec if rule_key.count(".") == 2 else typing.get_type_hints(Config)[section]
        )
        if expected[0] in "<>":  # "an integer >= 1", "a number > 0"
            expected = f"{_kind(hint[name])} {expected}"
        raise ConfigError(f"config {where}: expected {expected}, got {_show(value)}; e.g. {_example(where)}")


def _check_divides(embed_dim: int, heads: str, n: int) -> None:
    """Refuse a head count ``n`` (the key ``heads``) that does not divide ``model.embed_dim``."""
    if embed_dim % n:
        near = max(k for k in range(1, n + 1) if embed_dim % k == 0)
        raise ConfigError(
            f"config {heads}: expected a divisor of model.embed_dim={embed_dim}, got {n}; e.g. --set {heads}={near}"
        )


def check_config(cfg, where: str) -> Config:
    """``cfg`` as passed to ``where`` (``pretrain``, ``run_probe``): a :class:`Config`, else a one-line error."""
    if isinstance(cfg, Config):
        return cfg
    preset = cfg if isinstance(cfg, str) and cfg in PRESETS else "cpu-demo"
    raise ConfigError(
        f"{where}: expected a Config, got {type(cfg).__name__} {_show(cfg)}; e.g. {where}(get_config({preset!r}))"
    )


def validate_config(cfg: Config) -> Config:
    """Check every value of ``cfg`` against :data:`RULES` and the constraints between fields; return ``cfg``.

    Raises :class:`ConfigError` naming the key, the expected range and the received value.
    """

    # A path written ~/... in --set or YAML (the shell expands ~ only at the start of a word) means the home.
    paths = ((cfg.train, "out_dir"), (cfg.data, "root"), (cfg.data, "cache_dir"))
    for holder, key in (*paths, *((s, "path") for s in cfg.data.datasets)):
        if isinstance(getattr(holder, key), str):
            setattr(holder, key, os.path.expanduser(getattr(holder, key)))
    d = dataclasses.asdict(cfg)
    for key in RULES:
        parts = key.split(".")
        if parts[:2] == ["data", "datasets"] and len(parts) == 3:
            for i, spec in enumerate(d["data"]["datasets"]):
                _check_rule(key, spec[parts[2]], f"data.datasets[{i}].{parts[2]}")
        else:
            _check_rule(key, d[parts[0]][parts[1]])
    m, j = cfg.model, cfg.jepa
    for heads, n in (("model.num_heads", m.num_heads), ("model.ltae_heads", m.ltae_heads)):
        _check_divides(m.embed_dim, heads, n)
    _check_divides(m.embed_dim, "jepa.predictor_heads", j.predictor_heads)
    for spec_i, spec in enumerate(cfg.data.datasets):
        if spec.name == "synthetic" or spec.name.startswith("synthetic:"):
            for key in ("path", "max_dates", "options"):  # the world is generated, not read
                if getattr(spec, key) not in (None, {}):
                    raise ConfigError(
                        f"config data.datasets[{spec_i}].{key}: the embedded world ({spec.name}) has no {key}, "
                        f"expected null, got {getattr(spec, key)!r}; remove it (data.n_tiles, data.tile_m and "
                        "data.n_dates size the world)"
                    )
        elif not spec.path and not cfg.data.root:
            raise ConfigError(
                f"config data.datasets[{spec_i}].path: dataset {spec.name} needs the folder of its "
                "files, got null; give data.datasets[i].path or data.root (the folder holding it), "
                f"e.g. --set data.root=/data"
            )
    t = cfg.train
    if t.min_lr > t.lr:
        raise ConfigError(
            f"config train.min_lr: the learning rate ends at (or is reduced down to) min_lr from train.lr={t.lr:g}, "
            f"so expected at most {t.lr:g}, got {t.min_lr:g}; e.g. --set train.min_lr={min(1e-6, t.lr):g}"
        )
    if t.recipe == "anysat" and t.val_every == 0:
        raise ConfigError(
            "config train.val_every: the anysat recipe reduces the learning rate on plateaus of the "
            "validation loss, so it needs a validation, got 0; e.g. --set train.val_every=1000"
        )
    return cfg


def validate_probe(cfg: Config) -> None:
    """Check the probe settings against the dataset the probes read (``data.datasets[0]``) where that is
    known without reading data: the embedded world's sensors and tile size.  The demo calls it before
    pretraining; :func:`validate_config` does not, because a run that only pretrains may leave the
    probe section as its preset has it.  Raises :class:`ConfigError`."""
    from .data.synthetic import WorldSpec

    spec = cfg.data.datasets[0]
    if not (spec.name == "synthetic" or spec.name.startswith("synthetic:")):
        return  # a reader's sensors and tiles are known once its files are read (run_probe checks them then)
    sensors = list(spec.sensors or WorldSpec.sensors)
    for i, subset in enumerate(cfg.probe.modality_sets):
        if list(subset) != ["all"] and any(s not in sensors for s in subset):
            raise ConfigError(
                f"config probe.modality_sets[{i}]: expected [all] or sensors of the embedded world "
                f"data.datasets[0] ({', '.join(sensors)}), got {_show(list(subset))}; e.g. "
                f'--set "probe.modality_sets=[[all], [{sensors[0]}]]"'
            )
    tile, key = (spec.tile_m, "data.datasets[0].tile_m") if spec.tile_m else (cfg.data.tile_m, "data.tile_m")
    if any(tile % p for p in cfg.probe.patch_sizes):
        raise ConfigError(
            f"config probe.patch_sizes: expected sizes that divide the embedded world's {tile:g} m tiles ({key}), "
            f"got {_show(cfg.probe.patch_sizes)}; e.g. --set probe.patch_sizes=[{20 if tile % 20 == 0 else 10}]"
        )


def config_from_dict(data: dict) -> Config:
    """A :class:`Config` from a nested dict (``preset: NAME`` + partial sections), type- and range-checked."""
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"config: expected a mapping of sections (model, data, jepa, train, probe), got {_show(data)}"
        )
    data = dict(data)
    base = data.pop("preset", None)
    if base is not None and (not isinstance(base, str) or base not in PRESETS):
        raise ConfigError(f"config preset: unknown preset {_show(base)}; choose one of {', '.join(PRESETS)}")
    cfg = get_config(base) if base else Config()
    return validate_config(_merge(cfg, data))


def _expand_size(data: dict) -> dict:
    """``model: {size: nano, ...}`` -> the size's ``embed_dim``, ``depth``, ``num_heads`` and AnySat's
    L-TAE numbers (``ltae_heads``, ``ltae_in_width``; the cpu-demo preset changes them for its width);
    explicit keys win."""
    model = data.get("model")
    if not isinstance(model, Mapping) or "size" not in model:
        return data
    model = dict(model)
    size = model.pop("size")
    if not isinstance(size, str) or size not in MODEL_SIZES:
        raise ConfigError(
            f"config model.size: expected one of {', '.join(MODEL_SIZES)}, got {_show(size)}; "
            "e.g. --set model.size=nano"
        )
    official_ltae = {"ltae_heads": ModelConfig.ltae_heads, "ltae_in_width": ModelConfig.ltae_in_width}
    return {**data, "model": {**MODEL_SIZES[size], **official_ltae, **model}}


def _merge(cfg: Config, data: dict) -> Config:
    data = _expand_size(data)
    merged = config_to_dict(cfg)

    def deep(dst, src):
        for k, v in src.items():
            if isinstance(v, dict) and isinstance(dst.get(k), dict):
                deep(dst[k], v)
            else:
                dst[k] = v

    deep(merged, data)
    return _build(Config, merged, "")


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with the same key twice (PyYAML keeps the last one silently,
    so ``steps: 100`` then ``steps: 10`` in one section would run 10 steps without a word)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                kind = "list" if isinstance(key_node, yaml.SequenceNode) else "mapping"
                raise yaml.constructor.ConstructorError(
                    None, None, f"a key must be a plain name, got a {kind}", key_node.start_mark
                )
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one section", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _parse_value(raw: str, key: str = "value"):
    """A ``--set`` value parsed as YAML (``3``, ``1e-4``, ``[10, 20]``, ``true``, ``{name: x}``); the types are
    checked against the config fields later.  Malformed YAML raises :class:`ConfigError`."""
    # YAML 1.1 reads 010 as 8 (octal) and 1_000 as 1000: refuse numbers a reader would take otherwise.
    try:
        for token in yaml.scan(raw):
            text = getattr(token, "value", None)
            number = getattr(token, "plain", False) and re.fullmatch(r"[+-]?(0[0-9_]+|[0-9]+_[0-9_]*)", text)
            if number and not isinstance(yaml.safe_load(text), str):  # 09 stays a text: only changed numbers
                raise ConfigError(
                    f"--set {key}={raw}: the number {text} is ambiguous (YAML reads a leading 0 as octal and "
                    f"drops underscores: {yaml.safe_load(text)!r}); write it without them, or quote it as a text"
                )
        return yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(
            f"--set {key}={raw}: not valid YAML ({yaml_problem(e)}); quote the whole KEY=VALUE "
            "for the shell and write lists/mappings in YAML flow style, "
            f"e.g. {DATASETS_EXAMPLE}"
        ) from None


def apply_overrides(cfg: Config, overrides: Iterable[str] = ()) -> Config:
    """Apply ``section.key=value`` strings (values parsed as YAML: ``3``, ``1e-4``, ``[10, 20]``, ``true``).

    Every value is checked against its field's type and range (:func:`validate_config`) before
    anything runs; lists are replaced whole (``data.datasets=[{name: synthetic, sensors: [s2]}]``).
    """
    if isinstance(overrides, str):
        overrides = [overrides]
    if not isinstance(overrides, Iterable) or isinstance(overrides, Mapping):
        raise ConfigError(
            f'config overrides: expected a list of "key=value" strings, got {overrides!r:.60}; '
            'e.g. ["train.steps=100"], or leave them out'
        )
    overrides = list(overrides)
    if not all(isinstance(item, str) for item in overrides):
        item = next(item for item in overrides if not isinstance(item, str))
        raise ConfigError(
            f'config overrides: expected a list of "key=value" strings, got {item!r:.60} in it; '
            'e.g. ["train.steps=100"]'
        )
    data: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.steps=100")
        key, raw = item.split("=", 1)
        key = key.strip()
        if "[" in key:
            raise ConfigError(
                f"--set {key}: indexing into a list is not supported; give the whole list, e.g. {DATASETS_EXAMPLE}"
            )
        parts = key.split(".")
        if len(parts) != 2 or not all(parts):
            section = parts[0] if parts[0] in {f.name for f in dataclasses.fields(Config)} else "train"
            raise ConfigError(
                f"--set {key}={raw}: expected section.key=value with a section among model, data, "
                f"jepa, train, probe, e.g. --set {section}.{_first_field(section)}=..."
            )
        node = data.setdefault(parts[0], {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: section {parts[0]!r} is not a mapping")
        node[parts[1]] = _parse_value(raw, key)
    unknown = [k for k in data if k not in {f.name for f in dataclasses.fields(Config)} - {"name"}]
    if unknown:
        close = difflib.get_close_matches(unknown[0], ["model", "data", "jepa", "train", "probe"], n=1)
        raise UnknownKeyError(
            f"unknown config key(s) {sorted(unknown)} in --set; "
            f"{'did you mean ' + close[0] + '? ' if close else ''}sections: model, data, jepa, "
            "train, probe"
        )
    return validate_config(_merge(cfg, data) if data else cfg)


def _first_field(section: str) -> str:
    cls = {"model": ModelConfig, "data": DataConfig, "jepa": JEPAConfig, "train": TrainConfig, "probe": ProbeConfig}
    return dataclasses.fields(cls.get(section, TrainConfig))[0].name


def get_config(preset: str = "cpu-demo", overrides: Iterable[str] = ()) -> Config:
    """A fresh copy of a named preset with optional ``key=value`` overrides."""
    if not isinstance(preset, str):
        change = "; to change a Config, use apply_overrides(cfg, [...])" if isinstance(preset, Config) else ""
        raise ConfigError(
            f"get_config: expected a preset name ({', '.join(PRESETS)}), got a {type(preset).__name__}{change}; "
            'e.g. get_config("cpu-demo", ["train.steps=100"])'
        )
    if preset not in PRESETS:
        raise UnknownKeyError(
            f"unknown preset {preset!r}; {did_you_mean(preset, PRESETS)}choose one of {', '.join(PRESETS)}"
        )
    return apply_overrides(copy.deepcopy(PRESETS[preset]()), overrides)


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> Config:
    """Read a YAML file (optionally ``preset: NAME`` + partial sections) and apply overrides."""
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(
            f"load_config: expected the path of a YAML file, got {type(path).__name__} {_show(path)}; e.g. "
            'load_config("runs/cpu-demo/config.yaml"), or get_config("cpu-demo") for a preset'
        )
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            not_utf8(f"config file {path}", e, "give a YAML file (saved as UTF-8) or a preset name")
        ) from None
    except FileNotFoundError:
        hint = f'{path} is a preset: get_config("{path}")' if str(path) in PRESETS else "--config also takes a preset"
        raise ConfigError(f"config file {path} not found; give an existing YAML file ({hint})") from None
    except IsADirectoryError:
        raise ConfigError(
            f"config file {path} is a folder; give a YAML file (e.g. {path / 'config.yaml'}) or a preset name"
        ) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        raise ConfigError(
            f"config file {path}: not valid YAML ({yaml_problem(e)}); fix the file "
            "(sections model, data, jepa, train, probe of key: value lines, each key once)"
        ) from None
    try:
        cfg = config_from_dict(data or {})
    except ConfigError as e:
        raise type(e)(f"{path}: {e}") from None
    return apply_overrides(cfg, overrides)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write ``cfg`` as YAML to ``path`` (atomically).  A file that already says the same (a resumed run's own
    ``config.yaml``, perhaps with comments added by hand) is left as it is."""
    path = Path(path)
    try:
        if load_config(path) == cfg:
            return
    except (OSError, UserError, yaml.YAMLError):  # missing, unreadable or another config: replaced
        pass
    write_text_atomic(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
