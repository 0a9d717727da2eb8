"""Mask samplers, modality masking, date dropping and band shifts."""

import pytest
import torch

from anysat_lite.config import get_config
from anysat_lite.errors import UserError
from anysat_lite.jepa.masks import (
    Masks,
    MultiBlockMaskSampler,
    RandomMaskSampler,
    SingleBlockMaskSampler,
    build_mask_sampler,
    context_overlaps,
    context_statistics,
    drop_dates,
    masks_to_grid,
    modality_mask,
    shift_bands,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("grid", [(6, 6), (12, 12), (4, 8)])
def test_multiblock_properties(grid):
    s = MultiBlockMaskSampler(target_scale=(0.15, 0.2))  # small targets: the constraints never need relaxing
    m = s(16, grid, gen(1))
    n = grid[0] * grid[1]
    assert m.context.shape[0] == 16 and len(m.targets) == 4
    assert all(t.shape == m.targets[0].shape for t in m.targets)  # same block size in a batch
    for b in range(16):
        ctx = set(m.context[b].tolist())
        assert max(ctx) < n and m.context[b].tolist() == sorted(ctx)
        for t in m.targets:
            assert not ctx & set(t[b].tolist())  # no overlap (allow_overlap=False)
            assert max(t[b].tolist()) < n


def test_block_scale_and_aspect_come_from_one_draw():
    """As in I-JEPA and the official collator, one uniform draw sets both area and aspect ratio."""
    for seed in range(20):
        g = gen(seed)
        r = float(torch.rand(1, generator=gen(seed)))
        h, w = MultiBlockMaskSampler.block_size(g, (20, 20), (0.2, 0.8), (0.75, 1.5))
        keep = int(400 * (0.2 + 0.6 * r))
        ar = 0.75 + 0.75 * r
        assert (h, w) == (min(round((keep * ar) ** 0.5), 19), min(round((keep / ar) ** 0.5), 19))


def test_blocks_stay_strictly_inside_the_grid():
    # I-JEPA clamps every block below the grid size: on a 3 x 3 grid the context block is 2 x 2 at most
    assert MultiBlockMaskSampler.block_size(gen(0), (3, 3), (1.0, 1.0), (1.0, 1.0)) == (2, 2)


def test_official_numbers_leave_one_context_patch_on_small_grids():
    """The reason the CPU demo does not use AnySat's mask numbers (notebook 02)."""
    official = MultiBlockMaskSampler()
    small = context_statistics(official, (3, 3), steps=50)
    assert small["p_one"] > 0.9 and small["mean_share"] < 0.15
    large = context_statistics(official, (12, 12), steps=50)
    assert large["mean_patches"] > 4 * small["mean_patches"]


def test_relaxation_lets_the_context_overlap_ignored_targets():
    # 2 x 2 grid: 4 one-patch targets and a 1 x 1 context block often leave nothing; I-JEPA relaxes
    s = MultiBlockMaskSampler(n_targets=4, target_scale=(0.25, 0.25), context_scale=(0.25, 0.25))
    m = s(64, (2, 2), gen(0))
    overlaps = sum(bool(set(m.context[b].tolist()) & {int(t[b]) for t in m.targets}) for b in range(64))
    assert 0 < overlaps < 64
    strict = MultiBlockMaskSampler(n_targets=4, target_scale=(0.25, 0.25), context_scale=(0.25, 0.25), relax=False)
    with pytest.raises(ValueError, match="relax=False"):
        for seed in range(20):
            strict(64, (2, 2), gen(seed))


def test_min_keep_is_honoured():
    s = MultiBlockMaskSampler(target_scale=(0.15, 0.2), min_keep=6)
    for seed in range(5):
        assert s(8, (6, 6), gen(seed)).context.shape[1] >= 6
    with pytest.raises(ValueError, match="min_keep=10"):
        MultiBlockMaskSampler(min_keep=10)(2, (3, 3), gen(0))  # a 2 x 2 context block cannot hold 10


def test_complement_context_is_every_patch_outside_the_targets():
    s = MultiBlockMaskSampler(n_targets=2, target_scale=(0.1, 0.2), context="complement")
    m = s(8, (6, 6), gen(4))
    for b in range(8):
        tgt = set().union(*(set(t[b].tolist()) for t in m.targets))
        ctx = set(m.context[b].tolist())
        assert not ctx & tgt
        # equalised to the smallest context of the batch: a subset of the complement, of that size
        assert ctx <= set(range(36)) - tgt and len(ctx) == min(
            36 - len(set().union(*(set(t[c].tolist()) for t in m.targets))) for c in range(8)
        )


@pytest.mark.parametrize("preset", ["cpu-demo"])
def test_demo_context_is_a_real_part_of_every_grid(preset):
    """The demo's masks leave a real context: mean share >= 25 % and >= 4 context patches in >= 90 % of steps."""
    from anysat_lite.config import get_config

    cfg = get_config(preset)
    sampler = build_mask_sampler(cfg.jepa)
    for spec in cfg.data.datasets:
        for P in spec.patch_sizes:
            grid = (cfg.data.tile_m // P,) * 2
            st = context_statistics(sampler, grid, steps=100, batch_size=cfg.train.batch_size)
            assert st["mean_share"] >= 0.25 and st["p_at_least_4"] >= 0.9, (P, st)


@pytest.mark.parametrize("preset", ["tiny", "small", "base", "base-cuda"])
def test_official_size_presets_keep_anysat_mask_numbers(preset):
    from anysat_lite.config import JEPAConfig, get_config

    j, official = get_config(preset).jepa, JEPAConfig()
    assert (j.mask, j.n_targets, j.target_scale, j.target_aspect, j.context_scale, j.context, j.min_keep) == (
        "multiblock",
        4,
        (0.2, 0.8),
        (0.75, 1.5),
        (0.85, 1.0),
        "block",
        1,
    )
    assert j == official


def test_masks_are_deterministic_in_the_generator():
    s = MultiBlockMaskSampler()
    a, b = s(8, (6, 6), gen(5)), s(8, (6, 6), gen(5))
    assert torch.equal(a.context, b.context) and all(torch.equal(x, y) for x, y in zip(a.targets, b.targets))
    draws = {tuple(s(8, (6, 6), gen(k)).context.flatten().tolist()) for k in range(6)}
    assert len(draws) > 1  # other seeds, other masks


def test_sharding_keeps_rows():
    m = MultiBlockMaskSampler()(8, (6, 6), gen(0))
    part = m.shard(4, 8)
    assert torch.equal(part.context, m.context[4:]) and torch.equal(part.targets[1], m.targets[1][4:])


def test_random_and_single_block():
    r = RandomMaskSampler(keep=0.25)(3, (4, 4), gen(0))
    assert r.context.shape == (3, 4) and r.targets[0].shape == (3, 12)
    for b in range(3):
        assert sorted(r.context[b].tolist() + r.targets[0][b].tolist()) == list(range(16))
    sb = SingleBlockMaskSampler()(3, (6, 6), gen(0))
    assert len(sb.targets) == 1
    for b in range(3):
        assert sorted(sb.context[b].tolist() + sb.targets[0][b].tolist()) == list(range(36))  # a partition
    pic = masks_to_grid(sb, 0)
    assert pic.shape == (6, 6) and set(pic.unique().tolist()) <= {0, 1, 2}


@pytest.mark.parametrize("grid", [(2, 2), (3, 3), (6, 6), (4, 7)])
def test_single_block_context_is_the_complement_of_one_rectangle_inside_the_grid(grid):
    h, w = grid
    sampler = SingleBlockMaskSampler(target_scale=(0.2, 1.0))
    for seed in range(10):
        m = sampler(4, grid, gen(seed))
        assert len(m.targets) == 1 and m.targets[0].shape[0] == 4
        for b in range(4):
            tgt = m.targets[0][b]
            rows, cols = tgt // w, tgt % w
            bh, bw = int(rows.max() - rows.min()) + 1, int(cols.max() - cols.min()) + 1
            assert len(set(tgt.tolist())) == len(tgt) == bh * bw  # one full rectangle
            assert 1 <= bh <= h - 1 and 1 <= bw <= w - 1  # strictly inside the grid, whatever the scale
            complement = sorted(set(range(h * w)) - set(tgt.tolist()))
            assert m.context[b].tolist() == complement  # the context is exactly every other patch
            assert len(complement) >= h + w - 1  # at least one full row and one full column
    # the clamp: a block of the whole 3 x 3 grid becomes 2 x 2, and a block of no patch becomes 1 x 1
    assert SingleBlockMaskSampler((1.0, 1.0), (1.0, 1.0))(2, (3, 3), gen(0)).targets[0].shape == (2, 4)
    assert SingleBlockMaskSampler((0.01, 0.01), (1.0, 1.0))(2, (3, 3), gen(0)).targets[0].shape == (2, 1)


def test_too_small_grid():
    with pytest.raises(ValueError, match="at least 2 patches"):
        MultiBlockMaskSampler()(2, (1, 1), gen(0))


@pytest.mark.parametrize(
    "call, pattern",
    [
        (
            lambda: MultiBlockMaskSampler()(2, 6, gen()),
            r"^MultiBlockMaskSampler: grid=6: expected the patch grid \(h, w\)",
        ),
        (lambda: MultiBlockMaskSampler()(0, (6, 6), gen()), r"^MultiBlockMaskSampler: batch_size=0: expected a whole"),
        (
            lambda: RandomMaskSampler()(2, (6, 6), 0),
            r"^RandomMaskSampler: generator=0: expected a torch.Generator; e.g",
        ),
        (lambda: context_statistics(MultiBlockMaskSampler(), 6), r"^context_statistics: grid=6: expected the patch"),
        (lambda: RandomMaskSampler(1.5), r"^RandomMaskSampler: keep=1.5: expected a share of the patches in \(0, 1\]"),
        (lambda: modality_mask(1, 3, 36, 2.0, gen()), r"^modality_mask: ratio=2.0: expected a share in \[0, 1\]"),
        (lambda: modality_mask(1, 3, 36, -1.0, gen()), r"^modality_mask: ratio=-1.0: expected a share in \[0, 1\]"),
        (
            lambda: MultiBlockMaskSampler(context_scale=(0.85, 1.5)),
            r"^MultiBlockMaskSampler: context_scale=\(0.85, 1.5\): expected \(low, high\) with low <= high, in "
            r"\(0, 1\]",
        ),
        (
            lambda: MultiBlockMaskSampler(target_scale=(0.2, 0.15)),
            r"^MultiBlockMaskSampler: target_scale=\(0.2, 0.15\)",
        ),
    ],
)
def test_samplers_refuse_wrong_arguments_in_one_line(call, pattern):
    """A grid given as one number, a batch of 0, a seed for the generator, shares outside [0, 1] and reversed
    ranges: raw TypeErrors, 'min() arg is an empty sequence', or silently accepted before."""
    with pytest.raises(UserError, match=pattern):
        call()


def test_modality_mask_keeps_one_modality_everywhere():
    m = modality_mask(4, 3, 10, 0.5, gen(0))
    assert m.shape == (4, 3, 10)
    kept = ~m
    assert (kept.sum(1) >= 1).all()  # one modality kept at every location
    # 10 kept for coverage + int(10 * 2 * 0.5) = 10 more
    assert (kept.flatten(1).sum(1) == 20).all()
    assert not modality_mask(2, 1, 10, 0.5, gen(0)).any()  # single modality: nothing masked
    torch.testing.assert_close(
        modality_mask(4, 3, 10, 0.5, gen(7), rows=slice(2, 4)), modality_mask(4, 3, 10, 0.5, gen(7))[2:]
    )


def test_drop_dates():
    x = {
        "s2": torch.arange(2 * 6).float().view(2, 6, 1, 1, 1).expand(2, 6, 10, 2, 2).clone(),
        "s2_dates": torch.arange(12).view(2, 6) * 10,
        "s2_mask": torch.ones(2, 6, dtype=torch.bool),
        "aerial": torch.rand(2, 4, 100, 100),
    }
    y = drop_dates(x, 0.5, gen(0))
    assert y["s2"].shape == (2, 3, 10, 2, 2) and y["s2_dates"].shape == (2, 3) and y["s2_mask"].shape == (2, 3)
    assert torch.equal(y["aerial"], x["aerial"])
    for b in range(2):
        d = y["s2_dates"][b]
        assert torch.all(d[1:] > d[:-1])  # kept in order
        assert torch.equal(y["s2"][b, :, 0, 0, 0] * 10, d.float())  # values follow their dates
    one = drop_dates({"s2": torch.rand(1, 1, 10, 2, 2), "s2_dates": torch.tensor([[5]])}, 0.5, gen(0))
    assert one["s2"].shape[1] == 1  # at least one date stays
    shard = drop_dates({k: v[1:2] for k, v in x.items()}, 0.5, gen(3), rows=slice(1, 2), global_batch=2)
    ref = drop_dates(x, 0.5, gen(3))
    assert torch.equal(shard["s2_dates"][0], ref["s2_dates"][1])  # same draw as in the global batch


def test_drop_dates_never_leaves_a_tile_only_padding_and_keeps_other_draws():
    """A tile with one real date padded to 8 (zero images at day 0, mask False): every draw keeps the real
    date; tiles without padding keep the plain draw, cloudy dates included (as the official code)."""
    B, T = 64, 8
    dates = torch.arange(1, T + 1).repeat(B, 1)
    dates[:32, 1:] = 0  # tiles 0-31: one real date, then padding
    valid = dates > 0
    valid[32:, :6] = False  # tiles 32-63: no padding, six cloudy dates of eight
    x = {"s2": torch.rand(B, T, 10, 2, 2), "s2_dates": dates, "s2_mask": valid}
    stranded_cloudy = 0
    for seed in range(20):
        y = drop_dates(x, 0.5, gen(seed))
        assert y["s2_mask"].shape == (B, 4) and y["s2_mask"][:32].sum(1).eq(1).all()  # the real date, no padding
        assert y["s2_dates"][:32].eq(1).any(1).all()
        plain = drop_dates({k: v[32:] for k, v in x.items()}, 0.5, gen(seed), rows=slice(32, B), global_batch=B)
        assert torch.equal(plain["s2_dates"], y["s2_dates"][32:])  # the draw of a tile without padding
        cloudy = ~x["s2_mask"][32:].gather(1, y["s2_dates"][32:] - 1).any(1)  # kept only cloudy dates
        assert y["s2_mask"][32:][cloudy].all()  # then marked valid, as before
        stranded_cloudy += int(cloudy.sum())
    assert stranded_cloudy > 0  # the case above happened
    padded = {**x, "s2_mask": torch.zeros(B, T, dtype=torch.bool)}
    none = drop_dates(padded, 0.5, gen(0))
    assert none["s2_mask"][:32].sum(1).eq(1).all() and none["s2_mask"][32:].all()  # real dates only, if any
    day0 = {**x, "s2_dates": dates - 1}  # PASTIS counts days from 0: a real date may be day 0, the mask says so
    day0["s2_dates"][:32, 1:] = 0
    for seed in range(20):
        y = drop_dates(day0, 0.5, gen(seed))
        assert y["s2_mask"][:32].sum(1).eq(1).all()  # the real day-0 date kept and valid, the padding masked


def test_shift_bands_moves_each_band_of_a_tile_by_one_offset():
    """One offset per (tile, band), the same at every date and pixel: the spectral level changes, the
    changes over the season (what tells a winter crop from a summer crop) do not."""
    g = torch.Generator().manual_seed(5)
    x = {
        "s2": torch.randn(3, 6, 10, 4, 4, generator=g),
        "s2_dates": torch.arange(18).view(3, 6),
        "aerial": torch.rand(3, 4, 8, 8),
    }
    y = shift_bands(x, 0.3, gen(1))
    delta = y["s2"] - x["s2"]
    assert torch.allclose(delta, delta[:, :1, :, :1, :1].expand_as(delta), atol=1e-6)  # constant over dates, pixels
    assert torch.allclose(torch.diff(y["s2"], dim=1), torch.diff(x["s2"], dim=1), atol=1e-6)
    assert delta[:, 0, :, 0, 0].std() > 0.1 and not torch.allclose(delta[0, 0, :, 0, 0], delta[1, 0, :, 0, 0])
    assert torch.equal(y["aerial"], x["aerial"]) and torch.equal(y["s2_dates"], x["s2_dates"])
    shard = shift_bands({k: v[1:2] for k, v in x.items()}, 0.3, gen(1), rows=slice(1, 2), global_batch=3)
    torch.testing.assert_close(shard["s2"][0], y["s2"][1])  # the draw of the global batch
    g0 = gen(2)
    assert shift_bands(x, 0.0, g0)["s2"] is x["s2"]  # off: unchanged, and no draw taken
    assert torch.equal(torch.rand(3, generator=g0), torch.rand(3, generator=gen(2)))


def test_context_overlaps_finds_target_patches_in_the_context():
    m = Masks(torch.tensor([[0, 1], [2, 3]]), [torch.tensor([[1, 2], [0, 1]]), torch.tensor([[3, 3], [1, 1]])], (2, 2))
    assert context_overlaps(m).tolist() == [True, False]
    demo = build_mask_sampler(get_config("cpu-demo").jepa)
    # min_keep=4 on four patches: every target is ignored, the context is the whole grid; on 3x3 never
    assert context_statistics(demo, (2, 2), steps=20)["overlap_share"] == 1.0
    assert context_statistics(demo, (3, 3), steps=20)["overlap_share"] == 0.0
    assert 0 < context_statistics(MultiBlockMaskSampler(min_keep=6), (6, 6), steps=20)["overlap_share"] < 1
