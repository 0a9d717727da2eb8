"""The repository stays formatted and linted: ``ruff check`` and ``ruff format --check`` with the settings of
``pyproject.toml`` (run here so that the README's test command covers them)."""

import shutil
import subprocess
import sys

import pytest
from conftest import ROOT


def _ruff() -> list[str]:
    exe = shutil.which("ruff")
    if exe:
        return [exe]
    try:
        import ruff  # noqa: F401
    except ImportError:
        pytest.skip("ruff is not installed (pip install -e '.[test]' installs it)")
    return [sys.executable, "-m", "ruff"]


@pytest.mark.parametrize("args", [["check", "."], ["format", "--check", "."]], ids=["check", "format"])
def test_ruff_is_clean(args):
    r = subprocess.run(_ruff() + args, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"ruff {' '.join(args)} found problems (run it to see and fix them):\n{r.stdout[-3000:]}"
