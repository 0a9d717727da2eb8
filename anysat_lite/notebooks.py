"""Run the numbered notebooks with papermill (``anysat-lite notebooks``), in smoke or full mode."""
from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["NOTEBOOK_DIR", "list_notebooks", "run_notebooks", "tidy_outputs", "SMOKE_ENV"]

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
SMOKE_ENV = "ANYSAT_LITE_SMOKE"  # "1": notebooks run their smoke variant (what CI and nbval use)


def list_notebooks(folder: str | Path = NOTEBOOK_DIR) -> list[Path]:
    return sorted(p for p in Path(folder).glob("[0-9][0-9]_*.ipynb"))


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
            if out.get("output_type") == "stream" and merged and merged[-1].get("output_type") == "stream" \
                    and merged[-1].get("name") == out.get("name"):
                merged[-1]["text"] += out["text"]
            else:
                merged.append(out)
        for out in merged:
            if out.get("output_type") == "stream":
                text = _apply_carriage_returns(out["text"])
                out["text"] = "\n".join(line for line in text.split("\n")
                                        if "TqdmWarning" not in line and "from .autonotebook import" not in line)
        cell["outputs"] = [o for o in merged if o.get("output_type") != "stream" or o["text"].strip()]


def run_notebooks(out_dir: str | Path, smoke: bool = True, only=None, kernel: str = "python3",
                  folder: str | Path = NOTEBOOK_DIR, store: bool = False) -> list[str]:
    """Execute every ``NN_*.ipynb`` of ``folder`` into ``out_dir``; returns the names that failed.

    ``store`` writes the executed notebooks (outputs tidied) back into ``folder``: how the
    stored notebooks get the outputs of a full run.
    """
    import papermill as pm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    failures = []
    env_before = os.environ.get(SMOKE_ENV)
    os.environ[SMOKE_ENV] = "1" if smoke else "0"
    try:
        for nb in list_notebooks(folder):
            if only and not any(nb.name.startswith(p) for p in only):
                continue
            t0 = time.time()
            try:
                pm.execute_notebook(str(nb), str(out / nb.name), parameters={"SMOKE": True} if smoke else {},
                                    kernel_name=kernel, cwd=str(Path(folder)), progress_bar=False)
                print(f"ok    {nb.name}  {time.time() - t0:6.1f} s")
                if store:
                    import nbformat
                    done = nbformat.read(out / nb.name, as_version=4)
                    tidy_outputs(done)
                    nbformat.write(done, nb)
            except Exception as e:  # noqa: BLE001 - report and continue with the next notebook
                failures.append(nb.name)
                print(f"FAIL  {nb.name}  {time.time() - t0:6.1f} s  {type(e).__name__}: {str(e)[:300]}")
    finally:
        if env_before is None:
            os.environ.pop(SMOKE_ENV, None)
        else:
            os.environ[SMOKE_ENV] = env_before
    return failures
