"""Numerical parity with the official AnySat code (fixtures made by running it with random weights).

Every output case runs twice: with the fast kernels and with their textbook forms (:mod:`anysat_lite.kernels`).
"""

import pytest
import torch

from anysat_lite import kernels
from anysat_lite.errors import UserError
from anysat_lite.model import AnySat
from anysat_lite.model.official import (
    OfficialCheckpointError,
    convert_official_state_dict,
    load_official,
    official_model_config,
)

TOL = 1e-4


@pytest.fixture(scope="module")
def official_model(reference):
    return load_official(reference["state_dict"])


def _inputs(reference, name):
    return {k: (v.float() if v.is_floating_point() else v) for k, v in reference["inputs"][name].items()}


def _case_id(c):
    modality = f"-{c['output_modality']}" if c["output_modality"] else ""
    return f"{c['inputs']}-P{c['patch_size']}-{c['output']}{modality}"


def test_fixture_has_every_output_mode(reference):
    assert len(reference["cases"]) == 29
    assert {c["output"] for c in reference["cases"]} == {"tile", "patch", "all", "dense"}


@pytest.mark.parametrize("textbook", [False, True], ids=["fast-kernels", "textbook-kernels"])
@pytest.mark.parametrize("index", range(29))
def test_parity_with_official_outputs(reference, official_model, index, textbook):
    case = reference["cases"][index]
    x = _inputs(reference, case["inputs"])
    with torch.no_grad(), kernels.use_reference(textbook):
        out = official_model(
            x, case["patch_size"], output=case["output"], output_modality=case["output_modality"] or None
        )
    expected = case["expected"]
    assert out.shape == expected.shape, _case_id(case)
    diff = (out - expected).abs().max().item()
    assert diff <= TOL, f"{_case_id(case)}: max abs diff {diff:.2e}"


def test_converter_covers_every_key_of_the_base_model(base_manifest):
    shapes = {k: torch.Size(v) for k, v in base_manifest.items()}
    assert sum(s.numel() for s in shapes.values()) == 125_905_447
    fake = {k: torch.empty(s) for k, s in shapes.items()}
    converted = convert_official_state_dict(fake)
    assert len(converted) == len(fake)
    cfg = official_model_config(fake)
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads) == (768, 6, 12) and len(cfg.sensors) == 11
    model = AnySat(cfg)
    own = {k: v.shape for k, v in model.state_dict().items()}
    assert set(own) == set(converted)
    assert all(own[k] == converted[k].shape for k in own)


def test_load_official_fails_loudly(reference):
    sd = dict(reference["state_dict"])
    with pytest.raises(OfficialCheckpointError, match="no counterpart"):
        load_official({**sd, "mystery.weight": torch.zeros(1)})
    missing = {k: v for k, v in sd.items() if not k.startswith("projector_s2.")}
    model = AnySat(official_model_config(sd))
    with pytest.raises(OfficialCheckpointError, match="missing in checkpoint: .*projectors.s2"):
        load_official(missing, model=model)
    for wrong in ("nano", {}):  # AttributeError: 'str' object has no attribute 'state_dict' before
        with pytest.raises(UserError, match=rf"^load_official\(model={wrong!r}\): expected an AnySat model to load"):
            load_official(sd, model=wrong)
    bad = {**sd, "blocks.0.mlp.fc1.weight": torch.zeros(3, 3)}
    with pytest.raises(OfficialCheckpointError, match=r"shape mismatches: .*joint.blocks.0.mlp.fc1.weight"):
        load_official(bad)


def test_load_official_from_a_checkpoint_file(reference, tmp_path, official_model):
    path = tmp_path / "AnySat.pth"
    torch.save({"state_dict": reference["state_dict"]}, path)
    model = load_official(path)
    x = _inputs(reference, "real_s2_only")
    with torch.no_grad():
        torch.testing.assert_close(model(x, 20), official_model(x, 20))
