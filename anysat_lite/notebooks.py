"""The numbered notebooks: their shared cells, their set-up, Colab links, structure checks, and running them.

Every notebook ``notebooks/NN_*.ipynb`` follows one convention (:func:`check_structure` tests it):

* a title cell, then a markdown cell tagged ``colab`` (the "Open in Colab" badge, or how to make it),
  then the **Learning goals**, prerequisites, run times and paper sections;
* the **parameters** cell (tagged ``parameters``; papermill overrides it) that starts with
  :data:`PARAMETERS` and may add the notebook's own parameters below;
* the **setup** cell :data:`SETUP`: installs the package when the kernel lacks it (Colab) from the
  one repository setting ``REPO`` / ``ANYSAT_LITE_REPO``, then :func:`setup` fixes the mode
  (``SMOKE``), the device (``DEVICE``: the GPU when there is one) and the seeds;
* the lessons, each concept in prose (and LaTeX) next to the code that computes it;
* a **Summary** and **Exercises** (``### Exercise N``), each with a solution cell that starts with
  ``# Solution N`` and ``# NBVAL_CHECK_OUTPUT`` and prints what proves it right; the last cell prints
  the run time (:func:`report_run_time`).

``anysat-lite notebooks`` runs them with papermill (``--full`` for the full mode, ``--store`` to keep the
outputs), ``--check`` lists what a notebook lacks, ``--colab-links https://github.com/OWNER/REPO``
puts the Colab badges and the default ``REPO`` into every notebook and prints the links.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from .errors import UserError, check_device, check_output_files, check_output_folder
from .files import atomic_write

__all__ = [
    "NOTEBOOK_DIR",
    "SMOKE_ENV",
    "REPO_ENV",
    "PARAMETERS",
    "SETUP",
    "COLAB_PLACEHOLDER",
    "list_notebooks",
    "setup",
    "report_run_time",
    "github_slug",
    "colab_url",
    "colab_links",
    "insert_colab_links",
    "apply_standard_cells",
    "markdown_words",
    "check_structure",
    "run_notebooks",
    "tidy_outputs",
]

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
SMOKE_ENV = "ANYSAT_LITE_SMOKE"  # "1": notebooks run their smoke variant (what CI and nbval use)
REPO_ENV = "ANYSAT_LITE_REPO"  # where the setup cell installs anysat_lite from when the kernel lacks it
MIN_WORDS = 800  # words of markdown explanation every notebook has at least
MIN_EXERCISES = 2

PARAMETERS = """\
# Parameters (papermill: -p NAME VALUE, or edit them here)
SMOKE = False   # True, or the environment variable ANYSAT_LITE_SMOKE set to 1: the tiny sizes CI runs
DEVICE = ""     # empty: the GPU when there is one, else the CPU; or "cpu", "cuda", "cuda:1", "mps"
REPO = ""       # only where anysat_lite is not installed (Colab): git URL or folder of the repository to
                # install it from; empty: the environment variable ANYSAT_LITE_REPO"""
# (papermill reads a parameter line with exactly one "=": keep "=" out of the comments.)

SETUP = """\
# Setup: install anysat_lite if this kernel lacks it (Colab), then fix the mode, the device and the seeds.
import importlib.util, os, subprocess, sys
if importlib.util.find_spec("anysat_lite") is None:
    REPO = REPO or os.environ.get("ANYSAT_LITE_REPO", "")
    if not REPO:
        print("anysat_lite is not installed in this kernel, and no repository is set to install it from. On Colab, "
              "write the address of the anysat_lite repository you use (your fork or the project's, in the form "
              "https://github.com/<owner>/<repo>) into REPO in the Parameters cell above, or run "
              "%env ANYSAT_LITE_REPO=https://github.com/<owner>/<repo> in a new cell, then run this cell again: it "
              "clones the repository and installs it with pip (about a minute). On your own machine, run "
              "pip install -e \\".[notebooks]\\" in your clone instead and restart the kernel.")
        raise RuntimeError("anysat_lite is not installed: set REPO (see the paragraph above)")
    if not os.path.isdir(REPO):
        if not os.path.isdir("anysat_lite_repo"):
            subprocess.run(["git", "clone", "--depth", "1", REPO, "anysat_lite_repo"], check=True)
        REPO = "anysat_lite_repo"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", REPO], check=True)
    sys.path.insert(0, os.path.abspath(REPO))
from anysat_lite.notebooks import setup
SMOKE, DEVICE = setup(SMOKE, DEVICE)"""

COLAB_PLACEHOLDER = (
    "**Open in Colab:** no link yet, because this copy does not know where it is published. Run "
    "`anysat-lite notebooks --colab-links https://github.com/OWNER/REPO` once in your clone (with your "
    "repository's address): it puts the badge here and the same address into `REPO`, which the setup cell "
    "installs the package from on Colab."
)
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"

_START: dict = {}


def list_notebooks(folder: str | Path = NOTEBOOK_DIR) -> list[Path]:
    return sorted(p for p in Path(folder).glob("[0-9][0-9]_*.ipynb"))


# --- inside a notebook ------------------------------------------------------------------------------------------


def setup(smoke: bool = False, device: str = "", seed: int = 0):
    """The notebooks' common set-up: returns ``(SMOKE, DEVICE)`` and prints them on one line.

    ``smoke`` is also switched on by the environment variable ``ANYSAT_LITE_SMOKE=1`` (how CI runs the
    notebooks with nbval); a ``smoke`` other than a bool (or 0/1) is refused, so that ``"False"`` does not turn it
    on.  ``device`` ``""`` picks the GPU when there is one; a name other than cpu, cuda,
    cuda:N or mps, or a GPU this machine lacks, is refused (:func:`~anysat_lite.errors.check_device`).
    Seeds torch and NumPy, sets the figure style of :mod:`anysat_lite.viz` and starts the clock of
    :func:`report_run_time`.
    """
    import numpy as np
    import torch

    from . import viz

    if not (isinstance(smoke, int) and smoke in (0, 1)):  # bool is an int; "False" would be truthy
        raise UserError(
            f"SMOKE {smoke!r}: expected True or False, got a {type(smoke).__name__}; write SMOKE = True or "
            "SMOKE = False, without quotes"
        )
    dev = check_device("DEVICE", device)  # before anything is seeded or printed
    smoke = bool(smoke) or os.environ.get(SMOKE_ENV, "") == "1"
    torch.manual_seed(seed)
    np.random.seed(seed)
    viz.use_style()
    _START.update(t=time.time(), smoke=smoke, device=str(dev))
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{torch.get_num_threads()} CPU threads"
    print(f"{'smoke' if smoke else 'full'} mode on {dev} ({where}), torch {torch.__version__}")
    return smoke, dev


def report_run_time() -> None:
    """Print the seconds since :func:`setup`: the run time of the notebook, stored with its outputs."""
    seconds = time.time() - _START.get("t", time.time())
    mode = "smoke" if _START.get("smoke") else "full"
    print(f"this run: {seconds:.0f} s in {mode} mode on {_START.get('device', '?')}")


# --- Colab links ------------------------------------------------------------------------------------------------


def github_slug(repo: str) -> str:
    """``https://github.com/OWNER/REPO(.git)``, ``git@github.com:OWNER/REPO.git`` or ``OWNER/REPO``
    -> ``OWNER/REPO``."""
    text = repo.strip().rstrip("/")
    m = re.fullmatch(r"(?:https?://(?:www\.)?github\.com/|git@github\.com:)?([\w.-]+)/([\w.-]+?)(?:\.git)?", text)
    if not m:
        raise ValueError(
            f"repository {repo!r}: expected https://github.com/OWNER/REPO or OWNER/REPO (Colab opens "
            "notebooks from GitHub only); give your repository's GitHub address"
        )
    return f"{m.group(1)}/{m.group(2)}"


def colab_url(repo: str, notebook: str, branch: str = "main") -> str:
    """The Colab address of ``notebooks/<notebook>`` in the GitHub repository ``repo`` on ``branch``."""
    return f"https://colab.research.google.com/github/{github_slug(repo)}/blob/{branch}/notebooks/{Path(notebook).name}"


def colab_links(repo: str, branch: str = "main", folder: str | Path = NOTEBOOK_DIR) -> dict[str, str]:
    """``{notebook file name: Colab address}`` for every numbered notebook."""
    return {p.name: colab_url(repo, p.name, branch) for p in list_notebooks(folder)}


def _tagged(nb, tag: str) -> list:
    return [c for c in nb.cells if tag in c.metadata.get("tags", [])]


def _write_notebook(nb, path: str | Path) -> None:
    """``nbformat.write`` to ``path`` atomically (an interrupted write leaves the previous notebook)."""
    import nbformat

    atomic_write(path, lambda tmp: nbformat.write(nb, tmp))


def insert_colab_links(repo: str, branch: str = "main", folder: str | Path = NOTEBOOK_DIR) -> dict[str, str]:
    """Write the Colab badge into each notebook's ``colab`` cell and ``REPO = "https://github.com/OWNER/REPO"``
    into its parameters cell (the address the setup cell installs from); returns :func:`colab_links`."""
    import nbformat

    slug = github_slug(repo)
    links = colab_links(slug, branch, folder)
    for path in list_notebooks(folder):
        nb = nbformat.read(path, as_version=4)
        cells = _tagged(nb, "colab")
        params = _tagged(nb, "parameters")
        if len(cells) != 1 or len(params) != 1:
            raise ValueError(
                f"{path.name}: expected one cell tagged 'colab' and one tagged 'parameters'; run "
                "anysat-lite notebooks --standard-cells first"
            )
        cells[0].source = f"[![Open In Colab]({COLAB_BADGE})]({links[path.name]})"
        params[0].source = _with_repo(params[0].source, f"https://github.com/{slug}")
        _write_notebook(nb, path)
    return links


def _repo(source: str) -> str:
    """The value of ``REPO = "..."`` in a parameters cell ("" when it has none)."""
    m = re.search(r'^REPO = "([^"\n]*)"', source, flags=re.M)
    return m.group(1) if m else ""


def _with_repo(source: str, repo: str) -> str:
    """A parameters cell with ``REPO = "<repo>"`` (the one setting ``--colab-links`` writes into the shared block)."""
    return re.sub(r'^REPO = "[^"\n]*"', f'REPO = "{repo}"', source, count=1, flags=re.M)


def _own_parameters(source: str) -> str:
    """The notebook's own lines of a parameters cell: everything but the shared block's lines (its comments,
    its SMOKE / DEVICE / REPO assignments) and the header comment of an older cell."""
    shared = {line.strip() for line in PARAMETERS.splitlines()}
    keep = [
        line
        for line in source.splitlines()
        if line.strip() not in shared
        and not re.match(r"\s*#\s*Parameters\b", line)
        and not re.match(r"(SMOKE|DEVICE|REPO)\s*=", line)
    ]
    return "\n".join(keep).strip("\n")


def _old_setup(cell) -> bool:
    """A set-up cell of the earlier convention (its own install code, or the SMOKE environment check)."""
    src = cell.source
    installs = 'find_spec("anysat_lite")' in src and "git" in src
    return cell.cell_type == "code" and src != SETUP and (installs or "SMOKE = SMOKE or os.environ" in src)


def _edited_shared_cells(nb) -> list[str]:
    """The shared cells of the current convention whose text differs from it (a learner's edits): what
    :func:`apply_standard_cells` would replace.  ``REPO``'s address and the notebook's own parameters are kept."""
    edited = []
    for c in _tagged(nb, "parameters"):
        if c.source.startswith(PARAMETERS.splitlines()[0]) and not _with_repo(c.source, "").startswith(PARAMETERS):
            edited.append("its parameters cell (SMOKE, DEVICE or the shared comments)")
    if any(c.source.startswith(SETUP.splitlines()[0]) and c.source != SETUP for c in nb.cells):
        edited.append("its setup cell")
    return edited


def apply_standard_cells(path: str | Path, force: bool = False) -> None:
    """Give a notebook the shared cells: the ``colab`` cell after the title, the parameters cell (keeping the
    notebook's own parameters after :data:`PARAMETERS`) and the setup cell right after it.  Set-up cells of
    the earlier convention (their own install code, the SMOKE environment check) are removed.  Shared cells
    edited by hand are replaced only with ``force`` (without it: :class:`~anysat_lite.errors.UserError`)."""
    import nbformat

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    edited = _edited_shared_cells(nb)
    if edited and not force:
        raise UserError(
            f"{path.name}: {' and '.join(edited)} differ from the shared ones (edited by hand?); --standard-cells "
            "would replace them: copy your changes elsewhere, then add --force (Python: force=True)"
        )
    setup_header = SETUP.splitlines()[0]
    nb.cells = [
        c for c in nb.cells if not _old_setup(c) and not (c.source.startswith(setup_header) and c.source != SETUP)
    ]
    params = _tagged(nb, "parameters")
    extra = _own_parameters(params[0].source) if params else ""
    repo = _repo(params[0].source) if params else ""  # kept: the address --colab-links wrote
    colab = _tagged(nb, "colab")  # one markdown cell right after the title (a badge, or the placeholder)
    keep = next((c for c in colab if c.cell_type == "markdown"), None)
    nb.cells = [c for c in nb.cells if all(c is not k for k in colab)]
    nb.cells.insert(1, keep or nbformat.v4.new_markdown_cell(COLAB_PLACEHOLDER, metadata={"tags": ["colab"]}))
    source = _with_repo(PARAMETERS, repo) + ("\n\n" + extra if extra else "")
    if params:
        params[0].source = source
        idx = nb.cells.index(params[0])
    else:
        idx = 3 if len(nb.cells) > 2 and nb.cells[2].cell_type == "markdown" else 2
        nb.cells.insert(idx, nbformat.v4.new_code_cell(source, metadata={"tags": ["parameters"]}))
    nb.cells = [c for i, c in enumerate(nb.cells) if c.source != SETUP or i == idx + 1]
    if idx + 1 >= len(nb.cells) or nb.cells[idx + 1].source != SETUP:
        nb.cells.insert(idx + 1, nbformat.v4.new_code_cell(SETUP))
    _write_notebook(nb, path)


# --- structure ------------------------------------------------------------------------------------------------------


def markdown_words(nb) -> int:
    """Words of explanation: tokens holding a letter in the markdown cells (LaTeX commands and code spans count
    like words; headings too)."""
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    return sum(1 for tok in text.split() if re.search(r"[A-Za-z]", tok))


def _outputs_text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        elif "data" in out and "text/plain" in out["data"]:
            parts.append(out["data"]["text/plain"])
    return "".join(parts)


def check_structure(path: str | Path, min_words: int = MIN_WORDS) -> list[str]:
    """What a notebook lacks of the convention (module docstring); ``[]`` when it has everything."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    problems = []
    md = [c.source for c in nb.cells if c.cell_type == "markdown"]
    code = [c for c in nb.cells if c.cell_type == "code"]
    headings = [line.lstrip("#").strip() for s in md for line in s.splitlines() if line.startswith("#")]
    intro = "\n".join(md[:4])
    for name in ("Learning goals", "Summary", "Exercises"):
        if not any(h.lower().startswith(name.lower()) for h in headings):
            problems.append(f"no '{name}' heading")
    if not re.search(r"prerequisite", intro, re.I):
        problems.append("the introduction does not name the prerequisites")
    if not (re.search(r"2 CPU cores", intro) and re.search(r"Colab GPU", intro)):
        problems.append("the introduction does not give the run time on 2 CPU cores and on a Colab GPU")
    if not re.search(r"paper", intro, re.I) or not re.search(r"(Sec\.|Section|§)\s*\d", intro):
        problems.append("the introduction does not name the paper sections it covers")
    words = markdown_words(nb)
    if words < min_words:
        problems.append(f"{words} words of markdown, fewer than {min_words}")
    params = _tagged(nb, "parameters")
    if len(params) != 1 or not _with_repo(params[0].source, "").startswith(PARAMETERS):
        problems.append("no parameters cell starting with anysat_lite.notebooks.PARAMETERS")
    if not any(c.source == SETUP for c in code):
        problems.append("no setup cell equal to anysat_lite.notebooks.SETUP")
    if len(_tagged(nb, "colab")) != 1:
        problems.append("no markdown cell tagged 'colab'")
    exercises = sorted({int(n) for s in md for n in re.findall(r"^#+\s*Exercise\s+(\d+)", s, re.M)})
    if len(exercises) < MIN_EXERCISES:
        problems.append(f"{len(exercises)} exercises, fewer than {MIN_EXERCISES}")
    for n in exercises:
        sol = [c for c in code if re.match(rf"#\s*Solution {n}\b", c.source)]
        if not sol:
            problems.append(f"exercise {n} has no solution cell ('# Solution {n}')")
            continue
        if "# NBVAL_CHECK_OUTPUT" not in sol[0].source:
            problems.append(f"the solution of exercise {n} is not checked (# NBVAL_CHECK_OUTPUT)")
        printed = _outputs_text(sol[0]).split()
        if not printed:
            problems.append(f"the solution of exercise {n} has no stored output")
        elif all(tok.strip(".,:;") in ("True", "False") for tok in printed):
            problems.append(f"the solution of exercise {n} prints only booleans: print the numbers that prove it")
    if any(c.source.strip() and c.get("execution_count") is None for c in code):
        problems.append("stored without the outputs of a full run (code cells never executed)")
    if not any("image/png" in o.get("data", {}) for c in code for o in c.get("outputs", [])):
        problems.append("no figure in the stored outputs")
    if not code or "report_run_time()" not in code[-1].source or not _outputs_text(code[-1]).strip():
        problems.append("the last cell does not report the run time (anysat_lite.notebooks.report_run_time())")
    if _tagged(nb, "injected-parameters"):
        problems.append("a cell papermill injected (tagged injected-parameters) fixes every later run's parameters")
    return problems


# --- running -------------------------------------------------------------------------------------------------------


def _apply_carriage_returns(text: str) -> str:
    lines = []
    for line in text.split("\n"):
        lines.append(line.rsplit("\r", 1)[-1] if "\r" in line.rstrip("\r") else line.replace("\r", ""))
    return "\n".join(lines)


def tidy_outputs(nb) -> None:
    """Merge consecutive stream outputs and keep only the final state of progress bars (in place)."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        merged = []
        for out in cell.get("outputs", []):
            if (
                out.get("output_type") == "stream"
                and merged
                and merged[-1].get("output_type") == "stream"
                and merged[-1].get("name") == out.get("name")
            ):
                merged[-1]["text"] += out["text"]
            else:
                merged.append(out)
        for out in merged:
            if out.get("output_type") == "stream":
                text = _apply_carriage_returns(out["text"])
                out["text"] = "\n".join(
                    line
                    for line in text.split("\n")
                    if "TqdmWarning" not in line and "from .autonotebook import" not in line
                )
        cell["outputs"] = [o for o in merged if o.get("output_type") != "stream" or o["text"].strip()]


def without_papermill(nb) -> None:
    """Drop what papermill adds to an executed notebook (in place): the ``injected-parameters`` cell, which
    would otherwise fix the next runs' parameters, and its ``papermill`` metadata."""
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)


def check_run_options(smoke: bool, store: bool) -> None:
    """Refuse ``--store`` without ``--full``: a smoke run's outputs (and papermill's ``SMOKE = True`` cell) are not
    what the stored notebooks show."""
    if store and smoke:
        raise UserError(
            "--store: writes the outputs of a full run into the notebooks, expected --full; a smoke run's "
            "outputs (and its SMOKE = True cell) would replace them. Add --full, or leave --store out"
        )


def run_notebooks(
    out_dir: str | Path,
    smoke: bool = True,
    only=None,
    kernel: str = "python3",
    folder: str | Path = NOTEBOOK_DIR,
    store: bool = False,
    force: bool = False,
) -> list[str]:
    """Execute every ``NN_*.ipynb`` of ``folder`` into ``out_dir``; returns the names that failed.

    ``store`` writes the executed notebooks (outputs tidied, papermill's injected cells and metadata left
    out) back into ``folder``: how the stored notebooks get the outputs of a full run, so it needs
    ``smoke=False``; a notebook saved while it ran is not stored over (its executed copy stays in
    ``out_dir``).  Executed notebooks already in ``out_dir`` are refused before any runs, unless
    ``force`` (``--force``) replaces them.
    """
    import papermill as pm

    check_run_options(smoke, store)
    out = Path(out_dir)
    if out.resolve() == Path(folder).resolve():
        fix = "give --out another folder (--store then copies them back)" if store else "write elsewhere"
        fix += "" if store else " (--full --store with another --out stores a full run in them)"
        raise UserError(
            f"--out {out_dir}: that is the folder of the notebooks themselves, expected another one (the "
            f"executed copies would replace them); {fix}"
        )
    chosen = [nb for nb in list_notebooks(folder) if not only or any(nb.name.startswith(p) for p in only)]
    executed = " (an executed notebook, of an earlier run or yours)"
    # the files papermill would write, refused before the first notebook runs
    check_output_files("--out", out, [nb.name for nb in chosen], force, "running {name}", executed)
    check_output_folder("--out", out)
    failures = []
    env_before = os.environ.get(SMOKE_ENV)
    os.environ[SMOKE_ENV] = "1" if smoke else "0"
    try:
        for nb in chosen:
            t0 = time.time()
            source = nb.read_bytes()  # a learner's save while it runs is not stored over
            try:
                pm.execute_notebook(
                    str(nb),
                    str(out / nb.name),
                    parameters={"SMOKE": True} if smoke else {},
                    kernel_name=kernel,
                    cwd=str(Path(folder)),
                    progress_bar=False,
                )
                print(f"ok    {nb.name}  {time.time() - t0:6.1f} s")
                if store and nb.read_bytes() != source:
                    failures.append(nb.name)
                    print(
                        f"FAIL  {nb.name}  changed while it ran (saved in an editor?): not stored over; the "
                        f"executed copy is {out / nb.name}"
                    )
                elif store:
                    import nbformat

                    done = nbformat.read(out / nb.name, as_version=4)
                    tidy_outputs(done)
                    without_papermill(done)
                    _write_notebook(done, nb)
            except Exception as e:  # noqa: BLE001 - report and continue with the next notebook
                failures.append(nb.name)
                print(f"FAIL  {nb.name}  {time.time() - t0:6.1f} s  {type(e).__name__}: {str(e)[:300]}")
    finally:
        if env_before is None:
            os.environ.pop(SMOKE_ENV, None)
        else:
            os.environ[SMOKE_ENV] = env_before
    return failures
