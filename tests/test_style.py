"""The repository stays formatted and linted: ``ruff check`` and ``ruff format --check`` with the settings of
``pyproject.toml`` (run here so that the README's test command covers them); the dependency floors it declares
are those ``tests/floors.txt`` pins for the floor check."""

import re
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


def test_the_floors_file_pins_every_declared_floor():
    """``tests/floors.txt`` (the constraints the floor check installs) names exactly the lowest versions that
    ``pyproject.toml`` accepts, runtime and test extra, so that checking the floors checks what users may install."""
    text = (ROOT / "pyproject.toml").read_text()
    runtime = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
    test = re.search(r"^test = \[(.*?)\]$", text, re.S | re.M).group(1)
    test = re.sub(r'"[^"]*<[^"]*"', "", test)  # a version range (ruff's) is a pin, not a floor
    declared = dict(re.findall(r'"([A-Za-z0-9_.-]+)>=([0-9.]+)"', runtime + test))
    assert len(declared) == (runtime + test).count('"') // 2, "every dependency has a floor (name>=version)"
    pinned = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([0-9.]+)$", (ROOT / "tests" / "floors.txt").read_text(), re.M))

    def version(v):  # 2.3 == 2.3.0
        parts = [int(p) for p in v.split(".")]
        return parts + [0] * (3 - len(parts))

    assert {k.lower() for k in pinned} == {k.lower() for k in declared}
    for name, floor in declared.items():
        assert version(pinned[name]) == version(floor), (
            f"{name}: pyproject.toml says >={floor}, floors.txt {pinned[name]}"
        )
