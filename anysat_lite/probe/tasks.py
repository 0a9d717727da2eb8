"""The downstream tasks of the AnySat paper, one :class:`TaskConfig` preset per task and protocol.

Each preset holds what the official evaluation of that task uses, read from the official
repository's configs (``configs/exp/<Dataset>_AnySat_*.yaml`` and the files they include):
dataset and splits, modalities, patch size, head, loss, metric, optimiser and schedule, batch
size, epochs and early-stopping patience, and the paper's value with where it comes from.

========================  ==============  =====================  ====  ======  ===================
preset                    dataset         modalities             P     head    metric
========================  ==============  =====================  ====  ======  ===================
treesatai-ts-{lp,ft}      TreeSatAI-TS    aerial, s2, s1-asc     10 m  tile    weighted F1 (multi-label)
pastis-hd-cls-{lp,ft}     PASTIS-HD       spot, s2, s1           40 m  tile    macro F1 (multi-label)
pastis-hd-seg-lp          PASTIS-HD       s2                     40 m  dense   mIoU (void left out)
pastis-hd-seg-ft          PASTIS-HD       spot, s2, s1           40 m  dense   mIoU (void left out)
flair-seg-{lp,ft}         FLAIR           aerial-flair, s2       10 m  dense   mIoU ("other" left out)
planted-{lp,ft}           PLANTED         s2, s1, l7, alos,      30 m  tile    macro F1 (single-label)
                                          modis
========================  ==============  =====================  ====  ======  ===================

Settings common to all of them (``configs/config.yaml``, ``configs/trainer/default.yaml``,
``configs/callbacks/default.yaml``): at most 200 epochs, at least 50, early stopping after 10
epochs without a strictly better validation metric, the test split scored with the weights of
the best validation epoch, seed 32, mixed precision (fp16) on the GPU.  Linear probing (``-lp``)
is fine-tuning with the encoder frozen (the official ``freeze: True``).

The repository holds fine-tuning configs for TreeSatAI-TS, PASTIS-HD classification, PLANTED and
FLAIR, and linear-probing configs only for PASTIS-HD segmentation; the other ``-lp`` presets are
the fine-tuning config with ``freeze: True``, as the repository's LP configs of its other datasets
are (``Sickle_AnySat_LP.yaml``, ``Pastis_AnySat_LP_SemSeg.yaml``).

Paper values were read by eye off the bar chart ``.media/results.png`` of the official repository
("Test sets of datasets from GeoPlex"; dark bars fine-tuning, light bars linear probing); values
given with ``≈`` are estimates from the bar heights.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..errors import UserError

__all__ = ["TaskConfig", "PaperValue", "TASKS", "get_task", "task_names", "FIGURE"]

FIGURE = ".media/results.png of github.com/gastruc/AnySat (commit e03e72e)"
_COMMON_CONFIGS = (
    "configs/config.yaml",
    "configs/trainer/default.yaml",
    "configs/callbacks/default.yaml",
    "configs/model/network/encoder/Any_Base.yaml",
)


@dataclass(frozen=True)
class PaperValue:
    """A number of the paper: ``value`` in %, how it was read, and a caveat."""

    value: float | None
    source: str = f"read off the bar chart {FIGURE}"
    approximate: bool = True
    note: str = ""


@dataclass(frozen=True)
class TaskConfig:
    """One downstream task under one protocol (see the module docstring).

    Attributes:
        name: preset name.
        dataset: reader name in :mod:`anysat_lite.data.registry`.
        protocol: ``"linear-probe"`` (frozen encoder) or ``"fine-tune"``.
        target: item key of the target: ``"multilabel"``, ``"label"`` (class id) or ``"segmentation"``.
        num_classes: head outputs ``K`` (PASTIS-HD segmentation: 20 with the void class, as official).
        sensors: modalities fed to the encoder.
        patch_size: patch side ``P`` in metres (official ``scale`` x 10 m).
        head: ``"tile"`` (:class:`~.heads.TileHead`) or ``"dense"`` (:class:`~.heads.DenseHead`).
        dense_sensor: the sensor the dense head classifies (official ``modality_keep``).
        pixels_per_subpatch: label pixels per sub-patch side of the dense head (official ``proj_size``).
        window: train-time side (px) of the dense sensor; larger val/test tiles are scored with five
            windows (official FLAIR ``forward_test``).
        loss: ``"bce"`` (multi-label), ``"ce"`` (single-label) or ``"ce-seg"`` (per pixel, void ``-1``
            ignored, ``ignore_classes`` weighted 0).
        metric: ``"f1-weighted"``, ``"f1-macro"`` or ``"miou"``; the validation metric that selects the
            epoch is the reported one.
        ignore_classes: classes with zero loss weight and left out of the mIoU (the official weighted
            cross-entropy and ``IoU(ignore_index=-1)``, both of which drop the *last* class).
        lr, weight_decay: AdamW settings.
        schedule: ``"warmup-cosine"`` (pl_bolts ``LinearWarmupCosineAnnealingLR``, per epoch, from 0) or
            ``"plateau"`` (``ReduceLROnPlateau`` on the validation loss, factor 0.1, patience 10).
        warmup_epochs: linear warm-up epochs of ``"warmup-cosine"`` (its cosine ends at ``max_epochs``).
        batch_size: official ``global_batch_size`` (one GPU).
        max_epochs, min_epochs, patience: epochs and early stopping.
        splits: role (``train``, ``val``, ``test``) -> keyword arguments of the reader.
        density_sampling: draw training items by class density (official PLANTED reader).
        ltae_period: period ``T`` of the L-TAE date code in the official fine-tuning encoder
            (``Any_Base.yaml``: 366; pretraining: 367).
        projector_dropout: dropout inside the L-TAEs in the fine-tuning encoder (``Any_Base.yaml``: 0).
        seed: official ``seed: 32``.
        paper: the paper's value for this row.
        official_configs: the official files the settings come from.
        notes: deviations and caveats, copied into the results table.
    """

    name: str
    dataset: str
    protocol: str
    target: str
    num_classes: int
    sensors: tuple[str, ...]
    patch_size: int
    head: str
    loss: str
    metric: str
    lr: float
    weight_decay: float
    schedule: str
    batch_size: int
    splits: dict = field(default_factory=dict)
    dense_sensor: str | None = None
    pixels_per_subpatch: int = 1
    window: int | None = None
    ignore_classes: tuple[int, ...] = ()
    warmup_epochs: int = 20
    max_epochs: int = 200
    min_epochs: int = 50
    patience: int = 10
    density_sampling: bool = False
    ltae_period: int | None = 366
    projector_dropout: float | None = 0.0
    seed: int = 32
    paper: PaperValue = PaperValue(None)
    official_configs: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def frozen(self) -> bool:
        return self.protocol == "linear-probe"

    @property
    def metric_name(self) -> str:
        return {"f1-weighted": "weighted F1", "f1-macro": "macro F1", "miou": "mIoU"}[self.metric]

    def replace(self, **changes) -> TaskConfig:
        """A copy with some fields changed (e.g. ``max_epochs=1`` for a smoke run)."""
        bad = [k for k in changes if k not in {f.name for f in dataclasses.fields(self)}]
        if bad:
            raise UserError(
                f"TaskConfig has no field {bad[0]!r}; fields: {', '.join(f.name for f in dataclasses.fields(self))}"
            )
        return dataclasses.replace(self, **changes)


def _pair(base: dict, lp: dict, ft: dict) -> dict[str, TaskConfig]:
    """The ``-lp`` and ``-ft`` presets of one task: shared settings, then each protocol's."""
    stem, shared = base["stem"], {k: v for k, v in base.items() if k != "stem"}
    return {
        f"{stem}-{suffix}": TaskConfig(name=f"{stem}-{suffix}", protocol=protocol, **{**shared, **extra})
        for suffix, protocol, extra in (("lp", "linear-probe", lp), ("ft", "fine-tune", ft))
    }


_LP_FROM_FT = (
    "no linear-probing config in the official repository for this task: the fine-tuning config with "
    "the encoder frozen (freeze: True), as in the repository's LP configs of other datasets"
)

TASKS: dict[str, TaskConfig] = {}

_TREESAT_PAPER = (
    "given to one decimal (without ≈) in this project's specification of the reproduction; the figure itself prints "
    "no number, and the paper's text was not available to check it"
)

# TreeSatAI-TS: multi-label tree genera (15 classes, a genus is a label when its area share is above 0.07).
TASKS.update(
    _pair(
        dict(
            stem="treesatai-ts",
            dataset="treesatai-ts",
            target="multilabel",
            num_classes=15,
            sensors=("aerial", "s2", "s1-asc"),
            patch_size=10,
            head="tile",
            loss="bce",
            metric="f1-weighted",
            lr=5e-5,
            weight_decay=0.0,
            schedule="warmup-cosine",
            batch_size=256,
            # official RandomCrop(300) in both the train and the test transform
            # (configs/dataset/*_transform/TreeSAT.yaml)
            splits={
                "train": dict(split="train", crop="random"),
                "val": dict(split="val", crop="random"),
                "test": dict(split="test", crop="random"),
            },
        ),
        lp=dict(
            paper=PaperValue(72.6, approximate=False, note=_TREESAT_PAPER),
            official_configs=(
                "configs/exp/TSAITS_AnySat_FT.yaml (+ freeze: True)",
                "configs/model/Classif.yaml",
                "configs/model/network/Fine_tuning.yaml",
                "configs/dataset/TreeSAT.yaml",
                "configs/model/loss/bce.yaml",
                "configs/model/val_metrics/metrics_mono.yaml",
                *_COMMON_CONFIGS,
            ),
            notes=(_LP_FROM_FT,),
        ),
        ft=dict(
            paper=PaperValue(75.1, approximate=False, note=_TREESAT_PAPER),
            official_configs=(
                "configs/exp/TSAITS_AnySat_FT.yaml",
                "configs/model/Classif.yaml",
                "configs/model/network/Fine_tuning.yaml",
                "configs/dataset/TreeSAT.yaml",
                "configs/model/loss/bce.yaml",
                "configs/model/val_metrics/metrics_mono.yaml",
                *_COMMON_CONFIGS,
            ),
        ),
    )
)

# PASTIS-HD classification: the crop classes present in the patch (18, multi-label); official scale 4 = 40 m.
_PASTIS_SPLITS = {
    "train": dict(split="train", max_dates="official"),
    "val": dict(split="val"),
    "test": dict(split="test"),
}
TASKS.update(
    _pair(
        dict(
            stem="pastis-hd-cls",
            dataset="pastis-hd",
            target="multilabel",
            num_classes=18,
            sensors=("spot", "s2", "s1"),
            patch_size=40,
            head="tile",
            loss="bce",
            metric="f1-macro",
            lr=5e-5,
            weight_decay=0.0,
            schedule="warmup-cosine",
            batch_size=4,
            splits=_PASTIS_SPLITS,
        ),
        lp=dict(
            paper=PaperValue(65.3),
            official_configs=(
                "configs/exp/Pastis_AnySat_FT.yaml (+ freeze: True)",
                "configs/model/Classif.yaml",
                "configs/dataset/Pastis.yaml",
                "configs/model/network/Fine_tuning.yaml",
                "configs/model/loss/bce.yaml",
                *_COMMON_CONFIGS,
            ),
            notes=(_LP_FROM_FT,),
        ),
        ft=dict(
            paper=PaperValue(72.9),
            official_configs=(
                "configs/exp/Pastis_AnySat_FT.yaml",
                "configs/model/Classif.yaml",
                "configs/dataset/Pastis.yaml",
                "configs/model/network/Fine_tuning.yaml",
                "configs/model/loss/bce.yaml",
                *_COMMON_CONFIGS,
            ),
        ),
    )
)

# PASTIS-HD semantic segmentation: 20 outputs (background, 18 crops, void); the dense head on S2 sub-patches.
_SEG_PAPER = "the figure shows one segmentation bar per dataset and does not say which protocol it is"
TASKS.update(
    _pair(
        dict(
            stem="pastis-hd-seg",
            dataset="pastis-hd",
            target="segmentation",
            num_classes=20,
            patch_size=40,
            head="dense",
            dense_sensor="s2",
            loss="ce-seg",
            metric="miou",
            ignore_classes=(19,),
            lr=5e-5,
            weight_decay=0.0,
            schedule="plateau",
            batch_size=4,
            splits=_PASTIS_SPLITS,
            paper=PaperValue(66.5, note=_SEG_PAPER),
        ),
        lp=dict(
            sensors=("s2",),
            official_configs=(
                "configs/exp/Pastis_AnySat_LP_SemSeg.yaml",
                "configs/model/SemSeg.yaml",
                "configs/model/network/Fine_tuning_SemSeg.yaml",
                "configs/model/loss/CrossEntropyWeighted.yaml",
                "configs/model/val_metrics/metrics_segsem.yaml",
                "configs/dataset/Pastis.yaml",
                *_COMMON_CONFIGS,
            ),
        ),
        ft=dict(
            sensors=("spot", "s2", "s1"),
            official_configs=(
                "configs/exp/Pastis_AnySat_FT_SemSeg.yaml",
                "configs/model/SemSeg.yaml",
                "configs/model/network/Fine_tuning_SemSeg.yaml",
                "configs/model/loss/CrossEntropyWeighted.yaml",
                "configs/model/val_metrics/metrics_segsem.yaml",
                "configs/dataset/Pastis.yaml",
                *_COMMON_CONFIGS,
            ),
        ),
    )
)

# FLAIR: 13 land-cover classes ("other" = codes 13..19 merged, left out of loss and mIoU as the last class).
_FLAIR_CONFIGS = (
    "configs/model/SemSeg.yaml",
    "configs/model/network/Fine_tuning_SemSeg_FLAIR.yaml",
    "configs/model/loss/CrossEntropyWeighted.yaml",
    "configs/model/val_metrics/metrics_segsem.yaml",
    "configs/dataset/FLAIR.yaml",
    "configs/dataset/train_transform/FLAIR.yaml",
    "configs/dataset/test_transform/Identity.yaml",
    *_COMMON_CONFIGS,
)
TASKS.update(
    _pair(
        dict(
            stem="flair-seg",
            dataset="flair",
            target="segmentation",
            num_classes=13,
            sensors=("aerial-flair", "s2"),
            patch_size=10,
            head="dense",
            dense_sensor="aerial-flair",
            pixels_per_subpatch=10,
            window=500,
            loss="ce-seg",
            metric="miou",
            ignore_classes=(12,),
            lr=5e-5,
            weight_decay=1e-2,
            schedule="plateau",
            batch_size=32,
            # official: train on random 500 px crops with 70 % of the S2 dates dropped; validation on the *test*
            # split (configs/dataset/FLAIR.yaml), val and test on the whole 512 px tiles (Identity test transform)
            splits={
                "train": dict(split="train", crop="random", temporal_dropout=0.7),
                "val": dict(split="test", crop="none"),
                "test": dict(split="test", crop="none"),
            },
            paper=PaperValue(55.6, note=_SEG_PAPER),
            notes=(
                "official: the validation split that selects the epoch is the test split (configs/dataset/"
                "FLAIR.yaml val_dataset split: test); kept to reproduce the number",
            ),
        ),
        lp=dict(
            official_configs=("configs/exp/FLAIR_AnySat_FT_SemSeg.yaml (+ freeze: True)", *_FLAIR_CONFIGS),
            notes=(
                _LP_FROM_FT,
                "official: the validation split that selects the epoch is the test split "
                "(configs/dataset/FLAIR.yaml val_dataset split: test); kept to reproduce the number",
            ),
        ),
        ft=dict(official_configs=("configs/exp/FLAIR_AnySat_FT_SemSeg.yaml", *_FLAIR_CONFIGS)),
    )
)

# PLANTED: 40 tree species (single label); official scale 3 = 30 m.
_PLANTED_CONFIGS = (
    "configs/model/Classif_reduce.yaml",
    "configs/dataset/Planted.yaml",
    "configs/model/network/Fine_tuning.yaml",
    "configs/model/loss/CrossEntropy.yaml",
    "configs/model/val_metrics/metrics_mono.yaml (multilabel: False)",
    *_COMMON_CONFIGS,
)
TASKS.update(
    _pair(
        dict(
            stem="planted",
            dataset="planted",
            target="label",
            num_classes=40,
            sensors=("s2", "s1", "l7", "alos", "modis"),
            patch_size=30,
            head="tile",
            loss="ce",
            metric="f1-macro",
            lr=5e-5,
            weight_decay=1e-4,
            schedule="plateau",
            batch_size=64,
            density_sampling=True,
            splits={
                "train": dict(split="train", temporal_dropout=0.3, pixel_masks=True),
                "val": dict(split="val", pixel_masks=True),
                "test": dict(split="test", pixel_masks=True),
            },
        ),
        lp=dict(
            paper=PaperValue(61.2),
            official_configs=("configs/exp/Planted_AnySat_FT.yaml (+ freeze: True)", *_PLANTED_CONFIGS),
            notes=(_LP_FROM_FT,),
        ),
        ft=dict(paper=PaperValue(61.6), official_configs=("configs/exp/Planted_AnySat_FT.yaml", *_PLANTED_CONFIGS)),
    )
)


def task_names() -> list[str]:
    return list(TASKS)


def get_task(name: str | TaskConfig) -> TaskConfig:
    """The preset ``name`` (a :class:`TaskConfig` passes through)."""
    if isinstance(name, TaskConfig):
        return name
    if name not in TASKS:
        import difflib

        close = difflib.get_close_matches(str(name), TASKS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"unknown task {name!r}{hint}; choose one of {', '.join(TASKS)}")
    return TASKS[name]
