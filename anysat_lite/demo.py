"""The CPU demo: pretrain the ``cpu-demo`` preset, probe its encoders, report the results.

``anysat-lite demo`` calls :func:`run_demo`.  The demo is deterministic (fixed seeds, fixed
thread count), so its results block -- the probe table with bootstrap intervals and the final
collapse monitors, :func:`results_block` -- is the same on every run on the same kind of
machine.  The README carries that block between two markers; ``anysat-lite demo
--update-readme`` rewrites it from the run, and a test fails when the two differ.
"""

from __future__ import annotations

import re
from pathlib import Path

from .config import Config

__all__ = ["run_demo", "results_block", "readme_block", "replace_readme_block", "README_MARKERS"]

README_MARKERS = ("<!-- demo-results:start (anysat-lite demo --update-readme) -->", "<!-- demo-results:end -->")

# Rows of the results block: (modalities, probe, metric); patch size = the first probe patch size.
_ROWS = (
    ("all", "linear", "OA"),
    ("all", "kNN", "OA"),
    ("all", "multi-label", "F1-micro"),
    ("s2", "linear", "OA"),
    ("s2", "kNN", "OA"),
    ("s1-asc", "linear", "OA"),
    ("s1-asc", "kNN", "OA"),
    ("aerial", "linear", "OA"),
    ("aerial", "kNN", "OA"),
    ("all", "segmentation", "mIoU"),
)


def run_demo(
    cfg: Config, resume: bool | str | Path = False, force: bool = False, progress: bool = True
) -> tuple[dict, dict]:
    """Pretrain ``cfg`` then probe its exported encoders; returns ``(training summary, probe report)``.

    Resuming a finished run skips straight to the probes (its ``summary.json`` is reused).
    """
    import json

    from .probe import run_probe
    from .train import pretrain
    from .train.rundir import RunFinishedError

    out = Path(cfg.train.out_dir)
    try:
        summary = pretrain(cfg, resume=resume, progress=progress, force=force)
    except RunFinishedError as e:
        print(f"pretraining: {e.checkpoint} is already at step {e.step} = train.steps; probing its encoders")
        summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    report = run_probe(cfg, checkpoint=out / "encoder", out_dir=out, progress=progress)
    return summary, report


def _cell(r: dict | None) -> str:
    if r is None:
        return "–"
    return (
        f"{100 * r['value']:.1f} [{100 * r['ci95'][0]:.1f}, {100 * r['ci95'][1]:.1f}]"
        if "ci95" in r
        else f"{100 * r['value']:.1f}"
    )


def results_block(summary: dict, report: dict) -> str:
    """Markdown of the demo's deterministic results: headline probe table and collapse monitors."""
    from .probe.run import ENCODERS

    rows = report["results"]
    P = min(r["patch_size"] for r in rows)
    all_mods = max((r["modalities"] for r in rows), key=lambda m: m.count("+"))
    encoders = [e for e in ENCODERS if any(r["encoder"] == e for r in rows)]
    lines = [
        f"| modalities (P = {P} m) | probe | metric | " + " | ".join(encoders) + " |",
        "|---|---|---|" + "---:|" * len(encoders),
    ]
    for mods, method, metric in _ROWS:
        mods = all_mods if mods == "all" else mods
        found = {
            r["encoder"]: r
            for r in rows
            if r["patch_size"] == P
            and r["modalities"] == mods
            and r["method"].startswith(method)
            and r["metric"] == metric
        }
        if found:
            name = next(iter(found.values()))["method"]
            lines.append(f"| {mods} | {name} | {metric} | " + " | ".join(_cell(found.get(e)) for e in encoders) + " |")
    final = summary.get("final", {})
    lines += [
        "",
        f"Test split: {report['splits']['test']} tiles (one tile = {100 / report['splits']['test']:.1f} "
        f"points); cells: score [95 % bootstrap interval over the test tiles], in %.",
    ]
    if "std" in final:
        lines.append(
            f"After {summary['steps']} steps: JEPA loss {summary['first_jepa_loss']:.3f} -> "
            f"{final['jepa_loss']:.3f}, target std per dimension {final['std']:.2f}, effective rank "
            f"{final['erank']:.1f}, tile cosine {final['cos']:.2f}; collapse warnings: "
            f"{', '.join(sorted(summary.get('collapse_warnings', {}))) or 'none'}."
        )
    return "\n".join(lines)


def readme_block(text: str) -> str | None:
    """The results block inside a README's markers, or ``None`` when the markers are absent."""
    start, end = (re.escape(m) for m in README_MARKERS)
    m = re.search(f"{start}\n(.*?)\n?{end}", text, flags=re.S)  # an empty block is start, newline, end
    return m.group(1) if m else None


def replace_readme_block(path: str | Path, block: str) -> bool:
    """Write ``block`` between the README's markers; returns whether the file changed."""
    path = Path(path)
    text = path.read_text()
    if readme_block(text) is None:
        raise ValueError(
            f"{path}: no demo results markers {README_MARKERS[0]!r} ... {README_MARKERS[1]!r}; "
            "add them where the results should go"
        )
    start, end = README_MARKERS
    new = re.sub(f"{re.escape(start)}\n.*?\n?{re.escape(end)}", lambda _: f"{start}\n{block}\n{end}", text, flags=re.S)
    if new != text:
        path.write_text(new)
    return new != text
