"""``model.attend_over="heads"``: the official joint transformer and predictor as they run with flash-attn.

The official ``Attention`` passes ``[B, H, L, d]`` to ``flash_attn_func``, whose documented layout is
``[batch, seqlen, nheads, headdim]``; these tests hold our option to a transcription of that call (the
function's documented semantics written out in torch, since flash-attn needs a GPU), and check what follows from
it: no token of the joint transformer sees another, and the predictor's output ignores the context.
"""

import json

import pytest
import torch

from anysat_lite.config import get_config, model_config
from anysat_lite.errors import UserError
from anysat_lite.jepa.predictor import Predictor
from anysat_lite.model import AnySat
from anysat_lite.model.blocks import SelfAttention
from anysat_lite.model.joint_encoder import JointEncoder


def flash_attn_func_reference(q, k, v):
    """``flash_attn_func(q, k, v)`` without dropout or causal mask: ``[batch, seqlen, nheads, headdim]``, softmax over
    the sequence axis of each head, scale ``headdim ** -0.5`` (its documented default)."""
    scores = torch.einsum("bihd,bjhd->bhij", q, k) * q.shape[-1] ** -0.5
    return torch.einsum("bhij,bjhd->bihd", scores.softmax(-1), v)


def official_flash_attention(attn: SelfAttention, x):
    """The official ``utils_ViT.Attention.forward`` with ``use_flash_attn=True``, on our module's weights."""
    B, N, C = x.shape
    qkv = attn.qkv(x).reshape(B, N, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # each [B, H, N, d], handed on as they are
    out = flash_attn_func_reference(q, k, v)  # read as [batch=B, seqlen=H, nheads=N, d]
    return attn.proj(out.transpose(1, 2).reshape(B, N, C))


def test_attention_over_heads_is_the_official_flash_call():
    torch.manual_seed(0)
    attn = SelfAttention(64, 4, attend_over="heads").eval()
    x = torch.randn(2, 7, 64)
    torch.testing.assert_close(attn(x), official_flash_attention(attn, x), atol=1e-5, rtol=1e-5)
    tokens = SelfAttention(64, 4).eval()
    tokens.load_state_dict(attn.state_dict())
    assert not torch.allclose(tokens(x), attn(x), atol=1e-3)  # the two layouts are different functions


def test_over_heads_no_token_of_the_joint_transformer_sees_another():
    torch.manual_seed(0)
    for over, isolated in (("heads", True), ("tokens", False)):
        joint = JointEncoder(64, 2, 4, attend_over=over).eval()
        x = torch.randn(1, 9, 64)
        y = x.clone()
        y[:, 4] = torch.randn(64)  # one patch token changes
        a, b = joint(x), joint(y)  # [1, 1 + 9, 64]: cls first
        others = [i for i in range(10) if i != 5]
        assert torch.allclose(a[:, others], b[:, others], atol=1e-6) == isolated, over
        assert not torch.allclose(a[:, 5], b[:, 5])


def test_over_heads_the_predictor_ignores_the_context():
    """Each prediction is a function of its target's position alone: the JEPA loss cannot reach the encoder."""
    torch.manual_seed(0)
    pos, ctx_idx, tgt_idx = torch.randn(9, 64), torch.tensor([[0, 1, 2]]), [torch.tensor([[5, 7]])]
    for over, ignores in (("heads", True), ("tokens", False)):
        pred = Predictor(64, 2, 4, attend_over=over).eval()
        a = pred(torch.randn(1, 3, 64), pos, ctx_idx, tgt_idx)
        b = pred(torch.randn(1, 3, 64), pos, ctx_idx, tgt_idx)
        assert torch.allclose(a, b, atol=1e-6) == ignores, over


def test_the_config_key_builds_both_and_is_checked():
    cfg = get_config("cpu-demo", ["model.attend_over=heads"])
    from anysat_lite.jepa import JEPA

    jepa = JEPA(cfg)
    assert {b.attn.attend_over for b in jepa.predictor.blocks} == {"heads"}
    assert {b.attn.attend_over for b in jepa.encoder.joint.blocks} == {"heads"}
    assert {b.attn.attend_over for b in jepa.encoder.subpatch_encoder.blocks} == {"tokens"}  # iRPE: no flash there
    with pytest.raises(UserError, match=r"model.attend_over: expected one of tokens, heads, got 'head'"):
        get_config("cpu-demo", ["model.attend_over=head"])
    model = AnySat(model_config("nano", attend_over="heads")).eval()
    out = model({"s2": torch.randn(1, 3, 10, 6, 6), "s2_dates": torch.tensor([[10, 100, 200]])}, 20, output="tile")
    assert out.shape == (1, 64)
    with pytest.raises(ValueError, match=r"attends over each token's heads .* no weights between tokens"):
        model.joint.blocks[0].attention_weights(torch.randn(1, 5, 64))
    with pytest.raises(ValueError, match=r"attend_over='head': expected one of tokens, heads"):
        SelfAttention(64, 4, attend_over="head")


def test_the_released_weights_load_and_evaluate_over_heads(tmp_path):
    """load_official and the paper's evaluation take the flash-attn path on request; the row says so."""
    from test_tasks import _short_run

    from anysat_lite.model.official import load_official, to_official_state_dict
    from anysat_lite.probe.tasks import get_task

    torch.manual_seed(0)
    sd = to_official_state_dict(AnySat(model_config("nano")))
    model = load_official(sd, attend_over="heads")
    assert {b.attn.attend_over for b in model.joint.blocks} == {"heads"}
    assert model.config.attend_over == "heads"
    with pytest.raises(UserError, match=r"attend_over='heads'\): the model given attends over 'tokens', expected the"):
        load_official(sd, model=AnySat(model_config("nano")), attend_over="heads")
    into = load_official(sd, model=AnySat(model_config("nano", attend_over="heads")))  # its own setting is kept
    assert into.config.attend_over == "heads"
    path = tmp_path / "AnySat-d64.pth"
    torch.save({"state_dict": sd}, path)
    from test_tasks import FIXTURES

    from anysat_lite.cli import main

    args = ["--task", "treesatai-ts-lp", "--data", str(FIXTURES["treesatai-ts"]), "--epochs", "1", "--min-epochs", "0"]
    args += ["--batch-size", "1", "--bootstrap", "0", "--quiet", "--out", str(tmp_path / "out")]
    assert main(["probe", "--official", str(path), *args, "--attend-over", "heads"]) == 0
    r = json.loads((tmp_path / "out" / "treesatai-ts-lp.json").read_text())
    assert r["attend_over"] == "heads"
    assert _short_run(get_task("treesatai-ts-lp"), path, None, bootstrap=0)["attend_over"] == "tokens"
    md = (tmp_path / "out" / "reproduction.md").read_text()
    assert "| treesatai-ts-lp (partial) (flash-attn path) |" in md
    assert "treesatai-ts-lp: attention over each token's heads, as the official code with flash-attn" in md
