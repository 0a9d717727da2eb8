"""Command line: ``anysat-lite {demo,pretrain,probe,embed,bench,notebooks,info}`` (also ``python -m anysat_lite``).

A mistake (bad value, missing or corrupt file, a run folder in the way) prints one line on
stderr naming what was wrong and what to do, exit code 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import warnings
from pathlib import Path

from .errors import (
    CREATED_FOLDERS,
    UserError,
    check_output_file,
    check_output_files,
    check_output_folder,
    not_utf8,
    remove_empty_created_folders,
)
from .files import write_text_atomic

__all__ = ["main", "DEBUG_ENV", "OneLineArgumentParser"]

DEBUG_ENV = "ANYSAT_LITE_DEBUG"
DEBUG_OFF = ("", "0", "false", "no", "off")  # values of ANYSAT_LITE_DEBUG that leave tracebacks off


def seed_arg(text: str) -> int:
    """An argparse type: a random seed, as the config's ``*.seed`` keys take it (``config.SEED_RULE``)."""
    from .config import SEED_RULE

    try:
        value = int(text)
    except ValueError:
        value = -1
    if not SEED_RULE[0](value):
        raise argparse.ArgumentTypeError(f"expected {SEED_RULE[1]}, got {text!r}; e.g. 0")
    return value


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse with its mistakes on one line (argparse prints the whole usage block first), exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")

    def parse_known_args(self, args=None, namespace=None):
        """Also refuses an empty value (``--resume ""``, an unset shell variable), which would otherwise read as
        the option left out."""
        namespace, extras = super().parse_known_args(args, namespace)
        for action in self._actions:
            value = getattr(namespace, action.dest, None) if action.option_strings else None
            if any(isinstance(v, str) and not v.strip() for v in (value if isinstance(value, list) else [value])):
                self.error(
                    f"argument {'/'.join(action.option_strings)}: an empty value (an unset shell variable?); "
                    "give a value or leave the option out"
                )
        return namespace, extras


CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


def _config(args):
    """The run config: ``--config`` (preset name or YAML file) plus ``--set`` overrides.

    ``--resume`` without ``--config`` continues the run with its own ``config.yaml``.
    """
    from .config import PRESETS, get_config, load_config

    name, overrides = args.config, list(args.set)
    resume = getattr(args, "resume", False)
    if resume not in (True, False, None) and Path(resume).is_file() and Path(resume).suffix not in CHECKPOINT_SUFFIXES:
        raise UserError(
            f"--resume {resume}: expected a checkpoint ({', '.join(CHECKPOINT_SUFFIXES)}, e.g. last.pt or "
            f"step-000200.pt) or a run folder, got another file; e.g. --resume {Path(resume).parent}"
        )
    if name is None and resume:
        folder = Path(resume) if resume is not True else Path(get_config("cpu-demo", args.set).train.out_dir)
        folder = folder if folder.is_dir() or folder.suffix not in CHECKPOINT_SUFFIXES else folder.parent
        if (folder / "config.yaml").exists():
            print(f"config: {folder / 'config.yaml'} (the run's own; --config to choose another)")
            return load_config(folder / "config.yaml", [f"train.out_dir={folder}", *overrides])
        overrides = [f"train.out_dir={folder}", *overrides]  # the run continues in its own folder
    name = name or "cpu-demo"
    if name.endswith((".yaml", ".yml")) or Path(name).is_file():
        return load_config(name, overrides)
    if name not in PRESETS:
        own = Path(name) / "config.yaml"
        run = f"; a run folder's config is {own}" if own.is_file() else ""
        raise UserError(f"--config {name}: neither a preset ({', '.join(PRESETS)}) nor an existing YAML file{run}")
    return get_config(name, overrides)


def _add_config_args(p):
    p.add_argument(
        "--config",
        default=None,
        help="preset name (cpu-demo, tiny, small, base, base-cuda, geoplex) or YAML file (default: cpu-demo; "
        "with --resume: the run's own config.yaml)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, YAML syntax, lists replaced whole (repeatable), e.g. "
        '--set train.steps=100 --set "data.datasets=[{name: synthetic, sensors: [s2]}]"',
    )


def _add_run_args(p):
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="CHECKPOINT",
        help="continue the run in train.out_dir from its last.pt, or from CHECKPOINT (e.g. runs/x/step-000200.pt)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="start a new run in a train.out_dir that holds one, deleting that run's files",
    )
    p.add_argument("--quiet", action="store_true")


def cmd_pretrain(args) -> int:
    cfg = _config(args)  # config mistakes are reported before torch is imported
    from .train import pretrain

    summary = pretrain(cfg, resume=args.resume, progress=not args.quiet, force=args.force)
    if summary:
        print(json.dumps(summary, indent=1))
    return 0


def _probe_checkpoint(args, cfg) -> Path:
    """``--checkpoint``, or else the encoder in ``train.out_dir`` (a message says which files are wanted)."""
    from .train.checkpoint import resolve_encoder_path

    if args.checkpoint:
        return resolve_encoder_path(args.checkpoint)
    default = Path(cfg.train.out_dir) / "encoder"
    if Path(f"{default}.safetensors").exists():
        print(f"checkpoint: {default} (the encoder in train.out_dir; --checkpoint to choose another)")
        return default
    raise UserError(
        f"no --checkpoint given and no encoder at {default}.safetensors; pass --checkpoint PATH "
        "(an exported encoder such as runs/cpu-demo/encoder, or a training checkpoint such as "
        "runs/cpu-demo/last.pt)"
    )


def _own_encoder_way(args) -> str:
    """The end of the message for ``probe --task/--data`` without ``--official``: how to probe one's own encoder."""
    from .data.registry import dataset_names
    from .probe.tasks import TASKS

    known = [TASKS[t].dataset for t in args.task if t in TASKS]
    name = known[0] if known else "NAME"
    names = f" (NAME: {', '.join(dataset_names())})" if name == "NAME" else ""
    return (
        "; to probe your own encoder (--checkpoint) on a dataset instead, leave out --task and --data and name the "
        f'dataset with --set "data.datasets=[{{name: {name}, path: {args.data or "ROOT"}}}]"{names}'
    )


def _probe_official(args) -> int:
    """``probe --official AnySat.pth --task NAME --data ROOT``: the paper's evaluation, one table row per task."""
    missing = [f"--{n}" for n in ("official", "task", "data") if not getattr(args, n)]
    if missing:
        raise UserError(
            f"reproducing a paper row needs --official, --task and --data; missing {', '.join(missing)} "
            "(e.g. anysat-lite probe --official AnySat.pth --task treesatai-ts-lp --data /data/TreeSat)"
            + (_own_encoder_way(args) if "--official" in missing else "")
        )
    given = [f"--config {args.config}"] if args.config else []
    given += [f"--set {s}" for s in args.set]
    if given:
        raise UserError(
            f"{given[0]}: the paper's evaluation (--official) takes its settings from the task preset, not from a "
            "run config, expected no --config or --set with --official; leave it out (--epochs, --min-epochs, "
            "--batch-size and --seed change the preset's settings)"
        )
    if args.checkpoint:
        raise UserError(
            "--checkpoint (an anysat_lite encoder) and --official (the released AnySat.pth) exclude "
            "each other; give one"
        )
    from .probe.tasks import get_task

    tasks = [get_task(t) for t in args.task]
    datasets = sorted({t.dataset for t in tasks})
    if len(datasets) > 1:
        raise UserError(
            f"--task {' '.join(args.task)}: these tasks read {', '.join(datasets)}, but --data names one "
            "folder; run one dataset per command"
        )
    from .probe.protocol import check_run_settings, check_table_files, run_task

    settings = dict(max_epochs=args.epochs, min_epochs=args.min_epochs, batch_size=args.batch_size, seed=args.seed)
    # options left out are None (probe without --official refuses them) and keep run_task's defaults
    checked = {k: v for k, v in {"bootstrap": args.bootstrap, "val_metric": args.val_metric}.items() if v is not None}
    attend = {} if args.attend_over is None else {"attend_over": args.attend_over}
    amp = {} if args.amp is None else {"amp": None if args.amp == "none" else args.amp}
    for t in tasks:  # every task's settings before the first task runs
        check_run_settings(
            t,
            **settings,
            num_workers=args.num_workers,
            limit_batches=args.limit_batches,
            **checked,
        )
    out = Path(args.out or "runs/reproduction")
    check_output_folder("--out", out)
    rows = [f"{t.name}.json" for t in tasks]
    check_output_files("--out", out, rows, args.force, "the run", " (the result of an earlier run)")
    check_table_files(out, args.force)  # reproduction.{json,md}: rebuilt from the rows, unless someone edited them
    from .probe.paper_table import TABLE_NAME, format_table, read_results

    for t in tasks:
        run_task(
            t,
            args.official,
            args.data,
            out,
            device=args.device,
            **settings,
            num_workers=args.num_workers,
            limit_batches=args.limit_batches,
            progress=not args.quiet,
            log=(lambda *a, **k: None) if args.quiet else print,
            allow_pickle=args.allow_pickle,
            **checked,
            **amp,
            **attend,
        )
    print(format_table(read_results(out)))
    print(f"\nwritten: {out}/{TABLE_NAME}.{{json,md}} and {', '.join(f'{t.name}.json' for t in tasks)}")
    return 0


# the options of the paper's evaluation that probing an anysat_lite encoder has no use for: what to do instead
_OFFICIAL_ONLY = {
    "device": ("--device", "the probes run on train.device: --set train.device={}"),
    "seed": ("--seed", "the probes' seed is probe.seed: --set probe.seed={}"),
    "epochs": (
        "--epochs",
        "the linear probes are solved to convergence, the other probes' epochs are probe.seg_epochs and "
        "probe.finetune_epochs: e.g. --set probe.seg_epochs={}",
    ),
    "min_epochs": ("--min-epochs", "the probes have no early stopping; leave it out"),
    "batch_size": ("--batch-size", "the probes' batch size is probe.batch_size: --set probe.batch_size={}"),
    "num_workers": ("--num-workers", "the probes read the data in the main process; leave it out"),
    "val_metric": (
        "--val-metric",
        "the probes select no epoch on the validation split; leave it out (--set probe.split=val scores the "
        "probes on the validation split)",
    ),
    "allow_pickle": (
        "--allow-pickle",
        "the PLANTED reader takes it as an option of its data.datasets entry: "
        '--set "data.datasets=[{{name: planted, path: ROOT, options: {{allow_pickle: true}}}}]"',
    ),
    "amp": ("--amp", "the probes run in full precision; leave it out"),
    "limit_batches": ("--limit-batches", "the probes read every tile of the dataset; leave it out"),
    "bootstrap": ("--bootstrap", "the probes' resamples are probe.bootstrap: --set probe.bootstrap={}"),
    "attend_over": ("--attend-over", "an encoder's attention is its own model.attend_over; leave it out"),
}


def _refuse_official_only(args) -> None:
    """Refuse an option of the paper's evaluation (``--official``) given to the probes of an encoder, which
    would ignore it."""
    for dest, (flag, instead) in _OFFICIAL_ONLY.items():
        value = getattr(args, dest)
        if value is None or value is False:
            continue
        given = flag if value is True else f"{flag} {value}"
        raise UserError(
            f"{given}: an option of the paper's evaluation (expected only with --official), which probing an "
            f"encoder would ignore; {instead.format(value)}"
        )


def cmd_probe(args) -> int:
    if args.official or args.task or args.data:
        return _probe_official(args)
    _refuse_official_only(args)
    cfg = _config(args)
    checkpoint = _probe_checkpoint(args, cfg)
    # beside the encoder probed (a training checkpoint's folder for last.pt), unless --out says where
    out = Path(args.out) if args.out else checkpoint.parent
    option = "--out" if args.out else "--out (default: the checkpoint's folder)"
    check_output_folder(option, out)
    from .probe.run import REPORT_FILES

    earlier = " (probe results of an earlier run, or a file of yours)"
    check_output_files(option, out, REPORT_FILES, args.force, "the probes", earlier)
    from .probe import format_table, run_probe
    from .probe.run import gain_summary, scored_split

    report = run_probe(cfg, checkpoint=checkpoint, out_dir=out, progress=not args.quiet)
    split, n = scored_split(report)
    print(f"probes fitted on {report['splits']['train']} train tiles, scored on the {n} {split} tiles\n")
    print(format_table(report))
    print("\n" + "\n".join(gain_summary(report)))
    print(f"\nwritten: {out}/probe_results.{{json,md,png}}")
    return 0


def _check_update_target(path: str | None, markers: tuple[str, str]) -> None:
    """Refuse ``--update-readme PATH`` before any work when PATH cannot take the block (missing file or markers)."""
    from .demo import readme_block

    if path is None:
        return
    if Path(path).is_dir():
        raise UserError(f"--update-readme {path}: expected a file, got a folder; give the file that holds the markers")
    if not Path(path).is_file():
        raise UserError(f"--update-readme {path}: no such file; give the file that holds the markers {markers[0]}")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(
            not_utf8(f"--update-readme {path}", e, f"give the Markdown file that holds the markers {markers[0]}")
        ) from None
    if readme_block(text, markers) is None:
        raise UserError(
            f"--update-readme {path}: no markers {markers[0]} ... {markers[1]} in it; add them where the table should "
            "go"
            + next(
                (
                    f", or write the {what} table to docs/seeds.md: --update-readme docs/seeds.md"
                    for what in ("seed", "world")
                    if f"demo-{what}s:start" in markers[0]
                ),
                "",
            )
        )


def cmd_demo(args) -> int:
    """Pretrain the preset, then probe it: the README's main job."""
    from .config import validate_probe
    from .demo import README_MARKERS, SEED_MARKERS, WORLD_MARKERS

    if args.worlds is not None and args.seeds is None:
        raise UserError(
            f"--worlds {' '.join(map(str, args.worlds))}: probes the encoders of a seed study; add --seeds, "
            "e.g. --seeds 0 1 2 --worlds 0 1 2"
        )
    cfg = _config(args)
    validate_probe(cfg)  # the probes' settings before the pretraining, not after it
    _check_update_target(args.update_readme, SEED_MARKERS if args.seeds is not None else README_MARKERS)
    if args.worlds is not None:
        _check_update_target(args.update_readme, WORLD_MARKERS)
    if args.seeds is not None:
        return _demo_seeds(args, cfg)
    from .demo import replace_readme_block, results_block, run_demo
    from .probe import format_table
    from .probe.run import gain_summary

    out = Path(cfg.train.out_dir)
    summary, report = run_demo(cfg, resume=args.resume, force=args.force, progress=not args.quiet)
    if summary.get("seconds") is not None:
        print(
            f"pretraining: {summary['steps'] - summary['start_step']} steps in {summary['seconds']:.0f} s; "
            f"probes: {report['seconds']:.0f} s"
        )
    print("\n" + format_table(report))
    print("\n" + "\n".join(gain_summary(report)))
    block = results_block(summary, report)
    print("\n" + block)
    if args.update_readme:
        changed = replace_readme_block(args.update_readme, block)
        print(f"\n{args.update_readme}: demo results {'updated' if changed else 'already up to date'}")
    print(f"\nfigures: {out}/training_curves.png, {out}/probe_results.png; tables: {out}/probe_results.md")
    return 0


def _keep_earlier_study(root: Path, kind: str, wanted: list[int], force: bool, resume: bool) -> None:
    """Refuse to replace ``root/<kind>.{json,md}`` (an earlier study's table) by one that leaves some of its seeds
    or worlds out, unless ``--resume`` (a study continued on a subset of its runs) or ``--force``: adding seeds to
    a study means listing the earlier ones too."""
    try:
        earlier = json.loads((root / f"{kind}.json").read_text())[kind]
    except (OSError, ValueError, KeyError, TypeError):
        return  # no earlier study (or none this command wrote): nothing to keep
    left_out = sorted(set(earlier) - set(wanted)) if isinstance(earlier, list) else []
    if left_out and not (force or resume):
        both = " ".join(map(str, sorted(set(earlier) | set(wanted))))
        raise UserError(
            f"{root / (kind + '.md')} holds the study of {kind} {' '.join(map(str, earlier))}; this call would "
            f"replace it with one that leaves out {' '.join(map(str, left_out))}: list them too and continue the "
            f"runs already there (--{kind} {both} --resume), or add --force to replace the table"
        )


def _demo_seeds(args, cfg) -> int:
    """``demo --seeds``: the demo once per training seed, then the per-seed table (seeds.json, seeds.md)."""
    if len(set(args.seeds)) != len(args.seeds):  # each >= 0: seed_arg
        raise UserError(f"--seeds {' '.join(map(str, args.seeds))}: expected distinct seeds >= 0, e.g. --seeds 0 1 2")
    if args.resume not in (False, True):
        raise UserError(
            f"--resume {args.resume}: with --seeds, --resume takes no checkpoint (each seed continues its own run)"
        )
    worlds = args.worlds or []
    if len(set(worlds)) != len(worlds):
        raise UserError(f"--worlds {' '.join(map(str, worlds))}: expected distinct worlds >= 0, e.g. --worlds 0 1 2")
    if worlds and cfg.data.datasets[0].name != "synthetic":
        raise UserError(
            f"--worlds: other draws of a world need the synthetic dataset (data.seed draws it), but the probes read "
            f"{cfg.data.datasets[0].name!r}; drop --worlds"
        )
    from .demo import (
        SEED_MARKERS,
        WORLD_MARKERS,
        probe_worlds,
        replace_readme_block,
        run_seeds,
        seed_study,
        seed_table,
        world_study,
        world_table,
    )

    root = Path(f"{cfg.train.out_dir}-seeds")
    _keep_earlier_study(root, "seeds", args.seeds, args.force, bool(args.resume))
    if worlds:
        _keep_earlier_study(root, "worlds", worlds, args.force, bool(args.resume))
    root, runs = run_seeds(cfg, args.seeds, resume=args.resume, force=args.force, progress=not args.quiet)
    study = seed_study(runs)
    table = seed_table(study)
    write_text_atomic(root / "seeds.json", json.dumps(study, indent=1))
    write_text_atomic(root / "seeds.md", table + "\n")
    print("\n" + table)
    tables = [(table, SEED_MARKERS, "seed study")]
    if worlds:
        reports = {seed: report for seed, (_, report) in runs.items()}
        w_study = world_study(probe_worlds(cfg, root, args.seeds, worlds, reports, progress=not args.quiet))
        w_table = world_table(w_study)
        write_text_atomic(root / "worlds.json", json.dumps(w_study, indent=1))
        write_text_atomic(root / "worlds.md", w_table + "\n")
        print("\n" + w_table)
        tables.append((w_table, WORLD_MARKERS, "world study"))
    if args.update_readme:
        for text, markers, what in tables:
            changed = replace_readme_block(args.update_readme, text, markers)
            print(f"\n{args.update_readme}: {what} {'updated' if changed else 'already up to date'}")
    print(
        f"\ntables: {root}/seeds.md, {root}/seeds.json"
        + (f", {root}/worlds.md, {root}/worlds.json" if worlds else "")
        + f"; runs: {root}/seed-*/"
    )
    return 0


def _raster_spec(items) -> dict[str, list[str]]:
    from .sensors import SENSORS

    spec: dict[str, list[str]] = {}
    for item in items:
        sensor, _, paths = item.partition("=")
        files = [p for p in paths.split(",") if p]
        if not sensor or not files:
            raise UserError(
                f"--raster {item!r}: expected SENSOR=PATH[,PATH...], e.g. --raster aerial=a.tif "
                "--raster s2=s2_20200301.tif,s2_20200615.tif"
            )
        if sensor not in SENSORS:
            raise UserError(f"--raster {item!r}: unknown sensor {sensor!r}; known: {', '.join(SENSORS)}")
        spec.setdefault(sensor, []).extend(files)
        twice = [p for i, p in enumerate(spec[sensor]) if p in spec[sensor][:i]]
        if twice:
            raise UserError(
                f"--raster {item!r}: {twice[0]} is given twice for {sensor}, expected each file once; "
                "leave out the repeat"
            )
    return spec


def cmd_embed(args) -> int:
    spec = _raster_spec(args.raster)
    out = Path(args.out)
    named = out.stem not in ("", ".", "..", ".nc")
    example = (
        out / "embedding.nc"
        if out.is_dir()
        else out.with_name(out.stem if out.stem.endswith(".nc") else out.stem + ".nc")  # x.nc.tmp -> x.nc
        if named
        else "embedding.nc"
    )
    if out.name == ".nc":  # Path(".nc").suffix is "": a name that is the suffix alone
        raise UserError(
            f"--out {out}: expected a NetCDF file name before .nc, got the suffix alone; name the file, e.g. "
            f"--out {out.with_name('embedding.nc')}"
        )
    if out.suffix != ".nc":
        raise UserError(
            f"--out {out}: expected a NetCDF file name ending in .nc (zarr output is not supported), got "
            f"{repr(out.suffix) if out.suffix else 'no suffix'}; e.g. --out {example}"
        )
    check_output_file("--out", out, args.force)
    for sensor, files in spec.items():  # with --force the input would be replaced (a symlink: its target)
        same = [f for f in files if Path(f).exists() and Path(f).resolve() == out.resolve()]
        if same:
            raise UserError(
                f"--out {out}: is the --raster {sensor} input {same[0]}, expected a new file; the embedding "
                f"would replace it; name another file, e.g. --out {out.with_name(out.stem + '-embedding.nc')}"
            )
    if args.patch_size <= 0 or args.patch_size % 10:
        raise UserError(
            f"--patch-size {args.patch_size}: expected a positive multiple of 10 m, got {args.patch_size}; "
            "e.g. --patch-size 20"
        )
    from .data.contract import patch_size_m
    from .data.io import common_grid
    from .data.normalization import NormStats
    from .probe.embed import check_tile_size, embed_rasters, load_rasters, write_netcdf
    from .train.checkpoint import load_encoder

    check_tile_size(args.tile_size, patch_size_m(args.patch_size))  # before the rasters and the encoder are read

    rasters = load_rasters(spec)
    common_grid(rasters, unit_m=patch_size_m(args.patch_size))  # raster problems before loading the encoder
    encoder, meta = load_encoder(args.checkpoint)
    print(f"encoder: {meta.get('source', args.checkpoint)}")
    lacking = [s for s in rasters if s not in encoder.sensors]
    if lacking:
        raise UserError(
            f"--raster {lacking[0]}=...: the encoder {args.checkpoint} has no projector for {lacking[0]!r}, only for "
            f"{', '.join(encoder.sensors)}; leave out --raster {lacking[0]}=..., or give a --checkpoint pretrained "
            f"with {lacking[0]}"
        )
    stats, available = None, meta.get("norm_stats") or {}
    if args.stats and args.stats not in available:
        raise UserError(
            f"--stats {args.stats}: the checkpoint has statistics for {sorted(available) or 'no dataset'}; "
            "name one of them, or leave --stats out to use the first"
        )
    if available:
        name = args.stats or next(iter(available))
        stats = NormStats.from_dict(available[name])
        print(f"normalisation: statistics of {name!r}")
    else:
        warnings.warn(
            "the checkpoint carries no normalisation statistics: the rasters go to the encoder as they are",
            stacklevel=2,
        )
    if not out.parent.exists():
        check_output_folder("--out", out.parent)  # created (and taken back if the command fails)
        print(f"created folder {out.parent}")
    ds = embed_rasters(encoder, rasters, args.patch_size, stats, tile_m=args.tile_size, nodata=args.nodata)
    write_netcdf(ds, out, overwrite=args.force)  # --out was checked before any work
    print(
        f"{out}: embedding {dict(ds.embedding.sizes)} (patch {args.patch_size} m, {ds.attrs['n_tiles']} tile(s) of "
        f"{ds.attrs['tile_size_m']:g} m, CRS {ds.attrs['crs_name']})"
    )
    return 0


def cmd_notebooks(args) -> int:
    from .notebooks import apply_standard_cells, check_structure, insert_colab_links, list_notebooks, run_notebooks

    if args.branch is not None and not args.colab_links:
        raise UserError(f"--branch {args.branch}: names the branch of the Colab links; add --colab-links GITHUB_REPO")
    if args.branch is not None and not re.fullmatch(r"(?!/|-)(?!.*(\.\.|//|/$|\.lock$))[A-Za-z0-9._/-]+", args.branch):
        raise UserError(
            f"--branch {args.branch!r}: expected a git branch name (letters, digits, '.', '_', '-' and '/', no '..'), "
            "e.g. --branch main"
        )
    notebooks = list_notebooks()
    unknown = [o for o in args.only or [] if not any(p.name.startswith(o) for p in notebooks)]
    if unknown:
        raise UserError(
            f"--only {' '.join(args.only)}: no notebook name starts with {unknown[0]!r}; expected prefixes of "
            f"{', '.join(p.name for p in notebooks)}, e.g. --only 00 03"
        )
    chosen = [p for p in notebooks if not args.only or any(p.name.startswith(o) for o in args.only)]
    if args.standard_cells:
        for path in chosen:
            apply_standard_cells(path, force=args.force)
            print(f"standard cells: {path.name}")
    if args.colab_links:
        if args.only:
            raise UserError(
                f"--colab-links with --only {' '.join(args.only)}: the badges and the REPO setting go into every "
                "notebook together; drop --only"
            )
        for name, url in insert_colab_links(args.colab_links, args.branch or "main").items():
            print(f"[{name}]({url})")
    if args.check:
        bad = 0
        for path in chosen:
            problems = check_structure(path)
            bad += bool(problems)
            print(f"{'ok  ' if not problems else 'FAIL'}  {path.name}" + "".join(f"\n      - {p}" for p in problems))
        return 1 if bad else 0
    if args.colab_links or args.standard_cells:
        return 0
    failures = run_notebooks(args.out, smoke=not args.full, only=args.only, store=args.store, force=args.force)
    return 1 if failures else 0


def cmd_info(args) -> int:
    from .config import PRESETS
    from .sensors import SENSORS

    print("sensors:")
    for s in SENSORS.values():
        print(
            f"  {s.name:13s} {s.kind:6s} {s.gsd:7g} m  {s.n_bands:2d} bands  "
            f"sub-patch {s.subpatch_m:g} m  {s.description}"
        )
    from .data.registry import dataset_names

    print("presets:", ", ".join(PRESETS))
    print("datasets:", ", ".join(["synthetic", *dataset_names()]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .config import ATTEND_OVER

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help=f"show the traceback of an error (or set {DEBUG_ENV}=1)",
    )
    p = OneLineArgumentParser(prog="anysat-lite", description=__doc__, parents=[common])
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser(
        "demo",
        parents=[common],
        help="pretrain (cpu-demo by default) then probe; prints the results table",
        description="Pretrain, then probe the exported encoders and print the results table. With --resume, a "
        "run that trains further (train.steps raised) is probed again and its own probe_results are replaced (results "
        "of another encoder, or a table edited by hand, are refused); a finished run that already holds "
        "probe_results is refused (anysat-lite probe --force re-probes it).",
    )
    _add_config_args(d)
    _add_run_args(d)
    d.add_argument(
        "--update-readme",
        metavar="README",
        nargs="?",
        const="README.md",
        help="write the results block between the demo-results markers of README (default README.md); "
        "with --seeds, the seed table between the demo-seeds markers (e.g. --update-readme docs/seeds.md), "
        "with --worlds also the world table between the demo-worlds markers",
    )
    d.add_argument(
        "--seeds",
        type=seed_arg,
        nargs="+",
        metavar="N",
        help="repeat the demo for each training seed (runs in OUT_DIR-seeds/seed-N) and tabulate the "
        "pretrained encoder's headline scores per seed beside the baselines",
    )
    d.add_argument(
        "--worlds",
        type=seed_arg,
        nargs="+",
        metavar="W",
        help="with --seeds: also probe each seed's encoder on other draws of the synthetic world (data.seed=W, "
        "its own train and test tiles; results in OUT_DIR-seeds/seed-N/world-W) and tabulate them per world",
    )
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser("pretrain", parents=[common], help="JEPA pretraining (works under torchrun)")
    _add_config_args(t)
    _add_run_args(t)
    t.set_defaults(func=cmd_pretrain)

    pr = sub.add_parser(
        "probe",
        parents=[common],
        help="linear / kNN / segmentation probes and baselines; with "
        "--official: the paper's evaluation of the released weights",
    )
    _add_config_args(pr)
    pr.add_argument(
        "--checkpoint",
        help="exported encoder (path without suffix, e.g. runs/cpu-demo/encoder) or "
        "training checkpoint (runs/cpu-demo/last.pt); default: the encoder in "
        "train.out_dir",
    )
    pr.add_argument(
        "--out", help="output folder (default: the checkpoint's folder; with --official: runs/reproduction)"
    )
    pr.add_argument("--force", action="store_true", help="replace probe results already in the output folder")
    pr.add_argument("--quiet", action="store_true")
    off = pr.add_argument_group("the paper's evaluation with the released weights (docs/reproduction.md)")
    off.add_argument(
        "--official",
        metavar="ANYSAT_PTH",
        help="official checkpoint: the released AnySat.pth, a torch.hub wrapper's or an official "
        "pretraining checkpoint's state dict",
    )
    off.add_argument(
        "--task",
        action="append",
        default=[],
        metavar="NAME",
        help="task preset (repeatable): treesatai-ts-{lp,ft}, pastis-hd-cls-{lp,ft}, "
        "pastis-hd-seg-{lp,ft}, flair-seg-{lp,ft}, planted-{lp,ft}",
    )
    off.add_argument("--data", metavar="ROOT", help="the task's dataset folder, in its official layout")
    off.add_argument("--device", help="cuda, cuda:1, cpu... (default: cuda when available)")
    off.add_argument("--seed", type=seed_arg, help="default: the official 32")
    off.add_argument("--epochs", type=int, help="at most this many epochs (official 200; fewer marks the row partial)")
    off.add_argument(
        "--min-epochs", type=int, help="no early stop before (official 50; changing it marks the row partial)"
    )
    off.add_argument(
        "--batch-size", type=int, help="official per task (256, 4, 32, 64); changing it marks the row partial"
    )
    off.add_argument("--num-workers", type=int, help="data-loading processes (default 8 on CUDA, 0 on the CPU)")
    off.add_argument(
        "--val-metric",
        choices=("pooled", "per-epoch"),
        help="validation metric that selects the epoch and stops training: pooled (the default, official: "
        "accumulated over every validation pass, never reset) or per-epoch (changing it marks the row partial)",
    )
    off.add_argument(
        "--allow-pickle",
        action="store_true",
        help="PLANTED: let the reader unpickle object arrays in its .npz files, as the official reader does "
        "(only for files you trust)",
    )
    off.add_argument(
        "--amp",
        choices=("auto", "fp16", "bf16", "none"),
        help="mixed precision (default auto: fp16 on CUDA, as the official precision: 16; none on the CPU)",
    )
    off.add_argument(
        "--limit-batches",
        type=int,
        help="at most this many batches per epoch and split (smoke test; marks the row partial)",
    )
    off.add_argument("--bootstrap", type=int, help="resamples for the 95 %% interval (default 1000; 0: none)")
    off.add_argument(
        "--attend-over",
        choices=ATTEND_OVER,
        help="the joint transformer's attention: tokens (the default: the official code without flash-attn, as "
        "its README loads the weights) or heads (the official code with flash-attn, as its configs ask; "
        "docs/reproduction.md, 'Known differences')",
    )
    pr.set_defaults(func=cmd_probe)

    e = sub.add_parser("embed", parents=[common], help="per-patch embeddings of GeoTIFFs -> NetCDF (CF, with CRS)")
    e.add_argument(
        "--checkpoint",
        required=True,
        help="exported encoder (runs/x/encoder) or training checkpoint (runs/x/last.pt: EMA target encoder)",
    )
    e.add_argument("--raster", action="append", required=True, metavar="SENSOR=PATH[,PATH...]")
    e.add_argument("--patch-size", type=int, default=20, help="patch size in metres (default 20)")
    e.add_argument(
        "--tile-size",
        type=float,
        default=None,
        help="metres per side of the tiles the extent is encoded in (default: the multiple of the patch "
        "size nearest 240 m)",
    )
    e.add_argument(
        "--nodata",
        choices=("error", "skip"),
        default="error",
        help="image pixels equal to the raster's nodata value: stop with an error (default), or leave "
        "the tiles holding them out (NaN embeddings); time-series dates with nodata are always masked",
    )
    e.add_argument("--stats", help="which dataset's normalisation statistics to use (default: the first)")
    e.add_argument("--out", required=True, help="output .nc file (its folder is created if missing)")
    e.add_argument("--force", action="store_true", help="replace the --out file if it exists")
    e.set_defaults(func=cmd_embed)

    sub.add_parser("bench", help="benchmarks (prints numbers and writes JSON); see anysat-lite bench --help")

    n = sub.add_parser("notebooks", parents=[common], help="execute the numbered notebooks with papermill")
    n.add_argument("--out", default="runs/notebooks")
    n.add_argument("--full", action="store_true", help="full runs instead of the smoke mode")
    n.add_argument("--only", nargs="+", help="notebook name prefixes, e.g. 00 03")
    n.add_argument(
        "--store",
        action="store_true",
        help="with --full: write the executed notebooks back into notebooks/ (not over one saved while it ran)",
    )
    n.add_argument(
        "--force",
        action="store_true",
        help="replace executed notebooks already in --out (earlier runs' copies); with --standard-cells, shared "
        "cells edited by hand",
    )
    n.add_argument(
        "--check",
        action="store_true",
        help="list what each notebook lacks of the shared structure (learning goals, exercises...)",
    )
    n.add_argument(
        "--colab-links",
        metavar="GITHUB_REPO",
        help="put 'Open in Colab' badges for https://github.com/OWNER/REPO into the notebooks (and that "
        "address into their REPO parameter), and print the links",
    )
    n.add_argument("--branch", help="with --colab-links: the branch of the links (default main)")
    n.add_argument(
        "--standard-cells",
        action="store_true",
        help="(re)write the shared colab, parameters and setup cells of the notebooks (shared cells edited by "
        "hand only with --force)",
    )
    n.set_defaults(func=cmd_notebooks)

    i = sub.add_parser("info", parents=[common], help="registered sensors, datasets and presets")
    i.set_defaults(func=cmd_info)
    return p


def _one_line(e: BaseException) -> str:
    msg = e.args[0] if isinstance(e, KeyError) and len(e.args) == 1 else str(e)
    return " ".join(_worker_message(str(msg)).split()) or type(e).__name__


def _out_of_memory(e: BaseException) -> bool:
    """Python's MemoryError, or torch's (``torch.OutOfMemoryError`` on a GPU, a RuntimeError on the CPU)."""
    text = str(e)
    return isinstance(e, MemoryError) or (
        isinstance(e, RuntimeError) and ("out of memory" in text.lower() or "can't allocate memory" in text)
    )


def _worker_message(msg: str) -> str:
    """The original message of an error raised in a DataLoader worker, which torch re-raises with the worker's
    traceback pasted in front ("Caught X in DataLoader worker process N. Original Traceback ...")."""
    head = re.match(r"Caught \w+ in (DataLoader worker process \d+)\.", msg)
    if not head or "Traceback (most recent call last):" not in msg:
        return msg
    lines = msg.splitlines()
    frames = [i for i, line in enumerate(lines) if line.startswith("  File ")]
    rest = [line for line in lines[frames[-1] + 1 :] if not line.startswith(" ")] if frames else []
    if not rest:
        return msg
    original = re.sub(r"^[\w.]+: ", "", " ".join(rest), count=1)
    return f"{original} (in {head.group(1)})"


def _warning_line(message, category, filename, lineno, line=None) -> str:
    return f"anysat-lite: warning: {message}\n"


def main(argv=None) -> int:
    """Run a command; errors print one line on stderr (exit code 2), ``--debug`` shows the traceback."""
    argv = sys.argv[1:] if argv is None else list(argv)
    CREATED_FOLDERS.clear()  # only this command's folders are taken back when it fails
    lead = 0  # --debug may come before the command
    while argv[lead : lead + 1] == ["--debug"]:
        lead += 1
    if argv[lead : lead + 1] == ["bench"]:  # the benchmark has its own parser (anysat-lite bench --help)
        from .bench import main as bench_main

        prog, run, debug = "anysat-lite bench", lambda: bench_main(argv[lead + 1 :]), "--debug" in argv
    else:
        args = build_parser().parse_args(argv)
        prog, run, debug = f"anysat-lite {args.command}", lambda: args.func(args), getattr(args, "debug", False)
    debug = debug or os.environ.get(DEBUG_ENV, "").strip().lower() not in DEBUG_OFF
    shown = warnings.formatwarning
    if not debug:
        warnings.formatwarning = _warning_line
    try:
        return run() or 0
    except KeyboardInterrupt:
        remove_empty_created_folders()
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of our output closed it (anysat-lite info | head): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 0
    except Exception as e:
        remove_empty_created_folders()
        if debug:
            raise
        if _out_of_memory(e):
            print(
                f"{prog}: error: out of memory ({_one_line(e)}); lower what sets the size (data.n_tiles, "
                "train.batch_size, model.size, data.num_workers) or use a machine with more memory",
                file=sys.stderr,
            )
            return 2
        if isinstance(e, (UserError, ValueError, KeyError, OSError)):
            print(f"{prog}: error: {_one_line(e)}", file=sys.stderr)
            return 2
        print(f"{prog}: internal error: {type(e).__name__}: {_one_line(e)}", file=sys.stderr)
        print(
            f"{prog}: this looks like a bug; rerun with --debug (or {DEBUG_ENV}=1) for the traceback and report it",
            file=sys.stderr,
        )
        return 1
    finally:
        warnings.formatwarning = shown


if __name__ == "__main__":
    sys.exit(main())
