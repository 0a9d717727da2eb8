"""The CPU demo: pretrain the ``cpu-demo`` preset, probe its encoders, report the results.

``anysat-lite demo`` calls :func:`run_demo`.  The demo is deterministic (fixed seeds, fixed
thread count), so its results block -- the probe table with bootstrap intervals and the final
collapse monitors, :func:`results_block` -- is the same on every run on the same kind of
machine.  Its last line names the machine (:func:`~anysat_lite.probe.run.machine_description`):
on another CPU, float rounding takes training elsewhere and the scores move (docs/seeds.md).
The README carries that block between two markers; ``anysat-lite demo --update-readme``
rewrites it from the run, and a test fails when the two differ on the machine it names.

One training seed is one draw: ``anysat-lite demo --seeds 0 1 2`` repeats the demo for each
seed (:func:`run_seeds`) and tabulates the pretrained encoder's headline scores per seed beside
the baselines, which do not depend on the training seed (:func:`seed_study`, :func:`seed_table`).
The test tiles are a draw too: ``--worlds 0 1 2`` also probes each seed's encoder on other draws
of the synthetic world (``data.seed``), each with its own train and test tiles
(:func:`probe_worlds`, :func:`world_study`, :func:`world_table`).
"""

from __future__ import annotations

import re
from pathlib import Path

from .config import Config
from .files import atomic_write

__all__ = [
    "run_demo",
    "run_seeds",
    "seed_study",
    "seed_table",
    "probe_worlds",
    "world_study",
    "world_table",
    "results_block",
    "readme_block",
    "replace_readme_block",
    "README_MARKERS",
    "SEED_MARKERS",
    "WORLD_MARKERS",
    "COMPUTED_ON",
    "computed_on",
]

README_MARKERS = ("<!-- demo-results:start (anysat-lite demo --update-readme) -->", "<!-- demo-results:end -->")
SEED_MARKERS = (
    "<!-- demo-seeds:start (anysat-lite demo --seeds 0 1 2 3 4 --update-readme docs/seeds.md) -->",
    "<!-- demo-seeds:end -->",
)
WORLD_MARKERS = (
    "<!-- demo-worlds:start (anysat-lite demo --seeds 0 1 2 3 4 --worlds 0 1 2 3 --resume "
    "--update-readme docs/seeds.md) -->",
    "<!-- demo-worlds:end -->",
)

# The last line of a results block names the machine its digits were computed on.
COMPUTED_ON = "Computed on: "

# Rows of the results block: (modalities, probe, metric); patch size = the first probe patch size.
# "late": the all-sensor late-fusion rows, present when the probes ran with probe.late_fusion.
_ROWS = (
    ("all", "linear", "OA"),
    ("all", "kNN", "OA"),
    ("all", "multi-label", "F1-micro"),
    ("late", "linear", "OA"),
    ("late", "kNN", "OA"),
    ("late", "multi-label", "F1-micro"),
    ("s2", "linear", "OA"),
    ("s2", "kNN", "OA"),
    ("s1-asc", "linear", "OA"),
    ("s1-asc", "kNN", "OA"),
    ("aerial", "linear", "OA"),
    ("aerial", "kNN", "OA"),
    ("all", "segmentation", "mIoU"),
)


def run_demo(
    cfg: Config, resume: bool | str | Path = False, force: bool = False, progress: bool = True, reprobe: bool = False
) -> tuple[dict, dict]:
    """Pretrain ``cfg`` then probe its exported encoders; returns ``(training summary, probe report)``.

    Resuming a finished run skips straight to the probes (its ``summary.json`` is reused), unless it
    already holds ``probe_results.json``: nothing new would be probed, so that is refused, as
    ``anysat-lite probe`` refuses it without ``--force`` (``reprobe=True`` replaces them: the seed
    study's ``--resume`` does).  A resumed run that trains further (``train.steps`` raised) is probed
    again and replaces its results, if they are its own as the probes wrote them (of its ``encoder``, the
    table unedited); other results are refused before any training.
    """
    import json

    from .config import validate_probe
    from .errors import UserError
    from .probe import run_probe
    from .train import pretrain
    from .train.rundir import RunFinishedError, resume_path

    validate_probe(cfg)  # probe settings that cannot work are refused before pretraining, not after it
    out = Path(cfg.train.out_dir)
    results = out / "probe_results.json"
    keep = UserError(
        f"demo --resume: {results} already holds probe results, which the demo would replace; to re-probe, run "
        f"anysat-lite probe --config {out / 'config.yaml'} --checkpoint {out / 'encoder'} --out {out} --force, "
        f"or move the probe_results files out of {out} first (Python: run_demo(..., reprobe=True))"
    )
    checkpoint = resume_path(out, resume or True)
    if resume and not reprobe and results.exists() and not checkpoint.exists():
        raise keep  # nothing to train: the results would only be replaced
    trains = resume and not reprobe and results.exists() and _trains_further(checkpoint, cfg.train.steps)
    foreign = _not_own_results(out) if trains else None
    if foreign:
        raise UserError(
            f"demo --resume: {out}/probe_results.* {foreign}, and probing the resumed run would replace them; move "
            f"them out of {out} first (Python: run_demo(..., reprobe=True) replaces them)"
        )
    try:
        summary = pretrain(cfg, resume=resume, progress=progress, force=force)
    except RunFinishedError as e:
        if not reprobe and results.exists():
            raise keep from None
        print(f"pretraining: {e.checkpoint} is already at step {e.step} = train.steps; probing its encoders")
        summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    report = run_probe(cfg, checkpoint=out / "encoder", out_dir=out, progress=progress)
    return summary, report


def _trains_further(checkpoint: Path, steps: int) -> bool:
    """Whether resuming from ``checkpoint`` would train (its step below ``steps``); an unreadable checkpoint is left
    to the pretraining's own refusal."""
    from .train.checkpoint import CheckpointError, load_checkpoint

    try:
        return int(load_checkpoint(checkpoint)["step"]) < steps
    except (CheckpointError, KeyError, TypeError, ValueError):
        return False


def _not_own_results(out: Path) -> str | None:
    """Why the probe results in a run folder are not the run's own as the probes wrote them (``None`` if they are):
    of another encoder, a table edited by hand, or files the probes cannot read back."""
    import json

    from .files import sha256_of

    try:
        report = json.loads((out / "probe_results.json").read_text(encoding="utf-8"))
        table = sha256_of(out / "probe_results.md")
    except (OSError, ValueError):
        return "cannot be read back as the probes' own files"
    if not isinstance(report, dict):
        return "cannot be read back as the probes' own files"
    encoder, given = out / "encoder.safetensors", report.get("checkpoint")
    same_file = encoder.is_file() and report.get("checkpoint_sha256") == sha256_of(encoder)
    if not same_file and not (isinstance(given, str) and Path(given).resolve() == (out / "encoder").resolve()):
        return f"describe another encoder ({given})"
    wrote = report.get("table_sha256")  # results written before 2026-11-28 do not say: not checked
    if wrote is not None and table != wrote:
        return "hold a table edited since the probes wrote it (probe_results.md)"
    return None


def _cell_rows(rows: list[dict], P: int, mods: str, method: str, metric: str) -> dict[str, dict]:
    """``{encoder: row}`` of one cell of the table (``method`` is a prefix: "multi-label" matches its variants).

    A late-fusion cell takes its raw-pixel row from the joint cell: raw statistics are side by side in both.
    """
    from .probe.run import LATE_FUSION

    found = {
        r["encoder"]: r
        for r in rows
        if r["patch_size"] == P and r["modalities"] == mods and r["method"].startswith(method) and r["metric"] == metric
    }
    joint = mods.removesuffix(LATE_FUSION)
    if found and joint != mods and "raw-pixels" not in found:
        found |= {k: v for k, v in _cell_rows(rows, P, joint, method, metric).items() if k == "raw-pixels"}
    return found


def _table_shape(rows: list[dict]) -> tuple[int, str]:
    """The headline patch size (the smallest probed) and the all-sensor modality set of a report's rows."""
    from .probe.run import LATE_FUSION

    joint = [r["modalities"] for r in rows if not r["modalities"].endswith(LATE_FUSION)]
    return min(r["patch_size"] for r in rows), max(joint, key=lambda m: m.count("+"))


def _row_modalities(key: str, all_mods: str) -> str:
    """The ``modalities`` label of a ``_ROWS`` key: "all" -> all sensors, "late" -> their late-fusion rows."""
    from .probe.run import LATE_FUSION

    return {"all": all_mods, "late": all_mods + LATE_FUSION}.get(key, key)


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
    from .probe.run import ENCODERS, scored_split

    rows = report["results"]
    P, all_mods = _table_shape(rows)
    split, n = scored_split(report)
    encoders = [e for e in ENCODERS if any(r["encoder"] == e for r in rows)]
    lines = [
        f"| modalities (P = {P} m) | probe | metric | " + " | ".join(encoders) + " |",
        "|---|---|---|" + "---:|" * len(encoders),
    ]
    for mods, method, metric in _ROWS:
        mods = _row_modalities(mods, all_mods)
        found = _cell_rows(rows, P, mods, method, metric)
        if found:
            name = next(iter(found.values()))["method"]
            lines.append(f"| {mods} | {name} | {metric} | " + " | ".join(_cell(found.get(e)) for e in encoders) + " |")
    final = summary.get("final", {})
    lines += [
        "",
        f"{split.capitalize()} split: {n} tiles (one tile = {100 / n:.1f} points); cells: score [95 % bootstrap "
        f"interval over the {split} tiles], in %.",
    ]
    if "std" in final:
        lines.append(
            f"After {summary['steps']} steps: JEPA loss {summary['first_jepa_loss']:.3f} -> "
            f"{final['jepa_loss']:.3f}, target std per dimension {final['std']:.2f}, effective rank "
            f"{final['erank']:.1f}, tile cosine {final['cos']:.2f}; collapse warnings: "
            f"{', '.join(sorted(summary.get('collapse_warnings', {}))) or 'none'}."
        )
    if "machine" in report:
        lines.append(f"{COMPUTED_ON}{report['machine']}.")
    return "\n".join(lines)


def computed_on(block: str) -> str | None:
    """The machine a results block names (:func:`results_block`, :func:`seed_table`), or ``None``."""
    m = re.search(f"^{re.escape(COMPUTED_ON)}(.*)\\.$", block, flags=re.M)
    return m.group(1) if m else None


def run_seeds(
    cfg: Config, seeds: list[int], resume: bool = False, force: bool = False, progress: bool = True
) -> tuple[Path, dict[int, tuple[dict, dict]]]:
    """The demo once per training seed, in ``<train.out_dir>-seeds/seed-<N>``: ``(folder, {seed: (summary, report)})``.

    Only ``train.seed`` changes between the runs (initialisation, batch order, masks); the data, the
    probes and their baselines stay fixed.  ``resume`` continues the seeds whose folder exists and
    starts the others, so seeds can be added to a study.
    """
    import dataclasses

    root = Path(f"{cfg.train.out_dir}-seeds")
    runs = {}
    for seed in seeds:
        folder = root / f"seed-{seed}"
        if progress:
            print(f"training seed {seed}: {folder}")
        run = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed, out_dir=str(folder)))
        runs[seed] = run_demo(run, resume=resume and folder.exists(), force=force, progress=progress, reprobe=True)
    return root, runs


def seed_study(runs: dict[int, tuple[dict, dict]]) -> dict:
    """The headline cells of demo runs ``{seed: (training summary, probe report)}`` that differ only in their seed.

    For each cell (modalities, probe, metric at the headline patch size): every encoder's score per
    seed, the pretrained encoder's mean, minimum and maximum, and per baseline (``random-init``,
    ``raw-pixels``) how many seeds' pretrained encoders score above it and the mean margin (points);
    and each seed's final collapse monitors and warnings, where its summary has them.
    """
    from .probe.run import ENCODERS, scored_split

    reports = {seed: report for seed, (_, report) in runs.items()}
    seeds = sorted(reports)
    scored = {scored_split(reports[s]) for s in seeds}
    if len(scored) > 1:
        raise ValueError(f"the seeds' probes were scored on different splits: {sorted(scored)}")
    split, n_tiles = scored.pop()
    first = reports[seeds[0]]["results"]
    P, all_mods = _table_shape(first)
    cells = []
    for mods, method, metric in _ROWS:
        mods = _row_modalities(mods, all_mods)
        found = [_cell_rows(reports[s]["results"], P, mods, method, metric) for s in seeds]
        if not all(f.get("pretrained") for f in found):
            continue
        scores = {e: [100 * f[e]["value"] for f in found] for e in ENCODERS if all(e in f for f in found)}
        pre = scores["pretrained"]
        cell = {
            "modalities": mods,
            "method": found[0]["pretrained"]["method"],
            "metric": metric,
            "scores": scores,
            "pretrained": {"mean": sum(pre) / len(pre), "min": min(pre), "max": max(pre)},
        }
        for base in ("random-init", "raw-pixels"):
            if base in scores:
                margins = [a - b for a, b in zip(pre, scores[base])]
                cell[f"vs {base}"] = {"wins": sum(m > 0 for m in margins), "mean_margin": sum(margins) / len(margins)}
        cells.append(cell)
    study = {"seeds": seeds, "patch_size": P, "scored_on": split, "tiles": n_tiles, "cells": cells}
    machines = sorted({reports[s]["machine"] for s in seeds if "machine" in reports[s]})
    if machines:
        study["machine"] = " / ".join(machines)
    finals = {s: runs[s][0].get("final", {}) for s in seeds}
    monitors = {
        s: {k: f[k] for k in ("std", "erank", "cos")} | {"warnings": sorted(runs[s][0].get("collapse_warnings", {}))}
        for s, f in finals.items()
        if "std" in f
    }
    if monitors:
        study["monitors"] = monitors
    return study


def _cells_table(
    study: dict, pretrained_head: str, spread_head: str, base_head, pretrained_cell, base_cell
) -> list[str]:
    """Header, rule and one row per cell of a seed or world study: the pretrained scores (``pretrained_cell`` of
    their list), their mean [min, max], then one column per baseline (``base_head(b)``, ``base_cell(cell, b)``)."""
    bases = [b for b in ("random-init", "raw-pixels") if any(f"vs {b}" in c for c in study["cells"])]
    lines = [
        f"| modalities (P = {study['patch_size']} m) | probe | metric | {pretrained_head} | {spread_head} | "
        + " | ".join(base_head(b) for b in bases)
        + " |",
        "|---|---|---|---|---:|" + "---|" * len(bases),
    ]
    for c in study["cells"]:
        p = c["pretrained"]
        lines.append(
            f"| {c['modalities']} | {c['method']} | {c['metric']} | {pretrained_cell(c['scores']['pretrained'])} | "
            f"{p['mean']:.1f} [{p['min']:.1f}, {p['max']:.1f}] | "
            + " | ".join(base_cell(c, b) if f"vs {b}" in c else "–" for b in bases)
            + " |"
        )
    return lines


def seed_table(study: dict) -> str:
    """Markdown of :func:`seed_study`: pretrained per seed, its mean, the baselines, and seeds won."""
    seeds, n = study["seeds"], len(study["seeds"])

    def base_cell(c: dict, b: str) -> str:
        v = c["scores"][b]
        value = f"{v[0]:.1f}" if len(set(v)) == 1 else f"{sum(v) / n:.1f} (mean)"
        w = c[f"vs {b}"]
        return f"{value}; won {w['wins']}/{n}, {w['mean_margin']:+.1f}"

    lines = _cells_table(
        study,
        "pretrained, seeds " + " / ".join(map(str, seeds)),
        "mean [min, max]",
        lambda b: f"{b}; seeds won, mean margin",
        lambda v: " / ".join(f"{x:.1f}" for x in v),
        base_cell,
    )
    lines += [
        "",
        f"Scores in % on the {study['tiles']} {study['scored_on']} tiles; the runs differ only in `train.seed` "
        "(initialisation, batch order, masks); the baselines do not depend on it. A margin is pretrained minus "
        "baseline, in points.",
    ]
    if study.get("monitors"):
        lines.append(
            "Final target monitors per seed (std per dimension / effective rank / tile cosine; warnings): "
            + "; ".join(
                f"{s}: {m['std']:.2f} / {m['erank']:.1f} / {m['cos']:.2f} ({', '.join(m['warnings']) or 'none'})"
                for s, m in study["monitors"].items()
            )
            + "."
        )
    if study.get("machine"):
        lines.append(f"{COMPUTED_ON}{study['machine']}.")
    return "\n".join(lines)


def probe_worlds(
    cfg: Config, root: Path, seeds: list[int], worlds: list[int], reports: dict[int, dict], progress: bool = True
) -> dict[tuple[int, int], dict]:
    """Each seed's encoder in ``root/seed-<N>`` probed on other draws of the world: ``{(seed, world): report}``.

    World ``W`` is the dataset built with ``data.seed = W``: the same generator, other tiles, its own
    train / val / test split, none of it seen in pretraining.  The probes are fitted on its train
    tiles and scored on its test tiles (``probe.split``); they write ``seed-<N>/world-<W>/``.  The
    world the seeds were trained on (``cfg.data.seed``) takes its report from ``reports[seed]``.
    """
    import dataclasses

    from .probe import run_probe

    out = {}
    for world in worlds:
        for seed in seeds:
            if world == cfg.data.seed:
                out[(seed, world)] = reports[seed]
                continue
            folder = root / f"seed-{seed}"
            if progress:
                print(f"probing seed {seed} on world {world} (data.seed={world}): {folder / f'world-{world}'}")
            run = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, seed=world))
            out[(seed, world)] = run_probe(
                run, checkpoint=folder / "encoder", out_dir=folder / f"world-{world}", progress=progress
            )
    return out


def world_study(reports: dict[tuple[int, int], dict]) -> dict:
    """The headline cells of ``{(seed, world): probe report}``, every seed probed on every world.

    As :func:`seed_study`, over the (world, seed) pairs in that order: each cell's ``scores`` list
    the pairs world by world, and a pair is won when its pretrained score is above the baseline
    measured on the same world.  ``worlds`` and ``seeds`` name the grid.
    """
    study = seed_study({(w, s): ({}, r) for (s, w), r in reports.items()})
    pairs = study.pop("seeds")
    study["worlds"] = sorted({w for w, _ in pairs})
    study["seeds"] = sorted({s for _, s in pairs})
    if len(pairs) != len(study["worlds"]) * len(study["seeds"]):
        raise ValueError(f"every seed must be probed on every world, got the (world, seed) pairs {pairs}")
    return study


def world_table(study: dict) -> str:
    """Markdown of :func:`world_study`: per world the seeds' mean score and the baselines, pairs won."""
    worlds, seeds = study["worlds"], study["seeds"]
    n_w, n_s = len(worlds), len(seeds)
    names = " / ".join(map(str, worlds))

    def per_world(v: list[float]) -> str:
        return " / ".join(f"{sum(v[i * n_s : (i + 1) * n_s]) / n_s:.1f}" for i in range(n_w))

    def base_cell(c: dict, b: str) -> str:
        w = c[f"vs {b}"]
        return f"{per_world(c['scores'][b])}; won {w['wins']}/{n_w * n_s}, {w['mean_margin']:+.1f}"

    lines = _cells_table(
        study,
        f"pretrained, worlds {names} (mean of the {n_s} seeds)",
        f"{n_w * n_s} pairs: mean [min, max]",
        lambda b: f"{b}, worlds {names}; pairs won, mean margin",
        per_world,
        base_cell,
    )
    lines += [
        "",
        f"Scores in % on each world's {study['tiles']} {study['scored_on']} tiles (world W: the synthetic world drawn "
        f"with `data.seed=W`; probes fitted on its own train tiles); the encoders of training seeds "
        f"{', '.join(map(str, seeds))}. A pair (seed, world) is won when its pretrained score is above the baseline "
        "on the same world; a margin is pretrained minus baseline, in points.",
    ]
    if study.get("machine"):
        lines.append(f"{COMPUTED_ON}{study['machine']}.")
    return "\n".join(lines)


def readme_block(text: str, markers: tuple[str, str] = README_MARKERS) -> str | None:
    """The block inside a README's ``markers``, or ``None`` when the markers are absent."""
    start, end = (re.escape(m) for m in markers)
    m = re.search(f"{start}\n(.*?)\n?{end}", text, flags=re.S)  # an empty block is start, newline, end
    return m.group(1) if m else None


def replace_readme_block(path: str | Path, block: str, markers: tuple[str, str] = README_MARKERS) -> bool:
    """Write ``block`` between the README's ``markers``; returns whether the file changed.  A file with Windows
    line endings (``\\r\\n``) keeps them."""
    path = Path(path)
    raw = path.read_bytes().decode("utf-8")
    crlf = "\r\n" in raw
    text = raw.replace("\r\n", "\n") if crlf else raw
    if readme_block(text, markers) is None:
        raise ValueError(
            f"{path}: no results markers {markers[0]!r} ... {markers[1]!r}; add them where the results should go"
        )
    start, end = markers
    new = re.sub(f"{re.escape(start)}\n.*?\n?{re.escape(end)}", lambda _: f"{start}\n{block}\n{end}", text, flags=re.S)
    new = new.replace("\n", "\r\n") if crlf else new
    if new != raw:
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(new.encode("utf-8")))
    return new != raw
