"""Run folders: what :func:`~anysat_lite.train.pretrain` may write where, and which checkpoint it resumes.

A run folder (``train.out_dir``) holds one run: ``config.yaml``, ``last.pt``, ``step-XXXXXX.pt``,
``metrics.csv``/``.jsonl``, ``training_curves.png``, ``encoder.safetensors``/``.json``,
``summary.json``, ``config-until-step-XXXXXX.yaml`` (the config of the steps before a resume that changed it)
and, after probing, ``probe_results.*``.  :func:`prepare_run_dir` runs before
anything is written and refuses what would lose or mix results:

* a new run into a folder that holds one (continue it with ``resume``, replace it with ``force``,
  or choose another ``train.out_dir``);
* ``resume`` without a readable checkpoint (a corrupt ``last.pt`` names the newest intact
  ``step-*.pt``), or from a checkpoint of another model, data or JEPA setup, or of a run
  already at ``train.steps`` (:class:`RunFinishedError`).

While :func:`~anysat_lite.train.pretrain` runs, :func:`run_lock` holds ``<train.out_dir>/.run.lock``: a second
run into the same folder is refused instead of mixing its files with the first one's.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
from pathlib import Path

from ..config import Config, config_to_dict, validate_config
from ..errors import UserError, check_output_folder
from .checkpoint import CheckpointError, load_checkpoint

__all__ = [
    "RunDirError",
    "RunFinishedError",
    "RUN_FILES",
    "PROBE_REPORT_FILES",
    "run_files",
    "prepare_run_dir",
    "clear_run_dir",
    "newest_intact_checkpoint",
    "run_lock",
    "remove_temporary_files",
    "keep_earlier_config",
    "resume_path",
]

# What the probes write beside an encoder (anysat_lite.probe.run_probe; also files of a run folder).
PROBE_REPORT_FILES = ("probe_results.json", "probe_results.md", "probe_results.png")

# Files (glob patterns) a run writes into its folder; ``force`` deletes exactly these.
RUN_FILES = (
    "config.yaml",
    "last.pt",
    "step-*.pt",
    "metrics.csv",
    "metrics.jsonl",
    "training_curves.png",
    "encoder.safetensors",
    "encoder.json",
    "encoder-online.safetensors",
    "encoder-online.json",
    "summary.json",
    "config-until-step-*.yaml",
    *PROBE_REPORT_FILES,
    "tensorboard/events.out.tfevents.*",
    ".*.tmp",
    ".*.tmp.*",  # atomic_write's temporary files (anysat_lite/files.py), left by a killed process
)
# What a run writes once its last step is done: a run at train.steps without all of them resumes to write them.
RUN_OUTPUTS = (
    "encoder.safetensors",
    "encoder.json",
    "encoder-online.safetensors",
    "encoder-online.json",
    "training_curves.png",
    "summary.json",
)
# Config entries a resumed run may change: they do not change what the checkpoint's weights mean.
_MAY_CHANGE = re.compile(
    r"^(train\..*|name|data\.(num_workers|prefetch_factor|persistent_workers|pin_memory|cache_dir|"
    r"root)|data\.datasets\[\d+\]\.path|jepa\.monitor_every|probe\..*)$"
)


# Config keys added after runs were first saved, with the value that means what runs saved before them did:
# a checkpoint without the key was trained with that value.  Every key added to the model, data or jepa
# sections goes here (tests/test_rundir.py holds the keys of 2026-11-27 and checks that the others are listed).
ADDED_KEYS = {"jepa.context_gather": "by_patch", "model.attend_over": "tokens"}


_MISSING = object()  # a key the checkpoint predates and ADDED_KEYS does not list


def _saved_value(saved: dict, key: str):
    """``key``'s value in a checkpoint's flattened config; a key it predates reads as :data:`ADDED_KEYS` says."""
    return saved.get(key, ADDED_KEYS.get(re.sub(r"\[\d+\]", "[*]", key), _MISSING))


class RunDirError(UserError):
    """The run folder or the checkpoint to resume cannot be used as asked; the message says what to do."""


class RunFinishedError(RunDirError):
    """``resume`` of a run whose checkpoint is already at ``train.steps``."""

    def __init__(self, message: str, checkpoint: Path, step: int):
        super().__init__(message)
        self.checkpoint, self.step = checkpoint, step


def run_files(out_dir: str | Path) -> list[Path]:
    """The files of :data:`RUN_FILES` present in ``out_dir``, sorted by name."""
    out = Path(out_dir)
    if not out.is_dir():
        return []
    return sorted({p for pattern in RUN_FILES for p in out.glob(pattern) if p.is_file()})


def _step_of(p: Path) -> int:
    """The step in a ``step-XXXXXX.pt`` file name."""
    return int(re.sub(r"\D", "", p.stem) or 0)


def _step_files(out: Path) -> list[Path]:
    """``step-XXXXXX.pt`` files, newest step first."""
    return sorted(out.glob("step-*.pt"), key=_step_of, reverse=True)


def newest_intact_checkpoint(out_dir: str | Path, exclude: Path | None = None) -> Path | None:
    """The ``step-*.pt`` of ``out_dir`` with the highest step that loads (``None`` if there is none)."""
    for p in _step_files(Path(out_dir)):
        if exclude is not None and p.resolve() == exclude.resolve():
            continue
        try:
            ck = load_checkpoint(p)
        except CheckpointError:
            continue
        if isinstance(ck, dict) and "model" in ck and "step" in ck:
            return p
    return None


def _yaml_value(v) -> str:
    """``v`` as ``--set key=VALUE`` reads it back (flow-style YAML on one line)."""
    import yaml

    return yaml.safe_dump(v, default_flow_style=True, width=10**6).strip().removesuffix("\n...").strip()


def _flat(d, prefix: str = "") -> dict:
    """``{"a": {"b": [1, {"c": 2}]}}`` -> ``{"a.b[0]": 1, "a.b[1].c": 2}``."""
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(d, (list, tuple)) and any(isinstance(v, (dict, list, tuple)) for v in d):
        out = {}
        for i, v in enumerate(d):
            out.update(_flat(v, f"{prefix}[{i}]"))
        return out | ({prefix: f"<{len(d)} items>"} if prefix else {})
    return {prefix: list(d) if isinstance(d, tuple) else d}


def resume_path(out: str | Path, resume) -> Path:
    """The checkpoint file ``resume`` names: ``True`` -> ``<out>/last.pt``, a run folder -> its ``last.pt``."""
    path = Path(out) / "last.pt" if resume is True else Path(resume)
    return path / "last.pt" if path.is_dir() else path


def _resume_checkpoint(out: Path, resume, map_location="cpu") -> tuple[Path, dict]:
    """Load the checkpoint ``resume`` names (``True``: ``<out>/last.pt``) or say which one would work."""
    path = resume_path(out, resume)
    if not path.exists():
        newest = newest_intact_checkpoint(path.parent) if path.parent.is_dir() else None
        hint = (
            f"resume from {newest} (--resume {newest})" if newest else "start the run without --resume (resume=False)"
        )
        raise RunDirError(f"nothing to resume: {path} does not exist; {hint}")
    try:
        ck = load_checkpoint(path, map_location=map_location)
    except CheckpointError as e:
        newest = newest_intact_checkpoint(path.parent, exclude=path)
        hint = (
            f"resume from the newest intact checkpoint: --resume {newest}"
            if newest
            else f"no intact step-*.pt in {path.parent}: start the run again without --resume, replacing it "
            f"(--set train.out_dir={out} --force; Python: force=True), or in a new train.out_dir"
        )
        raise RunDirError(f"{e.problem}; {hint}") from None
    if not isinstance(ck, dict) or not {"model", "optimizer", "step", "rng"} <= set(ck):
        keys = sorted(map(str, ck)) if isinstance(ck, dict) else []
        got = ", ".join(keys[:4]) + (f", ... ({len(keys)} keys)" if len(keys) > 4 else "") or type(ck).__name__
        raise RunDirError(
            f"{path}: not a training checkpoint (expected the keys model, optimizer, step, rng; got {got}); "
            "resume from a last.pt or step-*.pt written by anysat-lite pretrain"
        )
    return path, ck


def _check_same_run(path: Path, ck: dict, cfg: Config, out: Path) -> None:
    saved = ck.get("config")
    if isinstance(saved, dict):
        old, new = _flat(saved), _flat(config_to_dict(cfg))
        order = {"model": 0, "data": 1, "jepa": 2}
        diffs = sorted(
            (k for k in set(old) | set(new) if not _MAY_CHANGE.match(k) and _saved_value(old, k) != new.get(k)),
            key=lambda k: (order.get(k.split(".")[0], 3), k),
        )
        if diffs:
            k = diffs[0]
            more = f" (and {len(diffs) - 1} more)" if len(diffs) > 1 else ""
            if _saved_value(old, k) is _MISSING:
                raise RunDirError(
                    f"{path} was saved by an older anysat_lite, before {k} existed (the config now says "
                    f"{new.get(k)!r}{more}); this version cannot tell how that run was trained: continue it with "
                    "the version that saved it, or start a new run in another folder"
                )
            fix = (
                f"--set {k}={_yaml_value(_saved_value(old, k))}"
                if len(diffs) == 1
                else f"--config {path.parent / 'config.yaml'} as the run wrote it, or leave --config out"
            )
            raise RunDirError(
                f"{path} was trained with {k}={_saved_value(old, k)!r}, the config now says {new.get(k)!r}{more}; "
                f"resume with the config it was trained with ({fix}) or start a new run in another folder"
            )
    step = int(ck["step"])
    if step > cfg.train.steps:
        raise RunDirError(
            f"{path} is at step {step}, beyond train.steps={cfg.train.steps}; set train.steps >= {step} to continue it"
        )
    if step == cfg.train.steps and all((out / name).is_file() for name in RUN_OUTPUTS):
        raise RunFinishedError(
            f"{path} is at step {step} = train.steps: the run is finished; "
            f"raise train.steps (e.g. --set train.steps={2 * step}) to train it longer",
            path,
            step,
        )


def prepare_run_dir(
    out_dir: str | Path,
    cfg: Config,
    resume: bool | str | Path = False,
    force: bool = False,
    main: bool = True,
    map_location="cpu",
) -> dict | None:
    """Check the run folder and the checkpoint to resume before anything is written; return that checkpoint.

    Args:
        out_dir: the run folder (``train.out_dir``).
        cfg: the run's config (validated here too).
        resume: ``False`` (new run), ``True`` (continue from ``<out_dir>/last.pt``) or the path of a
            checkpoint to continue from (e.g. an intact ``step-*.pt`` when ``last.pt`` is corrupt).
        force: allow a new run in a folder holding one; its files (:data:`RUN_FILES`) are deleted by
            :func:`clear_run_dir` once the new run has been built, not here.
        main: the process that writes (rank 0); the others only load the checkpoint.
    Returns:
        The loaded checkpoint dict to continue from, or ``None`` for a new run.
    Raises:
        RunDirError (:class:`RunFinishedError` when the checkpoint is already at ``train.steps`` and the run's
        outputs, :data:`RUN_OUTPUTS`, are written; a run stopped before writing them resumes to write them).
    """
    validate_config(cfg)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"train.out_dir {out} is a file, not a folder; choose a folder (--set train.out_dir=...)")
    if resume is not False and resume is not None and force:
        raise RunDirError(
            "--resume and --force exclude each other: --resume continues the run in "
            f"{out}, --force deletes it and starts again"
        )
    if resume:
        path, ck = _resume_checkpoint(out, resume, map_location)
        if main and path.parent.resolve() != out.resolve() and run_files(out):
            raise RunDirError(
                f"{out} already holds another run; resume {path} into its own folder "
                f"(--set train.out_dir={path.parent}) or into a new one"
            )
        _check_same_run(path, ck, cfg, out)
        step = int(ck["step"])
        later = None  # an intact checkpoint of this folder beyond the one to resume (last.pt is the newest)
        if main and path.name != "last.pt" and path.parent.resolve() == out.resolve():
            if any(_step_of(p) > step for p in _step_files(out)):
                later = newest_intact_checkpoint(out)
        if later is not None and _step_of(later) > step:
            raise RunDirError(
                f"{path} is at step {step}, but {out} holds the run up to step {_step_of(later)} "
                f"({later.name}): continuing from the earlier step would replace the later checkpoints, encoders, "
                f"summary and metrics; continue it in a new folder (--set train.out_dir={out}-from-{step}) "
                "or move the later step-*.pt files away first"
            )
        return ck
    if main:
        existing = run_files(out)
        if existing and not force:
            names = ", ".join(p.name for p in existing[:4]) + (", ..." if len(existing) > 4 else "")
            # a run that stopped before its first checkpoint has nothing to resume
            resumable = any(p.suffix == ".pt" for p in existing)
            how = "continue it with --resume (resume=True), " if resumable else ""
            raise RunDirError(
                f"{out} already holds a run ({names}); {how}replace it with --force (force=True), or choose a "
                "new folder (--set train.out_dir=runs/NEW)"
            )
        check_output_folder("train.out_dir", out)  # creates it; a file on its path or no write access is refused
    return None


def remove_temporary_files(out_dir: str | Path) -> list[Path]:
    """Delete the temporary files a killed process left in ``out_dir`` (``atomic_write``'s ``.NAME.XXXX.tmp*``,
    never a finished file); called with the run's lock held, when no other process writes there."""
    out = Path(out_dir)
    gone = sorted({p for pattern in (".*.tmp", ".*.tmp.*") for p in out.glob(pattern) if p.is_file()})
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


def keep_earlier_config(out_dir: str | Path, cfg: Config, step: int) -> tuple[Path, list[str]] | None:
    """Before a run resumed at ``step`` with a changed config (``--set train.steps=500``) writes its
    ``config.yaml``, keep the file the earlier steps ran under, as written (comments included), as
    ``config-until-step-NNNNNN.yaml`` (a file it cannot read as a config too); returns that path and the changed
    keys, or ``None`` when nothing changed (``train.out_dir`` spelt another way is no change) or there is no
    earlier file."""
    from ..config import load_config

    out = Path(out_dir)
    path = out / "config.yaml"
    if not path.is_file():
        return None
    try:
        old = _flat(config_to_dict(load_config(path)))
        changed = [
            k
            for k, v in _flat(config_to_dict(cfg)).items()
            if k != "train.out_dir" and old.get(k, _MISSING) != v  # the folder, however it is spelt, is the same
        ]
    except (OSError, UserError, ValueError):  # a hand edit it cannot read back: kept as it is, all the same
        changed = ["(the file could not be read as a config)"]
    if not changed:
        return None
    kept = out / f"config-until-step-{step:06d}.yaml"
    if kept.exists():  # resumed twice from the same step: the first file of that step is the one its steps ran under
        return kept, changed
    os.replace(path, kept)
    return kept, changed


def clear_run_dir(out_dir: str | Path) -> None:
    """Delete the run files (:data:`RUN_FILES`) of ``out_dir`` (``--force``) and create the folder.

    Called by the writing process once the new run's data and model are built, so a run that cannot
    start (a missing dataset, a bad sensor) leaves the old run in place.  Other files are kept.
    """
    out = Path(out_dir)
    for p in run_files(out):
        p.unlink()
    out.mkdir(parents=True, exist_ok=True)


LOCK_NAME = ".run.lock"


def _holder_is_gone(holder: dict) -> bool:
    """Whether the process that wrote a lock is known to have ended (same machine, no such process)."""
    if holder.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError, ValueError, KeyError, TypeError):
        return False
    return False


def _place_whole(tmp: Path, lock: Path) -> None:
    """Put ``tmp``'s content at ``lock`` unless ``lock`` exists (:class:`FileExistsError`), whole where the file
    system has hard links, else by exclusive creation."""
    try:
        os.link(tmp, lock)
    except FileExistsError:
        raise
    except OSError:  # no hard links here (some network and FUSE file systems)
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(tmp.read_text())


@contextlib.contextmanager
def run_lock(out_dir: str | Path):
    """Hold ``<out_dir>/.run.lock`` (this process, its machine and start time) while a run writes there.

    The lock is linked into place whole, so another process never reads half of it.  A lock left by a
    process of this machine that has ended (killed, or the machine restarted) is taken over; this process
    may take its own lock again.  Raises :class:`RunDirError` naming the other run.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lock = out / LOCK_NAME
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    tmp = out / f".run.lock.{os.getpid()}.tmp"
    try:
        tmp.write_text(json.dumps(mine))
    except OSError as e:
        raise RunDirError(
            f"cannot write into {out} ({e.strerror or e}); make it writable or choose another folder "
            "(--set train.out_dir=...)"
        ) from None
    try:
        for _ in range(3):
            try:
                _place_whole(tmp, lock)
                break
            except FileExistsError:
                try:
                    holder = json.loads(lock.read_text())
                except (OSError, ValueError):
                    holder = {}
                if not isinstance(holder, dict):
                    holder = {}
                if holder.get("pid") == mine["pid"] and holder.get("host") == mine["host"]:
                    break  # this process's own lock (a run in a notebook, stopped by an exception)
                if holder and not _holder_is_gone(holder):
                    raise RunDirError(
                        f"{out} is in use by another run (process {holder.get('pid')} on {holder.get('host')}, "
                        f"started {holder.get('started')}); wait for it to end or choose another folder "
                        f"(--set train.out_dir=...); if no run uses this folder any more, delete {lock}"
                    ) from None
                lock.unlink(missing_ok=True)  # its process has ended (or the lock is unreadable): take it over
        else:
            raise RunDirError(f"{out}: other processes keep taking {lock}; start the run again")
    finally:
        tmp.unlink(missing_ok=True)
    try:
        yield lock
    finally:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(lock.read_text()).get("pid") == mine["pid"]:
                lock.unlink()
