"""The official evaluation protocol: checkpoint formats, heads, loss, schedule, selection, streaming, command line."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from anysat_lite.cli import main
from anysat_lite.config import model_config
from anysat_lite.data.contract import random_sample
from anysat_lite.data.pastis import PastisHDDataset
from anysat_lite.data.planted import PlantedDataset
from anysat_lite.model import AnySat
from anysat_lite.model.official import (
    OfficialCheckpointError,
    convert_official_state_dict,
    load_official,
    official_encoder_state,
    to_official_state_dict,
)
from anysat_lite.probe.heads import DenseHead, TaskModel, TileHead, window_offsets
from anysat_lite.probe.protocol import (
    EpochSelection,
    Scorer,
    build_task_model,
    collate_padded,
    finetuning_encoder,
    split_norm_stats,
    task_loss,
    warmup_cosine_lr,
)
from anysat_lite.probe.tasks import get_task

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def nano():
    torch.manual_seed(0)
    return AnySat(model_config("nano")).eval()


@pytest.fixture(scope="module")
def tiny_official(tmp_path_factory, nano):
    path = tmp_path_factory.mktemp("official") / "AnySat-d64.pth"
    torch.save({"state_dict": to_official_state_dict(nano)}, path)
    return path


# --- official checkpoint formats ---------------------------------------------------------------------
def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_official_state_dict_round_trips_through_the_inverse_key_map(nano):
    off = to_official_state_dict(nano)
    assert "cls_token" in off and "blocks.2.attn.rpe_k.lookup_table_weight" in off  # depth 2: block 2 = fusion
    assert "spatial_encoder.predictor_blocks.0.attn.rpe_k.lookup_table_weight" in off
    assert "projector_s2.patch_embed.attention_heads.Q" in off and "projector_aerial.patch_embed.weight" in off
    assert convert_official_state_dict(off).keys() == nano.state_dict().keys()
    assert _same_weights(load_official({"state_dict": off}), nano)


def test_the_inverse_key_map_covers_every_key_of_the_base_model(base_manifest):
    fake = {k: torch.empty(0) for k in base_manifest}
    assert to_official_state_dict(convert_official_state_dict(fake)).keys() == fake.keys()


def test_load_official_takes_the_hub_wrapper_and_the_pretraining_checkpoint(nano):
    off = to_official_state_dict(nano)
    # hubconf.AnySat: the AnyModule under "model.", and its sub-patch transformer a second time at the top
    hub = {
        **{f"model.{k}": v for k, v in off.items()},
        **{k: v.clone() for k, v in off.items() if k.startswith("spatial_encoder.")},
    }
    assert official_encoder_state(hub)[1].startswith("torch.hub wrapper")
    assert _same_weights(load_official(hub), nano)
    # an official pretraining checkpoint: EMA target encoder, online encoder and predictor
    ckpt = {
        "state_dict": {
            **{f"target_encoder.{k}": v for k, v in off.items()},
            **{f"model.encoder.{k}": torch.zeros_like(v) for k, v in off.items()},
            "model.predictor.blocks.0.norm1.weight": torch.ones(3),
        },
        "epoch": 7,
    }
    assert official_encoder_state(ckpt)[1].startswith("official pretraining checkpoint")
    assert _same_weights(load_official(ckpt), nano)
    x = random_sample(["s2", "aerial"], 60, batch=1, n_dates=3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(load_official(hub)(x, 20), nano(x, 20))


def test_unknown_checkpoints_fail_with_one_line_errors(nano, tmp_path):
    off = to_official_state_dict(nano)
    with pytest.raises(OfficialCheckpointError, match=r"no 'cls_token' key under any known prefix .*'module\.x'"):
        load_official({"module.x": torch.zeros(1)})
    hub = {**{f"model.{k}": v for k, v in off.items()}, "spatial_encoder.cls_token": torch.ones_like(off["cls_token"])}
    hub.update({k: v for k, v in off.items() if k.startswith("spatial_encoder.") and k != "spatial_encoder.cls_token"})
    with pytest.raises(OfficialCheckpointError, match="differ from their 'model.' twins"):
        load_official(hub)
    with pytest.raises(OfficialCheckpointError, match="keys outside 'model.'.*'head.weight'"):
        load_official({**{f"model.{k}": v for k, v in off.items()}, "head.weight": torch.zeros(1)})
    with pytest.raises(OfficialCheckpointError, match="no such file"):
        load_official(tmp_path / "AnySat.pth")
    for text in (
        "not a checkpoint",
        "hello world",
        "epoch: 3",
    ):  # torch.load fails with UnpicklingError, KeyError: 101, IndexError
        (tmp_path / "junk.pth").write_text(text)
        with pytest.raises(
            OfficialCheckpointError,
            match=r"junk.pth: not a readable checkpoint \(\d+ bytes, it is not a PyTorch file\); expected the "
            r"official AnySat.pth, a state dict saved with torch.save \(download it from https://",
        ):
            load_official(tmp_path / "junk.pth")
    missing = {k: v for k, v in off.items() if not k.startswith("projector_s2.")}
    with pytest.raises(OfficialCheckpointError) as e:
        load_official(missing, model=AnySat(model_config("nano")))
    assert "\n" not in str(e.value) and "missing in checkpoint" in str(e.value)
    assert isinstance(e.value, ValueError) and isinstance(e.value, KeyError)  # UserError, and a KeyError as before


# --- heads -----------------------------------------------------------------------------------------
def test_dense_head_puts_each_output_at_its_pixel():
    head = DenseHead(4, num_classes=2, pixels_per_subpatch=3)
    with torch.no_grad():
        head.norm.weight.fill_(1), head.norm.bias.zero_()
        head.fc.weight.zero_()
        head.fc.bias.copy_(torch.arange(18.0))  # output (i p + j) K + k = 6 i + 2 j + k
    y = head(torch.randn(1, 2, 5, 4))
    assert y.shape == (1, 2, 6, 15)  # [B, K, Hs p, Ws p]
    i, j, k = 2, 1, 1
    assert y[0, k, 3 + i, 6 + j].item() == 6 * i + 2 * j + k  # sub-patch (1, 2), pixel (i, j) of its block
    assert TileHead(8, 5)(torch.randn(3, 8)).shape == (3, 5)


class _PixelEncoder(nn.Module):
    """Stand-in encoder: 'dense' features = the image's pixels in blocks of 10 (channels last)."""

    def __init__(self):
        super().__init__()
        self.projectors = nn.ModuleDict()
        self.embed_dim = 1

    def forward(self, x, patch_size, output, output_modality):
        img = x[output_modality]  # [B, 2, H, W]
        return nn.functional.avg_pool2d(img, 10).permute(0, 2, 3, 1)  # [B, H/10, W/10, 2]


def test_test_time_windows_average_the_five_official_windows():
    assert window_offsets(512, 500) == [(0, 0), (0, 12), (12, 0), (12, 12), (6, 6)]
    head = DenseHead(2, num_classes=1, pixels_per_subpatch=10)
    model = TaskModel(_PixelEncoder(), head, 10, dense_sensor="aerial-flair", window=500).eval()
    img = torch.randn(1, 2, 512, 512)
    with torch.no_grad():
        y = model({"aerial-flair": img})
        assert y.shape == (1, 1, 512, 512)
        windows = [
            (t, l_, model({"aerial-flair": img[..., t : t + 500, l_ : l_ + 500]})) for t, l_ in window_offsets(512, 500)
        ]
    for r, c in [(0, 0), (3, 505), (8, 8), (300, 200), (511, 511), (7, 511)]:
        covering = [w[0, 0, r - t, c - l_] for t, l_, w in windows if t <= r < t + 500 and l_ <= c < l_ + 500]
        assert y[0, 0, r, c].item() == pytest.approx(torch.stack(covering).mean().item(), abs=1e-6), (r, c)
    with torch.no_grad():  # a 500 px input is one window
        torch.testing.assert_close(model({"aerial-flair": img[..., :500, :500]}), windows[0][2])


def test_invalid_pixels_get_the_projector_pad_value(nano):
    model = TaskModel(nano, TileHead(64, 3), 30, frozen=True)
    x = torch.ones(1, 2, 3, 4, 4)
    valid = torch.ones(1, 2, 1, 4, 4, dtype=torch.bool)
    valid[0, 1, 0, 2, 3] = False
    out = model.fill_invalid({"s1": x, "s1_dates": torch.tensor([[3, 9]]), "s1_valid": valid})
    assert "s1_valid" not in out
    assert (out["s1"][0, 1, :, 2, 3] == nano.projectors["s1"].pad_value).all() and out["s1"].sum() == 3 * 2 * 16 - 3


# --- encoder settings, loss, schedule, selection ---------------------------------------------------------
def test_finetuning_encoder_uses_the_official_finetuning_ltae_settings():
    enc = finetuning_encoder(AnySat(model_config("nano")), get_task("planted-ft"))
    ltae = enc.projectors["s1"].ltae
    assert ltae.period == 366 and ltae.attn_drop.p == 0.1 and ltae.dropout.p == 0.0
    assert all(m.p == 0.0 for m in ltae.input_mlp.modules() if isinstance(m, nn.Dropout))


def test_segmentation_loss_ignores_void_and_weighs_the_ignored_class_zero():
    task = get_task("flair-seg-ft")  # 13 classes, class 12 weighted 0
    logits = torch.randn(2, 13, 4, 4, requires_grad=True)
    target = torch.randint(0, 12, (2, 4, 4))
    target[0, 0, :2] = -1
    target[1, 3, 3] = 12
    keep = (target >= 0) & (target != 12)
    expected = nn.functional.cross_entropy(logits.permute(0, 2, 3, 1)[keep], target[keep])
    assert task_loss(task, logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    nothing = task_loss(task, logits, torch.full((2, 4, 4), 12))  # no pixel counts: 0, not NaN
    nothing.backward()
    assert nothing.item() == 0.0 and logits.grad is not None
    ml = get_task("treesatai-ts-ft")
    y = torch.randint(0, 2, (3, 15)).float()
    z = torch.randn(3, 15)
    assert task_loss(ml, z, y).item() == pytest.approx(nn.functional.binary_cross_entropy_with_logits(z, y).item())


def test_warmup_cosine_schedule_matches_pl_bolts_stepped_per_epoch():
    lr = [warmup_cosine_lr(e, 5e-5, 20, 200) for e in range(201)]
    assert lr[0] == 0.0  # the first epoch trains with lr 0
    assert lr[1] == pytest.approx(5e-5 / 19) and lr[19] == pytest.approx(5e-5) and lr[20] == pytest.approx(5e-5)
    assert lr[110] == pytest.approx(2.5e-5) and lr[200] == pytest.approx(0.0, abs=1e-20)
    assert all(a >= b for a, b in zip(lr[20:-1], lr[21:], strict=True))


def test_epoch_selection_keeps_the_strictly_best_epoch_and_stops_after_patience_and_min_epochs():
    sel = EpochSelection(patience=2, min_epochs=6)
    improved = [sel.update(v) for v in [0.5, 0.6, 0.6, 0.55]]  # equal is not better
    assert improved == [True, True, False, False] and sel.best_epoch == 1 and not sel.stop  # signal, but < 6 epochs
    sel.update(0.7)  # improvement after the signal: it stays
    assert sel.best_epoch == 4 and not sel.stop
    sel.update(0.1)
    assert sel.stop and sel.epochs == 6
    nan = EpochSelection(patience=10, min_epochs=0)
    assert nan.update(float("nan")) is False and nan.stop and nan.best_epoch == -1


# --- data ------------------------------------------------------------------------------------------
def test_batches_pad_series_with_zeros_and_date_zero_without_a_mask():
    items = [
        {"s2": torch.ones(3, 10, 2, 2), "s2_dates": torch.tensor([5, 6, 7]), "label": torch.tensor(1)},
        {"s2": torch.ones(1, 10, 2, 2), "s2_dates": torch.tensor([9]), "label": torch.tensor(0)},
    ]
    b = collate_padded(items)
    assert b["s2"].shape == (2, 3, 10, 2, 2) and b["s2"][1, 1:].abs().sum() == 0
    assert b["s2_dates"].tolist() == [[5, 6, 7], [9, 0, 0]] and "s2_mask" not in b and b["label"].tolist() == [1, 0]


def test_norm_stats_per_split_follow_the_official_readers(tmp_path):
    pastis = {
        r: PastisHDDataset(DATA / "pastis_hd", s, sensors=("s2",))
        for r, s in (("train", "train"), ("val", "val"), ("test", "test"))
    }
    stats, source = split_norm_stats(pastis, DATA / "pastis_hd", ["s2"])
    folds = json.loads((DATA / "pastis_hd" / "NORM_s2_patch.json").read_text())
    assert stats["val"].stats["s2"][0] == pytest.approx(folds["Fold_4"]["mean"])  # the split's own folds
    assert stats["train"].stats["s2"][0] == pytest.approx(
        [sum(folds[f"Fold_{k}"]["mean"][c] for k in (1, 2, 3)) / 3 for c in range(10)]
    )
    assert "folds" in source["s2"]
    before = sorted(p.name for p in (DATA / "planted").iterdir())
    planted = {r: PlantedDataset(DATA / "planted", r, sensors=("s2", "l7")) for r in ("train", "val", "test")}
    stats, source = split_norm_stats(planted, DATA / "planted", ["s2", "l7"])
    assert source["s2"] == "NORM_s2_patch.json" and source["l7"].startswith("computed on the train split")
    assert stats["test"].stats["l7"] == stats["train"].stats["l7"]
    assert sorted(p.name for p in (DATA / "planted").iterdir()) == before  # nothing written


def test_streamed_scores_equal_scores_of_the_whole_split():
    task = get_task("pastis-hd-seg-ft")
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(6, 20, 5, 5, generator=g), torch.randint(-1, 20, (6, 5, 5), generator=g)
    whole, parts = Scorer(task), Scorer(task, keep_items=True)
    whole.update(logits, target)
    for i in range(0, 6, 4):
        parts.update(logits[i : i + 4], target[i : i + 4])
    assert parts.value() == pytest.approx(whole.value())
    lo, hi = parts.interval(200, seed=0)
    assert lo <= parts.value() <= hi
    cls = get_task("planted-ft")
    a, b = Scorer(cls), Scorer(cls)
    y, z = torch.randint(0, 40, (9,), generator=g), torch.randn(9, 40, generator=g)
    a.update(z, y)
    b.update(z[:5], y[:5]), b.update(z[5:], y[5:])
    assert a.value() == b.value()


# --- memory: features are never all held ---------------------------------------------------------------
_MEMORY_SCRIPT = textwrap.dedent('''
    import re, sys, torch
    from torch import nn
    from torch.utils.data import Dataset
    import anysat_lite.probe.protocol as protocol
    from anysat_lite.data.normalization import NormStats
    from anysat_lite.data.registry import register_dataset
    from anysat_lite.probe.heads import DenseHead, TaskModel
    from anysat_lite.probe.tasks import TaskConfig

    torch.set_num_threads(1)
    SIDE, N = 32, int(sys.argv[2])

    def official_norm_stats(root, sensors):
        return NormStats.from_dict({"s2": {"mean": [0.0] * 10, "std": [1.0] * 10}})

    class Tiles(Dataset):
        """N tiles of 320 m: S2 [2, 10, 32, 32], a segmentation target [32, 32]; generated on the fly."""
        name, sensors, classes, tasks = "memtiles", ("s2",), ("a", "b", "c", "d"), ("segmentation",)
        def __init__(self, root, split="train", sensors=None, seed=0, n=N):
            self.n = n
        def __len__(self):
            return self.n
        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            return {"s2": torch.randn(2, 10, SIDE, SIDE, generator=g), "s2_dates": torch.tensor([40, 200]),
                    "segmentation": torch.randint(0, 4, (SIDE, SIDE), generator=g)}

    class DenseFeatures(nn.Module):
        """Stand-in for the encoder's output="dense": [B, 32, 32, 2D] with D = 64, as the nano model gives."""
        def __init__(self):
            super().__init__()
            self.projectors, self.embed_dim, self.lift = nn.ModuleDict(), 64, nn.Linear(10, 128)
        def forward(self, x, patch_size, output, output_modality):
            return self.lift(x[output_modality].mean(1).permute(0, 2, 3, 1))

    register_dataset("memtiles", Tiles)
    protocol.build_task_model = lambda task, official, device, attend_over=None: TaskModel(
        DenseFeatures(), DenseHead(128, 4), 40, dense_sensor="s2", frozen=True)

    def run(n):
        task = TaskConfig(name="memtiles-lp", dataset="memtiles", protocol="linear-probe", target="segmentation",
                          num_classes=4, sensors=("s2",), patch_size=40, head="dense", dense_sensor="s2",
                          loss="ce-seg", metric="miou", lr=1e-3, weight_decay=0.0, schedule="plateau", batch_size=8,
                          splits={"train": {"n": n}, "val": {"n": 16}, "test": {"n": n}}, max_epochs=1, min_epochs=0)
        protocol.run_task(task, None, sys.argv[1], None, bootstrap=0, progress=False, log=lambda *a: None)
    def rss():
        """(peak, current) resident memory in KiB since the last reset (Linux: VmHWM, VmRSS)."""
        status = open("/proc/self/status").read()
        return tuple(int(re.search(rf"{k}:\\s+(\\d+)", status).group(1)) for k in ("VmHWM", "VmRSS"))

    def reset_peak():
        with open("/proc/self/clear_refs", "w") as f:             # "5" resets VmHWM to the current size
            f.write("5")

    run(16)                                                   # warm-up: the same code on a small split
    reset_peak()
    base = rss()[1]
    run(N)
    grown = rss()[0] - base
    reset_peak()
    base = rss()[1]
    held = torch.ones(N, SIDE, SIDE, 128)                     # what holding the train split's dense features takes
    control = rss()[0] - base
    print(grown, control, held.numel() * 4 // 1024)
''')


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to reset the peak memory")
def test_dense_features_are_streamed_within_a_memory_ceiling(tmp_path):
    """One epoch of dense linear probing and the test split on 640 tiles whose dense features ([32, 32, 128]
    float32 per tile, the output of a 64-wide encoder) would take 320 MiB per split if they were held: the
    peak resident memory may grow by less than an eighth of that over a warm-up run of the same code on 16
    tiles.  The encoder is a stand-in that gives features of that size cheaply (the run measures the
    protocol's loops; test_tasks.py runs the real encoder on every task); a control allocation of the
    features shows the measurement sees them."""
    script = tmp_path / "memory.py"
    script.write_text(_MEMORY_SCRIPT)
    res = subprocess.run(
        [sys.executable, str(script), str(tmp_path), "640"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        # a fixed mmap threshold: glibc's dynamic one lets heap fragmentation, not live data,
        # grow the resident size over many batches
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "MALLOC_MMAP_THRESHOLD_": "65536"},
    )
    assert res.returncode == 0, res.stderr[-2000:]
    grown, control, held = (int(v) for v in res.stdout.split()[-3:])  # KiB
    assert held == 640 * 32 * 32 * 128 * 4 // 1024  # 320 MiB
    assert control > held * 0.6, "the measurement does not see a split's features being held"
    assert grown < held / 8, f"peak memory grew by {grown / 1024:.0f} MiB (all features: {held / 1024:.0f} MiB)"


# --- command line --------------------------------------------------------------------------------------
def test_cli_probe_official_writes_the_table(tiny_official, tmp_path, capsys):
    args = [
        "probe",
        "--official",
        str(tiny_official),
        "--task",
        "treesatai-ts-lp",
        "--data",
        str(DATA / "treesatai_ts"),
        "--out",
        str(tmp_path),
        "--epochs",
        "1",
        "--min-epochs",
        "0",
        "--batch-size",
        "2",
        "--bootstrap",
        "10",
        "--quiet",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| treesatai-ts-lp (partial) | linear-probe | weighted F1 | 72.6 |" in out
    assert (tmp_path / "reproduction.md").exists() and (tmp_path / "treesatai-ts-lp.json").exists()
    assert main(args) == 2  # results there: --force to replace
    assert "treesatai-ts-lp.json exists (the result of an earlier run) and the run would replace it" in (
        capsys.readouterr().err
    )
    assert main(args + ["--force"]) == 0


OFFICIAL = ["--official", "x.pth", "--task", "planted-lp", "--data", "d"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--task", "planted-lp"], "needs --official, --task and --data; missing --official, --data"),
        (
            ["--official", "x.pth", "--task", "planted-lp", "--data", "d", "--checkpoint", "runs/x/encoder"],
            "exclude each other",
        ),
        (
            ["--official", "x.pth", "--task", "planted-lp", "--task", "flair-seg-lp", "--data", "d"],
            "one dataset per command",
        ),
        (["--official", "x.pth", "--task", "planted", "--data", "d"], "did you mean 'planted-lp'"),
        # checked before the checkpoint (x.pth does not exist) and the data are read
        (OFFICIAL + ["--device", "gpu"], "--device gpu: expected cpu, cuda or cuda:N (N: the GPU's number); e.g."),
        (OFFICIAL + ["--device", "cuda:99"], "--device cuda:99: this machine has "),
        (
            OFFICIAL + ["--epochs", "-1"],
            "max_epochs (probe --epochs): expected an integer >= 1, got -1; e.g. --epochs 200",
        ),
        (OFFICIAL + ["--min-epochs", "-1"], "min_epochs (probe --min-epochs): expected an integer >= 0, got -1; e.g."),
        (OFFICIAL + ["--batch-size", "0"], "batch_size (probe --batch-size): expected an integer >= 1, got 0"),
        (OFFICIAL + ["--num-workers", "-2"], "num_workers (probe --num-workers): expected an integer >= 0, got -2"),
        (OFFICIAL + ["--limit-batches", "0"], "limit_batches (probe --limit-batches): expected an integer >= 1, got 0"),
        (OFFICIAL + ["--bootstrap", "-5"], "bootstrap (probe --bootstrap): expected an integer >= 0, got -5; e.g."),
    ],
)
def test_cli_probe_official_mistakes_are_one_line_errors(args, message, tmp_path, capsys):
    assert main(["probe", "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_cli_probe_official_with_a_missing_checkpoint_or_data_folder(tiny_official, tmp_path, capsys):
    base = ["probe", "--task", "planted-lp", "--out", str(tmp_path), "--quiet"]
    assert main(base + ["--official", str(tmp_path / "AnySat.pth"), "--data", str(DATA / "planted")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(base + ["--official", str(tiny_official), "--data", str(tmp_path / "nowhere")]) == 2
    assert "--data" in capsys.readouterr().err


def test_linear_probing_trains_the_head_only_and_planted_pad_values(tiny_official):
    lp = build_task_model(get_task("treesatai-ts-lp"), tiny_official)
    assert [n for n, p in lp.named_parameters() if p.requires_grad] == [
        "head.norm.weight",
        "head.norm.bias",
        "head.fc.weight",
        "head.fc.bias",
    ]
    planted = build_task_model(get_task("planted-lp"), tiny_official)
    trainable = {n for n, p in planted.named_parameters() if p.requires_grad}
    assert {f"encoder.projectors.{s}.pad_value" for s in ("s2", "s1", "l7", "alos", "modis")} <= trainable
    assert all(p.requires_grad for p in build_task_model(get_task("planted-ft"), tiny_official).parameters())


def test_load_official_takes_the_hub_module_itself(nano):
    class HubWrapper(nn.Module):  # the layout of hubconf.AnySat: the sub-patch transformer twice
        def __init__(self, inner):
            super().__init__()
            self.spatial_encoder = inner.spatial_encoder
            self.model = inner

    class AnyModule(nn.Module):
        def __init__(self, sd):
            super().__init__()
            for k, v in sd.items():
                *path, leaf = k.split(".")
                m = self
                for p in path:
                    if not hasattr(m, p):
                        m.add_module(p, nn.Module())
                    m = getattr(m, p)
                m.register_buffer(leaf, v.clone())

    hub = HubWrapper(AnyModule(to_official_state_dict(nano)))
    assert any(k.startswith("spatial_encoder.") for k in hub.state_dict())
    assert _same_weights(load_official(hub), nano)


def test_allow_pickle_reaches_the_planted_reader_only():
    from anysat_lite.errors import UserError
    from anysat_lite.probe.protocol import build_splits

    splits = build_splits(get_task("planted-lp"), DATA / "planted", 32, allow_pickle=True)
    assert all(ds.allow_pickle for ds in splits.values())
    assert not any(ds.allow_pickle for ds in build_splits(get_task("planted-lp"), DATA / "planted", 32).values())
    with pytest.raises(
        UserError, match=r"^--allow-pickle: the flair reader reads no pickled files, expected a PLANTED"
    ):
        build_splits(get_task("flair-seg-lp"), DATA / "flair", 32, allow_pickle=True)


@pytest.mark.parametrize("val_metric", ["pooled", "per-epoch"])
def test_the_official_validation_metric_accumulates_over_every_validation_pass(tiny_official, monkeypatch, val_metric):
    """The official Module never resets its validation metric: after epoch e it scores the sanity check's
    predictions and every epoch's so far, and that running value selects the checkpoint."""
    from types import SimpleNamespace

    from anysat_lite.probe import protocol
    from anysat_lite.probe.metrics import f1_from_counts

    task = get_task("planted-lp").replace(max_epochs=3, min_epochs=0)
    K = task.num_classes
    counts = [torch.zeros(3, K, dtype=torch.long) for _ in range(4)]  # sanity check, then epochs 0-2
    counts[0][:, 0] = torch.tensor([0, 9, 9])  # the untrained head: all wrong
    counts[1][:, 1] = torch.tensor([8, 2, 2])
    counts[2][:, 1] = torch.tensor([2, 8, 8])  # a bad epoch
    counts[3][:, 1] = torch.tensor([9, 1, 1])
    calls = iter(counts)

    def scripted_evaluate(model, loader, task, dev, amp=None, limit=None, keep_items=False, progress=False):
        scorer = protocol.Scorer(task)
        scorer.total = next(calls).clone()
        return scorer.value(), 1.0, scorer

    monkeypatch.setattr(protocol, "evaluate", scripted_evaluate)
    monkeypatch.setattr(protocol, "train_epoch", lambda *a, **k: 0.5)
    model = build_task_model(task, tiny_official)
    if val_metric == "per-epoch":
        counts.pop(0)  # no sanity check
        calls = iter(counts)
    history, selection = protocol._fit(
        model,
        task,
        {"train": None, "val": None},
        SimpleNamespace(set_epoch=lambda e: None),
        torch.device("cpu"),
        None,
        None,
        False,
        lambda *a: None,
        val_metric,
    )
    score = lambda c: 100 * f1_from_counts(c)[task.metric.split("-")[1]]  # noqa: E731
    epochs = [round(score(c), 3) for c in counts[-3:]]
    assert [h[f"val_{task.metric}_epoch"] for h in history] == epochs
    if val_metric == "pooled":
        pooled = [round(score(sum(counts[: i + 2])), 3) for i in range(3)]
        assert [h[f"val_{task.metric}"] for h in history] == pooled
        assert pooled != epochs and selection.best_epoch == max(range(3), key=lambda i: (pooled[i], -i))
    else:
        assert [h[f"val_{task.metric}"] for h in history] == epochs and selection.best_epoch == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--epochs", "1", "--min-epochs", "5"],
            "min_epochs (probe --min-epochs) 5: expected at most max_epochs (--epochs 1), got 5 (no early stop before "
            "epoch 5 of a run of at most 1 epochs); lower --min-epochs to 1 or less, or raise --epochs to 5 or more",
        ),
        (["--min-epochs", "500"], "expected at most max_epochs (the 200 epochs of planted-lp), got 500"),
    ],
)
def test_cli_probe_official_refuses_contradictory_epochs(args, message, tmp_path, capsys):
    """--min-epochs above the epochs the run may take was accepted; refused before the checkpoint (x.pth) is read."""
    assert main(["probe", *OFFICIAL, "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert main(["probe", *OFFICIAL, "--out", str(tmp_path), "--epochs", "5", "--min-epochs", "5"]) == 2
    assert "x.pth" in capsys.readouterr().err  # equal is fine: on to reading the checkpoint


def test_cli_probe_official_never_rewrites_a_table_someone_edited(tmp_path, capsys):
    """reproduction.{json,md} are rebuilt from the result rows of --out: one that is not that table (the user's
    own notes, an edited table) is refused without --force; the table the rows give is rebuilt as before."""
    from anysat_lite.probe.paper_table import format_table

    official = ["probe", "--official", str(tmp_path / "x.pth"), "--task", "planted-lp", "--data", str(DATA / "planted")]
    out = tmp_path / "out"
    out.mkdir()
    (out / "reproduction.md").write_text("# my notes\n")
    assert main([*official, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.endswith(
        f"--out {out}: {out / 'reproduction.md'} exists and does not match the results in that folder (edited, "
        "written by something else, or a run stopped before rebuilding it), and the run would replace it; write "
        "elsewhere with --out DIR, or replace it with --force"
    )
    assert (out / "reproduction.md").read_text() == "# my notes\n"
    (out / "reproduction.md").write_text(format_table([]) + "\n")  # the table of the (no) rows there: rebuilt
    (out / "reproduction.json").write_text("[]")
    assert main([*official, "--out", str(out)]) == 2
    assert "x.pth" in capsys.readouterr().err  # on to reading the checkpoint
    (out / "reproduction.json").write_text('[{"task": "mine"}]')
    assert main([*official, "--out", str(out)]) == 2
    assert "reproduction.json exists and does not match the results" in capsys.readouterr().err
    assert main([*official, "--out", str(out), "--force"]) == 2
    assert "x.pth" in capsys.readouterr().err
