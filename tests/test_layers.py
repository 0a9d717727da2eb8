"""The small layers: drop-in ``torch.nn`` replacements (same keys, same function) and DropPath."""

import pytest
import torch
from torch import nn

from anysat_lite.model.layers import Dropout, DropPath, GroupNorm


@pytest.mark.parametrize("shape", [(300, 64), (50, 64, 7)])
def test_groupnorm_is_nn_groupnorm(shape):
    torch.manual_seed(0)
    ours, ref = GroupNorm(16, 64), nn.GroupNorm(16, 64)
    nn.init.normal_(ours.weight)
    nn.init.normal_(ours.bias)
    assert list(ours.state_dict()) == list(ref.state_dict()) == ["weight", "bias"]
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(shape) * 3 + 1
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)


def test_groupnorm_wrong_width_is_a_clear_error():
    with pytest.raises(ValueError, match=r"expects 16 channels on dim 1, got input of shape \[5, 12\]"):
        GroupNorm(4, 16)(torch.randn(5, 12))
    with pytest.raises(ValueError, match=r"expects 16 channels on dim 1, got input of shape \[5, 12, 3\]"):
        GroupNorm(4, 16)(torch.randn(5, 12, 3))


def test_dropout_is_identity_in_eval_and_drops_in_training():
    drop = Dropout(0.5)
    assert list(drop.state_dict()) == []
    x = torch.ones(1000, 100)
    assert drop.eval()(x) is x
    y = drop.train()(x)
    assert set(y.unique().tolist()) == {0.0, 2.0}
    assert abs((y == 0).float().mean().item() - 0.5) < 0.01


# --- DropPath ---------------------------------------------------------------------------------------------------------


def test_drop_path_is_identity_in_eval_and_at_zero_rate():
    x = torch.randn(8, 5, 3)
    assert DropPath(0.3).eval()(x) is x
    assert DropPath(0.0).train()(x) is x


def test_drop_path_drops_whole_samples_and_rescales():
    torch.manual_seed(0)
    p, B = 0.25, 4000
    x = (torch.rand(B, 3, 4) + 0.5).requires_grad_()
    y = DropPath(p).train()(x)
    dropped = (y == 0).flatten(1)
    kept = ~dropped
    assert (dropped.all(1) | kept.all(1)).all()  # a sample's branch goes as a whole
    keep_rate = kept.all(1).float().mean().item()
    assert abs(keep_rate - (1 - p)) < 5 * (p * (1 - p) / B) ** 0.5  # binomial: 5 standard deviations
    rows = kept.all(1)
    torch.testing.assert_close(y[rows], x.detach()[rows] / (1 - p))  # kept samples scaled: E[y] = x
    (g,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(g, rows[:, None, None].float().expand_as(x) / (1 - p))


def test_drop_path_draws_a_new_mask_per_call():
    torch.manual_seed(0)
    x = torch.ones(64, 2)
    drop = DropPath(0.5).train()
    assert not torch.equal(drop(x), drop(x))
