"""Shared fixtures: paths, the shared reference folder (skipped when absent), a private cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GEOTIFF = ROOT / "tests" / "data" / "geotiff"
TREESAT = ROOT / "data" / "treesatai_ts_sample"
SHARED = Path(os.environ.get("ANYSAT_SHARED", ROOT.parent / "shared"))


def pytest_addoption(parser):
    parser.addoption("--runlong", action="store_true", default=False, help="also run tests marked long (minutes each)")


def pytest_collection_modifyitems(config, items):
    """``slow`` tests (subprocesses, torchrun, notebooks, kill/resume) run by default and are left out with
    ``-m "not slow"``; ``long`` tests (torch.compile, the whole demo) run only with ``--runlong``."""
    if config.getoption("--runlong"):
        return
    skip = pytest.mark.skip(reason="long: run with --runlong")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Synthetic worlds go to a per-session cache, never to the user's home."""
    os.environ["ANYSAT_LITE_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.setdefault("MPLBACKEND", "Agg")
    yield


@pytest.fixture(scope="session")
def reference():
    path = SHARED / "reference" / "anysat_official_d64_reference.pt"
    if not path.exists():
        pytest.skip(f"shared reference fixtures not found at {path}")
    import torch

    return torch.load(path, weights_only=True)


@pytest.fixture(scope="session")
def base_manifest():
    path = SHARED / "reference" / "anysat_official_base_keys.json"
    if not path.exists():
        pytest.skip(f"shared base-model manifest not found at {path}")
    import json

    return json.loads(path.read_text())
