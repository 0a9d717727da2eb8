"""The README's usage example runs as written and prints the shapes it promises."""

import re
import subprocess
import sys

import pytest
from conftest import ROOT


def test_readme_usage_block_runs():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Use it", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    r = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "torch.Size([2, 64]) torch.Size([2, 3, 3, 64]) torch.Size([2, 30, 30, 128])" in r.stdout


def test_readme_quickstart_matches_ci():
    text = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = 'pip install torch==2.13.0 -e ".[test]" && python -m pytest -q'
    assert test_cmd in text and test_cmd in ci
    assert "pip install torch==2.13.0 -e . && anysat-lite demo" in text


def test_readme_demo_results_block_is_present_and_well_formed():
    from anysat_lite.demo import computed_on, readme_block

    block = readme_block((ROOT / "README.md").read_text())
    assert block is not None, "README lost its demo-results markers"
    assert block.startswith("| modalities (P = 20 m) | probe | metric | pretrained") and "bootstrap" in block
    assert computed_on(block) and "torch" in computed_on(block), "the block must name the machine it was computed on"


def test_seed_table_agrees_with_the_readme_demo_block():
    """docs/seeds.md's seed 0 is the demo's run (same config, deterministic): a stale table shows here."""
    from anysat_lite.demo import SEED_MARKERS, computed_on, readme_block

    text = (ROOT / "README.md").read_text()
    seeds = readme_block((ROOT / "docs" / "seeds.md").read_text(), SEED_MARKERS)
    assert seeds is not None, "docs/seeds.md lost its demo-seeds markers"
    header = seeds.splitlines()[0]
    assert "pretrained, seeds 0 /" in header
    demo = {}
    for line in readme_block(text).splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) > 3:
            demo[tuple(cells[:3])] = cells[3].split(" [")[0]  # pretrained score, without its interval
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in seeds.splitlines()[2:] if line.startswith("|")]
    assert rows
    for cells in rows:
        assert cells[3].split(" / ")[0] == demo[tuple(cells[:3])], cells
    assert computed_on(seeds) == computed_on(readme_block(text)), "seed 0 and the README's run on different machines"


def test_world_table_agrees_with_the_seed_table():
    """docs/seeds.md's world study reads world 0 from the seed runs: its column must be the seed table's means."""
    from anysat_lite.demo import SEED_MARKERS, WORLD_MARKERS, computed_on, readme_block

    text = (ROOT / "docs" / "seeds.md").read_text()
    seeds, worlds = readme_block(text, SEED_MARKERS), readme_block(text, WORLD_MARKERS)
    assert worlds is not None, "docs/seeds.md lost its demo-worlds markers"
    assert "| pretrained, worlds 0 /" in worlds.splitlines()[0]

    def rows(block):
        return {
            tuple(c[:3]): c[3:]
            for c in ([x.strip() for x in line.strip("|").split("|")] for line in block.splitlines()[2:])
            if len(c) > 3
        }

    by_seed, by_world = rows(seeds), rows(worlds)
    assert by_seed.keys() == by_world.keys()
    for cell, (_, mean, *bases) in by_seed.items():
        assert by_world[cell][0].split(" / ")[0] == mean.split(" [")[0], cell  # world 0 = the seeds' mean
        for seed_base, world_base in zip(bases, by_world[cell][2:]):  # and its baselines, the seed runs' ones
            assert world_base.split(" / ")[0] == seed_base.split(";")[0].removesuffix(" (mean)"), cell
    assert computed_on(worlds) == computed_on(seeds)


def test_update_readme_fills_an_empty_block_and_replaces_a_filled_one(tmp_path):
    from anysat_lite.demo import README_MARKERS, readme_block, replace_readme_block

    start, end = README_MARKERS
    path = tmp_path / "README.md"
    path.write_text(f"# x\n\n{start}\n{end}\n\nafter\n")
    assert readme_block(path.read_text()) == ""
    assert replace_readme_block(path, "| a |\n| b |") is True
    assert path.read_text() == f"# x\n\n{start}\n| a |\n| b |\n{end}\n\nafter\n"
    assert replace_readme_block(path, "| a |\n| b |") is False  # unchanged: nothing written
    replace_readme_block(path, "| c |")
    assert readme_block(path.read_text()) == "| c |" and path.read_text().endswith(f"{end}\n\nafter\n")


def test_the_seed_table_has_its_own_markers(tmp_path):
    from anysat_lite.demo import README_MARKERS, SEED_MARKERS, readme_block, replace_readme_block

    path = tmp_path / "README.md"
    path.write_text(f"{README_MARKERS[0]}\n| demo |\n{README_MARKERS[1]}\n")
    with pytest.raises(ValueError, match="no results markers .*demo-seeds:start"):
        replace_readme_block(path, "| seeds |", SEED_MARKERS)
    path.write_text(path.read_text() + f"\n{SEED_MARKERS[0]}\n{SEED_MARKERS[1]}\n")
    assert replace_readme_block(path, "| seeds |", SEED_MARKERS) is True
    assert readme_block(path.read_text()) == "| demo |"  # the demo block is left as it was
    assert readme_block(path.read_text(), SEED_MARKERS) == "| seeds |"


@pytest.mark.long
def test_readme_demo_results_are_what_the_demo_prints(tmp_path):
    """The demo is deterministic: its results block must be the README's, digit for digit.

    Regenerate with ``anysat-lite demo --force --update-readme`` after a change that moves the numbers.
    """
    from anysat_lite.config import get_config
    from anysat_lite.demo import computed_on, readme_block, results_block, run_demo
    from anysat_lite.probe.run import machine_description

    cfg = get_config("cpu-demo", [f"train.out_dir={tmp_path / 'run'}"])
    readme = readme_block((ROOT / "README.md").read_text())
    here = machine_description(threads=cfg.train.threads)
    if computed_on(readme) != here:  # float rounding differs between CPUs and kernels (docs/seeds.md)
        pytest.skip(f"the README's digits were computed on {computed_on(readme)}; this machine is {here}")
    summary, report = run_demo(cfg, progress=False)
    assert results_block(summary, report) == readme
