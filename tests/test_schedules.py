"""Learning-rate, weight-decay and EMA-momentum schedules, and how a training step applies them."""

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from anysat_lite.config import get_config
from anysat_lite.jepa.ema import momentum_at
from anysat_lite.train.loop import _param_groups, _schedule
from anysat_lite.train.schedules import cosine, lr_at

LR, MIN_LR, WARMUP, TOTAL = 1e-3, 1e-6, 10, 110


def lr(step):
    return lr_at(step, TOTAL, LR, MIN_LR, WARMUP)


def test_lr_warms_up_linearly_from_min_lr_to_the_peak():
    assert lr(0) == pytest.approx(MIN_LR)
    assert lr(WARMUP // 2) == pytest.approx((LR + MIN_LR) / 2)
    assert lr(WARMUP) == pytest.approx(LR)
    steps = [lr(s) for s in range(WARMUP + 1)]
    increments = [b - a for a, b in zip(steps, steps[1:])]
    assert increments == pytest.approx([(LR - MIN_LR) / WARMUP] * WARMUP)  # a straight line


def test_lr_then_follows_a_half_cosine_down_to_min_lr_and_stays_there():
    span = TOTAL - WARMUP
    assert lr(WARMUP + span // 2) == pytest.approx((LR + MIN_LR) / 2)  # half-way down at half the decay
    quarter = MIN_LR + (LR - MIN_LR) * 0.5 * (1 + math.cos(math.pi / 4))
    assert lr(WARMUP + span // 4) == pytest.approx(quarter)
    assert lr(TOTAL) == pytest.approx(MIN_LR) and lr(TOTAL + 50) == pytest.approx(MIN_LR)
    decay = [lr(s) for s in range(WARMUP, TOTAL + 1)]
    assert all(a > b for a, b in zip(decay, decay[1:]))  # strictly decreasing after the warm-up
    assert max(lr(s) for s in range(TOTAL + 1)) == pytest.approx(LR)


def test_lr_without_warmup_starts_at_the_peak():
    assert lr_at(0, 100, LR, 0.0, 0) == pytest.approx(LR)
    assert lr_at(50, 100, LR, 0.0, 0) == pytest.approx(LR / 2)


def test_weight_decay_follows_a_cosine_from_start_to_end():
    """I-JEPA raises the weight decay from 0.04 to 0.4 along a cosine."""
    wd = [cosine(s, 100, 0.04, 0.4) for s in range(101)]
    assert wd[0] == pytest.approx(0.04) and wd[50] == pytest.approx(0.22) and wd[100] == pytest.approx(0.4)
    assert all(a < b for a, b in zip(wd, wd[1:]))
    assert cosine(-5, 100, 0.04, 0.4) == pytest.approx(0.04) and cosine(500, 100, 0.04, 0.4) == pytest.approx(0.4)
    assert cosine(37, 100, 0.05, 0.05) == pytest.approx(0.05)  # equal ends: constant


def test_ema_momentum_rises_linearly_and_reaches_one_at_the_last_step():
    m = [momentum_at(s, 200, 0.99, 1.0) for s in range(201)]
    assert m[0] == pytest.approx(0.99) and m[50] == pytest.approx(0.9925) and m[200] == pytest.approx(1.0)
    steps = [b - a for a, b in zip(m, m[1:])]
    assert steps == pytest.approx([0.01 / 200] * 200)
    assert momentum_at(-3, 200) == pytest.approx(0.996) and momentum_at(900, 200) == pytest.approx(1.0)


class _Tiny(nn.Module):
    """A weight matrix, a bias, a norm and a ``target.`` copy, as a JEPA holds them."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.norm = nn.LayerNorm(3)
        self.target = nn.Linear(4, 3)


def _state(overrides):
    cfg = get_config("cpu-demo", overrides)
    model = _Tiny()
    groups = _param_groups(model, cfg.train.recipe, cfg.train.weight_decay)
    opt = torch.optim.AdamW(groups, lr=cfg.train.lr)
    return SimpleNamespace(cfg=cfg, opt=opt), model


def test_ijepa_step_schedule_decays_weights_only():
    overrides = [f"train.lr={LR}", f"train.min_lr={MIN_LR}", f"train.warmup_steps={WARMUP}", f"train.steps={TOTAL}"]
    state, model = _state(overrides + ["train.weight_decay=0.04", "train.final_weight_decay=0.4"])
    decay, no_decay = state.opt.param_groups
    assert [id(p) for p in decay["params"]] == [id(model.fc.weight)]  # not biases, norms or the target
    assert {id(p) for p in no_decay["params"]} == {id(model.fc.bias), id(model.norm.weight), id(model.norm.bias)}
    for step in (0, 5, WARMUP, 60, TOTAL - 1):
        out = _schedule(state, step)
        assert out == {"lr": pytest.approx(lr(step)), "wd": pytest.approx(cosine(step, TOTAL, 0.04, 0.4))}
        assert decay["lr"] == no_decay["lr"] == pytest.approx(lr(step))
        assert decay["weight_decay"] == pytest.approx(out["wd"]) and no_decay["weight_decay"] == 0.0


def test_anysat_step_schedule_keeps_lr_and_decays_every_parameter():
    state, model = _state(["train.recipe=anysat", "train.lr=5e-5", "train.weight_decay=0.05", "train.val_every=10"])
    (group,) = state.opt.param_groups
    assert len(group["params"]) == 4 and group["weight_decay"] == 0.05  # fc weight and bias, norm weight and bias
    group["lr"] = 5e-6  # as ReduceLROnPlateau leaves it after a plateau
    assert _schedule(state, 123) == {"lr": 5e-6, "wd": 0.05}
    assert group["lr"] == 5e-6 and group["weight_decay"] == 0.05  # read, not overwritten
