"""Package additions used by notebooks 02-05: JEPA step intermediates and the figure helpers of viz.py."""

import math

import pytest
import torch

from anysat_lite import get_config
from anysat_lite.jepa import (
    JEPA,
    MultiBlockMaskSampler,
    context_statistics,
    latent_loss,
    mil_nce,
)
from anysat_lite.viz import (
    contrastive_pairs,
    ema_memory,
    plot_context_statistics,
    plot_contrastive_pairs,
    plot_ema_memory,
    plot_monitor_runs,
    plot_schedules,
)


def _batch(B=4):
    g = torch.Generator().manual_seed(0)
    return {
        "aerial": torch.randn(B, 4, 200, 200, generator=g),
        "s2": torch.randn(B, 4, 10, 4, 4, generator=g),
        "s2_dates": torch.tensor([[10, 100, 200, 300]] * B),
        "s1-asc": torch.randn(B, 4, 2, 4, 4, generator=g),
        "s1-asc_dates": torch.tensor([[20, 120, 220, 320]] * B),
    }


def _step(cfg, x, **kw):
    torch.manual_seed(0)
    model = JEPA(cfg, sensors=[k for k in ("aerial", "s2", "s1-asc") if k in x])
    masks = MultiBlockMaskSampler(context="complement", target_scale=(0.1, 0.2), min_keep=4)(
        x["s2"].shape[0], (4, 4), torch.Generator().manual_seed(1)
    )
    gens = {k: torch.Generator().manual_seed(i) for i, k in enumerate(("dates", "modalities", "views"))}
    return model(x, 10, masks, gens, **kw), masks


def test_intermediates_leave_the_losses_unchanged_and_recompute_them():
    cfg = get_config("cpu-demo")
    plain, _ = _step(cfg, _batch())
    out, masks = _step(cfg, _batch(), return_intermediates=True)
    assert "intermediates" not in plain
    for k in ("loss", "jepa_loss", "contrastive_loss"):
        assert torch.equal(plain[k], out[k]), k
    inter = out["intermediates"]
    B, Kc, Kt, D = 4, masks.context.shape[1], masks.targets[0].shape[1], 64
    assert inter["target_out"].shape == (B, 17, D) and inter["targets"].shape == (4, B, Kt, D)
    assert inter["tokens"].shape == (B, 3, 16, D) and inter["context_tokens"].shape == (B, 3, Kc, D)
    assert inter["replaced"].shape == (B, 3, Kc) and inter["replaced"].any()
    assert inter["context_out"].shape == (B, 1 + Kc, D) and inter["predictions"].shape == (4, B, Kt, D)
    assert inter["context_sample"]["s2"].shape[1] == 2  # half of the 4 dates
    assert torch.allclose(latent_loss(inter["predictions"], inter["targets"]), out["jepa_loss"])
    views = inter["date_views"]  # s2 and s1-asc, each with a second draw of its dates
    expected = mil_nce(inter["tokens"]) + (mil_nce(views[:, 0]) + mil_nce(views[:, 1])) / 2
    assert torch.allclose(expected, out["contrastive_loss"])


def test_single_sensor_views_are_two_date_draws():
    x = {k: v for k, v in _batch().items() if k.startswith("s2")}
    out, _ = _step(get_config("cpu-demo"), x, return_intermediates=True)
    inter = out["intermediates"]
    views = inter["date_views"]
    assert views.shape == (4, 1, 2, 16, 64) and not torch.equal(views[:, 0, 0], views[:, 0, 1])
    assert torch.equal(views[:, 0, 0], inter["tokens"][:, 0])
    assert torch.allclose(mil_nce(views[:, 0]), out["contrastive_loss"])
    assert out["contrastive_loss"].item() > 0


def test_view_band_shift_moves_only_the_second_date_draw():
    x = {k: v for k, v in _batch().items() if k.startswith("s2")}
    plain, _ = _step(get_config("cpu-demo", ["jepa.view_band_shift=0"]), x, return_intermediates=True)
    shifted, _ = _step(get_config("cpu-demo"), x, return_intermediates=True)  # 0.3 in the demo
    a, b = plain["intermediates"]["date_views"], shifted["intermediates"]["date_views"]
    assert torch.equal(a[:, :, 0], b[:, :, 0]) and not torch.allclose(a[:, :, 1], b[:, :, 1])
    assert torch.equal(plain["jepa_loss"], shifted["jepa_loss"])  # context and targets untouched
    assert not torch.equal(plain["contrastive_loss"], shifted["contrastive_loss"])


@pytest.mark.parametrize("series_views", [False, True])
def test_series_views_are_a_term_of_their_own_beside_the_cross_sensor_mil_nce(series_views):
    """A second date draw must not join the sensors' bag of positives: there it is the easy positive
    and MIL-NCE's log-sum-exp over positives would stop aligning the sensors with each other."""
    cfg = get_config("cpu-demo", [f"jepa.series_views={series_views}"])
    out, _ = _step(cfg, _batch(), return_intermediates=True)
    inter = out["intermediates"]
    views, tokens = inter["date_views"], inter["tokens"]  # modalities: aerial, s2, s1-asc
    if not series_views:
        assert views is None
        assert torch.allclose(mil_nce(tokens), out["contrastive_loss"])
        return
    assert views.shape == (4, 2, 2, 16, 64)  # s2 and s1-asc, each on two halves of its dates
    assert torch.equal(views[:, 0, 0], tokens[:, 1]) and torch.equal(views[:, 1, 0], tokens[:, 2])
    assert not torch.equal(views[:, 0, 1], tokens[:, 1]) and not torch.equal(views[:, 1, 1], tokens[:, 2])
    joined = mil_nce(torch.cat([tokens, views[:, :, 1]], dim=1))  # the bag the two terms replace
    assert not torch.allclose(joined, out["contrastive_loss"])


def test_contrastive_pairs_roles_match_their_counts():
    M, B, N = 3, 2, 4
    role = contrastive_pairs(M, B, N)
    L = M * B * N
    assert role.shape == (L, L)
    assert ((role == 1).sum(1) == M - 1).all()  # positives: the same place in the other sensors
    assert ((role == 2).sum(1) == N).all()  # left out: own tile and sensor, itself included
    assert torch.equal(role, role.t())
    # row (m=0, b=0, n=1): its positives are (m=1, b=0, n=1) and (m=2, b=0, n=1)
    assert set((role[1] == 1).nonzero().flatten().tolist()) == {B * N + 1, 2 * B * N + 1}


def test_ema_memory_is_the_product_of_the_loop_momenta():
    w = ema_memory(300, (0.996, 1.0))
    assert w[0] == 1.0 and w.shape == (301,)
    assert w[-1] == pytest.approx(math.exp(-0.004 * 300 / 2), rel=2e-3)
    assert (w[1:] <= w[:-1]).all()
    assert ema_memory(10, (1.0, 1.0))[-1] == 1.0


def test_figure_helpers_draw_labelled_axes(tmp_path):
    import matplotlib.pyplot as plt

    stats = {"a": [context_statistics(MultiBlockMaskSampler(), (3, 3), steps=5)]}
    for axes in (
        plot_context_statistics(stats),
        plot_schedules(get_config("cpu-demo")),
        [plot_ema_memory({"demo": (30, (0.996, 1.0))})],
        [plot_contrastive_pairs(2, 2, 3)],
        plot_monitor_runs(
            {
                "r": [
                    {"step": 0, "jepa_loss": 1.0, "std": 0.3, "erank": 5.0, "cos": 0.9},
                    {"step": 1, "jepa_loss": 0.5, "std": 0.2, "erank": 4.0, "cos": 0.95},
                ]
            },
            thresholds={"std": 0.1},
        ),
    ):
        for ax in axes:
            assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
    plt.close("all")
