"""``anysat-lite probe``: probes and baselines on one dataset, at several patch sizes and modality sets.

Encoders compared by the same code:

* **pretrained** — the exported EMA *target* encoder (what the official code evaluates);
* **online** — the context encoder of the same run (``<checkpoint>-online``, when present and
  ``probe.online`` is on), to show what the EMA adds (tile probes only);
* **random-init** — the same architecture with random weights (fixed seed);
* **raw-pixels** — per-band mean/std of each sensor over space and valid dates (per-cell
  statistics for segmentation).

For every setting (patch size x modality set): a linear probe (OA, macro/weighted F1), kNN
(OA) and a multi-label linear probe (micro F1), with ``probe.late_fusion`` also on the sensors'
own tile tokens side by side (:func:`_tile_probes`); at the first setting also a dense
segmentation probe (mIoU) and, if ``probe.finetune_epochs > 0``, full fine-tuning (OA).
Probes are fitted on the train split and scored on the test split (``probe.split=val``: on the
validation split, to choose settings without looking at the test tiles); every number comes with
a 95 % bootstrap interval over the scored tiles (:func:`~.metrics.bootstrap_interval`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from ..config import Config, ModelConfig, check_config, config_to_dict, validate_probe
from ..data.datasets import TARGET_KEYS, DatasetBundle, build_dataset, collate
from ..data.normalization import NormStats
from ..errors import UserError
from ..files import atomic_write, sha256_of, write_text_atomic
from ..model import AnySat
from ..sensors import SENSORS
from ..train.distributed import device_for
from ..train.rundir import PROBE_REPORT_FILES
from .features import encode_dataset, raw_pixel_dense_features, raw_pixel_features, select_sensors, targets_of
from .finetune import finetune
from .knn import knn_predict
from .linear import train_linear
from .metrics import (
    accuracy_from_confusion,
    bootstrap_interval,
    f1_from_confusion,
    micro_f1_from_counts,
    miou_from_confusion,
    multilabel_item_counts,
    overall_accuracy,
    per_item_confusion,
)
from .segmentation import VOID, predict_segmentation, train_segmentation_probe

__all__ = [
    "run_probe",
    "format_table",
    "gain_summary",
    "plot_results",
    "machine_description",
    "ENCODERS",
    "REPORT_FILES",
]

ENCODERS = ("pretrained", "online", "random-init", "raw-pixels")


# --- 1. what to probe -------------------------------------------------------------------
def _settings(cfg: Config, sensors: list[str]) -> list[tuple[int, tuple[str, ...]]]:
    """``(patch size, modalities)`` pairs: every patch size with all sensors, then each modality set."""
    out = [(p, tuple(sensors)) for p in cfg.probe.patch_sizes]
    p0 = cfg.probe.patch_sizes[0]
    for subset in cfg.probe.modality_sets:
        subset = tuple(sensors) if subset in (["all"], ("all",), "all") else tuple(subset)
        bad = [s for s in subset if s not in sensors]
        if bad:
            raise UserError(
                f"probe.modality_sets: {bad} not in the dataset's sensors {sensors}; probe subsets of those, "
                f'e.g. --set "probe.modality_sets=[[{sensors[0]}]]" (or [[all]] for all sensors only)'
            )
        if (p0, subset) not in out:
            out.append((p0, subset))
    return out


def _check_sensors(checkpoint, has: list[str], bundle: DatasetBundle, spec) -> None:
    """Refuse, before any encoding, a dataset with sensors the encoder has no projector for: the probes feed the
    encoder every sensor of the dataset.  ``spec`` is the dataset's ``data.datasets`` entry (for the fix)."""
    missing = [s for s in bundle.sensors if s not in has]
    if not missing:
        return
    common = [s for s in bundle.sensors if s in has]
    if common:
        entry = (
            f"name: {spec.name}" + (f", path: {spec.path}" if spec.path else "") + f", sensors: [{', '.join(common)}]"
        )
        sets = ", ".join(["[all]", *(f"[{s}]" for s in common)])
        fix = f'probe the sensors it has: --set "data.datasets=[{{{entry}}}]" --set "probe.modality_sets=[{sets}]", or '
    else:
        fix = ""
    raise UserError(
        f"--checkpoint {checkpoint}: the encoder has no projector for {', '.join(missing)} of dataset {bundle.name!r} "
        f"(expected every sensor of the dataset: {', '.join(bundle.sensors)}; the encoder has {', '.join(has)}); "
        f"{fix}give a checkpoint pretrained with {', '.join(missing)}"
    )


def _load_encoders(cfg: Config, checkpoint, bundle: DatasetBundle, device) -> tuple[dict, NormStats, Path, str]:
    """The encoders to compare, the normalisation statistics they were trained with, and the pretrained encoder's
    path (without suffix for an export: ``runs/x/encoder``) and the SHA-256 of its file (``None`` for both
    without a checkpoint)."""
    from ..train.checkpoint import TRAINING_SUFFIXES, load_encoder, resolve_encoder_path

    encoders, stats, model_cfg, read = {}, bundle.stats, cfg.model, None
    if checkpoint is not None:
        checkpoint = resolve_encoder_path(checkpoint)  # runs/x, runs/x/encoder.safetensors -> runs/x/encoder
        file = _encoder_file(checkpoint)
        read = sha256_of(file) if file.is_file() else None  # before the load (a missing file: load_encoder says)
        enc, meta = load_encoder(checkpoint, device)
        if sha256_of(file) != read:
            raise UserError(f"{_encoder_file(checkpoint)} changed while it was read (a run writing it?); probe again")
        _check_sensors(checkpoint, list(enc.sensors), bundle, cfg.data.datasets[0])
        encoders["pretrained"] = enc
        model_cfg = ModelConfig(**{k: v for k, v in meta["model"].items() if k in ModelConfig.__dataclass_fields__})
        if bundle.name in meta.get("norm_stats", {}):
            stats = NormStats.from_dict(meta["norm_stats"][bundle.name])
        online = checkpoint.with_name(checkpoint.name + "-online")  # exported beside the target (not in a .pt)
        exported = checkpoint.suffix not in TRAINING_SUFFIXES
        if cfg.probe.online and exported and Path(f"{online}.safetensors").exists():
            encoders["online"] = load_encoder(online, device)[0]
    torch.manual_seed(cfg.probe.seed)
    encoders["random-init"] = AnySat(model_cfg, sensors=bundle.sensors).to(device).eval()
    return encoders, stats, checkpoint, read


# --- 2. one probe family per function ----------------------------------------------------
class _Report:
    """Collects result rows; each row carries its value and bootstrap interval."""

    def __init__(self, n_boot: int, seed: int):
        self.rows: list[dict] = []
        self.n_boot, self.seed = n_boot, seed

    def add(self, encoder, P, mods, method, metric, fn, pred, target, counts=None):
        row = {
            "encoder": encoder,
            "patch_size": P,
            "modalities": mods if isinstance(mods, str) else "+".join(mods),
            "method": method,
            "metric": metric,
            "value": round(float(fn(pred, target)), 4),
        }
        if self.n_boot > 0:
            lo, hi = bootstrap_interval(fn, pred, target, self.n_boot, seed=self.seed, counts=counts)
            row["ci95"] = [round(lo, 4), round(hi, 4)]
        self.rows.append(row)

    def add_counts(self, encoder, P, mods, method, metric, per_item: Tensor, of_sum) -> None:
        """A row for a metric of summed per-tile counts (``per_item [N, ...]``, ``of_sum(counts) -> float``):
        its value on all test tiles and its interval from resampled tiles (:func:`bootstrap_interval`)."""
        self.add(encoder, P, mods, method, metric, lambda c, _: of_sum(c.sum(0)), per_item, None, (per_item, of_sum))


def _classification_probes(report: _Report, name, P, mods, f_tr, f_te, targets, K, pc) -> None:
    """Linear (single-label), kNN and multi-label linear probes on tile features.

    ``targets`` maps ``"label"`` and ``"multilabel"`` to their ``(train, test)`` tensors, or to
    ``None`` for a dataset without that target (PLANTED has no multi-label target, PASTIS-HD no
    single label): the probes of a missing target are left out.  The bootstrap intervals resample
    per-tile counts (confusion matrices, multi-label TP/FP/FN): the same intervals as recomputing
    each metric from the resampled predictions, faster.
    """
    if targets["label"] is not None:
        y_tr, y_te = targets["label"]
        probe = train_linear(f_tr, y_tr, K, l2=pc.linear_l2, max_iter=pc.linear_iters)
        with torch.no_grad():
            pred = probe(f_te).argmax(1)
        cm = per_item_confusion(pred, y_te, K)
        report.add_counts(name, P, mods, "linear", "OA", cm, accuracy_from_confusion)
        report.add_counts(name, P, mods, "linear", "F1-macro", cm, lambda c: f1_from_confusion(c)["macro"])
        report.add_counts(name, P, mods, "linear", "F1-weighted", cm, lambda c: f1_from_confusion(c)["weighted"])
        knn = knn_predict(f_tr, y_tr, f_te, K, pc.knn_k)
        report.add_counts(name, P, mods, "kNN", "OA", per_item_confusion(knn, y_te, K), accuracy_from_confusion)
    if targets["multilabel"] is not None:
        ml_tr, ml_te = targets["multilabel"]
        mprobe = train_linear(f_tr, ml_tr, ml_tr.shape[1], multilabel=True, l2=pc.linear_l2, max_iter=pc.linear_iters)
        with torch.no_grad():
            mpred = mprobe(f_te) > 0
        report.add_counts(
            name, P, mods, "multi-label", "F1-micro", multilabel_item_counts(mpred, ml_te), micro_f1_from_counts
        )


def _dense_sensor(mods) -> str:
    """The sensor of the dense probe: the first image sensor of ``mods`` (the VHR one), else the first."""
    return next((s for s in mods if not SENSORS[s].is_series), mods[0])


LATE_FUSION = " (late fusion)"  # suffix of the late-fusion rows' ``modalities`` label


def late_fusion_label(mods) -> str:
    """The ``modalities`` label of a late-fusion row: ``"aerial+s2+s1-asc (late fusion)"``."""
    return "+".join(mods) + LATE_FUSION


def _tile_probes(report: _Report, settings, encoders, bundle, stats, targets, K, pc, device, progress, seg=None):
    """The classification probes of every encoder at every setting (raw pixels: once per modality set).

    With ``seg = (report, train masks, test masks)``, the dense probe of ``settings[0]`` runs too, on
    dense features from the same pass over the data as that setting's tile features (a dataset
    with segmentation masks only, FLAIR or S2NAIP-Urban, gets the dense probe alone).

    With ``probe.late_fusion``, every multi-sensor setting gets a second set of rows: the same probes
    on the concatenation ``[N, M*D]`` of the tile tokens the encoder gives each sensor *alone*
    (late fusion), beside the joint encoder's one fused tile token ``[N, D]`` (early fusion).  Raw
    pixels are per-sensor statistics side by side in both, so they have no late-fusion row.
    """
    alone: dict[tuple, tuple[Tensor, Tensor]] = {}  # (encoder, P, sensor) -> tile features of one sensor
    tile = any(t is not None for t in targets.values())  # else only the dense probe runs

    def encode(name, P, mods, **kw):
        kw = dict(batch_size=pc.batch_size, device=device, progress=progress) | kw
        f = tuple(encode_dataset(encoders[name], part, stats, P, mods, **kw) for part in (bundle.train, bundle.test))
        if pc.late_fusion and len(mods) == 1 and "output" not in kw:  # kept for the late-fusion rows
            alone[name, P, mods[0]] = f
        return f

    for i, (P, mods) in enumerate(settings):
        for name in ENCODERS:
            dense = seg is not None and i == 0 and name != "online"  # online: compared on tile probes only
            if not (tile or dense):
                continue
            if name == "raw-pixels":
                if P != settings[0][0] and mods == tuple(bundle.sensors):
                    continue  # raw pixels do not depend on the patch size
                if tile:
                    f_tr, f_te = raw_pixel_features(bundle.train, mods), raw_pixel_features(bundle.test, mods)
                if dense:
                    size, sensor = tuple(seg[1].shape[-2:]), _dense_sensor(mods)
                    d = (raw_pixel_dense_features(part, sensor, size) for part in (bundle.train, bundle.test))
                    _segmentation_probe(seg, name, P, mods, *d, K, pc)
            elif name in encoders:
                kw = dict(output=("tile", "dense"), output_modality=_dense_sensor(mods)) if dense else {}
                f_tr, f_te = encode(name, P, mods, **kw)
                if dense:
                    _segmentation_probe(seg, name, P, mods, f_tr["dense"], f_te["dense"], K, pc)
                    f_tr, f_te = f_tr["tile"], f_te["tile"]
            else:
                continue
            if tile:
                _classification_probes(report, name, P, mods, f_tr, f_te, targets, K, pc)
    for P, mods in settings if pc.late_fusion and tile else ():
        if len(mods) < 2:
            continue
        for name in (e for e in ENCODERS if e in encoders):
            parts = [alone.get((name, P, m)) or encode(name, P, (m,)) for m in mods]
            f_tr, f_te = (torch.cat([p[i] for p in parts], dim=1) for i in (0, 1))
            _classification_probes(report, name, P, late_fusion_label(mods), f_tr, f_te, targets, K, pc)


def _miou(confusion: Tensor) -> float:
    return miou_from_confusion(confusion)["miou"]


def _segmentation_probe(seg, name, P, mods, d_tr: Tensor, d_te: Tensor, K, pc) -> None:
    """Dense probe (mIoU) on per-cell features ``[N, Hs, Ws, F]``; ``seg = (report, train masks, test masks)``."""
    report, seg_tr, seg_te = seg
    size = tuple(seg_tr.shape[-2:])
    sp = train_segmentation_probe(d_tr, seg_tr, K, epochs=pc.seg_epochs, lr=pc.seg_lr, seed=pc.seed)
    pred = predict_segmentation(sp, d_te, size)
    method = f"segmentation ({_dense_sensor(mods)})"
    report.add_counts(name, P, mods, method, "mIoU", per_item_confusion(pred, seg_te, K, VOID), _miou)


def _finetune_probes(report: _Report, setting, encoders, bundle, stats, y_test, K, pc, device) -> None:
    """Full fine-tuning (OA) of the pretrained and the random-init encoders at ``setting``."""
    P, mods = setting
    for name in ("pretrained", "random-init"):
        if name not in encoders:
            continue
        ft = finetune(
            encoders[name],
            bundle.train,
            stats,
            P,
            mods,
            K,
            epochs=pc.finetune_epochs,
            lr=pc.finetune_lr,
            batch_size=pc.batch_size,
            seed=pc.seed,
            device=device,
        )
        preds = []
        with torch.no_grad():
            for b in DataLoader(bundle.test, batch_size=pc.batch_size, collate_fn=collate):
                x = {k: v.to(device) for k, v in stats.apply(select_sensors(b, mods)).items()}
                preds.append(ft(x).argmax(1).cpu())
        report.add(name, P, mods, "fine-tune", "OA", overall_accuracy, torch.cat(preds), y_test)


REPORT_FILES = PROBE_REPORT_FILES  # what run_probe writes to out_dir


def _encoder_file(checkpoint: Path) -> Path:
    """The file an encoder was read from: a training checkpoint itself, or an export's ``.safetensors``."""
    from ..train.checkpoint import TRAINING_SUFFIXES

    return checkpoint if checkpoint.suffix in TRAINING_SUFFIXES else Path(f"{checkpoint}.safetensors")


def _check_encoder_unchanged(result: dict) -> None:
    """Refuse to write results of an encoder whose file changed or went while the probes ran (a pretraining of
    the same folder: ``--resume`` writes a new encoder, ``--force`` deletes it)."""
    if not result.get("checkpoint"):
        return
    path = _encoder_file(Path(result["checkpoint"]))
    now = sha256_of(path) if path.is_file() else None
    if now != result["checkpoint_sha256"]:
        what = "was replaced" if now else "was removed"
        raise UserError(
            f"{path} {what} while the probes ran (a pretraining of that folder?), expected the encoder they "
            "read; its results were not written. Probe again once that run is done"
        )


def _write_report(result: dict, out_dir: str | Path) -> None:
    """``probe_results.png`` (the headline bars), ``.md`` (the table) and ``.json`` (everything), in that order:
    the slow figure first and the JSON, which says a folder holds results, last; each file is atomic."""
    out = Path(out_dir)  # atomic_write creates the folder
    json_file, md_file, png_file = (out / name for name in REPORT_FILES)
    atomic_write(png_file, lambda tmp: plot_results(result, tmp))
    write_text_atomic(md_file, format_table(result) + "\n")
    table_sha256 = sha256_of(md_file)  # tells the table as written from one edited by hand
    write_text_atomic(json_file, json.dumps(result | {"table_sha256": table_sha256}, indent=1))


def machine_description(threads: int | None = None, device: torch.device | str = "cpu") -> str:
    """What a run's digits depend on beyond the code and seeds: CPU, torch build, kernels, threads (and GPU).

    Float rounding differs between CPUs and between the kernels torch picks for them
    (``torch.backends.cpu.get_cpu_capability()``), and over hundreds of training steps it moves
    probe scores by points, so a report records where it was computed.  ``threads`` defaults to
    ``torch.get_num_threads()``.
    """
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    parts = [
        f"{cpu} ({platform.machine()})",
        f"torch {torch.__version__}",
        f"ATen CPU capability {torch.backends.cpu.get_cpu_capability()}",
        f"{threads or torch.get_num_threads()} threads",
    ]
    if torch.device(device).type == "cuda":
        parts.append(torch.cuda.get_device_name(torch.device(device)))
    return ", ".join(parts)


def _tasks(bundle: DatasetBundle, pc) -> set[str]:
    """The targets the probes can use: those the train split's items carry (``label``,
    ``multilabel``, ``segmentation``); a dataset with none of them, or fine-tuning without
    ``label``, is refused before any encoding."""
    tasks = {t for t in TARGET_KEYS if t in bundle.train[0]}
    if not tasks:
        raise UserError(
            f"dataset {bundle.name!r} has no target to probe (expected one of {list(TARGET_KEYS)} in its items, got "
            f"none); give its tiles labels (a rasters manifest: a 'label' column), or evaluate it with its official "
            f"task: anysat-lite probe --official ... --task NAME"
        )
    if pc.finetune_epochs > 0 and "label" not in tasks:
        raise UserError(
            f"probe.finetune_epochs={pc.finetune_epochs} fine-tunes on tile labels, and dataset {bundle.name!r} has "
            f"none (its targets: {sorted(tasks)}); set probe.finetune_epochs=0"
        )
    return tasks


# --- 3. the whole run --------------------------------------------------------------------
def run_probe(
    cfg: Config,
    checkpoint: str | Path | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    device: str | None = None,
) -> dict:
    """Run every probe; returns the report dict and writes ``probe_results.{json,md,png}`` to ``out_dir``.

    ``checkpoint`` is an exported encoder (path without suffix, e.g. ``runs/cpu-demo/encoder``);
    without it only the baselines are measured.
    """
    t0 = time.time()
    validate_probe(check_config(cfg, "run_probe"))
    pc = cfg.probe
    dev = torch.device(device or device_for(cfg.train.device))
    bundle = build_dataset(cfg.data.datasets[0], cfg.data)
    splits = {
        name: len(part)
        for name, part in (("train", bundle.train), ("val", bundle.val), ("test", bundle.test))
        if part is not None
    }
    if pc.split not in splits:
        why = f" (reading it: {bundle.absent[pc.split]})" if pc.split in bundle.absent else ""
        raise UserError(
            f"dataset {bundle.name!r} has no {pc.split} split to probe on{why}; add {pc.split} tiles to it (for a "
            f"rasters manifest: rows with split '{pc.split}')"
        )
    bundle = dataclasses.replace(bundle, test=getattr(bundle, pc.split))  # below, "test" = the scored split
    encoders, stats, checkpoint, encoder_sha256 = _load_encoders(cfg, checkpoint, bundle, dev)
    K = len(bundle.classes)
    tasks = _tasks(bundle, pc)
    targets = {
        t: (targets_of(bundle.train, t), targets_of(bundle.test, t)) if t in tasks else None
        for t in ("label", "multilabel")
    }
    report = _Report(pc.bootstrap, pc.seed)
    settings = _settings(cfg, bundle.sensors)

    seg = None
    if "segmentation" in tasks:
        seg = (_Report(pc.bootstrap, pc.seed), *(targets_of(p, "segmentation") for p in (bundle.train, bundle.test)))
    _tile_probes(report, settings, encoders, bundle, stats, targets, K, pc, dev, progress, seg)
    report.rows += seg[0].rows if seg is not None else []  # the segmentation rows after the tile rows
    if pc.finetune_epochs > 0:
        _finetune_probes(report, settings[0], encoders, bundle, stats, targets["label"][1], K, pc, dev)

    result = {
        "dataset": bundle.name,
        "classes": list(bundle.classes),
        "checkpoint": os.path.abspath(checkpoint) if checkpoint else None,
        "checkpoint_sha256": encoder_sha256,
        "encoders": [e for e in ENCODERS if e == "raw-pixels" or e in encoders],
        "splits": splits,
        "scored_on": pc.split,
        "seeds": {"probe": pc.seed, "data": cfg.data.seed, "random_init": pc.seed, "bootstrap": pc.seed},
        "bootstrap": {"resamples": pc.bootstrap, "level": 0.95, "over": f"{pc.split} tiles"},
        "probe_config": config_to_dict(cfg)["probe"],
        "results": report.rows,
        "seconds": round(time.time() - t0, 1),
        "machine": machine_description(device=dev),
    }
    if out_dir is not None:
        _check_encoder_unchanged(result)
        _write_report(result, out_dir)
    return result


# --- 4. reports --------------------------------------------------------------------------
HEADLINE = (("linear", "OA"), ("kNN", "OA"), ("multi-label", "F1-micro"))


def scored_split(report: dict) -> tuple[str, int]:
    """The split a report's probes were scored on (``probe.split``) and its number of tiles."""
    name = report.get("scored_on", "test")
    return name, report["splits"][name]


def gain_summary(report: dict, a: str = "pretrained", b: str = "random-init") -> list[str]:
    """One line per probe: mean of ``a`` and ``b`` over the settings where both were measured, and the gain."""
    lines = []
    for method, metric in HEADLINE:
        va = {
            (r["patch_size"], r["modalities"]): r["value"]
            for r in report["results"]
            if r["encoder"] == a and r["method"] == method and r["metric"] == metric
        }
        vb = {
            (r["patch_size"], r["modalities"]): r["value"]
            for r in report["results"]
            if r["encoder"] == b and r["method"] == method and r["metric"] == metric
        }
        both = sorted(set(va) & set(vb))
        if both:
            ma, mb = (100 * sum(v[k] for k in both) / len(both) for v in (va, vb))
            wins = sum(va[k] > vb[k] for k in both)
            lines.append(
                f"{method} {metric}: {a} {ma:.1f} vs {b} {mb:.1f} ({ma - mb:+.1f} points, mean of "
                f"{len(both)} settings; better in {wins}/{len(both)})"
            )
    return lines


def _cell(row: dict | None) -> str:
    if row is None:
        return ""
    text = f"{100 * row['value']:.1f}"
    if "ci95" in row:
        text += f" [{100 * row['ci95'][0]:.1f}, {100 * row['ci95'][1]:.1f}]"
    return text


def format_table(report: dict) -> str:
    """Markdown table: one row per (patch size, modalities, method, metric), one column per encoder.

    Cells read ``value [low, high]``: the score on the scored split (%) and its 95 % bootstrap interval.
    """
    rows: dict[tuple, dict] = {}
    for r in report["results"]:
        rows.setdefault((r["patch_size"], r["modalities"], r["method"], r["metric"]), {})[r["encoder"]] = r
    present = [e for e in ENCODERS if any(e in v for v in rows.values())]
    lines = [
        "| patch (m) | modalities | probe | metric | " + " | ".join(present) + " |",
        "|---:|---|---|---|" + "---:|" * len(present),
    ]
    for (P, mods, method, metric), vals in rows.items():
        lines.append(
            f"| {P} | {mods} | {method} | {metric} | " + " | ".join(_cell(vals.get(e)) for e in present) + " |"
        )
    return "\n".join(lines)


def plot_results(report: dict, path: str | Path):
    """Grouped bar plot of the headline metric of each probe, per encoder, with 95 % bootstrap intervals."""
    import matplotlib.pyplot as plt
    import numpy as np

    head = {"linear": "OA", "kNN": "OA", "multi-label": "F1-micro", "fine-tune": "OA"}
    rows = [r for r in report["results"] if head.get(r["method"], "mIoU") == r["metric"]]
    keys = list(dict.fromkeys((r["patch_size"], r["modalities"], r["method"]) for r in rows))
    encs = [e for e in ENCODERS if any(r["encoder"] == e for r in rows)]
    fig, ax = plt.subplots(figsize=(min(18, max(8, 0.4 * len(keys) * len(encs))), 5.0), layout="constrained")
    width = 0.8 / max(len(encs), 1)
    for j, e in enumerate(encs):
        found = [
            next((r for r in rows if (r["patch_size"], r["modalities"], r["method"]) == k and r["encoder"] == e), None)
            for k in keys
        ]
        vals = np.array([100 * r["value"] if r else np.nan for r in found])
        err = np.array(
            [
                [100 * (r["value"] - r["ci95"][0]), 100 * (r["ci95"][1] - r["value"])] if r and "ci95" in r else [0, 0]
                for r in found
            ]
        ).T
        ax.bar(np.arange(len(keys)) + j * width, vals, width, yerr=err, capsize=2, label=e)
    ax.set_xticks(np.arange(len(keys)) + width * (len(encs) - 1) / 2)
    ax.set_xticklabels([f"{m}\n{mods}\nP={p} m" for p, mods, m in keys], fontsize=8, rotation=30, ha="right")
    split, n = scored_split(report)
    ax.set_ylabel(f"score on the {split} split (%)")
    ax.set_title(f"Probes on {report['dataset']}: {n} {split} tiles, bars = 95 % bootstrap intervals")
    ax.legend(title="encoder", fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
