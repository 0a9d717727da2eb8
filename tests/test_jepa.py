"""EMA, losses, monitors, predictor and one JEPA step."""

import contextlib
import math

import pytest
import torch
import torch.nn.functional as F

from anysat_lite.config import get_config
from anysat_lite.errors import UserError
from anysat_lite.jepa import (
    JEPA,
    MultiBlockMaskSampler,
    Predictor,
    collapse_monitors,
    ema_update,
    make_target,
    sensor_alignment,
)
from anysat_lite.jepa.ema import momentum_at
from anysat_lite.jepa.losses import latent_loss, mil_nce, mil_nce_reference
from anysat_lite.jepa.model import gather_context


def test_momentum_schedule():
    assert momentum_at(0, 100) == pytest.approx(0.996)
    assert momentum_at(50, 100) == pytest.approx(0.998)
    assert momentum_at(100, 100) == pytest.approx(1.0) and momentum_at(200, 100) == pytest.approx(1.0)


def test_ema_update_math():
    online = torch.nn.Linear(3, 2)
    target = make_target(online)
    assert not any(p.requires_grad for p in target.parameters())
    before = target.weight.clone()
    with torch.no_grad():
        online.weight.add_(1.0)
    ema_update(target, online, 0.9)
    torch.testing.assert_close(target.weight, 0.9 * before + 0.1 * online.weight)


def _naive_milnce(tokens, tau):
    B, M, N, D = tokens.shape
    z = torch.nn.functional.normalize(tokens, dim=-1)
    total, count = 0.0, 0
    for m in range(M):
        for b in range(B):
            for n in range(N):
                a = z[b, m, n]
                allowed = [(m2, b2, n2) for m2 in range(M) for b2 in range(B) for n2 in range(N) if (m2, b2) != (m, b)]
                pos = [(m2, b, n) for m2 in range(M) if m2 != m]
                s = lambda k, a=a: (a @ z[k[1], k[0], k[2]] / tau).exp()  # noqa: E731
                total += -math.log(sum(s(k) for k in pos) / sum(s(k) for k in allowed))
                count += 1
    return total / count


def test_mil_nce_matches_a_hand_written_loop():
    torch.manual_seed(0)
    tokens = torch.randn(2, 3, 4, 5)
    assert mil_nce(tokens, 0.1).item() == pytest.approx(_naive_milnce(tokens, 0.1), rel=1e-4)
    assert mil_nce_reference(tokens, 0.1).item() == pytest.approx(_naive_milnce(tokens, 0.1), rel=1e-4)
    assert mil_nce(tokens[:, :1], 0.1).item() == 0.0 == mil_nce_reference(tokens[:, :1], 0.1).item()
    wide = torch.randn(4, 3, 9, 16)
    assert mil_nce(wide, 0.07).item() == pytest.approx(mil_nce_reference(wide, 0.07).item(), rel=1e-5)


def test_mil_nce_chunked_denominator_gradients(monkeypatch):
    """The chunked log-sum-exp (no [L, L] matrix kept) has exact gradients, whatever the chunking."""
    from anysat_lite import kernels

    torch.manual_seed(0)
    tokens = torch.randn(3, 2, 5, 4, dtype=torch.float64, requires_grad=True)  # L = 30 rows, blocks of 5
    whole = torch.autograd.grad(mil_nce(tokens, 0.1), tokens)[0]
    monkeypatch.setitem(kernels.LOGSUMEXP_CHUNK, "cpu", 300)  # 10-row chunks: 3 of them
    assert kernels._BlockMaskedLogSumExp._chunks(30, 5, tokens.device)[1] == 10
    chunked = torch.autograd.grad(mil_nce(tokens, 0.1), tokens)[0]
    torch.testing.assert_close(chunked, whole)
    monkeypatch.setitem(kernels.LOGSUMEXP_CHUNK, "cpu", 450)  # 15 rows: last chunk partial
    assert torch.autograd.gradcheck(lambda t: mil_nce(t, 0.1), (tokens,))
    f = torch.randn(12, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: kernels.block_masked_logsumexp(x, 4, 0.5), (f,))
    assert mil_nce(tokens.detach().float(), 0.1).item() == pytest.approx(_naive_milnce(tokens.detach(), 0.1), rel=1e-5)


def test_mil_nce_is_fp32_under_autocast():
    torch.manual_seed(0)
    tokens = torch.randn(4, 3, 9, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = mil_nce(tokens, 0.1)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(mil_nce(tokens, 0.1).item(), rel=1e-6)


def test_latent_loss_is_smooth_l1():
    a, b = torch.zeros(4), torch.tensor([0.5, -0.5, 2.0, -3.0])
    assert latent_loss(a, b).item() == pytest.approx((0.125 + 0.125 + 1.5 + 2.5) / 4)


def test_targets_are_layer_normed_and_the_ablations_use_batch_statistics():
    from anysat_lite.jepa import normalise_targets

    h = torch.randn(4, 9, 16) * torch.linspace(0.1, 3, 16) + 5.0  # [B, N, D], each dimension its own scale
    assert torch.equal(normalise_targets(h), F.layer_norm(h, (16,)))  # I-JEPA / AnySat
    centred = normalise_targets(h, center=True)
    assert torch.allclose(centred, F.layer_norm(h - h.mean(dim=(0, 1)), (16,)), atol=1e-6)
    std = normalise_targets(h, standardise=True)  # every dimension: zero mean, unit std over the 36 tokens
    assert torch.allclose(std.mean(dim=(0, 1)), torch.zeros(16), atol=1e-5)
    assert torch.allclose(std.pow(2).mean(dim=(0, 1)), torch.ones(16), atol=5e-3)  # up to the 1e-4 guard
    assert not torch.allclose(F.layer_norm(h, (16,)).pow(2).mean(dim=(0, 1)), torch.ones(16), atol=0.1)


def test_monitors_detect_collapse():
    torch.manual_seed(0)
    healthy = collapse_monitors(torch.randn(8, 9, 16), torch.randn(8, 16))
    dead = collapse_monitors(torch.ones(8, 9, 16) + 1e-6 * torch.randn(8, 9, 16), torch.ones(8, 16))
    assert healthy["std"] > 0.9 and healthy["erank"] > 10 and abs(healthy["cos"]) < 0.3
    assert dead["std"] < 1e-3 and dead["cos"] > 0.999


def test_place_cos_tells_one_vector_per_tile_from_distinct_places():
    torch.manual_seed(0)
    tiles = torch.randn(8, 1, 16)
    one_per_tile = collapse_monitors(tiles.expand(8, 9, 16) + 1e-3 * torch.randn(8, 9, 16), tiles[:, 0])
    distinct = collapse_monitors(torch.randn(8, 9, 16), tiles[:, 0])
    assert one_per_tile["place_cos"] > 0.999 and abs(one_per_tile["cos"]) < 0.3  # tiles differ, places do not
    assert abs(distinct["place_cos"]) < 0.1
    u = torch.nn.functional.normalize(torch.randn(3, 4, 16), dim=-1)  # the pair formula against the textbook loop
    loop = sum(u[b, i] @ u[b, j] for b in range(3) for i in range(4) for j in range(4) if i != j) / (3 * 4 * 3)
    assert collapse_monitors(u, u[:, 0])["place_cos"] == pytest.approx(loop.item(), abs=1e-5)
    assert "place_cos" not in collapse_monitors(torch.randn(8, 1, 16), tiles[:, 0])  # one patch: no pair


def test_sensor_alignment_tells_aligned_sensors_from_unrelated_ones():
    g = torch.Generator().manual_seed(0)
    place = torch.randn(6, 1, 9, 32, generator=g)  # [B, 1, N, D]: what each place is
    aligned = torch.cat([place, place + 0.3 * torch.randn(6, 1, 9, 32, generator=g)], dim=1)
    unrelated = torch.cat([place, torch.randn(6, 1, 9, 32, generator=g)], dim=1)
    a = sensor_alignment(aligned, ["s2", "aerial"])
    u = sensor_alignment(unrelated, ["s2", "aerial"])
    assert a["s2~aerial"] > 0.9 and abs(u["s2~aerial"]) < 0.1
    assert abs(a["any two places"]) < 0.1  # different places are not alike in either
    pairs = torch.einsum("bnd,cmd->bncm", *(torch.nn.functional.normalize(aligned[:, k], dim=-1) for k in (0, 1)))
    assert math.isclose(a["any two places"], pairs.mean().item(), abs_tol=1e-5)


def test_predictor_shapes_and_positions_matter():
    torch.manual_seed(0)
    p = Predictor(32, depth=2, num_heads=4)
    ctx = torch.randn(2, 5, 32)
    pos = torch.randn(9, 32)
    cidx = torch.tensor([[0, 1, 2, 3, 4], [4, 5, 6, 7, 8]])
    t1, t2 = torch.tensor([[5, 6], [0, 1]]), torch.tensor([[7, 8], [2, 3]])
    out = p(ctx, pos, cidx, [t1, t2])
    assert out.shape == (2, 2, 2, 32)
    assert not torch.allclose(out[0], out[1])  # different target positions -> different predictions


def _tiny_batch(B=4):
    return {
        "aerial": torch.randn(B, 4, 200, 200),
        "s2": torch.randn(B, 4, 10, 4, 4),
        "s2_dates": torch.randint(1, 366, (B, 4)),
        "s1-asc": torch.randn(B, 4, 2, 4, 4),
        "s1-asc_dates": torch.randint(1, 366, (B, 4)),
        "label": torch.zeros(B),
    }


def test_one_jepa_step_trains_only_online_parameters():
    cfg = get_config("cpu-demo")
    torch.manual_seed(0)
    model = JEPA(cfg, sensors=["aerial", "s2", "s1-asc"])
    x = _tiny_batch()
    masks = MultiBlockMaskSampler()(4, (4, 4), torch.Generator().manual_seed(0))
    gens = {k: torch.Generator().manual_seed(i) for i, k in enumerate(("dates", "modalities"))}
    out = model(x, 10, masks, gens, monitor=True)
    assert set(out) >= {"loss", "jepa_loss", "contrastive_loss", "std", "erank", "cos"}
    assert out["loss"].item() == pytest.approx(out["jepa_loss"].item() + out["contrastive_loss"].item(), rel=1e-5)
    out["loss"].backward()
    assert all(p.grad is None for p in model.target.parameters())
    assert model.modality_token.grad is not None and model.predictor.mask_token.grad is not None
    assert model.encoder.projectors["aerial"].conv.weight.grad is not None
    before = [p.clone() for p in model.target.parameters()]
    model.update_target(0.5)
    changed = any(not torch.equal(a, b) for a, b in zip(before, model.target.parameters()))
    assert not changed  # online == target at init, EMA keeps it
    with torch.no_grad():
        model.encoder.joint.cls_token.add_(1.0)
    model.update_target(0.5)
    torch.testing.assert_close(model.target.joint.cls_token, model.encoder.joint.cls_token - 0.5)


def test_contrastive_can_be_switched_off():
    cfg = get_config("cpu-demo", ["jepa.contrastive=false"])
    model = JEPA(cfg, sensors=["aerial", "s2", "s1-asc"])
    masks = MultiBlockMaskSampler()(4, (4, 4), torch.Generator().manual_seed(0))
    gens = {k: torch.Generator().manual_seed(i) for i, k in enumerate(("dates", "modalities"))}
    out = model(_tiny_batch(), 10, masks, gens)
    assert out["contrastive_loss"].item() == 0.0 and out["loss"].item() == out["jepa_loss"].item()


def test_jepa_refuses_masks_generators_and_configs_it_cannot_use():
    model = JEPA(get_config("cpu-demo"), sensors=["aerial", "s2", "s1-asc"])
    gens = {k: torch.Generator().manual_seed(i) for i, k in enumerate(("dates", "modalities"))}
    x, sampler = _tiny_batch(), MultiBlockMaskSampler()
    with pytest.raises(
        UserError,
        match=r"masks drawn for 4 tiles on a \(3, 3\) patch grid, but this batch has 4 tiles "
        r"on a \(4, 4\) grid \(P = 10 m\); draw them for it: sampler\(4, \(4, 4\), generator\)",
    ):
        model(x, 10, sampler(4, (3, 3), torch.Generator().manual_seed(0)), gens)  # would train on 9 of 16 patches
    with pytest.raises(UserError, match=r"masks drawn for 2 tiles on a \(4, 4\) patch grid, but this batch has 4"):
        model(x, 10, sampler(2, (4, 4), torch.Generator().manual_seed(0)), gens)
    with pytest.raises(UserError, match="masks: expected the Masks a sampler draws, got NoneType"):
        model(x, 10, None, gens)
    masks = sampler(4, (4, 4), torch.Generator().manual_seed(0))
    for bad in ({"dates": gens["dates"]}, None, torch.Generator()):
        with pytest.raises(UserError, match="generators: expected a dict with torch.Generator entries 'dates' and"):
            model(x, 10, masks, bad)
    with pytest.raises(UserError, match=r"'S2': not a sensor key .*did you mean 's2'\?"):  # trained on 2 of 3 before
        model({k.replace("s2", "S2"): v for k, v in x.items()}, 10, masks, gens)
    for bad in (get_config("cpu-demo").model, "cpu-demo"):
        with pytest.raises(UserError, match=r"JEPA takes the full Config .*e.g. JEPA\(get_config\('cpu-demo'\)\)"):
            JEPA(bad)


def _official_apply_masks(tokens, ctx_idx, n_sensors):
    """The official context gather, transcribed: ``JEPAAny.forward_encoder`` drops the first token of the
    ``[B, M N, D]`` sequence, then ``apply_masks`` reads patch ``m`` of sensor ``i`` at ``m + i n``."""
    x = tokens[:, 1:]
    n = x.shape[1] // n_sensors
    idx = torch.cat([ctx_idx + i * n for i in range(n_sensors)], dim=1)
    return torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))


def test_context_gather_by_patch_and_the_official_offset():
    B, M, N = 2, 3, 9
    code = torch.arange(M)[:, None] * 100 + torch.arange(N)  # sensor * 100 + patch
    tokens = code[None, :, :, None].expand(B, M, N, 2).float()
    ctx = torch.tensor([[0, 4, 8], [1, 2, 3]])
    by_patch = gather_context(tokens, ctx)[..., 0]
    assert torch.equal(by_patch, code[:, ctx].permute(1, 0, 2).float())
    official = gather_context(tokens, ctx, official_offset=True)
    ref = _official_apply_masks(tokens.reshape(B, M * N, 2), ctx, M).view(B, M, -1, 2)
    assert torch.equal(official, ref)
    # sensor 0 reads the next patch (and sensor 1's patch 0 after the last), sensor 2 the previous one
    assert official[0, :, :, 0].tolist() == [[1, 5, 100], [100, 104, 108], [108, 203, 207]]
    assert torch.equal(gather_context(tokens[:, :1], ctx, official_offset=True), gather_context(tokens[:, :1], ctx))


def test_context_gather_official_changes_what_the_context_reads_without_modis_only():
    def context_tokens(gather, x):
        torch.manual_seed(0)
        sensors = [k for k in x if k in ("aerial", "s2", "s1-asc", "modis")]
        model = JEPA(get_config("cpu-demo", [f"jepa.context_gather={gather}"]), sensors=sensors)
        masks = MultiBlockMaskSampler()(4, (4, 4), torch.Generator().manual_seed(0))
        gens = {k: torch.Generator().manual_seed(i) for i, k in enumerate(("dates", "modalities"))}
        return model(x, 10, masks, gens, return_intermediates=True)["intermediates"]["context_tokens"]

    x = _tiny_batch()
    assert not torch.equal(context_tokens("official", x), context_tokens("by_patch", x))
    x = {k: v for k, v in x.items() if not k.startswith("aerial")}  # a MODIS token leads: the official gather is right
    x["modis"] = torch.randn(4, 3, 7, 1, 1)
    x["modis_dates"] = torch.tensor([[10, 100, 200]] * 4)
    assert torch.equal(context_tokens("official", x), context_tokens("by_patch", x))


class _DeviceTraffic(torch.utils._python_dispatch.TorchDispatchMode):
    """Records, with the model on ``meta`` standing in for a GPU, what would make the host wait for it:
    values read back (``.item()``, ``bool()``, copies to the CPU) and copies to it without ``non_blocking``."""

    def __init__(self):
        super().__init__()
        self.waits, self.async_copies = [], 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if name == "_local_scalar_dense":  # a value read back: answer as a harmless valid input would
            self.waits.append("read of a value")
            return True if args[0].dtype == torch.bool else 1
        if name == "_to_copy" and args[0].device.type != str(kwargs.get("device", args[0].device)):
            if args[0].device.type == "meta":
                self.waits.append("copy to the host")
                return torch.ones(args[0].shape, dtype=kwargs.get("dtype") or args[0].dtype)
            if kwargs.get("non_blocking"):
                self.async_copies += 1
            else:
                self.waits.append("blocking copy to the device")
        return func(*args, **kwargs)


def _step_on_meta(monkeypatch, check_values: bool) -> _DeviceTraffic:
    """One JEPA step (forward, backward) of the demo model on ``meta``, three sensors, partly cloudy series."""
    real_autocast = torch.autocast  # no autocast state exists for meta: MIL-NCE's 'disabled' block becomes a no-op
    monkeypatch.setattr(
        torch,
        "autocast",
        lambda device_type, **kw: (
            contextlib.nullcontext() if device_type == "meta" else real_autocast(device_type, **kw)
        ),
    )
    torch.manual_seed(0)
    model = JEPA(get_config("cpu-demo"), sensors=["aerial", "s2", "s1-asc"])
    model.encoder.check_values = model.target.check_values = check_values
    model.to("meta")
    x = _tiny_batch(B=4)
    x["s2_mask"] = torch.rand(4, 4) > 0.3
    x["s2_mask"][:, 0] = True
    x = {k: v.to("meta") for k, v in x.items()}  # what the loop's non-blocking batch copy gives
    masks = MultiBlockMaskSampler()(4, (4, 4), torch.Generator().manual_seed(0))
    gens = {k: torch.Generator().manual_seed(i) for i, k in enumerate(("dates", "modalities", "views"))}
    traffic = _DeviceTraffic()
    with traffic:
        out = model(x, 10, masks.to("meta"), gens, rows=slice(0, 4), global_batch=4)
        out["loss"].backward()
    return traffic


def test_a_training_step_never_waits_for_the_device(monkeypatch):
    """The step's CPU-drawn masks, date draws, band shifts and modality masks reach the device without a
    blocking copy, and nothing is read back mid-step (the training loop reads the losses once, after the
    backward pass).  With the input value checks on, the same step reads values back: the probe sees waits."""
    assert get_config("cpu-demo").jepa.series_views  # the second date draw, with its band shift, is part of the step
    traffic = _step_on_meta(monkeypatch, check_values=False)
    assert traffic.waits == []
    # masks (context, 4 targets), date draws of 2 series twice (context, second view), their band shifts, modality mask
    assert traffic.async_copies == 5 + 2 * 2 + 2 + 1
    assert "read of a value" in _step_on_meta(monkeypatch, check_values=True).waits
