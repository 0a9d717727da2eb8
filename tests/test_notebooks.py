"""The numbered notebooks: their shared structure, the tools that keep it, and one run of each in CI.

The run executes every notebook once with nbval in smoke mode (``ANYSAT_LITE_SMOKE=1``): nbval runs the
cells and compares the output of every cell marked ``# NBVAL_CHECK_OUTPUT`` with the stored one
(``--nbval-lax``), so the stored notebooks (a full run) and the smoke run must print the same there.
"""

import json
import os
import re
import subprocess
import sys
import time

import nbformat
import pytest

from anysat_lite.errors import UserError
from anysat_lite.notebooks import (
    COLAB_PLACEHOLDER,
    NOTEBOOK_DIR,
    PARAMETERS,
    SETUP,
    apply_standard_cells,
    check_structure,
    colab_url,
    github_slug,
    insert_colab_links,
    list_notebooks,
    markdown_words,
)

NOTEBOOKS = list_notebooks()


def _ids(paths):
    return [p.name[:2] for p in paths]


def test_the_eight_notebooks_are_there():
    assert _ids(NOTEBOOKS) == ["00", "01", "02", "03", "04", "05", "06", "07"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_structure(path):
    """Learning goals, prerequisites, run times, paper sections, >= 800 words, Summary, >= 2 exercises with
    checked solutions, the shared cells, stored outputs of a full run with a figure and the run time."""
    assert check_structure(path) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_shared_cells_and_one_repository_setting(path):
    nb = nbformat.read(path, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and params[0].source.startswith(PARAMETERS.split("REPO = ")[0])
    setup = [i for i, c in enumerate(nb.cells) if c.source == SETUP]
    assert setup == [nb.cells.index(params[0]) + 1], "the setup cell follows the parameters cell"
    colab = [c for c in nb.cells if "colab" in c.metadata.get("tags", [])]
    assert len(colab) == 1 and nb.cells.index(colab[0]) == 1
    # The repository is one setting: REPO is empty (no invented address), or the GitHub address the Colab
    # badge was made from by `anysat-lite notebooks --colab-links`.
    repo = re.search(r'^REPO = "([^"]*)"', params[0].source, re.M).group(1)
    if repo:
        assert f"/github/{github_slug(repo)}/blob/" in colab[0].source
    else:
        assert colab[0].source == COLAB_PLACEHOLDER
    for cell in nb.cells:
        if cell.cell_type == "code":
            source = re.sub(r'^REPO = "[^"]*"', "", cell.source, flags=re.M)
            assert not re.search(r"github\.com/(?!<owner>)", source), f"{path.name}: a GitHub address in a code cell"
            assert "ANYSAT_LITE_REPO" not in cell.source or cell.source in (SETUP, params[0].source)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_papermill_reads_every_parameter(path, caplog):
    """papermill (``-p NAME VALUE``) must see every name of the parameters cell (it skips a line whose
    comment holds a second "=")."""
    from papermill.translators import PythonTranslator

    cell = [c for c in nbformat.read(path, as_version=4).cells if "parameters" in c.metadata.get("tags", [])][0]
    names = re.findall(r"^([A-Z_][A-Z0-9_]*) = ", cell.source, re.M)
    assert {"SMOKE", "DEVICE", "REPO"} <= set(names)
    assert [p.name for p in PythonTranslator.inspect(cell)] == names
    assert "Unable to parse" not in caplog.text


def test_check_structure_names_what_is_missing(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# A notebook\n\nSome words.")]
    path = tmp_path / "99_bare.ipynb"
    nbformat.write(nb, path)
    problems = "\n".join(check_structure(path))
    for missing in (
        "'Learning goals'",
        "'Summary'",
        "'Exercises'",
        "prerequisites",
        "2 CPU cores",
        "paper sections",
        "fewer than 800",
        "parameters cell",
        "setup cell",
        "tagged 'colab'",
        "0 exercises",
        "no figure",
        "run time",
    ):
        assert missing in problems, missing


def _complete_notebook(words: int, solution_output: str):
    nb = nbformat.v4.new_notebook()
    intro = (
        "## Learning goals\n\n**Prerequisites:** notebook 00.\n\n**Run time:** 2 CPU cores: 10 s; "
        "Colab GPU: not measured yet.\n\n**Paper:** AnySat, Sec. 3.\n\n" + "word " * words
    )
    image = nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"})
    cells = [
        nbformat.v4.new_markdown_cell("# 99 · Test"),
        nbformat.v4.new_markdown_cell(COLAB_PLACEHOLDER, metadata={"tags": ["colab"]}),
        nbformat.v4.new_markdown_cell(intro),
        nbformat.v4.new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(SETUP),
        nbformat.v4.new_code_cell("plot()", outputs=[image]),
        nbformat.v4.new_markdown_cell("## Summary\n\n## Exercises\n\n### Exercise 1\n\nOne.\n\n### Exercise 2\n\nTwo."),
    ]
    for n in (1, 2):
        cells.append(
            nbformat.v4.new_code_cell(
                f"# Solution {n}\n# NBVAL_CHECK_OUTPUT\nprint(42)",
                outputs=[nbformat.v4.new_output("stream", name="stdout", text=solution_output)],
            )
        )
    timing = nbformat.v4.new_output("stream", name="stdout", text="this run: 1 s")
    cells.append(
        nbformat.v4.new_code_cell(
            "from anysat_lite.notebooks import report_run_time\nreport_run_time()", outputs=[timing]
        )
    )
    for i, c in enumerate(cells):
        if c.cell_type == "code":
            c.execution_count = i
    nb.cells = cells
    return nb


def test_check_structure_accepts_a_complete_notebook_and_counts_words(tmp_path):
    path = tmp_path / "99_complete.ipynb"
    nbformat.write(_complete_notebook(800, "answer 42 = 6 x 7\n"), path)
    assert check_structure(path) == []
    nbformat.write(_complete_notebook(700, "answer 42 = 6 x 7\n"), path)
    assert any("fewer than 800" in p for p in check_structure(path))
    nbformat.write(_complete_notebook(800, "True\n"), path)
    assert any("prints only booleans" in p for p in check_structure(path))
    nb = nbformat.read(path, as_version=4)
    assert markdown_words(nb) == sum(
        1 for c in nb.cells if c.cell_type == "markdown" for t in c.source.split() if re.search("[A-Za-z]", t)
    )


def test_github_addresses_and_colab_urls():
    for form in (
        "https://github.com/someone/anysat_lite",
        "https://github.com/someone/anysat_lite.git",
        "git@github.com:someone/anysat_lite.git",
        "someone/anysat_lite",
        "https://github.com/someone/anysat_lite/",
    ):
        assert github_slug(form) == "someone/anysat_lite"
    with pytest.raises(ValueError, match="GitHub"):
        github_slug("https://gitlab.com/someone/anysat_lite")
    assert (
        colab_url("someone/anysat_lite", "00_quickstart.ipynb", "dev")
        == "https://colab.research.google.com/github/someone/anysat_lite/blob/dev/notebooks/00_quickstart.ipynb"
    )


def test_colab_links_go_into_every_notebook_and_its_repo_parameter(tmp_path):
    for p in NOTEBOOKS[:2]:
        (tmp_path / p.name).write_text(p.read_text())
    links = insert_colab_links("https://github.com/someone/anysat_lite.git", "main", folder=tmp_path)
    assert sorted(links) == [p.name for p in NOTEBOOKS[:2]]
    for p in list_notebooks(tmp_path):
        nb = nbformat.read(p, as_version=4)
        badge = [c.source for c in nb.cells if "colab" in c.metadata.get("tags", [])][0]
        assert links[p.name] in badge and "colab-badge.svg" in badge
        params = [c.source for c in nb.cells if "parameters" in c.metadata.get("tags", [])][0]
        assert 'REPO = "https://github.com/someone/anysat_lite"' in params
        # the notebooks keep the shared structure, and --standard-cells keeps the address
        assert not [q for q in check_structure(p) if "parameters cell" in q]
        apply_standard_cells(p)
        cells = nbformat.read(p, as_version=4).cells
        params = [c.source for c in cells if "parameters" in c.metadata.get("tags", [])][0]
        assert 'REPO = "https://github.com/someone/anysat_lite"' in params


def test_colab_link_options_are_checked(tmp_path, capsys):
    from anysat_lite.cli import main

    for argv, expected in [
        (["--branch", "dev"], "--branch dev: names the branch of the Colab links; add --colab-links GITHUB_REPO"),
        (["--colab-links", "https://github.com/a/b", "--branch", "x y"], "--branch 'x y': expected a git branch"),
        (["--colab-links", "https://github.com/a/b", "--branch", "../up"], "--branch '../up': expected a git branch"),
        (["--colab-links", "https://github.com/a/b", "--only", "00"], "the badges and the REPO setting go into every"),
    ]:
        assert main(["notebooks", "--out", str(tmp_path), *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expected in err, err


def test_standard_cells_replace_old_ones_and_keep_own_parameters(tmp_path):
    old_install = (
        'import importlib.util, os, subprocess, sys\nif importlib.util.find_spec("anysat_lite") is None:\n'
        '    subprocess.run(["git", "clone", REPO_URL, "x"], check=True)'
    )
    old_mode = 'import os\nSMOKE = SMOKE or os.environ.get("ANYSAT_LITE_SMOKE") == "1"'
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# 98 · Old"),
        nbformat.v4.new_code_cell(old_install),
        nbformat.v4.new_code_cell(
            "# Parameters: papermill\nSMOKE = False\nSTEPS = 3  # steps", metadata={"tags": ["parameters"]}
        ),
        nbformat.v4.new_code_cell(old_mode),
        nbformat.v4.new_code_cell("print(STEPS)"),
    ]
    path = tmp_path / "98_old.ipynb"
    nbformat.write(nb, path)
    apply_standard_cells(path)
    once = nbformat.read(path, as_version=4)
    apply_standard_cells(path)  # idempotent
    cells = nbformat.read(path, as_version=4).cells
    assert [c.source for c in cells] == [c.source for c in once.cells]
    assert [c.metadata.get("tags", []) for c in cells[:3]] == [[], ["colab"], ["parameters"]]
    assert cells[2].source == PARAMETERS + "\n\nSTEPS = 3  # steps" and cells[3].source == SETUP
    assert [c.source for c in cells[4:]] == ["print(STEPS)"]


def test_standard_cells_never_replace_a_learners_edits_without_force(tmp_path):
    nb = nbformat.v4.new_notebook()
    params = PARAMETERS.replace('DEVICE = ""', 'DEVICE = "cpu"') + "\n\nSTEPS = 3"
    nb.cells = [
        nbformat.v4.new_markdown_cell("# 96 · Edited"),
        nbformat.v4.new_markdown_cell(COLAB_PLACEHOLDER, metadata={"tags": ["colab"]}),
        nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(SETUP + "\nprint('my line')"),
        nbformat.v4.new_code_cell("print(STEPS)"),
    ]
    path = tmp_path / "96_edited.ipynb"
    nbformat.write(nb, path)
    before = path.read_bytes()
    with pytest.raises(
        UserError,
        match=r"96_edited.ipynb: its parameters cell \(SMOKE, DEVICE or the shared comments\) and its setup cell "
        r"differ from the shared ones \(edited by hand\?\); --standard-cells would replace them: copy your changes "
        r"elsewhere, then add --force",
    ):
        apply_standard_cells(path)
    assert path.read_bytes() == before
    apply_standard_cells(path, force=True)
    cells = nbformat.read(path, as_version=4).cells
    assert cells[2].source == PARAMETERS + "\n\nSTEPS = 3"  # the shared block once, the notebook's own line kept
    assert [c.source for c in cells[3:]] == [SETUP, "print(STEPS)"]


def test_standard_cells_move_a_misplaced_colab_cell_after_the_title(tmp_path):
    """A colab-tagged code cell further down (an older notebook) becomes the markdown placeholder at index 1."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# 97 · Misplaced"),
        nbformat.v4.new_markdown_cell("## Learning goals"),
        nbformat.v4.new_code_cell(COLAB_PLACEHOLDER, metadata={"tags": ["colab"]}),
        nbformat.v4.new_code_cell("print(1)"),
    ]
    path = tmp_path / "97_misplaced.ipynb"
    nbformat.write(nb, path)
    apply_standard_cells(path)
    cells = nbformat.read(path, as_version=4).cells
    assert [(c.cell_type, c.metadata.get("tags", [])) for c in cells[:2]] == [("markdown", []), ("markdown", ["colab"])]
    assert [c.source for c in cells].count(COLAB_PLACEHOLDER) == 1 and cells[2].source == "## Learning goals"


def test_setup_cell_explains_what_to_do_when_the_package_is_missing(tmp_path):
    """Run the setup cell where anysat_lite cannot be imported and REPO is empty: one paragraph, then stop."""
    script = (
        "import importlib.util, sys\n"
        "real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda name, *a: None if name == 'anysat_lite' else real(name, *a)\n"
        + PARAMETERS
        + "\n"
        + SETUP
    )
    env = {k: v for k, v in os.environ.items() if k != "ANYSAT_LITE_REPO"}
    r = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )
    assert r.returncode != 0 and "set REPO" in r.stderr
    paragraph = r.stdout.strip()
    assert "\n" not in paragraph and "REPO" in paragraph and "ANYSAT_LITE_REPO" in paragraph
    assert "pip install -e" in paragraph and not list(tmp_path.iterdir())  # nothing cloned


def test_setup_refuses_a_device_this_machine_lacks_or_a_wrong_name(monkeypatch):
    """The setup cell's DEVICE goes through errors.check_device: a one-line UserError, not torch's error."""
    import torch

    from anysat_lite.errors import UserError
    from anysat_lite.notebooks import setup

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    for device, pattern in (
        ("cuda", r"^DEVICE cuda: this machine has no CUDA device; use DEVICE cpu$"),
        ("cuda:1", r"^DEVICE cuda:1: this machine has no CUDA device; use DEVICE cpu$"),
        ("gpu", r"^DEVICE gpu: expected cpu, cuda or cuda:N .*; e.g. DEVICE cuda$"),
        ("CPU", r"^DEVICE CPU: expected cpu, cuda or cuda:N "),
        (0, r"^DEVICE 0: expected cpu, cuda or cuda:N "),
        ("mps", r"^DEVICE mps: this machine has no MPS \(Apple GPU\) device; use DEVICE cpu$"),
    ):
        with pytest.raises(UserError, match=pattern):
            setup(False, device)
    for smoke in ("False", "0", None, 2):  # a string turned smoke mode on before ("False" is truthy)
        with pytest.raises(UserError, match=rf"^SMOKE {smoke!r}: expected True or False, got a .*; write SMOKE ="):
            setup(smoke, "cpu")
    monkeypatch.delenv("ANYSAT_LITE_SMOKE", raising=False)
    assert setup(0, "cpu")[0] is False and setup(True, "cpu")[0] is True


@pytest.mark.slow
def test_every_notebook_runs_once_and_its_checked_outputs_match():
    """nbval in smoke mode: executes all eight notebooks (errors fail) and compares the checked cells."""
    env = {**os.environ, "ANYSAT_LITE_SMOKE": "1", "MPLBACKEND": "Agg", "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    t0 = time.time()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--nbval-lax",
            "--nbval-current-env",
            "--rootdir",
            str(NOTEBOOK_DIR),
            *map(str, NOTEBOOKS),
        ],
        cwd=NOTEBOOK_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    summary = {"seconds": round(time.time() - t0), "tail": r.stdout[-300:]}
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    print(json.dumps(summary))


def test_notebooks_never_replace_executed_copies_in_out_unasked(tmp_path, capsys, monkeypatch):
    """``anysat-lite notebooks --out DIR`` replaced the executed notebooks already in DIR silently; now they are
    refused before any notebook runs, and --force replaces them."""
    import papermill

    from anysat_lite.cli import main

    ran = []

    def fake_execute(src, dst, **kwargs):
        ran.append(os.path.basename(dst))
        with open(dst, "w") as f:
            f.write("executed")

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    name = next(p.name for p in NOTEBOOKS if p.name.startswith("01"))  # the second of the chosen notebooks
    (tmp_path / name).write_text("mine")
    assert main(["notebooks", "--only", "00", "01", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(
        rf"--out .*: .*{name} exists \(an executed notebook, of an earlier run or yours\) and running {name} would "
        r"replace it; write elsewhere with --out DIR, or replace it with --force$",
        err[0],
    ), err
    assert not ran and (tmp_path / name).read_text() == "mine"
    assert main(["notebooks", "--only", "00", "01", "--out", str(tmp_path), "--force"]) == 0
    assert ran == [p.name for p in NOTEBOOKS if p.name[:2] in ("00", "01")]
    assert (tmp_path / name).read_text() == "executed"


def test_store_writes_full_runs_only_without_papermills_cells_and_never_over_a_save(tmp_path, monkeypatch):
    """--store in smoke mode stored a permanent 'SMOKE = True' cell (papermill's injected-parameters) that every later
    run kept; and a notebook saved in an editor while it ran was replaced by the executed copy."""
    import nbformat
    import papermill

    from anysat_lite.notebooks import run_notebooks

    folder = tmp_path / "nbs"
    folder.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("SMOKE = False", metadata={"tags": ["parameters"]})]
    nbformat.write(nb, folder / "98_a.ipynb")
    nbformat.write(nb, folder / "99_b.ipynb")
    saved_meanwhile = "99_b.ipynb"

    def fake_execute(src, dst, parameters, **kwargs):  # what papermill leaves: an injected cell and its metadata
        done = nbformat.read(src, as_version=4)
        injected = nbformat.v4.new_code_cell("# Parameters\nSMOKE = True\n", metadata={"tags": ["injected-parameters"]})
        done.cells.insert(1, injected)
        done.metadata["papermill"] = {"parameters": parameters}
        nbformat.write(done, dst)
        if src.endswith(saved_meanwhile):
            with open(src, "a") as f:
                f.write("\n")  # the learner saves

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    with pytest.raises(UserError, match=r"^--store: writes the outputs of a full run into the notebooks, expected"):
        run_notebooks(tmp_path / "out", smoke=True, folder=folder, store=True)
    before = (folder / saved_meanwhile).read_bytes()
    assert run_notebooks(tmp_path / "out", smoke=False, folder=folder, store=True) == [saved_meanwhile]
    stored = nbformat.read(folder / "98_a.ipynb", as_version=4)
    assert [c.source for c in stored.cells] == ["SMOKE = False"] and "papermill" not in stored.metadata
    assert (folder / saved_meanwhile).read_bytes() == before + b"\n"  # the save is kept
    assert (tmp_path / "out" / saved_meanwhile).exists()  # and the executed copy is in --out
    from anysat_lite.notebooks import check_structure

    assert "a cell papermill injected (tagged injected-parameters) fixes every later run's parameters" in (
        check_structure(tmp_path / "out" / "98_a.ipynb")
    )
    assert not any("papermill injected" in p for p in check_structure(folder / "98_a.ipynb"))
