"""Command line: ``anysat-lite {demo,pretrain,probe,embed,bench,notebooks,info}`` (also ``python -m anysat_lite``)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main"]


def _config(args):
    from .config import get_config, load_config

    if args.config.endswith((".yaml", ".yml")):
        return load_config(args.config, args.set)
    return get_config(args.config, args.set)


def _add_config_args(p, default="cpu-demo"):
    p.add_argument("--config", default=default, help="preset name (cpu-demo, tiny, small, base, base-cuda) or YAML file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override, e.g. --set train.steps=100 --set data.datasets[0]... (repeatable)")


def cmd_pretrain(args) -> int:
    from .train import pretrain

    cfg = _config(args)
    summary = pretrain(cfg, resume=args.resume, progress=not args.quiet)
    if summary:
        print(json.dumps(summary, indent=1))
    return 0


def cmd_probe(args) -> int:
    from .probe import format_table, run_probe
    from .probe.run import gain_summary

    cfg = _config(args)
    out = args.out or cfg.train.out_dir
    report = run_probe(cfg, checkpoint=args.checkpoint, out_dir=out, progress=not args.quiet)
    print(format_table(report))
    print("\n" + "\n".join(gain_summary(report)))
    print(f"\nwritten: {out}/probe_results.{{json,md,png}}")
    return 0


def cmd_demo(args) -> int:
    """Pretrain the preset, then probe it: the README's main job."""
    from .probe import format_table, run_probe
    from .probe.run import gain_summary
    from .train import pretrain

    cfg = _config(args)
    out = Path(cfg.train.out_dir)
    summary = pretrain(cfg, resume=args.resume, progress=not args.quiet)
    print(f"pretraining: {summary['steps']} steps in {summary['seconds']:.0f} s, JEPA loss "
          f"{summary['first_jepa_loss']:.4f} -> {summary['final']['jepa_loss']:.4f}")
    report = run_probe(cfg, checkpoint=out / "encoder", out_dir=out, progress=not args.quiet)
    print("\n" + format_table(report))
    print("\n" + "\n".join(gain_summary(report)))
    print(f"\nfigures: {out}/training_curves.png, {out}/probe_results.png; tables: {out}/probe_results.md")
    return 0


def cmd_embed(args) -> int:
    from .data.normalization import NormStats
    from .probe.embed import embed_rasters, load_rasters
    from .train.checkpoint import load_encoder

    spec = {}
    for item in args.raster:
        if "=" not in item:
            raise SystemExit(f"--raster {item!r}: expected SENSOR=path[,path...]")
        sensor, paths = item.split("=", 1)
        spec.setdefault(sensor, []).extend(p for p in paths.split(",") if p)
    encoder, meta = load_encoder(args.checkpoint)
    stats = None
    if meta.get("norm_stats"):
        name = args.stats or next(iter(meta["norm_stats"]))
        stats = NormStats.from_dict(meta["norm_stats"][name])
    ds = embed_rasters(encoder, load_rasters(spec), args.patch_size, stats)
    out = Path(args.out)
    if out.suffix == ".zarr":
        ds.to_zarr(out, mode="w")
    else:
        ds.to_netcdf(out)
    print(f"{out}: embedding {dict(ds.embedding.sizes)} (patch {args.patch_size} m, crs from {args.raster[0].split('=')[0]})")
    return 0


def cmd_notebooks(args) -> int:
    from .notebooks import run_notebooks

    failures = run_notebooks(args.out, smoke=not args.full, only=args.only, store=args.store)
    return 1 if failures else 0


def cmd_info(args) -> int:
    from .config import PRESETS
    from .sensors import SENSORS

    print("sensors:")
    for s in SENSORS.values():
        print(f"  {s.name:13s} {s.kind:6s} {s.gsd:7g} m  {s.n_bands:2d} bands  sub-patch {s.subpatch_m:g} m  {s.description}")
    print("presets:", ", ".join(PRESETS))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="anysat-lite", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="pretrain (cpu-demo by default) then probe; prints the results table")
    _add_config_args(d)
    d.add_argument("--resume", action="store_true")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser("pretrain", help="JEPA pretraining (works under torchrun)")
    _add_config_args(t)
    t.add_argument("--resume", action="store_true", help="continue from <out_dir>/last.pt")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=cmd_pretrain)

    pr = sub.add_parser("probe", help="linear / kNN / segmentation probes and baselines")
    _add_config_args(pr)
    pr.add_argument("--checkpoint", help="exported encoder (path without suffix, e.g. runs/cpu-demo/encoder)")
    pr.add_argument("--out", help="output folder (default: train.out_dir)")
    pr.add_argument("--quiet", action="store_true")
    pr.set_defaults(func=cmd_probe)

    e = sub.add_parser("embed", help="per-patch embeddings of GeoTIFFs -> NetCDF / zarr")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--raster", action="append", required=True, metavar="SENSOR=PATH[,PATH...]")
    e.add_argument("--patch-size", type=int, default=20)
    e.add_argument("--stats", help="which dataset's normalisation statistics to use (default: the first)")
    e.add_argument("--out", required=True, help="output .nc or .zarr")
    e.set_defaults(func=cmd_embed)

    sub.add_parser("bench", help="benchmarks (prints numbers and writes JSON); see anysat-lite bench --help")

    n = sub.add_parser("notebooks", help="execute the numbered notebooks with papermill")
    n.add_argument("--out", default="runs/notebooks")
    n.add_argument("--full", action="store_true", help="full runs instead of the smoke mode")
    n.add_argument("--only", nargs="*", help="notebook name prefixes, e.g. 00 03")
    n.add_argument("--store", action="store_true", help="write the executed notebooks back into notebooks/")
    n.set_defaults(func=cmd_notebooks)

    i = sub.add_parser("info", help="registered sensors and presets")
    i.set_defaults(func=cmd_info)
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # the benchmark has its own parser (anysat-lite bench --help)
        from .bench import main as bench_main
        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
