"""What the notebooks open up: intermediates exposed by the model (attention weights, L-TAE attention, the
pipeline trace), the official-format writer, and the figure helpers' choices (band composites, PCA colours)."""

import dataclasses

import numpy as np
import pytest
import torch

from anysat_lite import AnySat, load_official
from anysat_lite.data.contract import random_sample
from anysat_lite.model.irpe import add_prefix, euclidean_buckets, grid_coords
from anysat_lite.model.official import convert_official_state_dict, to_official_state_dict
from anysat_lite.model.trace import fusion_locality, trace_pipeline
from anysat_lite.sensors import OFFICIAL_SENSORS
from anysat_lite.viz import composite, cosine_similarity_map, pca_colours


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return AnySat("nano", sensors=["aerial", "s2", "s1-asc"]).eval()


@pytest.fixture(scope="module")
def sample():
    return random_sample(
        ["aerial", "s2", "s1-asc"], extent_m=60, batch=2, n_dates=5, generator=torch.Generator().manual_seed(0)
    )


def test_ltae_attention_is_what_the_forward_pools_with(model, sample):
    proj = model.projectors["s2"]
    valid = torch.tensor([[True, True, False, True, True], [True, False, True, True, False]])
    with torch.no_grad():
        a = proj.attention(sample["s2"], sample["s2_dates"], valid)  # [B, H, W, heads, T]
        assert a.shape == (2, 6, 6, proj.ltae.n_head, 5)
        torch.testing.assert_close(a.sum(-1), torch.ones(a.shape[:-1]))
        assert a[0, ..., 2].max() < 1e-30 and a[1, ..., [1, 4]].max() < 1e-30
        # A masked date's values do not reach the output; an unmasked date's do.
        out = proj(sample["s2"], sample["s2_dates"], valid)
        changed = sample["s2"].clone()
        changed[0, 2] += 5.0
        assert torch.equal(proj(changed, sample["s2_dates"], valid), out)
        changed[0, 0] += 5.0
        assert not torch.allclose(proj(changed, sample["s2_dates"], valid)[0], out[0])


def test_ltae_attention_checks_its_inputs_as_the_forward_does(model, sample):
    from anysat_lite.data.contract import SampleError

    proj, x, d = model.projectors["s2"], sample["s2"][:1], sample["s2_dates"][:1]
    valid = torch.tensor([[True, False, True, True, False]])
    with torch.no_grad():
        a = proj.attention(x, d, valid)
        # what forward accepts: 1-D dates and masks (the same for every sample), 0/1 masks of any dtype
        torch.testing.assert_close(proj.attention(x, d[0], valid[0]), a)
        torch.testing.assert_close(proj.attention(x, d, valid.float()), a)  # a RuntimeError before
        for args, pattern in (
            ((x, d, torch.zeros_like(valid)), r"^s2_mask: every sample needs at least one valid date$"),  # uniform
            ((x, d, valid[:, :3]), r"^s2_mask: expected shape \[B, T\] = \[1, 5\] \(True = valid date\), got"),
            ((x, d, torch.tensor([[0.9, 0.0, 0.2, 1.0, 1.0]])), r"^s2_mask: expected True/False \(or 0/1\) per date"),
            ((x, d[:, :3]), r"^s2_dates: expected shape \[B, T\] = \[1, 5\], got \[1, 3\]"),
            ((x[0], d[0]), r"^s2: expected a 5-D tensor \[B, T, C, H, W\] .*add the batch axis: x\['s2'\]\[None\]"),
        ):
            with pytest.raises(SampleError, match=pattern):
                proj.attention(*args)


@pytest.mark.parametrize("rpe", [False, True])
def test_attention_weights_reproduce_the_fast_forward(rpe):
    from anysat_lite.model.blocks import SelfAttention

    torch.manual_seed(1)
    attn = SelfAttention(32, 4, rpe=rpe).eval()
    if rpe:
        torch.nn.init.normal_(attn.rpe.weight, std=1.0)  # a bias that matters
    x = torch.randn(3, 1 + 16, 32)
    buckets = add_prefix(euclidean_buckets(grid_coords(4, 4), grid_coords(4, 4)), 1, 1) if rpe else None
    with torch.no_grad():
        w, bias = attn.weights(x, buckets)
        assert (bias is None) != rpe and w.shape == (3, 4, 17, 17)
        _, _, v = attn.heads(x)
        by_hand = attn.proj((w @ v).transpose(1, 2).reshape(3, 17, 32))
        torch.testing.assert_close(by_hand, attn(x, buckets), atol=1e-5, rtol=1e-4)
        if rpe:  # the bias is the first head's, the same for every head
            q, _, _ = attn.heads(x)
            torch.testing.assert_close(bias, attn.rpe(q[:, :1] * attn.scale, buckets))


def test_fusion_weights_reproduce_the_fusion_output(model, sample):
    trace = trace_pipeline(model, sample, 20, outputs=False)
    fusion = model.fusion
    with torch.no_grad():
        x = fusion.norm1(trace.joint)
        pos, coords = model.patch_positions(trace.grid, 2.0)
        from anysat_lite.model.fusion import fusion_buckets

        qpos = torch.cat([pos.new_zeros(1, 1, model.embed_dim), pos[None]], dim=1)
        w = fusion.attn.weights(x, qpos, fusion_buckets(coords, 3, 1))
        _, _, v = fusion.attn.heads(x, qpos)
        attended = fusion.attn.proj((w @ v).transpose(1, 2).reshape(2, 10, model.embed_dim))
        fused = attended + fusion.mlp(fusion.norm2(attended))
    torch.testing.assert_close(w, trace.fusion_weights, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(fused, trace.fused, atol=1e-5, rtol=1e-4)


def test_trace_records_a_real_forward_pass_and_leaves_no_hooks(model, sample):
    trace = trace_pipeline(model, sample, 20, output_modality="aerial")
    with torch.no_grad():
        torch.testing.assert_close(trace.fused, model(sample, 20, output="all"), atol=1e-5, rtol=1e-4)
        assert trace.outputs == {
            m: tuple(model(sample, 20, output=m, output_modality="aerial").shape)
            for m in ("dense", "tile", "patch", "all")
        }
    assert trace.grid == (3, 3) and trace.patch_tokens.shape == (2, 27, 64) and trace.joint.shape == (2, 28, 64)
    assert trace.grouped == {"aerial": (18, 100, 64), "s2": (18, 4, 64), "s1-asc": (18, 4, 64)}
    assert trace.projected["aerial"].shape == (2, 30, 30, 64) and trace.subpatch_m["aerial"] == 2.0
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_trace_refuses_a_sample_the_model_refuses_with_the_models_message(model, sample):
    from anysat_lite.data.contract import SampleError

    misspelled = {"S2": sample["s2"], "S2_dates": sample["s2_dates"]}
    for x, pattern in (
        (misspelled, r"^'S2': unknown sensor 'S2'; "),  # an IndexError in trace.py before
        ({}, r"^a sample must be a non-empty dict "),
    ):
        with pytest.raises(SampleError, match=pattern):
            trace_pipeline(model, x, 20)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_fusion_locality_reads_where_the_queries_look(model, sample):
    trace = trace_pipeline(model, sample, 20, outputs=False)  # 3 sensors on a 3 x 3 grid
    loc = fusion_locality(trace)
    prefix = trace.fusion_weights.mean(1)[:, 0, :1].sum(-1).mean().item()
    assert sum(loc["cls_share"].values()) + prefix == pytest.approx(1, abs=1e-5)
    assert loc["uniform_location"] == pytest.approx(3 / 28)  # 3 sensors' tokens of 1 + 3 x 9
    M, N = 3, 9
    # a query spread evenly over every token gives its own location exactly the even share
    even = fusion_locality(dataclasses.replace(trace, fusion_weights=torch.full((2, 4, 1 + N, 1 + M * N), 1 / 28)))
    assert even["own_location"] == pytest.approx(even["uniform_location"])
    assert even["cls_share"] == pytest.approx({s: 9 / 28 for s in ("aerial", "s2", "s1-asc")})
    # a fusion whose tile query favours S2, whose patch queries look only at their own location (evenly over the
    # sensors), and which gives every patch one token
    w = torch.zeros(2, 4, 1 + N, 1 + M * N)
    w[:, :, 0, 1:] = torch.tensor([0.1, 0.7, 0.2]).repeat_interleave(N) / N  # sensor-major keys: aerial, s2, s1-asc
    for i in range(N):
        w[:, :, 1 + i, 1 + i + N * torch.arange(M)] = 1 / M
    same = trace.fused[:, :1].expand(-1, 1 + N, -1)
    local = fusion_locality(dataclasses.replace(trace, fusion_weights=w, fused=same))
    assert local["own_location"] == pytest.approx(1) and local["fused_patch_cosine"] == pytest.approx(1)
    assert local["cls_share"] == pytest.approx({"aerial": 0.1, "s2": 0.7, "s1-asc": 0.2})
    assert local["joint_patch_cosine"] == pytest.approx(loc["joint_patch_cosine"])  # read from the joint tokens
    # with MODIS the joint transformer holds a second prefix token; shares and the even reference follow it
    modis = random_sample(
        ["aerial", "s2", "modis"], extent_m=60, batch=2, n_dates=5, generator=torch.Generator().manual_seed(1)
    )
    torch.manual_seed(0)
    with_modis = fusion_locality(trace_pipeline(AnySat("nano", sensors=["aerial", "s2", "modis"]).eval(), modis, 20))
    assert with_modis["uniform_location"] == pytest.approx(2 / 20) and set(with_modis["cls_share"]) == {"aerial", "s2"}
    assert 0 < sum(with_modis["cls_share"].values()) < 1 and 0 < with_modis["own_location"] < 1
    with pytest.raises(ValueError, match="needs at least 2 patches per tile, the trace has a 1 x 1 grid"):
        fusion_locality(dataclasses.replace(trace, grid=(1, 1)))


def test_official_format_round_trip():
    torch.manual_seed(2)
    ours = AnySat("nano", sensors=list(OFFICIAL_SENSORS)).eval()
    official = to_official_state_dict(ours)
    assert "projector_s2.patch_embed.attention_heads.Q" in official and "blocks.2.attn.q_learned" in official
    assert convert_official_state_dict(official).keys() == ours.state_dict().keys()
    back = load_official(official)
    x = random_sample(["aerial", "s2"], extent_m=60, batch=1, n_dates=3, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(back(x, 20), ours(x, 20), rtol=0, atol=0)


def test_official_format_of_every_key_of_the_released_model(base_manifest):
    fake = {k: torch.empty(0) for k in base_manifest}
    assert to_official_state_dict(convert_official_state_dict(fake)).keys() == fake.keys()


def test_composites_pick_bands_by_name():
    assert composite("aerial") == ([3, 1, 2], "true colour (R, G, B)")  # file order NIR, G, B, R
    assert composite("aerial", "false") == ([0, 3, 1], "false colour (NIR, R, G)")
    assert composite("s2") == ([2, 1, 0], "true colour (B4, B3, B2)")
    assert composite("spot", "false") == ([0, 1, 2], "true colour (R, G, B)")  # no NIR: falls back, and says so
    assert composite("s1-asc") == ([0, 0, 0], "VV band (grey)")


def test_pca_colours_and_centred_similarity():
    torch.manual_seed(4)
    common = torch.randn(16) * 10
    a = common + torch.randn(5, 5, 16)
    b = common + torch.randn(3, 3, 16) + 3.0
    joint = pca_colours({"a": a, "b": b})
    assert joint["a"].shape == (5, 5, 3) and joint["b"].shape == (3, 3, 3)
    both = np.concatenate([joint["a"].reshape(-1, 3), joint["b"].reshape(-1, 3)])
    # each component stretched 2-98 % over both maps and clipped: it spans exactly [0, 1]
    np.testing.assert_array_equal(both.min(0), 0.0)
    np.testing.assert_array_equal(both.max(0), 1.0)
    # the first component is the direction that separates the maps (b is shifted by 3 in every dimension)
    first_a, first_b = joint["a"][..., 0], joint["b"][..., 0]
    assert first_a.min() > first_b.max() or first_b.min() > first_a.max()
    assert not (pca_colours({"b": b})["b"] == joint["b"]).all()  # joint PCA differs from own
    raw = cosine_similarity_map(a, (0, 0))
    centred = cosine_similarity_map(a, (0, 0), center=True)
    assert raw.min() > 0.8 and centred.min() < 0.5 and centred[0, 0] == pytest.approx(1.0)


def test_cosine_similarity_map_reads_a_dataarray_by_its_dims_and_refuses_a_wrong_map_or_query():
    import xarray as xr

    from anysat_lite.errors import UserError

    f = torch.randn(4, 5, 8, generator=torch.Generator().manual_seed(0))  # [H, W, D]
    sim = cosine_similarity_map(f, (1, 2))
    assert sim.shape == (4, 5) and sim[1, 2] == pytest.approx(1.0)
    da = xr.DataArray(f.permute(2, 0, 1).numpy(), dims=("feature", "y", "x"))  # as ds.embedding
    torch.testing.assert_close(cosine_similarity_map(da, (1, 2)), sim)
    square = torch.randn(6, 6, 8)
    for features, query, pattern in (
        (
            square.permute(2, 0, 1),
            (1, 1),
            r"^features: expected a map \[H, W, D\] \(features last\), got shape "
            r"\[8, 6, 6\], which looks like \[D, H, W\] .*features.permute\(1, 2, 0\)",
        ),  # a [6, 6] map of 6 before
        (f[None], (1, 1), r"^features: expected a map \[H, W, D\], got shape \[1, 4, 5, 8\]; take one sample"),
        (f, (4, 0), r"^query \(4, 0\): expected \(row, col\) of a position of the 4 x 5 map, 0 <= row < 4 and "),
        (f, (-1, 0), r"^query \(-1, 0\): expected \(row, col\)"),  # the last row before
    ):
        with pytest.raises(UserError, match=pattern):
            cosine_similarity_map(features, query)


def test_figure_helpers_refuse_what_the_model_refuses_and_a_batch_given_as_one_picture(sample):
    import matplotlib

    matplotlib.use("Agg")
    from anysat_lite.errors import UserError
    from anysat_lite.viz import plot_patch_anatomy, plot_subpatch_order, rgb, show_sample, token_table

    assert token_table(["naip"], [40], tile_m=120)[0]["patches"] == 9
    cases = [
        (lambda: token_table(["s2"], [40], 60), r"^patch size 40 m does not divide the tile of 60 x 60 m; .*20, 30"),
        (lambda: token_table(["s2"], [80], 60), r"^patch size 80 m does not divide the tile"),  # 0 patches before
        (lambda: token_table(["S2"], [20], 60), r"^unknown sensor 'S2'; did you mean 's2'\?"),
        (lambda: token_table("s2", [20], 60), r"^sensors: expected a list of sensor names, got the string 's2'"),
        (lambda: plot_subpatch_order("aerial", 25), r"^aerial: patch size 25 m is not a multiple of its 2 m sub"),
        (lambda: plot_patch_anatomy(sample, 25, ["aerial"]), r"^aerial: patch size 25 m is not a multiple"),
        (lambda: plot_patch_anatomy(sample, 12, ["aerial"]), r"^patch size must be a positive multiple of 10 m"),
        (lambda: plot_patch_anatomy(sample, 20, ["s2"], patch=(3, 0)), r"^patch=\(3, 0\): expected \(row, column\) "),
        (lambda: plot_patch_anatomy(sample, 20, ["s2"], patch=5), r"^patch=5: expected \(row, column\) of the 3 x 3"),
        (lambda: show_sample(sample, patch_m=25), r"^patch size must be a positive multiple of 10 m, got 25"),
        (lambda: show_sample(sample, patch_m=40), r"^patch size 40 m does not divide the tile of 60 x 60 m"),
        (
            lambda: rgb(sample["aerial"], "aerial"),
            r"^rgb\(x, 'aerial'\): expected \[C, H, W\] \(one image\), got "
            r"shape \[2, 4, 300, 300\]; pass one sample of the batch, e.g. x\['aerial'\]\[0\]$",
        ),  # sample 1 before
        (lambda: rgb(sample["s2"], "s2"), r"^rgb\(x, 's2'\): expected \[T, C, H, W\] .*e.g. x\['s2'\]\[0\]$"),
        (lambda: rgb(sample["aerial"][0], "aerial", kind="ndvi"), r"^kind='ndvi': expected 'true' .* or 'false'"),
        (lambda: show_sample(sample, sensors=["S2"]), r"^unknown sensor 'S2'; did you mean 's2'\?"),
        (lambda: show_sample(sample, sensors=["s1"]), r"^sensors: 's1' is not in the batch, expected sensors it"),
        (lambda: show_sample(sample, sensors="s2"), r"^sensors: expected a list of sensor names, got the string"),
        (lambda: show_sample(sample, b=3), r"^b=3: the batch holds 2 sample\(s\), expected 0 to 1; choose one"),
        (lambda: show_sample(sample, sensors=["s2"], date=10), r"^date=10: the series has 5 dates, expected 0 to 4"),
        (lambda: show_sample({"aerial": sample["aerial"][0]}), r"^aerial of shape \[4, 300, 300\]: expected a batch"),
    ]
    for call, pattern in cases:
        with pytest.raises(UserError, match=pattern):
            call()
    matplotlib.pyplot.close("all")
