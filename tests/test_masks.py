"""Mask samplers, modality masking and date dropping."""
import pytest
import torch

from anysat_lite.jepa.masks import (MultiBlockMaskSampler, RandomMaskSampler, SingleBlockMaskSampler, drop_dates,
                                    masks_to_grid, modality_mask)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("grid", [(6, 6), (3, 3), (2, 2), (4, 8)])
def test_multiblock_properties(grid):
    s = MultiBlockMaskSampler()  # AnySat defaults: 4 targets, scale .2-.8, aspect .75-1.5, context .85-1
    m = s(16, grid, gen(1))
    n = grid[0] * grid[1]
    assert m.context.shape[0] == 16 and len(m.targets) == 4
    assert all(t.shape == m.targets[0].shape for t in m.targets)   # same block size in a batch
    assert m.context.shape[1] >= 1
    for b in range(16):
        ctx = set(m.context[b].tolist())
        assert max(ctx) < n and m.context[b].tolist() == sorted(ctx)
        for t in m.targets:
            assert not ctx & set(t[b].tolist())                      # no overlap (allow_overlap=False)
            assert max(t[b].tolist()) < n


def test_target_blocks_are_rectangles_of_the_requested_scale():
    s = MultiBlockMaskSampler(n_targets=1, target_scale=(0.25, 0.25), target_aspect=(1.0, 1.0))
    m = s(4, (8, 8), gen(2))
    for b in range(4):
        idx = m.targets[0][b]
        rows, cols = idx // 8, idx % 8
        assert len(idx) == 16 and (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1) == 16


def test_masks_are_deterministic_in_the_generator():
    s = MultiBlockMaskSampler()
    a, b = s(8, (6, 6), gen(5)), s(8, (6, 6), gen(5))
    assert torch.equal(a.context, b.context) and all(torch.equal(x, y) for x, y in zip(a.targets, b.targets))
    assert not torch.equal(a.context, s(8, (6, 6), gen(6)).context) or a.targets[0].shape != s(8, (6, 6), gen(6)).targets[0].shape


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
        assert len(sb.context[b]) + len(sb.targets[0][b]) <= 36
    pic = masks_to_grid(sb, 0)
    assert pic.shape == (6, 6) and set(pic.unique().tolist()) <= {0, 1, 2}


def test_too_small_grid():
    with pytest.raises(ValueError, match="at least 2 patches"):
        MultiBlockMaskSampler()(2, (1, 1), gen(0))


def test_modality_mask_keeps_one_modality_everywhere():
    m = modality_mask(4, 3, 10, 0.5, gen(0))
    assert m.shape == (4, 3, 10)
    kept = ~m
    assert (kept.sum(1) >= 1).all()                          # one modality kept at every location
    # 10 kept for coverage + int(10 * 2 * 0.5) = 10 more
    assert (kept.flatten(1).sum(1) == 20).all()
    assert not modality_mask(2, 1, 10, 0.5, gen(0)).any()   # single modality: nothing masked
    torch.testing.assert_close(modality_mask(4, 3, 10, 0.5, gen(7), rows=slice(2, 4)), modality_mask(4, 3, 10, 0.5, gen(7))[2:])


def test_drop_dates():
    x = {"s2": torch.arange(2 * 6).float().view(2, 6, 1, 1, 1).expand(2, 6, 10, 2, 2).clone(),
         "s2_dates": torch.arange(12).view(2, 6) * 10, "s2_mask": torch.ones(2, 6, dtype=torch.bool),
         "aerial": torch.rand(2, 4, 100, 100)}
    y = drop_dates(x, 0.5, gen(0))
    assert y["s2"].shape == (2, 3, 10, 2, 2) and y["s2_dates"].shape == (2, 3) and y["s2_mask"].shape == (2, 3)
    assert torch.equal(y["aerial"], x["aerial"])
    for b in range(2):
        d = y["s2_dates"][b]
        assert torch.all(d[1:] > d[:-1])                       # kept in order
        assert torch.equal(y["s2"][b, :, 0, 0, 0] * 10, d.float())   # values follow their dates
    one = drop_dates({"s2": torch.rand(1, 1, 10, 2, 2), "s2_dates": torch.tensor([[5]])}, 0.5, gen(0))
    assert one["s2"].shape[1] == 1                            # at least one date stays
    shard = drop_dates({k: v[1:2] for k, v in x.items()}, 0.5, gen(3), rows=slice(1, 2), global_batch=2)
    ref = drop_dates(x, 0.5, gen(3))
    assert torch.equal(shard["s2_dates"][0], ref["s2_dates"][1])   # same draw as in the global batch
