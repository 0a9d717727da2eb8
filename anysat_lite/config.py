"""Plain-dataclass configuration with named presets, YAML files and ``key=value`` overrides.

A :class:`Config` bundles ``model``, ``data``, ``jepa``, ``train`` and ``probe`` sections.
Presets go from a laptop to a GPU node by name only::

    cfg = get_config("cpu-demo")                      # nano model, embedded data, CPU, minutes
    cfg = get_config("base-cuda", ["train.steps=20000", "train.batch_size=128"])
    cfg = load_config("my_run.yaml")                  # YAML may name a preset: {preset: base-cuda, ...}

Model sizes follow the official AnySat configs: ``tiny`` (D=256, depth 2, 4 heads),
``small`` (512, 4, 8), ``base`` (768, 6, 12).  ``nano`` (64, 2, 4) is the width of the
parity fixtures and the CPU demo.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

__all__ = ["ModelConfig", "DatasetSpec", "DataConfig", "JEPAConfig", "TrainConfig", "ProbeConfig", "Config", "MODEL_SIZES",
           "PRESETS", "SMOKE_OVERRIDES", "model_config", "get_config", "load_config", "apply_overrides", "config_to_dict",
           "config_from_dict"]


@dataclass
class ModelConfig:
    """Encoder size; the projector widths derive from ``embed_dim`` as in the official code."""

    embed_dim: int = 768
    depth: int = 6
    num_heads: int = 12
    mlp_ratio: float = 4.0
    ltae_heads: int = 16          # L-TAE master queries
    ltae_dk: int = 8              # L-TAE key width
    drop_path: float = 0.0
    dropout: float | None = None  # projector dropout override; None = official per-sensor values
    subpatch_order: str = "official"  # "official" (released weights) or "geometric" (see model/tokenizer.py)
    sensors: list[str] | None = None  # projectors to build; None = every registered sensor


MODEL_SIZES: dict[str, dict] = {
    "nano": dict(embed_dim=64, depth=2, num_heads=4),
    "tiny": dict(embed_dim=256, depth=2, num_heads=4),
    "small": dict(embed_dim=512, depth=4, num_heads=8),
    "base": dict(embed_dim=768, depth=6, num_heads=12),
}


def model_config(size: str = "base", **overrides) -> ModelConfig:
    """The :class:`ModelConfig` of a named size (``nano``, ``tiny``, ``small``, ``base``)."""
    if size not in MODEL_SIZES:
        raise KeyError(f"unknown model size {size!r}; choose one of {', '.join(MODEL_SIZES)}")
    return ModelConfig(**{**MODEL_SIZES[size], **overrides})


@dataclass
class DatasetSpec:
    """One pretraining/probing dataset of a (possibly multi-dataset) mix."""

    name: str = "synthetic"       # "synthetic" (embedded world) or "treesatai" (TreeSatAI-TS folder)
    path: str | None = None        # folder for file-backed datasets
    weight: float = 1.0            # sampling weight of this dataset's batches
    patch_sizes: list[int] = field(default_factory=lambda: [10, 20, 30])  # metres, one per batch
    sensors: list[str] | None = None  # subset of the dataset's sensors (None = all)


@dataclass
class DataConfig:
    datasets: list[DatasetSpec] = field(default_factory=lambda: [DatasetSpec()])
    tile_m: int = 60               # synthetic tiles: side in metres
    n_tiles: int = 384             # synthetic tiles generated (train + val + test)
    n_dates: int = 12              # synthetic time-series length
    seed: int = 0
    cache_dir: str | None = None   # default: ~/.cache/anysat_lite
    num_workers: int = 0


@dataclass
class JEPAConfig:
    """AnySat/GeoPlex JEPA recipe (I-JEPA multi-block masks + modality masking + date dropping).

    The defaults are AnySat's numbers except ``single_sensor_views``, which only acts where the
    official recipe has nothing to say: a batch with a single time-series sensor has no second
    modality for MIL-NCE, so its contrastive term compares two independent draws of that
    series' dates (``date_drop_ratio`` each) at the same location.  Without it, JEPA alone
    collapses on one sensor at the demo's scale (README, "Deviations"; notebook 03).
    """

    mask: str = "multiblock"                       # multiblock | random | block
    n_targets: int = 4
    target_scale: tuple[float, float] = (0.2, 0.8)
    target_aspect: tuple[float, float] = (0.75, 1.5)
    context_scale: tuple[float, float] = (0.85, 1.0)
    min_keep: int = 1                              # official min_keep=0 with a strict ">": at least one patch
    allow_overlap: bool = False
    context: str = "block"                         # block (I-JEPA, AnySat) | complement (all but the targets)
    relax: bool = True                             # I-JEPA constraint relaxation when min_keep cannot be met
    random_keep: float = 0.5                       # "random" masks: fraction of context patches
    modality_mask_ratio: float = 0.5               # share of the *other* modalities replaced by a mask token
    date_drop_ratio: float = 0.5                   # share of each series' dates the context encoder drops
    predictor_depth: int = 4
    predictor_heads: int = 16
    ema: tuple[float, float] = (0.996, 1.0)
    target: str = "ema"                            # "ema", or "online" (no EMA/stop-grad: shows collapse)
    contrastive: bool = True
    contrastive_weight: float = 1.0
    contrastive_tau: float = 0.1
    single_sensor_views: bool = True               # one time series: MIL-NCE between two draws of its dates
    monitor_every: int = 10
    warn_std: float = 0.1                          # collapse warnings: target std per dimension below,
    warn_erank: float = 3.0                        # effective rank (RankMe) below,
    warn_cos: float = 0.95                         # mean tile cosine similarity above


@dataclass
class TrainConfig:
    steps: int = 300
    batch_size: int = 16
    lr: float = 1e-4
    min_lr: float = 1e-6
    warmup_steps: int = 20
    weight_decay: float = 0.04
    final_weight_decay: float = 0.04  # cosine weight-decay schedule end (I-JEPA: 0.04 -> 0.4)
    grad_clip: float = 1.0
    amp: str = "none"              # none | bf16 | fp16
    compile: bool = False          # torch.compile the transformer blocks (optional; see train/loop.py)
    device: str = "auto"           # auto | cpu | cuda
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 100
    out_dir: str = "runs/cpu-demo"
    threads: int | None = None     # torch.set_num_threads on CPU (None = leave as is)


@dataclass
class ProbeConfig:
    patch_sizes: list[int] = field(default_factory=lambda: [20])
    modality_sets: list[list[str]] = field(default_factory=lambda: [["all"]])
    linear_epochs: int = 100
    linear_lr: float = 1e-2
    knn_k: int = 10
    seg_epochs: int = 60
    finetune_epochs: int = 0
    finetune_lr: float = 1e-4
    batch_size: int = 32
    seed: int = 0
    online: bool = True            # also probe the online (context) encoder when it was exported
    bootstrap: int = 1000          # resamples of the test split for the 95 % intervals (0 = none)


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
    * schedule: 300 steps at lr 3e-4 with warm-up and cosine decay instead of AnySat's constant
      5e-5 over days; predictor depth 2 with 4 heads for the 64-wide encoder.
    """
    return Config(
        name="cpu-demo",
        model=model_config("nano", subpatch_order="geometric"),
        data=DataConfig(datasets=[DatasetSpec("synthetic", patch_sizes=[10, 20])], tile_m=60, n_tiles=1000,
                        n_dates=12),
        jepa=JEPAConfig(context="complement", target_scale=(0.1, 0.2), min_keep=4, predictor_depth=2,
                        predictor_heads=4),
        train=TrainConfig(steps=300, batch_size=32, lr=3e-4, min_lr=1e-6, warmup_steps=30, weight_decay=0.04,
                          final_weight_decay=0.04, out_dir="runs/cpu-demo", ckpt_every=100, threads=2),
        probe=ProbeConfig(patch_sizes=[20], modality_sets=[["all"], ["s2"], ["s1-asc"], ["aerial"]]),
    )


def _sized(name: str, size: str, **train) -> Config:
    cfg = _cpu_demo()
    cfg.name = name
    cfg.model = model_config(size, subpatch_order="geometric")
    cfg.jepa = JEPAConfig()  # AnySat's mask numbers and predictor (see the cpu-demo docstring)
    cfg.train = dataclasses.replace(cfg.train, out_dir=f"runs/{name}", threads=None, **train)
    return cfg


# Tiny sizes for CI, notebook smoke runs and tests: seconds instead of minutes.
SMOKE_OVERRIDES = ["data.n_tiles=32", "data.tile_m=40", "data.n_dates=6",
                   "data.datasets=[{name: synthetic, patch_sizes: [10, 20]}]", "train.batch_size=8",
                   "train.warmup_steps=2", "train.log_every=1", "probe.patch_sizes=[20]", "probe.linear_epochs=20",
                   "probe.seg_epochs=3", "probe.bootstrap=100"]

PRESETS = {
    "cpu-demo": _cpu_demo,
    "tiny": lambda: _sized("tiny", "tiny", steps=2000, batch_size=32, lr=2e-4, warmup_steps=100, ckpt_every=500),
    "small": lambda: _sized("small", "small", steps=10000, batch_size=64, lr=1e-4, warmup_steps=500,
                            ckpt_every=1000),
    "base": lambda: _sized("base", "base", steps=50000, batch_size=128, lr=1e-4, warmup_steps=2000,
                           weight_decay=0.04, final_weight_decay=0.4, ckpt_every=2000),
    "base-cuda": lambda: _sized("base-cuda", "base", steps=50000, batch_size=128, lr=1e-4, warmup_steps=2000,
                                weight_decay=0.04, final_weight_decay=0.4, amp="bf16", device="cuda",
                                ckpt_every=2000),  # add --set train.compile=true to try torch.compile
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


def _build(cls, data: dict, where: str):
    """Instantiate dataclass ``cls`` from ``data`` recursively, rejecting unknown keys."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise KeyError(f"unknown config key(s) {sorted(unknown)} in {where or 'config'}; valid: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        ftype = fields[name].type
        sub = {"model": ModelConfig, "data": DataConfig, "jepa": JEPAConfig, "train": TrainConfig,
               "probe": ProbeConfig}.get(name) if cls is Config else None
        if sub is not None and isinstance(value, dict):
            value = _build(sub, value, name)
        elif cls is DataConfig and name == "datasets":
            value = [v if isinstance(v, DatasetSpec) else _build(DatasetSpec, v, "data.datasets") for v in value]
        elif isinstance(value, list) and "tuple" in str(ftype):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def config_from_dict(data: dict) -> Config:
    data = dict(data)
    base = data.pop("preset", None)
    cfg = get_config(base) if base else Config()
    return _merge(cfg, data)


def _merge(cfg: Config, data: dict) -> Config:
    merged = config_to_dict(cfg)

    def deep(dst, src):
        for k, v in src.items():
            if isinstance(v, dict) and isinstance(dst.get(k), dict):
                deep(dst[k], v)
            else:
                dst[k] = v
    deep(merged, data)
    return _build(Config, merged, "")


def _parse_value(raw: str):
    """YAML scalar/list parsing, plus floats YAML 1.1 leaves as strings (``1e-4``)."""
    value = yaml.safe_load(raw)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def apply_overrides(cfg: Config, overrides: Iterable[str] = ()) -> Config:
    """Apply ``section.key=value`` strings (values parsed as YAML: ``3``, ``1e-4``, ``[10, 20]``, ``true``)."""
    data: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like section.key=value")
        key, raw = item.split("=", 1)
        value = _parse_value(raw)
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return _merge(cfg, data) if data else cfg


def get_config(preset: str = "cpu-demo", overrides: Iterable[str] = ()) -> Config:
    """A fresh copy of a named preset with optional ``key=value`` overrides."""
    if preset not in PRESETS:
        raise KeyError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return apply_overrides(copy.deepcopy(PRESETS[preset]()), overrides)


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> Config:
    """Read a YAML file (optionally ``preset: NAME`` + partial sections) and apply overrides."""
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    return apply_overrides(config_from_dict(data), overrides)


def save_config(cfg: Config, path: str | Path) -> None:
    with open(path, "w") as f:
        yaml.safe_dump(config_to_dict(cfg), f, sort_keys=False)
