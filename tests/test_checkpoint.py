"""Damaged, empty or foreign checkpoint and encoder files: one line naming the file and what to do."""

import json
import pickle
import random

import pytest
import torch

from anysat_lite.config import config_to_dict, get_config, model_config
from anysat_lite.errors import UserError, check_device
from anysat_lite.jepa import JEPA
from anysat_lite.model import AnySat
from anysat_lite.train.checkpoint import (
    CheckpointError,
    export_encoder,
    load_checkpoint,
    load_encoder,
    refused_global,
    save_checkpoint,
)

META = {
    "model": {"embed_dim": 64, "depth": 2, "num_heads": 4},
    "sensors": ["aerial", "s2"],
    "norm_stats": {"synthetic": {"s2": {"mean": [1.0] * 10, "std": [2.0] * 10}}},
}


def _one_line(e, path):
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    assert "weights_only=False" not in msg and "weights_only` set to `False" not in msg
    return msg


@pytest.mark.parametrize(
    "write, match",
    [
        (lambda p, b: p.write_bytes(b""), r"empty file \(0 bytes\), not a checkpoint"),
        (
            lambda p, b: p.write_bytes(b[: len(b) // 2]),
            r"not a readable checkpoint \(\d+ bytes, it is a PyTorch file, "
            r"truncated or corrupt: PytorchStreamReader failed",
        ),
        (
            lambda p, b: p.write_bytes(b"\x17" + random.Random(0).randbytes(2999)),  # no zip or pickle magic
            r"not a readable checkpoint \(3000 bytes, it is not a PyTorch file\)",
        ),
        (lambda p, b: p.write_text(json.dumps(META)), r"it looks like a JSON file, an encoder sidecar"),
        (  # torch.load fails with KeyError: 101, which the message used to show
            lambda p, b: p.write_text("hello world"),
            r"not a readable checkpoint \(11 bytes, it is not a PyTorch file\); check the path: give a checkpoint "
            r"written by anysat-lite",
        ),
        (
            lambda p, b: torch.save({"bad": object()}, p),
            r"Weights only load failed: the file holds a Python object "
            r"\(object\) besides tensors",
        ),
    ],
)
def test_damaged_or_foreign_checkpoints(tmp_path, write, match):
    good = tmp_path / "good.pt"
    save_checkpoint({"w": torch.ones(100), "step": 3}, good)
    bad = tmp_path / "bad.pt"
    write(bad, good.read_bytes())
    with pytest.raises(CheckpointError, match=match) as e:
        load_checkpoint(bad)
    msg = _one_line(e, bad)
    assert msg.endswith(("or write it again", "or an exported encoder")) or "anysat-lite loads only its own" in msg
    with pytest.raises(CheckpointError, match=r"no such checkpoint file"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"is a folder; give a checkpoint file such as .*last.pt"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize(
    "message, name",
    [  # the weights-only loader's wording, torch >= 2.4 (first two) and torch 2.3 (the declared floor)
        ("WeightsUnpickler error: Unsupported global: GLOBAL object was not an allowed global by default.", "object"),
        (
            "Unsupported global: GLOBAL numpy.core.multiarray.scalar was not an allowed global",
            "numpy.core.multiarray.scalar",
        ),
        ("Weights only load failed. ... WeightsUnpickler error: Unsupported class __builtin__.object", "object"),
        ("Weights only load failed. ... Unsupported operand 149", None),
    ],
)
def test_refused_object_is_named_on_every_supported_torch(message, name):
    assert refused_global(pickle.UnpicklingError(message)) == name


@pytest.fixture
def exported(tmp_path):
    enc = AnySat(model_config("nano"), sensors=["aerial", "s2"])
    export_encoder(enc, tmp_path / "encoder", META)
    return tmp_path / "encoder", enc


def test_exported_encoder_loads_by_any_of_its_names(exported):
    path, enc = exported
    for p in (path, f"{path}.safetensors", f"{path}.json", path.parent):
        model, meta = load_encoder(p)
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), enc.state_dict().values()))
        assert meta["source"].startswith("exported encoder") and model.norm_stats == META["norm_stats"]


@pytest.mark.parametrize(
    "damage, match",
    [
        (
            lambda p: p.with_suffix(".safetensors").write_bytes(p.with_suffix(".safetensors").read_bytes()[:-100]),
            r"encoder.safetensors: not a readable safetensors file \(\d+ bytes; .*\); the file is truncated or corrupt",
        ),
        (lambda p: p.with_suffix(".safetensors").write_bytes(b""), r"encoder.safetensors: not a readable safetensors"),
        (
            lambda p: p.with_suffix(".json").write_text(p.with_suffix(".json").read_text()[:40]),
            r"encoder.json: not valid JSON \(.*; truncated\?\); re-export the encoder",
        ),
        (
            lambda p: p.with_suffix(".json").write_text('{"weights": 1}'),
            r"encoder.json: not an anysat-lite encoder sidecar "
            r"\(expected keys 'model' and 'sensors', got \['weights'\]\)",
        ),
        (
            lambda p: p.with_suffix(".json").unlink(),
            r"encoder.json not found \(beside encoder.safetensors\); an exported "
            r"encoder is the pair encoder.safetensors \+ encoder.json: copy both",
        ),
        (
            lambda p: p.with_suffix(".json").write_text(
                json.dumps({**META, "model": {"embed_dim": 128, "depth": 2, "num_heads": 4}})
            ),
            r"encoder.safetensors: the weights do not fit the model described by encoder.json "
            r"\(0 missing, 0 unexpected, "
            r"\d+ of another shape; e.g. .* \[.*\] in the file vs \[.*\]\); use files written together",
        ),
    ],
)
def test_damaged_exported_encoders(exported, damage, match):
    path, _ = exported
    damage(path)
    with pytest.raises(CheckpointError, match=match) as e:
        load_encoder(path)
    assert "\n" not in str(e.value)


def test_sidecar_sensors_must_be_a_list(exported):
    path, _ = exported
    path.with_suffix(".json").write_text(json.dumps({**META, "sensors": "s2"}))
    with pytest.raises(
        CheckpointError,
        match=r"encoder.json: 'sensors' expected a list of sensor names, e.g. \[\"aerial\", \"s2\"\], got \"s2\"; "
        r"write the list",
    ) as e:
        load_encoder(path)
    _one_line(e, path)


def test_load_encoder_device_is_checked_before_the_files(exported, monkeypatch):
    path, _ = exported
    for where in (path, path.parent / "nope"):  # a device mistake is found before a missing file
        with pytest.raises(UserError, match=r"^device gpu: expected cpu, cuda or cuda:N .*; e.g. device cuda$"):
            load_encoder(where, device="gpu")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(UserError, match=r"^device cuda: this machine has no CUDA device; use device cpu$"):
        load_encoder(path, device="cuda")
    assert next(load_encoder(path, device=torch.device("cpu"))[0].parameters()).device.type == "cpu"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)  # the notebooks' DEVICE may say mps
    with pytest.raises(UserError, match=r"^device mps: this machine has no MPS \(Apple GPU\) device; use device cpu$"):
        load_encoder(path, device="mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert check_device("device", "mps") == torch.device("mps")  # accepted where there is one
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for auto in (None, "", "auto"):  # the notebooks' DEVICE = "", train.device=auto
        assert check_device("device", auto) == torch.device("cpu")
    assert check_device("--device", torch.device("cpu")) == torch.device("cpu")


def test_wrong_encoder_paths(tmp_path):
    with pytest.raises(
        CheckpointError,
        match=r"no encoder at .*nope \(neither .*nope.safetensors nor .*nope.json "
        r"exists\); give an exported encoder without suffix",
    ):
        load_encoder(tmp_path / "nope")
    with pytest.raises(CheckpointError, match=r"folder without encoder.safetensors/.json or last.pt"):
        load_encoder(tmp_path)


def test_training_checkpoint_gives_its_ema_target_encoder(tmp_path):
    cfg = get_config("cpu-demo", ["model.sensors=[aerial, s2]"])
    model = JEPA(cfg, sensors=["aerial", "s2"])
    with torch.no_grad():
        for p in model.target.parameters():
            p.add_(1.0)  # target != context encoder
    ck = {
        "model": model.state_dict(),
        "optimizer": {},
        "step": 7,
        "rng": {},
        "config": config_to_dict(cfg),
        "norm_stats": META["norm_stats"],
        "sensors": ["aerial", "s2"],
    }
    save_checkpoint(ck, tmp_path / "last.pt")
    for p in (tmp_path / "last.pt", tmp_path):
        enc, meta = load_encoder(p)
        assert meta["source"] == f"EMA target encoder of {tmp_path / 'last.pt'} (step 7)"
        assert all(torch.equal(a, b) for a, b in zip(enc.state_dict().values(), model.target.state_dict().values()))
        assert meta["sensors"] == ["aerial", "s2"] and enc.norm_stats == META["norm_stats"]
    # a checkpoint with the context encoder only
    ck["model"] = {k: v for k, v in ck["model"].items() if not k.startswith("target.")}
    save_checkpoint(ck, tmp_path / "old.pt")
    enc, meta = load_encoder(tmp_path / "old.pt")
    assert meta["source"].startswith("context encoder of")
    assert all(torch.equal(a, b) for a, b in zip(enc.state_dict().values(), model.encoder.state_dict().values()))
    save_checkpoint({"w": torch.ones(2)}, tmp_path / "foreign.pt")
    with pytest.raises(
        CheckpointError,
        match=r"foreign.pt: not an anysat-lite training checkpoint \(expected keys "
        r"'model', 'config', 'step'\.\.\., got \['w'\]\)",
    ):
        load_encoder(tmp_path / "foreign.pt")


class _NotATensor:  # pickled as tests' own class: a Python object weights_only loading refuses
    pass


def test_released_weights_path_names_a_foreign_pickle_as_such(tmp_path):
    from anysat_lite.model.official import OfficialCheckpointError, load_official

    torch.save({"cls_token": _NotATensor()}, tmp_path / "AnySat.pth")
    with pytest.raises(OfficialCheckpointError) as e:
        load_official(tmp_path / "AnySat.pth")
    msg = str(e.value)
    assert "holding a Python object (test_checkpoint._NotATensor) besides tensors" in msg
    assert "truncated" not in msg and msg.endswith("resolve/main/models/AnySat.pth)")
