"""Metrics against hand-computed values, probes end to end, the probe report and the embed command."""

import json

import pytest
import torch

from anysat_lite.probe.knn import knn_predict, normalise_features, variance_shares
from anysat_lite.probe.linear import LinearProbe, probe_objective, train_linear
from anysat_lite.probe.metrics import confusion_matrix, f1_scores, mean_iou, multilabel_f1, overall_accuracy
from anysat_lite.probe.segmentation import predict_segmentation, train_segmentation_probe


def test_confusion_accuracy_f1_by_hand():
    y = torch.tensor([0, 0, 0, 1, 1, 2])
    p = torch.tensor([0, 0, 1, 1, 2, 2])
    assert confusion_matrix(p, y, 3).tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert overall_accuracy(p, y) == pytest.approx(4 / 6)
    # class 0: P=1, R=2/3 -> F1 0.8; class 1: P=1/2, R=1/2 -> 0.5; class 2: P=1/2, R=1 -> 2/3
    f = f1_scores(p, y, 3)
    assert f["macro"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert f["weighted"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 1 * 2 / 3) / 6)
    # a class absent from both targets and predictions does not count in the macro average
    assert f1_scores(p, y, 5)["macro"] == pytest.approx(f["macro"])


def test_multilabel_f1_by_hand():
    t = torch.tensor([[1, 0, 1], [0, 1, 0]], dtype=torch.bool)
    p = torch.tensor([[1, 1, 0], [0, 1, 0]], dtype=torch.bool)
    # TP=2 (s0c0, s1c1), FP=1 (s0c1), FN=1 (s0c2): micro F1 = 4/6; per class: c0 1, c1 2/3, c2 0
    r = multilabel_f1(p, t)
    assert r["micro"] == pytest.approx(4 / 6) and r["macro"] == pytest.approx((1 + 2 / 3 + 0) / 3)


def test_miou_by_hand():
    t = torch.tensor([[0, 0], [1, 1]])
    p = torch.tensor([[0, 1], [1, 1]])
    # class 0: TP 1, FP 0, FN 1 -> 1/2 ; class 1: TP 2, FP 1, FN 0 -> 2/3
    assert mean_iou(p, t, 2) == pytest.approx((0.5 + 2 / 3) / 2)
    assert mean_iou(p, t, 4) == pytest.approx((0.5 + 2 / 3) / 2)  # absent classes ignored
    # ignoring the one wrong pixel leaves a perfect prediction
    assert mean_iou(p, torch.tensor([[0, 255], [1, 1]]), 2, ignore_index=255) == pytest.approx(1.0)


def _blobs(n=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randn(n, 8, generator=g) * 0.3 + torch.nn.functional.one_hot(y, 8).float() * 3
    return x, y


def test_linear_and_knn_probes_learn():
    x, y = _blobs()
    probe = train_linear(x[:40], y[:40], 3)
    assert overall_accuracy(probe(x[40:]).argmax(1), y[40:]) == 1.0
    assert overall_accuracy(knn_predict(x[:40], y[:40], x[40:], 3, k=5), y[40:]) == 1.0
    ml = torch.nn.functional.one_hot(y, 3).bool()
    mp = train_linear(x[:40], ml[:40], 3, multilabel=True)
    assert multilabel_f1(mp(x[40:]) > 0, ml[40:])["micro"] == 1.0


@pytest.mark.parametrize("multilabel", [False, True])
def test_linear_probe_reaches_the_optimum_of_its_objective(multilabel):
    """The probe is the minimiser of a convex objective: zero gradient there, a lower objective than a
    long run of a first-order optimiser, and no dependence on the order of the training rows."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(200, 12, generator=g) * torch.logspace(-2, 3, 12)  # mixed units, overlapping classes
    if multilabel:  # four labels from the signs of four features, a tenth of them flipped
        y = (x[:, :4] > 0) ^ (torch.rand(200, 4, generator=g) < 0.1)
    else:  # three classes from the largest of three features, a fifth of them redrawn
        y = (x[:, :3] / x[:, :3].std(0)).argmax(1)
        y = torch.where(torch.rand(200, generator=g) < 0.2, torch.randint(0, 3, (200,), generator=g), y)
    probe = train_linear(x, y, 4 if multilabel else 3, multilabel=multilabel, l2=1e-3)
    obj = probe_objective(probe, x, y, 1e-3, multilabel)  # differentiable: its gradient is checked next
    grads = torch.autograd.grad(obj, list(probe.fc.parameters()))
    assert max(float(gr.abs().max()) for gr in grads) < 1e-4
    assert 0.05 < obj.item() < 1.0  # not a separable toy: the penalty and the errors both count
    other = LinearProbe(probe.mean, probe.std, probe.fc.out_features)
    opt = torch.optim.Adam(other.parameters(), lr=1e-2)
    for _ in range(3000):
        opt.zero_grad()
        probe_objective(other, x, y, 1e-3, multilabel).backward()
        opt.step()
    assert obj.item() <= probe_objective(other, x, y, 1e-3, multilabel).item() + 1e-6
    perm = torch.randperm(200, generator=g)
    shuffled = train_linear(x[perm], y[perm], probe.fc.out_features, multilabel=multilabel, l2=1e-3)
    torch.testing.assert_close(shuffled(x), probe(x), atol=1e-3, rtol=1e-3)


def test_knn_is_blind_to_the_units_of_each_feature():
    """Standardised first: a feature in thousands (reflectance) cannot outvote one in tenths (radar power)."""
    x, y = _blobs()
    noise = torch.randn(60, 1, generator=torch.Generator().manual_seed(2))
    pred = knn_predict(torch.cat([x, noise], 1)[:40], y[:40], torch.cat([x, noise], 1)[40:], 3, k=5)
    scaled = torch.cat([x * 1e-3, noise * 1e4], 1)  # the informative dims in small units, the noise in large
    assert torch.equal(knn_predict(scaled[:40], y[:40], scaled[40:], 3, k=5), pred)
    assert overall_accuracy(pred, y[40:]) == 1.0


def _dominated(n=300, seed=0):
    """Three classes in two latent directions of little variance, beside three nuisance directions of large
    variance, all five mixed into every feature (as a pretrained token spreads its axes over its dimensions)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    centres = torch.tensor([[1.0, 0.0], [-0.5, 0.87], [-0.5, -0.87]])
    latent = torch.cat([torch.randn(n, 3, generator=g) * 3, centres[y] + torch.randn(n, 2, generator=g) * 0.3], 1)
    return latent @ torch.randn(5, 5, generator=g), y  # [n, 5]


def test_variance_shares_measure_how_few_directions_dominate():
    x, _ = _dominated()
    shares = variance_shares(x)
    assert shares.shape == (5,) and torch.isclose(shares.sum(), torch.tensor(1.0))
    assert torch.all(shares[:-1] >= shares[1:])  # largest first
    assert shares[:3].sum() > 0.95  # standardising each feature keeps the three nuisance directions they share
    iso = variance_shares(torch.randn(2000, 11, generator=torch.Generator().manual_seed(0)))
    assert iso.max() < 0.12  # isotropic noise: every direction about 1/11
    # unstandardised, a feature in large units would dominate alone; standardised it does not
    scaled = torch.randn(500, 4, generator=torch.Generator().manual_seed(1)) * torch.tensor([1e3, 1, 1, 1])
    assert variance_shares(scaled, standardise=False)[0] > 0.99 > 0.4 > variance_shares(scaled)[0]


def test_whitening_gives_identity_covariance_and_ignores_linear_maps():
    x, y = _dominated()
    a, b = normalise_features(x[:200], x[200:], "whiten")
    cov = a.T @ a / a.shape[0]
    torch.testing.assert_close(cov, torch.eye(5), atol=1e-4, rtol=0)
    # a kNN on whitened features does not change under any invertible linear map of the features ...
    m = torch.randn(5, 5, generator=torch.Generator().manual_seed(4)) + 3 * torch.eye(5)
    for how in ("standardise", "whiten"):  # the whitened predictions stay in `pred` for the check below
        pred = knn_predict(x[:200], y[:200], x[200:], 3, k=10, normalise=how)
        mapped = knn_predict(x[:200] @ m, y[:200], x[200:] @ m, 3, k=10, normalise=how)
        assert torch.equal(pred, mapped) == (how == "whiten"), how  # ... a standardised one does
    # ... and here it finds the classes that the nuisance directions hide from the standardised kNN
    white = overall_accuracy(knn_predict(x[:200], y[:200], x[200:], 3, k=10, normalise="whiten"), y[200:])
    std = overall_accuracy(knn_predict(x[:200], y[:200], x[200:], 3, k=10), y[200:])
    assert white > 0.9 and std < 0.75, (white, std)
    # features in very different units (reflectance, 8-bit values, radar power) are whitened as well
    units = torch.logspace(-3, 3, 5)  # [5]: the smallest direction of x * units is far below the largest
    assert torch.equal(knn_predict(x[:200] * units, y[:200], x[200:] * units, 3, k=10, normalise="whiten"), pred)
    with pytest.raises(ValueError, match="normalise='pca': expected one of standardise, whiten"):
        knn_predict(x, y, x, 3, normalise="pca")


def test_whitening_drops_the_direction_that_centring_removes_with_fewer_items_than_dimensions():
    """With N <= D the centred training items span N - 1 directions; the N-th, left with float32 rounding by a
    float32 standardisation, was kept and scaled up to unit variance (test items read 1e7 along it)."""
    g = torch.Generator().manual_seed(0)
    train, test = torch.randn(5, 8, generator=g) * 3 + 1, torch.randn(4, 8, generator=g) * 3 + 1
    a, b = normalise_features(train, test, "whiten")
    assert a.shape == (5, 4) and b.shape == (4, 4)
    torch.testing.assert_close(a.T @ a / 5, torch.eye(4), atol=1e-4, rtol=0)
    assert b.abs().max() < 100


def test_segmentation_probe_learns_a_dense_rule():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(20, 4, 4, 6, generator=g)
    labels = (feats[..., 0] > 0).long().repeat_interleave(2, 1).repeat_interleave(2, 2)  # label grid 8 x 8
    probe = train_segmentation_probe(feats[:15], labels[:15], 2, epochs=40)
    pred = predict_segmentation(probe, feats[15:], (8, 8))
    assert pred.shape == (5, 8, 8) and mean_iou(pred, labels[15:], 2) > 0.6


def test_run_probe_end_to_end(tmp_path):
    from anysat_lite.config import get_config
    from anysat_lite.probe import run_probe

    cfg = get_config(
        "cpu-demo",
        [
            "data.n_tiles=30",
            "data.tile_m=40",
            "data.n_dates=4",
            "probe.patch_sizes=[20]",
            "probe.modality_sets=[[all], [s2]]",
            "probe.seg_epochs=2",
            "probe.finetune_epochs=1",
            "probe.bootstrap=50",
        ],
    )
    report = run_probe(cfg, checkpoint=None, out_dir=tmp_path, progress=False)
    methods = {(r["encoder"], r["modalities"], r["method"], r["metric"]) for r in report["results"]}
    assert ("random-init", "aerial+s2+s1-asc", "linear", "OA") in methods
    assert ("raw-pixels", "s2", "kNN", "OA") in methods
    assert ("random-init", "aerial+s2+s1-asc", "segmentation (aerial)", "mIoU") in methods
    assert ("random-init", "aerial+s2+s1-asc", "fine-tune", "OA") in methods
    assert all(r["ci95"][0] <= r["value"] <= r["ci95"][1] for r in report["results"])
    saved = json.loads((tmp_path / "probe_results.json").read_text())
    assert saved["splits"]["test"] == 6 and saved["seeds"]["probe"] == 0
    md = (tmp_path / "probe_results.md").read_text()
    assert "| patch (m) |" in md and " [" in md  # value [low, high] cells
    assert (tmp_path / "probe_results.png").stat().st_size > 5000


@pytest.mark.parametrize(
    "name, folder, expected",
    [  # each dataset's own targets: PLANTED a label, FLAIR masks, PASTIS-HD multi-labels and masks (with void)
        ("planted", "planted", {("linear", "OA"), ("linear", "F1-macro"), ("linear", "F1-weighted"), ("kNN", "OA")}),
        ("flair", "flair", {("segmentation (aerial-flair)", "mIoU")}),
        ("pastis-hd", "pastis_hd", {("multi-label", "F1-micro"), ("segmentation (spot)", "mIoU")}),
    ],
)
def test_run_probe_probes_the_targets_an_official_dataset_has(tmp_path, name, folder, expected):
    """The demo probes on each official-layout fixture: the probes of its targets, no others, no crash."""
    from conftest import ROOT

    from anysat_lite.config import get_config
    from anysat_lite.probe import run_probe

    sets = [f"data.datasets=[{{name: {name}, path: {ROOT / 'tests' / 'data' / folder}}}]", "model.size=nano"]
    sets += ["probe.modality_sets=[[all]]", "probe.bootstrap=5", "probe.seg_epochs=1"]
    report = run_probe(get_config("cpu-demo", sets), checkpoint=None, out_dir=tmp_path, progress=False)
    for encoder in ("random-init", "raw-pixels"):
        assert {(r["method"], r["metric"]) for r in report["results"] if r["encoder"] == encoder} == expected
    assert all(0 <= r["value"] <= 1 for r in report["results"])
    assert (tmp_path / "probe_results.png").exists()


def test_run_probe_refuses_a_dataset_without_targets_and_fine_tuning_without_labels():
    from conftest import ROOT

    from anysat_lite.config import get_config
    from anysat_lite.errors import UserError
    from anysat_lite.probe import run_probe

    s2naip = f"data.datasets=[{{name: s2naip-urban, path: {ROOT / 'tests' / 'data' / 's2naip_urban'}}}]"
    with pytest.raises(UserError, match=r"'s2naip-urban' has no target to probe \(expected one of \['label'"):
        run_probe(get_config("cpu-demo", [s2naip, "model.size=nano"]), progress=False)
    flair = f"data.datasets=[{{name: flair, path: {ROOT / 'tests' / 'data' / 'flair'}}}]"
    with pytest.raises(UserError, match=r"probe.finetune_epochs=1 .* 'flair' has none .*'segmentation'.*=0$"):
        run_probe(get_config("cpu-demo", [flair, "model.size=nano", "probe.finetune_epochs=1"]), progress=False)


def test_segmentation_probe_leaves_void_pixels_out():
    """Void pixels (-1) neither train the dense probe nor count in its confusion matrix."""
    from anysat_lite.probe.metrics import per_item_confusion
    from anysat_lite.probe.segmentation import VOID, predict_segmentation, train_segmentation_probe

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (12, 4, 4), generator=g)
    feats = torch.nn.functional.one_hot(labels, 2).float() + 0.1 * torch.randn(12, 4, 4, 2, generator=g)
    voided = labels.clone()
    voided[:, :2] = VOID  # half the pixels without a class
    probe = train_segmentation_probe(feats, voided, 2, epochs=30, lr=0.1)
    pred = predict_segmentation(probe, feats, (4, 4))
    assert (pred == labels).float().mean() > 0.95  # learnt from the labelled half, right on both halves
    cm = per_item_confusion(pred, voided, 2, VOID)
    assert cm.sum() == 12 * 8 and cm.sum(0).trace() == (pred == voided).sum()


def test_late_fusion_rows_probe_each_sensors_own_tile_token_side_by_side(tmp_path):
    """``probe.late_fusion``: the kNN row of the concatenated per-sensor tile tokens, recomputed by hand."""
    from anysat_lite.config import get_config
    from anysat_lite.data.datasets import build_dataset
    from anysat_lite.model import AnySat
    from anysat_lite.probe import run_probe
    from anysat_lite.probe.features import encode_dataset, targets_of

    sets = ["data.n_tiles=60", "data.tile_m=40", "data.n_dates=4", "probe.modality_sets=[[all], [s2]]"]
    sets += ["probe.seg_epochs=1", "probe.bootstrap=20", "probe.late_fusion=true"]
    cfg = get_config("cpu-demo", sets)
    report = run_probe(cfg, checkpoint=None, out_dir=tmp_path, progress=False)
    late = [r for r in report["results"] if r["modalities"].endswith("(late fusion)")]
    assert {(r["encoder"], r["modalities"]) for r in late} == {("random-init", "aerial+s2+s1-asc (late fusion)")}
    assert {(r["method"], r["metric"]) for r in late} >= {("linear", "OA"), ("kNN", "OA"), ("multi-label", "F1-micro")}

    b = build_dataset(cfg.data.datasets[0], cfg.data)
    torch.manual_seed(cfg.probe.seed)
    enc = AnySat(cfg.model, sensors=b.sensors).eval()
    feats = [
        torch.cat([encode_dataset(enc, part, b.stats, 20, [s], progress=False) for s in b.sensors], dim=1)
        for part in (b.train, b.test)
    ]
    assert feats[0].shape[1] == len(b.sensors) * cfg.model.embed_dim
    knn = knn_predict(feats[0], targets_of(b.train, "label"), feats[1], len(b.classes), cfg.probe.knn_k)
    (row,) = [r for r in late if r["method"] == "kNN"]
    assert row["value"] == pytest.approx((knn == targets_of(b.test, "label")).float().mean().item(), abs=1e-4)
    assert "aerial+s2+s1-asc (late fusion)" in (tmp_path / "probe_results.md").read_text()
    # the demo's table and seed study show the late rows after the joint ones, raw pixels from the joint row
    from anysat_lite.demo import results_block, seed_study

    table = results_block({}, report).splitlines()
    assert table[-1] == f"Computed on: {report['machine']}."  # where the digits come from
    joint = next(i for i, line in enumerate(table) if line.startswith("| aerial+s2+s1-asc | kNN |"))
    late_knn = next(i for i, line in enumerate(table) if line.startswith("| aerial+s2+s1-asc (late fusion) | kNN |"))
    assert late_knn > joint and table[joint].split("|")[-2] == table[late_knn].split("|")[-2]  # raw-pixels column
    rows = [r | {"encoder": "pretrained"} if r["encoder"] == "random-init" else r for r in report["results"]]
    as_pretrained = report | {"results": rows}  # the seed study reads pretrained rows
    (cell,) = [
        c
        for c in seed_study({0: ({}, as_pretrained)})["cells"]
        if c["modalities"].endswith("(late fusion)") and c["method"] == "kNN"
    ]
    assert cell["scores"]["raw-pixels"] == [
        100 * r["value"]
        for r in report["results"]
        if (r["encoder"], r["modalities"], r["method"]) == ("raw-pixels", "aerial+s2+s1-asc", "kNN")
    ]
    # off by default: no late-fusion rows
    plain = run_probe(get_config("cpu-demo", sets[:-1]), checkpoint=None, progress=False)
    assert not [r for r in plain["results"] if "late" in r["modalities"]]


def test_probes_score_on_the_validation_split_when_asked(tmp_path):
    from anysat_lite.config import get_config
    from anysat_lite.data.datasets import build_dataset
    from anysat_lite.probe import run_probe
    from anysat_lite.probe.features import raw_pixel_features, targets_of
    from anysat_lite.probe.knn import knn_predict

    sets = ["data.n_tiles=40", "data.tile_m=40", "data.n_dates=4", "probe.modality_sets=[[s2]]"]
    sets += ["probe.seg_epochs=1", "probe.bootstrap=20", "probe.split=val"]
    cfg = get_config("cpu-demo", sets)
    report = run_probe(cfg, checkpoint=None, out_dir=tmp_path, progress=False)
    b = build_dataset(cfg.data.datasets[0], cfg.data)
    assert report["scored_on"] == "val" and report["splits"] == {"train": 24, "val": 8, "test": 8}
    assert report["bootstrap"]["over"] == "val tiles"
    # the raw-pixel kNN row is the kNN of the validation tiles on the training tiles
    ftr, fva = raw_pixel_features(b.train, ["s2"]), raw_pixel_features(b.val, ["s2"])
    knn = knn_predict(ftr, targets_of(b.train, "label"), fva, len(b.classes), cfg.probe.knn_k)
    expected = (knn == targets_of(b.val, "label")).float().mean().item()
    (row,) = [
        r for r in report["results"] if (r["encoder"], r["modalities"], r["method"]) == ("raw-pixels", "s2", "kNN")
    ]
    assert row["value"] == pytest.approx(expected)
    with pytest.raises(ValueError, match=r"probe.split: expected one of test, val, got 'train'"):
        get_config("cpu-demo", ["probe.split=train"])


def test_bootstrap_interval_brackets_the_value_and_shrinks_with_more_items():
    from anysat_lite.probe.metrics import bootstrap_interval

    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (400,), generator=g)
    p = torch.where(torch.rand(400, generator=g) < 0.7, y, (y + 1) % 3)  # about 70 % right
    lo, hi = bootstrap_interval(overall_accuracy, p, y, n_boot=500)
    assert lo < overall_accuracy(p, y) < hi and 0.05 < hi - lo < 0.12  # ~ 2 x 1.96 sqrt(.21 / 400) = 0.09
    lo_s, hi_s = bootstrap_interval(overall_accuracy, p[:100], y[:100], n_boot=500)
    assert hi_s - lo_s > 1.5 * (hi - lo)  # 4x fewer items: ~2x wider
    assert bootstrap_interval(overall_accuracy, y, y, n_boot=50) == (1.0, 1.0)
    assert bootstrap_interval(overall_accuracy, p, y, n_boot=200, seed=3) == bootstrap_interval(
        overall_accuracy, p, y, n_boot=200, seed=3
    )


def test_bootstrap_of_per_tile_counts_gives_the_intervals_of_the_classification_metrics():
    from anysat_lite.probe.metrics import (
        accuracy_from_confusion,
        bootstrap_interval,
        f1_from_confusion,
        f1_scores,
        micro_f1_from_counts,
        multilabel_f1,
        multilabel_item_counts,
        per_item_confusion,
    )

    g = torch.Generator().manual_seed(0)
    K, n = 5, 120
    y = torch.randint(K, (n,), generator=g)
    p = torch.where(torch.rand(n, generator=g) < 0.6, y, torch.randint(K, (n,), generator=g))
    cm = per_item_confusion(p, y, K)
    pairs = [
        (overall_accuracy, accuracy_from_confusion),
        (lambda a, b: f1_scores(a, b, K)["macro"], lambda c: f1_from_confusion(c)["macro"]),
        (lambda a, b: f1_scores(a, b, K)["weighted"], lambda c: f1_from_confusion(c)["weighted"]),
    ]
    for metric, of_sum in pairs:
        slow = bootstrap_interval(metric, p, y, n_boot=200, seed=1)
        fast = bootstrap_interval(metric, p, y, n_boot=200, seed=1, counts=(cm, of_sum))
        assert fast == pytest.approx(slow, abs=1e-6) and slow[0] < slow[1]
    ml_y = torch.rand(n, K, generator=g) < 0.3
    ml_p = torch.rand(n, K, generator=g) < 0.3
    micro = lambda a, b: multilabel_f1(a, b)["micro"]  # noqa: E731
    slow = bootstrap_interval(micro, ml_p, ml_y, n_boot=200, seed=1)
    fast = bootstrap_interval(
        micro, ml_p, ml_y, n_boot=200, seed=1, counts=(multilabel_item_counts(ml_p, ml_y), micro_f1_from_counts)
    )
    assert fast == pytest.approx(slow, abs=1e-6) and slow[0] < slow[1]


def test_bootstrap_of_summed_per_tile_confusions_gives_the_interval_of_recounting_the_pixels():
    from anysat_lite.probe.metrics import bootstrap_interval, confusion_matrix, miou_from_confusion, per_item_confusion

    g = torch.Generator().manual_seed(1)
    truth = torch.randint(0, 4, (30, 6, 6), generator=g)
    truth[0, 0, :3] = 255  # unlabelled pixels
    guess = torch.where(torch.rand(30, 6, 6, generator=g) < 0.6, truth, torch.randint(0, 4, (30, 6, 6), generator=g))
    per_tile = per_item_confusion(guess, truth, 4, ignore_index=255)
    assert per_tile.shape == (30, 4, 4)
    assert torch.equal(per_tile.sum(0), confusion_matrix(guess, truth, 4, ignore_index=255))
    assert per_tile[0].sum() == 36 - 3

    def metric(p, t):
        return mean_iou(p, t, 4, ignore_index=255)

    slow = bootstrap_interval(metric, guess, truth, n_boot=300, seed=5)
    fast = bootstrap_interval(
        metric, guess, truth, n_boot=300, seed=5, counts=(per_tile, lambda cm: miou_from_confusion(cm)["miou"])
    )
    assert fast == pytest.approx(slow, abs=1e-12) and slow[0] < metric(guess, truth) < slow[1]


def test_segmentation_loss_on_cell_rows_equals_the_loss_of_the_upsampled_channel_first_logits():
    import torch.nn.functional as F

    from anysat_lite.probe.linear import LinearProbe
    from anysat_lite.probe.segmentation import _logits, _loss

    g = torch.Generator().manual_seed(2)
    probe = LinearProbe(torch.zeros(5), torch.ones(5), 3)
    for cells, labels in (((6, 6), (6, 6)), ((3, 3), (6, 6))):  # same grid; coarser features, upsampled
        feats = torch.randn(4, *cells, 5, generator=g)
        y = torch.randint(0, 3, (4, *labels), generator=g)
        reference = F.cross_entropy(_logits(probe, feats, labels), y)
        assert torch.allclose(_loss(probe.fc, feats, y), reference, atol=1e-6)


class _Items(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_raw_pixel_features_leave_out_masked_dates():
    from anysat_lite.probe.features import raw_pixel_features

    x = torch.rand(4, 10, 6, 6)
    clean = {"s2": x, "s2_dates": torch.arange(4), "s2_mask": torch.tensor([True, True, True, False])}
    cloudy = dict(clean, s2=torch.cat([x[:3], torch.full((1, 10, 6, 6), 5000.0)]))
    a, b = raw_pixel_features(_Items([clean]), ["s2"]), raw_pixel_features(_Items([cloudy]), ["s2"])
    torch.testing.assert_close(a, b)  # the cloudy date changes nothing
    torch.testing.assert_close(a[0, :10], x[:3].mean((0, 2, 3)))  # mean over the 3 valid dates only
    unmasked = raw_pixel_features(_Items([{k: v for k, v in cloudy.items() if k != "s2_mask"}]), ["s2"])
    assert unmasked[0, :10].min() > 1000  # without a mask every date counts


def test_raw_pixel_dense_features_for_coarse_series_and_one_pixel_cells():
    from anysat_lite.probe.features import raw_pixel_dense_features

    item = {
        "s2": torch.rand(5, 10, 6, 6),
        "s2_dates": torch.arange(5),
        "s2_mask": torch.ones(5, dtype=torch.bool),
        "aerial": torch.rand(4, 30, 30),
    }
    ds = _Items([item, item])
    s2 = raw_pixel_dense_features(ds, "s2", (30, 30))  # 10 m pixels onto a 2 m grid
    assert s2.shape == (2, 30, 30, 20) and torch.isfinite(s2).all()
    torch.testing.assert_close(s2[0, :5, :5, :10], item["s2"].mean(0)[:, 0, 0].expand(5, 5, 10))
    one = raw_pixel_dense_features(ds, "aerial", (30, 30))  # one pixel per cell: std 0, not NaN
    assert torch.isfinite(one).all() and one[..., 4:].abs().max() == 0


def test_run_probe_on_a_single_time_series_sensor(tmp_path):
    """Regression: the dense raw-pixel baseline crashed on a dataset of one time-series sensor."""
    from anysat_lite.config import get_config
    from anysat_lite.probe import run_probe

    cfg = get_config(
        "cpu-demo",
        [
            "data.n_tiles=30",
            "data.tile_m=40",
            "data.n_dates=4",
            "probe.patch_sizes=[20]",
            "data.datasets=[{name: synthetic, sensors: [s2]}]",
            "probe.modality_sets=[[all]]",
            "probe.seg_epochs=1",
            "probe.bootstrap=20",
        ],
    )
    report = run_probe(cfg, checkpoint=None, out_dir=None, progress=False)
    seg = [r for r in report["results"] if r["method"].startswith("segmentation")]
    assert {r["encoder"] for r in seg} == {"random-init", "raw-pixels"} and seg[0]["method"] == "segmentation (s2)"
    assert all(r["ci95"][0] <= r["value"] <= r["ci95"][1] for r in report["results"])


def test_probe_sets_outside_the_dataset_are_a_one_line_error_naming_the_fix():
    from anysat_lite.config import get_config
    from anysat_lite.errors import UserError
    from anysat_lite.probe.run import _settings

    cfg = get_config("cpu-demo", ["data.datasets=[{name: synthetic, sensors: [s2]}]"])  # demo probe sets keep s1
    with pytest.raises(
        UserError, match=r"\['s1-asc'\] not in the dataset's sensors \['s2'\]; .*modality_sets=\[\[s2\]\]"
    ):
        _settings(cfg, ["s2"])
    cfg = get_config("cpu-demo", ["probe.modality_sets=[[all]]", "probe.patch_sizes=[20, 10]"])
    assert _settings(cfg, ["s2"]) == [(20, ("s2",)), (10, ("s2",))]


# --- the official evaluation's metrics (anysat_lite/probe/metrics.py) ------------------------------------
def test_official_weighted_and_macro_f1_by_hand():
    from anysat_lite.probe.metrics import f1_from_counts, multilabel_counts

    t = torch.tensor([[1, 0, 1, 0], [1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    p = torch.tensor([[1, 0, 0, 0], [1, 0, 1, 0], [0, 1, 0, 0], [0, 1, 0, 0]], dtype=torch.bool)
    counts = multilabel_counts(p, t)
    # class 0: TP 2, FP 0, FN 1 -> F1 4/5, support 3; class 1: TP 1, FP 1, FN 1 -> 1/2, support 2;
    # class 2: TP 0, FP 1, FN 1 -> 0, support 1; class 3: never present nor predicted -> 0, support 0
    assert counts.tolist() == [[2, 1, 0, 0], [0, 1, 1, 0], [1, 1, 1, 0]]
    f = f1_from_counts(counts)
    assert f["per_class"] == pytest.approx([0.8, 0.5, 0.0, 0.0])
    assert f["weighted"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 1 * 0.0) / 6)  # 0.5667
    assert f["macro"] == pytest.approx((0.8 + 0.5 + 0 + 0) / 4)  # absent class counts as 0
    assert f["micro"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 3))  # 6 / 11


def test_official_multiclass_macro_f1_by_hand():
    from anysat_lite.probe.metrics import f1_from_counts, multiclass_counts

    y = torch.tensor([0, 0, 0, 1, 1, 2])
    p = torch.tensor([0, 0, 1, 1, 2, 2])
    f = f1_from_counts(multiclass_counts(p, y, 4))
    # per class 0.8, 0.5, 2/3 and 0 for the fourth class, which the official macro average keeps
    assert f["macro"] == pytest.approx((0.8 + 0.5 + 2 / 3 + 0) / 4)
    assert f["weighted"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 2 / 3) / 6)


def test_official_multilabel_decision_keeps_the_torchmetrics_rule():
    from anysat_lite.probe.metrics import multilabel_decision

    # logits outside [0, 1]: sigmoid(logit) > 0.5, i.e. logit > 0
    assert multilabel_decision(torch.tensor([[-2.0, 0.3, 3.0]])).tolist() == [[False, True, True]]
    # every value inside [0, 1]: thresholded at 0.5 as they are (no sigmoid), as the official metric does
    assert multilabel_decision(torch.tensor([[0.0, 0.3, 0.7]])).tolist() == [[False, False, True]]


def test_official_miou_leaves_out_void_and_the_ignored_class_by_hand():
    from anysat_lite.probe.metrics import confusion_matrix, miou_from_confusion

    t = torch.tensor([0, 0, 1, 1, -1, 2])
    p = torch.tensor([0, 1, 1, 1, 0, 0])
    cm = confusion_matrix(p, t, 3, ignore_index=-1)  # the void pixel (-1) is not counted
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    r = miou_from_confusion(cm, ignore_classes=(2,))
    # row and column of class 2 zeroed: class 0 TP 1, FP 0, FN 1 -> 1/2; class 1 TP 2, FP 1 -> 2/3; class 2 undefined
    assert r["per_class"][:2] == pytest.approx([0.5, 2 / 3]) and r["per_class"][2] != r["per_class"][2]
    assert r["miou"] == pytest.approx((0.5 + 2 / 3) / 2)
    # without ignoring class 2 its pixel is an error: class 0 gets an FP, class 2 an IoU of 0
    assert miou_from_confusion(cm)["miou"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)


def test_world_study_judges_each_pair_against_its_own_world():
    from anysat_lite.demo import world_study, world_table

    def report(pretrained, raw):
        rows = [
            {"encoder": e, "patch_size": 20, "modalities": "s2+s1-asc", "method": "kNN", "metric": "OA", "value": v}
            for e, v in (("pretrained", pretrained), ("raw-pixels", raw))
        ]
        return {"results": rows, "scored_on": "test", "splits": {"test": 200}, "machine": "a CPU"}

    # world 1 is easier for everyone: raw pixels beat seed 0 there, not seed 1; both seeds beat them on world 0
    reports = {
        (0, 0): report(0.80, 0.70),
        (1, 0): report(0.76, 0.70),
        (0, 1): report(0.85, 0.90),
        (1, 1): report(0.91, 0.90),
    }
    study = world_study(reports)
    assert (study["worlds"], study["seeds"]) == ([0, 1], [0, 1])
    (cell,) = study["cells"]
    assert cell["scores"]["pretrained"] == pytest.approx([80, 76, 85, 91])  # world by world, then seed by seed
    assert cell["vs raw-pixels"]["wins"] == 3 and cell["vs raw-pixels"]["mean_margin"] == pytest.approx(3.0)
    row = world_table(study).splitlines()[2]
    assert row == "| s2+s1-asc | kNN | OA | 78.0 / 88.0 | 83.0 [76.0, 91.0] | 70.0 / 90.0; won 3/4, +3.0 |"
    with pytest.raises(ValueError, match="every seed must be probed on every world"):
        world_study({k: v for k, v in reports.items() if k != (1, 1)})


def test_probe_finds_the_online_encoder_by_any_name_of_the_exported_one(tmp_path):
    """``--checkpoint runs/x``, ``runs/x/encoder`` and ``runs/x/encoder.safetensors`` all probe the online
    encoder beside the target."""
    from types import SimpleNamespace

    from anysat_lite.config import get_config, model_config
    from anysat_lite.data.normalization import NormStats
    from anysat_lite.model import AnySat
    from anysat_lite.probe.run import _load_encoders
    from anysat_lite.train.checkpoint import export_encoder

    meta = {"model": {"embed_dim": 64, "depth": 2, "num_heads": 4}, "sensors": ["s2"]}
    torch.manual_seed(0)
    export_encoder(AnySat(model_config("nano"), sensors=["s2"]), tmp_path / "encoder", meta)
    online = AnySat(model_config("nano"), sensors=["s2"])
    export_encoder(online, tmp_path / "encoder-online", meta)
    bundle = SimpleNamespace(name="synthetic", stats=NormStats({}), sensors=["s2"])
    cfg = get_config("cpu-demo")
    for given in (tmp_path, tmp_path / "encoder", tmp_path / "encoder.safetensors", tmp_path / "encoder.json"):
        encoders, *_ = _load_encoders(cfg, given, bundle, "cpu")
        assert set(encoders) == {"pretrained", "online", "random-init"}, given
        got = encoders["online"].state_dict()
        assert all(torch.equal(got[k], v) for k, v in online.state_dict().items())
    off = get_config("cpu-demo", ["probe.online=false"])
    assert set(_load_encoders(off, tmp_path, bundle, "cpu")[0]) == {"pretrained", "random-init"}


def test_fine_tuning_batches_are_probe_batch_size(monkeypatch):
    from types import SimpleNamespace

    from anysat_lite.config import get_config
    from anysat_lite.probe import run

    seen = {}

    def fake_finetune(*args, **kwargs):
        seen.update(kwargs)
        raise StopIteration  # the call is all this test reads

    monkeypatch.setattr(run, "finetune", fake_finetune)
    pc = get_config("cpu-demo", ["probe.batch_size=7", "probe.finetune_epochs=2"]).probe
    with pytest.raises(StopIteration):
        run._finetune_probes(
            None, (20, ("s2",)), {"pretrained": None}, SimpleNamespace(train=[]), None, None, 2, pc, "cpu"
        )
    assert seen["batch_size"] == 7 and seen["epochs"] == 2


def test_a_split_the_reader_could_not_read_is_named_with_the_readers_reason(tmp_path):
    """A validation split that fails to load (here: its label file is gone) is not silently 'absent'."""
    import shutil

    from conftest import ROOT

    from anysat_lite.config import get_config
    from anysat_lite.errors import UserError
    from anysat_lite.probe import run_probe

    shutil.copytree(ROOT / "tests" / "data" / "planted", tmp_path / "planted")
    (tmp_path / "planted" / "val" / "labels2.json").unlink()
    sets = [f"data.datasets=[{{name: planted, path: {tmp_path / 'planted'}}}]", "probe.split=val", "model.size=nano"]
    with pytest.raises(
        UserError, match=r"has no val split to probe on \(reading it: PLANTED: .*val/labels2.json not found"
    ):
        run_probe(get_config("cpu-demo", sets), progress=False)


def test_probe_refuses_a_dataset_with_sensors_the_encoder_lacks(tmp_path):
    """Probing an S2 encoder on a dataset with SPOT failed late with a bare KeyError 'spot'; now the missing
    sensors, the encoder's and the fix are named before any encoding."""
    from types import SimpleNamespace

    from anysat_lite.config import get_config, model_config
    from anysat_lite.data.normalization import NormStats
    from anysat_lite.errors import UserError
    from anysat_lite.model import AnySat
    from anysat_lite.probe.run import _load_encoders
    from anysat_lite.train.checkpoint import export_encoder

    meta = {"model": {"embed_dim": 64, "depth": 2, "num_heads": 4}, "sensors": ["s2"]}
    export_encoder(AnySat(model_config("nano"), sensors=["s2"]), tmp_path / "encoder", meta)
    bundle = SimpleNamespace(name="pastis-hd", stats=NormStats({}), sensors=["spot", "s2", "s1"])
    cfg = get_config("cpu-demo", ["data.datasets=[{name: pastis-hd, path: /data/pastis}]"])
    with pytest.raises(
        UserError,
        match=r"^--checkpoint .*encoder: the encoder has no projector for spot, s1 of dataset 'pastis-hd' \(expected "
        r"every sensor of the dataset: spot, s2, s1; the encoder has s2\); probe the sensors it has: --set "
        r'"data.datasets=\[\{name: pastis-hd, path: /data/pastis, sensors: \[s2\]\}\]" --set '
        r'"probe.modality_sets=\[\[all\], \[s2\]\]", or give a checkpoint '
        r"pretrained with spot, s1$",
    ):
        _load_encoders(cfg, tmp_path / "encoder", bundle, "cpu")
    bundle.sensors = ["spot"]  # none in common: a checkpoint with them is the only way
    with pytest.raises(UserError, match=r"the encoder has s2\); give a checkpoint pretrained with spot$"):
        _load_encoders(cfg, tmp_path / "encoder", bundle, "cpu")


def test_feature_geometry_finds_classes_hidden_in_small_directions():
    """Three loud nuisance directions and the class in a quiet one: the top-3 share and the directions that
    matter say the features are concentrated, the probe on directions 4-16 finds the class, the one on 1-3 and
    the standardised kNN do not, the whitened kNN does."""
    from anysat_lite.probe.knn import feature_geometry

    g = torch.Generator().manual_seed(0)
    n, classes = 400, 4
    y = torch.randint(classes, (n,), generator=g)
    signal = torch.nn.functional.one_hot(y, classes).float() + 0.1 * torch.randn(n, classes, generator=g)
    latent = torch.cat([30 * torch.randn(n, 3, generator=g), signal, 0.1 * torch.randn(n, 9, generator=g)], 1)
    x = latent @ torch.linalg.qr(torch.randn(16, 16, generator=g))[0]  # rotated: every feature mixes all three
    geo = feature_geometry(x[:300], y[:300], x[300:], y[300:], classes)
    assert geo["top 3 share"] > 99 and 2.9 < geo["directions"] < 3.1
    assert geo["linear 4-16"] > 95 and geo["linear 1-3"] < 50
    assert geo["kNN"] < 50 and geo["kNN whitened"] > 95


def _tiny_probe_inputs():
    """A nano S2 encoder, two unbatched S2 items (a list is a Dataset) and their statistics."""
    from anysat_lite.data.contract import random_sample
    from anysat_lite.data.normalization import NormStats
    from anysat_lite.model import AnySat

    torch.manual_seed(0)
    x = random_sample(["s2"], 20, batch=2, n_dates=2, generator=torch.Generator().manual_seed(0))
    items = [{k: v[i] for k, v in x.items()} for i in range(2)]
    return AnySat("nano", sensors=["s2"]).eval(), items, NormStats.from_samples([x], batched=True)


def test_encode_dataset_refuses_wrong_arguments_up_front():
    from anysat_lite.errors import UserError
    from anysat_lite.probe.features import encode_dataset

    enc, items, stats = _tiny_probe_inputs()
    assert encode_dataset(enc, items, stats, 20, ["s2"]).shape[0] == 2
    for device in ("gpu", 0):  # torch's RuntimeError before, or 0 taken for the CPU
        with pytest.raises(UserError, match=rf"^device {device}: expected cpu, cuda or cuda:N "):
            encode_dataset(enc, items, stats, 20, ["s2"], device=device)


def test_encode_dataset_takes_statistics_as_a_dict_and_refuses_unknown_or_absent_sensors():
    from anysat_lite.data.datasets import collate
    from anysat_lite.errors import UserError
    from anysat_lite.probe.features import encode_dataset, select_sensors

    enc, items, stats = _tiny_probe_inputs()
    torch.testing.assert_close(  # the dict of to_dict (an AttributeError before)
        encode_dataset(enc, items, stats.to_dict(), 20, ["s2"]), encode_dataset(enc, items, stats, 20, ["s2"])
    )
    with pytest.raises(
        UserError, match=r"^stats: expected NormStats or a dict \{sensor: \{mean, std\}\}, got NoneType"
    ):
        encode_dataset(enc, items, None, 20, ["s2"])
    for sensors, pattern in (
        (["S2"], r"^unknown sensor 'S2'; did you mean 's2'\? "),  # 'a sample must be a non-empty dict' before
        ("s2", r"^sensors: expected a list of sensor names, got the string 's2'; e.g. \['s2'\]$"),
    ):
        with pytest.raises(UserError, match=pattern):
            encode_dataset(enc, items, stats, 20, sensors)
    batch = collate(items)
    with pytest.raises(UserError, match=r"^unknown sensor 'S2'; did you mean 's2'\? "):
        select_sensors(batch, ["S2"])  # {} before
    with pytest.raises(UserError, match=r"^sensors: 's1' is not in the batch, expected sensors it holds \(s2\); "):
        select_sensors(batch, ["s1"])
    assert set(select_sensors({**batch, "label": torch.zeros(2)}, ["s2"])) == {"s2", "s2_dates"}


def test_probe_results_are_not_written_for_an_encoder_replaced_while_the_probes_ran(tmp_path, monkeypatch):
    """A pretraining of the same folder (--resume: a new encoder; --force: none) while the probes ran left results
    of the old encoder beside the new one, with nothing to tell; the results now name the encoder's SHA-256 and are
    refused when the file changed or went."""
    from anysat_lite.config import get_config, model_config
    from anysat_lite.errors import UserError
    from anysat_lite.files import sha256_of
    from anysat_lite.model import AnySat
    from anysat_lite.probe import run
    from anysat_lite.train.checkpoint import export_encoder

    sensors = ["aerial", "s2", "s1-asc"]
    meta = {"model": {"embed_dim": 64, "depth": 2, "num_heads": 4}, "sensors": sensors}
    torch.manual_seed(0)
    export_encoder(AnySat(model_config("nano"), sensors=sensors), tmp_path / "encoder", meta)
    over = ["data.n_tiles=30", "data.tile_m=40", "data.n_dates=4", "probe.patch_sizes=[20]"]
    over += ["probe.modality_sets=[[s2]]", "probe.seg_epochs=1", "probe.bootstrap=0", "probe.online=false"]
    cfg = get_config("cpu-demo", over)
    report = run.run_probe(cfg, checkpoint=tmp_path, out_dir=tmp_path / "ok", progress=False)
    assert report["checkpoint"] == str(tmp_path / "encoder")
    assert report["checkpoint_sha256"] == sha256_of(tmp_path / "encoder.safetensors")
    written = json.loads((tmp_path / "ok" / "probe_results.json").read_text())
    assert written["table_sha256"] == sha256_of(tmp_path / "ok" / "probe_results.md")  # tells a hand edit

    probes = run._tile_probes
    for change, what in (
        (lambda: export_encoder(AnySat(model_config("nano"), sensors=sensors), tmp_path / "encoder", meta), "replaced"),
        (lambda: (tmp_path / "encoder.safetensors").unlink(), "removed"),
    ):
        monkeypatch.setattr(run, "_tile_probes", lambda *a, change=change, **k: (probes(*a, **k), change())[0])
        with pytest.raises(UserError, match=rf"encoder.safetensors was {what} while the probes ran .*not written"):
            run.run_probe(cfg, checkpoint=tmp_path / "encoder", out_dir=tmp_path / what, progress=False)
        assert not (tmp_path / what).exists()


def test_probe_names_a_missing_encoder_file_as_the_loader_does(tmp_path):
    """Hashing the encoder before loading it turned these messages into a bare '[Errno 2]'."""
    from anysat_lite.config import get_config
    from anysat_lite.errors import UserError
    from anysat_lite.probe import run

    (tmp_path / "encoder.json").write_text("{}")
    cfg = get_config("cpu-demo", ["data.n_tiles=30", "data.tile_m=40", "data.n_dates=4"])
    for given, pattern in (
        (tmp_path / "encoder.json", r"encoder.safetensors not found \(beside encoder.json\)"),
        (tmp_path / "nosuch.pt", r"nosuch.pt: no such checkpoint file; check the path"),
    ):
        with pytest.raises(UserError, match=pattern):
            run.run_probe(cfg, checkpoint=given, progress=False)
