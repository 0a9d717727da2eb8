"""``anysat-lite probe``: probes and baselines on one dataset, at several patch sizes and modality sets.

Encoders compared by the same code: the **pretrained** checkpoint, a **random-init**
encoder of the same architecture (fixed seed), and **raw pixels** (per-band mean/std of
each sensor; per-cell band statistics for segmentation).  For every setting (patch size x
modality set): a linear probe (OA, macro/weighted F1), kNN (OA), a multi-label linear
probe (micro F1); at the first patch size with all modalities also a dense segmentation
probe (mIoU) and, if ``probe.finetune_epochs > 0``, full fine-tuning (OA).  Train split
for fitting, test split for the numbers; seeds and split sizes are written to the JSON.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..config import Config, ModelConfig, config_to_dict
from ..data.datasets import build_dataset, collate
from ..data.normalization import NormStats
from ..model import AnySat
from ..sensors import SENSORS
from .features import select_sensors, encode_dataset, raw_pixel_features, targets_of
from .finetune import finetune
from .knn import knn_predict
from .linear import train_linear
from .metrics import f1_scores, mean_iou, multilabel_f1, overall_accuracy
from .segmentation import predict_segmentation, train_segmentation_probe

__all__ = ["run_probe", "format_table", "gain_summary", "plot_results"]

ENCODERS = ("pretrained", "random-init", "raw-pixels")


def _settings(cfg: Config, sensors: list[str]) -> list[tuple[int, tuple[str, ...]]]:
    out = [(p, tuple(sensors)) for p in cfg.probe.patch_sizes]
    p0 = cfg.probe.patch_sizes[0]
    for subset in cfg.probe.modality_sets:
        subset = tuple(sensors) if subset in (["all"], ("all",), "all") else tuple(subset)
        bad = [s for s in subset if s not in sensors]
        if bad:
            raise ValueError(f"probe.modality_sets: {bad} not in the dataset's sensors {sensors}")
        if (p0, subset) not in out:
            out.append((p0, subset))
    return out


def _raw_dense(dataset, sensor: str, grid: int) -> torch.Tensor:
    """Per-cell band mean/std of ``sensor`` on a ``grid x grid`` raster -> ``[N, grid, grid, 2C]``."""
    feats = []
    for i in range(len(dataset)):
        x = torch.as_tensor(dataset[i][sensor]).float()
        if SENSORS[sensor].is_series:
            x = x.mean(0)
        C, H, W = x.shape
        f = H // grid
        blocks = x.reshape(C, grid, f, grid, f)
        feats.append(torch.cat([blocks.mean((2, 4)), blocks.std((2, 4))]).permute(1, 2, 0))
    return torch.stack(feats)


def run_probe(cfg: Config, checkpoint: str | Path | None = None, out_dir: str | Path | None = None,
              progress: bool = True, device: str | None = None) -> dict:
    """Run every probe; returns the report dict and writes ``probe_results.{json,md,png}`` to ``out_dir``."""
    from ..train.checkpoint import load_encoder

    t0 = time.time()
    pc = cfg.probe
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() and cfg.train.device != "cpu" else "cpu"))
    bundle = build_dataset(cfg.data.datasets[0], cfg.data)
    stats: NormStats = bundle.stats
    encoders: dict = {}
    model_cfg = cfg.model
    if checkpoint is not None:
        enc, meta = load_encoder(checkpoint, dev)
        encoders["pretrained"] = enc
        model_cfg = ModelConfig(**{k: v for k, v in meta["model"].items() if k in ModelConfig.__dataclass_fields__})
        if bundle.name in meta.get("norm_stats", {}):
            stats = NormStats.from_dict(meta["norm_stats"][bundle.name])
    torch.manual_seed(pc.seed)
    encoders["random-init"] = AnySat(model_cfg, sensors=bundle.sensors).to(dev).eval()
    K = len(bundle.classes)
    y_tr, y_te = targets_of(bundle.train, "label"), targets_of(bundle.test, "label")
    ml_tr, ml_te = targets_of(bundle.train, "multilabel"), targets_of(bundle.test, "multilabel")
    results: list[dict] = []

    def add(encoder, P, mods, method, metric, value):
        results.append({"encoder": encoder, "patch_size": P, "modalities": "+".join(mods), "method": method,
                        "metric": metric, "value": round(float(value), 4)})

    settings = _settings(cfg, bundle.sensors)
    for P, mods in settings:
        for name in ENCODERS:
            if name == "raw-pixels":
                if P != settings[0][0] and mods == tuple(bundle.sensors):
                    continue  # raw pixels do not depend on the patch size
                f_tr, f_te = raw_pixel_features(bundle.train, mods), raw_pixel_features(bundle.test, mods)
            elif name in encoders:
                enc = encoders[name]
                f_tr = encode_dataset(enc, bundle.train, stats, P, mods, batch_size=pc.batch_size, device=dev,
                                      progress=progress)
                f_te = encode_dataset(enc, bundle.test, stats, P, mods, batch_size=pc.batch_size, device=dev,
                                      progress=progress)
            else:
                continue
            probe = train_linear(f_tr, y_tr, K, epochs=pc.linear_epochs, lr=pc.linear_lr, seed=pc.seed)
            with torch.no_grad():
                pred = probe(f_te).argmax(1)
            f1 = f1_scores(pred, y_te, K)
            add(name, P, mods, "linear", "OA", overall_accuracy(pred, y_te))
            add(name, P, mods, "linear", "F1-macro", f1["macro"])
            add(name, P, mods, "linear", "F1-weighted", f1["weighted"])
            add(name, P, mods, "kNN", "OA", overall_accuracy(knn_predict(f_tr, y_tr, f_te, K, pc.knn_k), y_te))
            mprobe = train_linear(f_tr, ml_tr, K, multilabel=True, epochs=pc.linear_epochs, lr=pc.linear_lr,
                                  seed=pc.seed)
            with torch.no_grad():
                mpred = mprobe(f_te) > 0
            add(name, P, mods, "multi-label", "F1-micro", multilabel_f1(mpred, ml_te)["micro"])

    # Dense probe at the first setting, on the first sensor of the set (the VHR one if present).
    P0, mods0 = settings[0]
    if "segmentation" in bundle.train[0]:
        dense_sensor = next((s for s in mods0 if not SENSORS[s].is_series), mods0[0])
        seg_tr, seg_te = targets_of(bundle.train, "segmentation"), targets_of(bundle.test, "segmentation")
        size = tuple(seg_tr.shape[-2:])
        for name in ENCODERS:
            if name == "raw-pixels":
                grid = size[0]
                d_tr, d_te = _raw_dense(bundle.train, dense_sensor, grid), _raw_dense(bundle.test, dense_sensor, grid)
            elif name in encoders:
                kw = dict(output="dense", output_modality=dense_sensor, batch_size=pc.batch_size, device=dev,
                          progress=progress)
                d_tr = encode_dataset(encoders[name], bundle.train, stats, P0, mods0, **kw)
                d_te = encode_dataset(encoders[name], bundle.test, stats, P0, mods0, **kw)
            else:
                continue
            sp = train_segmentation_probe(d_tr, seg_tr, K, epochs=pc.seg_epochs, lr=pc.linear_lr, seed=pc.seed)
            add(name, P0, mods0, f"segmentation ({dense_sensor})", "mIoU",
                mean_iou(predict_segmentation(sp, d_te, size), seg_te, K))
    if pc.finetune_epochs > 0:
        for name in ("pretrained", "random-init"):
            if name in encoders:
                ft = finetune(encoders[name], bundle.train, stats, P0, mods0, K, epochs=pc.finetune_epochs,
                              lr=pc.finetune_lr, seed=pc.seed, device=dev)
                preds = []
                with torch.no_grad():
                    for b in DataLoader(bundle.test, batch_size=pc.batch_size, collate_fn=collate):
                        x = {k: v.to(dev) for k, v in stats.apply(select_sensors(b, mods0)).items()}
                        preds.append(ft(x).argmax(1).cpu())
                add(name, P0, mods0, "fine-tune", "OA", overall_accuracy(torch.cat(preds), y_te))

    report = {
        "dataset": bundle.name, "classes": list(bundle.classes), "checkpoint": str(checkpoint) if checkpoint else None,
        "splits": {"train": len(bundle.train), "val": len(bundle.val), "test": len(bundle.test)},
        "seeds": {"probe": pc.seed, "data": cfg.data.seed, "random_init": pc.seed},
        "probe_config": config_to_dict(cfg)["probe"], "results": results, "seconds": round(time.time() - t0, 1),
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "probe_results.json").write_text(json.dumps(report, indent=1))
        (out / "probe_results.md").write_text(format_table(report) + "\n")
        plot_results(report, out / "probe_results.png")
    return report


def gain_summary(report: dict, a: str = "pretrained", b: str = "random-init") -> list[str]:
    """One line per probe: mean of ``a`` and ``b`` over the settings where both were measured, and the gain."""
    lines = []
    for method, metric in (("linear", "OA"), ("kNN", "OA"), ("multi-label", "F1-micro")):
        va = {(r["patch_size"], r["modalities"]): r["value"] for r in report["results"]
              if r["encoder"] == a and r["method"] == method and r["metric"] == metric}
        vb = {(r["patch_size"], r["modalities"]): r["value"] for r in report["results"]
              if r["encoder"] == b and r["method"] == method and r["metric"] == metric}
        both = sorted(set(va) & set(vb))
        if both:
            ma, mb = (100 * sum(v[k] for k in both) / len(both) for v in (va, vb))
            wins = sum(va[k] > vb[k] for k in both)
            lines.append(f"{method} {metric}: {a} {ma:.1f} vs {b} {mb:.1f} ({ma - mb:+.1f} points, mean of "
                         f"{len(both)} settings; better in {wins}/{len(both)})")
    return lines


def format_table(report: dict) -> str:
    """Markdown table: one row per (patch size, modalities, method, metric), one column per encoder."""
    rows: dict[tuple, dict] = {}
    for r in report["results"]:
        key = (r["patch_size"], r["modalities"], r["method"], r["metric"])
        rows.setdefault(key, {})[r["encoder"]] = r["value"]
    present = [e for e in ENCODERS if any(e in v for v in rows.values())]
    lines = ["| patch (m) | modalities | probe | metric | " + " | ".join(present) + " |",
             "|---:|---|---|---|" + "---:|" * len(present)]
    for (P, mods, method, metric), vals in rows.items():
        cells = [f"{100 * vals[e]:.1f}" if e in vals else "" for e in present]
        lines.append(f"| {P} | {mods} | {method} | {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_results(report: dict, path: str | Path):
    """Grouped bar plot of the headline metric of each probe, per encoder."""
    import matplotlib.pyplot as plt
    import numpy as np

    head = {"linear": "OA", "kNN": "OA", "multi-label": "F1-micro", "fine-tune": "OA"}
    rows = [r for r in report["results"] if head.get(r["method"], "mIoU") == r["metric"]]
    keys = list(dict.fromkeys((r["patch_size"], r["modalities"], r["method"]) for r in rows))
    encs = [e for e in ENCODERS if any(r["encoder"] == e for r in rows)]
    fig, ax = plt.subplots(figsize=(min(16, max(8, 0.45 * len(keys) * len(encs))), 4.2))
    width = 0.8 / max(len(encs), 1)
    for j, e in enumerate(encs):
        vals = [next((100 * r["value"] for r in rows if (r["patch_size"], r["modalities"], r["method"]) == k
                      and r["encoder"] == e), np.nan) for k in keys]
        ax.bar(np.arange(len(keys)) + j * width, vals, width, label=e)
    ax.set_xticks(np.arange(len(keys)) + width * (len(encs) - 1) / 2)
    ax.set_xticklabels([f"{m}\n{mods}\nP={p}" for p, mods, m in keys], fontsize=7, rotation=30, ha="right")
    ax.set_ylabel("score (%)")
    ax.set_title(f"Probes on {report['dataset']} (test split)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
