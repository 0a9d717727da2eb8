"""Galileo-style end to end: a few pretraining steps and a probe call on the committed real TreeSatAI-TS files."""

import json

import pytest
import torch
from conftest import TREESAT


def _official_layout(root, stem="Abies_alba_1_1005_WEFL_NLF"):
    """The committed real tile, linked into TreeSatAI-TS's published layout (one tile in every split)."""
    for folder, suffix in (("aerial", ".tif"), ("sentinel", ".h5"), ("s1-asc", ".pth")):
        (root / folder).mkdir(parents=True)
        (root / folder / f"{stem}{suffix}").symlink_to(TREESAT / f"{stem}{suffix}")
    for split in ("train", "val", "test"):
        (root / f"{split}_filenames.lst").write_text(f"{stem}.tif\n")
    (root / "labels").mkdir()
    (root / "labels" / "TreeSatBA_v9_60m_multi_labels.json").write_text(json.dumps({f"{stem}.tif": [["Abies", 1.0]]}))
    return root


@pytest.mark.slow
def test_pretrain_then_probe_on_the_real_treesatai_tile(tmp_path):
    from anysat_lite.config import get_config
    from anysat_lite.probe import run_probe
    from anysat_lite.train import pretrain

    out, data = tmp_path / "run", _official_layout(tmp_path / "TreeSatAI-TS")
    cfg = get_config(
        "cpu-demo",
        [
            f"data.datasets=[{{name: treesatai-ts, path: {data}, patch_sizes: [20], max_dates: 6}}]",
            "train.steps=3",
            "train.batch_size=2",
            "train.warmup_steps=1",
            "train.log_every=1",
            "jepa.monitor_every=1",
            f"train.out_dir={out}",
            "probe.modality_sets=[[all], [s2]]",
            "probe.seg_epochs=1",
            "probe.bootstrap=10",
            "probe.online=false",
        ],
    )
    summary = pretrain(cfg, progress=False)
    assert summary["steps"] == 3 and summary["final"]["step"] == 2
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2] and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    assert rows[0]["contrastive_loss"] > 0  # aerial + s2 + s1-asc: MIL-NCE is active
    report = run_probe(cfg, checkpoint=out / "encoder", out_dir=out, progress=False)
    methods = {(r["encoder"], r["modalities"], r["method"]) for r in report["results"]}
    assert ("pretrained", "aerial+s2+s1-asc", "linear") in methods and ("raw-pixels", "s2", "kNN") in methods
    assert all(r["value"] == r["value"] for r in report["results"])  # no NaN from a one-tile split
    assert (out / "probe_results.md").exists() and report["dataset"] == "treesatai-ts"
