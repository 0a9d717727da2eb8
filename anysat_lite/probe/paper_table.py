"""The paper-vs-measured table that ``anysat-lite probe --official`` writes.

Each run of :func:`~.protocol.run_task` writes its row to ``<out>/<task>.json``; the table
``<out>/reproduction.{json,md}`` is rebuilt from every row in the folder, so running the tasks one
by one (or on different days) fills one table.  Columns:

* task, protocol (linear probing / fine-tuning), metric;
* paper: the paper's value (``≈`` when read off the bar chart), measured: this run's test score,
  Δ = measured − paper, in points, and the 95 % bootstrap interval of the measured value over the
  test tiles (how much it depends on which test tiles were drawn, not run-to-run variation);
* seed, the number of tiles of each split, epochs run (best epoch), wall-clock time;
* a run with overrides (fewer epochs, another batch size) or ``limit_batches`` is marked *partial*:
  its number is not comparable with the paper's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ..files import write_text_atomic

__all__ = ["write_result", "read_results", "format_table", "TABLE_NAME"]

TABLE_NAME = "reproduction"


def read_results(out_dir: str | Path) -> list[dict]:
    """Every result row in ``out_dir`` (``<task>.json`` files), in task order of :data:`~.tasks.TASKS`."""
    from .tasks import TASKS

    rows = []
    for path in sorted(Path(out_dir).glob("*.json")):
        if path.stem == TABLE_NAME or path.name.startswith("."):  # not a temporary file a kill left behind
            continue
        try:
            row = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and {"task", "measured", "metric"} <= set(row):
            rows.append(row)
    order = {name: i for i, name in enumerate(TASKS)}
    return sorted(rows, key=lambda r: (order.get(r["task"], len(order)), r["task"]))


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def format_table(rows: Sequence[dict]) -> str:
    """Markdown table of result rows (see the module docstring), with the notes below it."""
    lines = [
        "| task | protocol | metric | paper | measured | Δ | 95 % CI | seed | train / val / test tiles | "
        "epochs (best) | time |",
        "|---|---|---|---:|---:|---:|---|---:|---|---:|---:|",
    ]
    notes: list[str] = []
    for r in rows:
        paper = "" if r.get("paper") is None else f"{'≈' if r.get('paper_approximate') else ''}{r['paper']:.1f}"
        delta = "" if r.get("delta") is None else f"{r['delta']:+.1f}"
        ci = "" if not r.get("ci95") else f"[{r['ci95'][0]:.1f}, {r['ci95'][1]:.1f}]"
        tiles = " / ".join(str(r["splits"][k]["items"]) for k in ("train", "val", "test"))
        task = r["task"] + (" (partial)" if r.get("partial") else "")
        if r.get("attend_over", "tokens") != "tokens":
            task += " (flash-attn path)"
            notes.append(
                f"{r['task']}: attention over each token's heads, as the official code with flash-attn "
                "(--attend-over heads; docs/reproduction.md)"
            )
        lines.append(
            f"| {task} | {r['protocol']} | {r['metric']} | {paper} | {r['measured']:.1f} | {delta} | {ci} | "
            f"{r['seed']} | {tiles} | {r['epochs_run']} ({r['best_epoch']}) | "
            f"{_minutes(r['seconds']['total'])} |"
        )
        for n in [r.get("paper_note"), *r.get("notes", [])]:
            if n and f"{r['task']}: {n}" not in notes:
                notes.append(f"{r['task']}: {n}")
        if r.get("partial"):
            changed = {k: v for k, v in (r.get("overrides") or {}).items() if k != "seed"}
            if r.get("limit_batches"):
                changed["limit_batches"] = r["limit_batches"]
            if r.get("val_metric", "pooled") != "pooled":
                changed["val_metric"] = r["val_metric"]
            notes.append(
                f"{r['task']}: partial run ({', '.join(f'{k}={v}' for k, v in changed.items())}); "
                "not comparable with the paper"
            )
    sources = sorted({r["paper_source"] for r in rows if r.get("paper_source")})
    out = "\n".join(lines)
    if sources:
        out += "\n\nPaper values: " + "; ".join(sources) + "."
    if notes:
        out += "\n\n" + "\n".join(f"- {n}" for n in notes)
    return out


def table_texts(rows: list[dict]) -> dict[str, str]:
    """``{file name: text}`` of the table files that :func:`write_result` builds from result ``rows``."""
    return {f"{TABLE_NAME}.json": json.dumps(rows, indent=1), f"{TABLE_NAME}.md": format_table(rows) + "\n"}


def write_result(row: dict, out_dir: str | Path) -> Path:
    """Write ``row`` to ``<out_dir>/<task>.json`` and rebuild ``<out_dir>/reproduction.{json,md}``; returns the
    Markdown table's path."""
    out = Path(out_dir)  # write_text_atomic creates the folder
    write_text_atomic(out / f"{row['task']}.json", json.dumps(row, indent=1))
    for name, text in table_texts(read_results(out)).items():
        write_text_atomic(out / name, text)
    return out / f"{TABLE_NAME}.md"
