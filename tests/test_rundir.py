"""Run folders: a new run never replaces an old one silently, and resume checks its checkpoint before writing."""

import dataclasses
import os
from pathlib import Path

import pytest
import torch

from anysat_lite.config import DataConfig, DatasetSpec, JEPAConfig, ModelConfig, config_to_dict, get_config
from anysat_lite.errors import MissingFileError, UserError
from anysat_lite.train.checkpoint import save_checkpoint
from anysat_lite.train.rundir import (
    ADDED_KEYS,
    RUN_OUTPUTS,
    RunDirError,
    RunFinishedError,
    clear_run_dir,
    keep_earlier_config,
    prepare_run_dir,
    run_files,
)


def _cfg(out, *over):
    return get_config("cpu-demo", [f"train.out_dir={out}", "train.steps=8", *over])


def _fake_run(out, steps=(4, 8), cfg=None):
    """A run folder as pretrain leaves it (checkpoints with the keys resume needs, tiny weights)."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = cfg or _cfg(out)
    for s in steps:
        ck = {
            "model": {"encoder.w": torch.full((2,), float(s))},
            "optimizer": {},
            "step": s,
            "rng": {},
            "config": config_to_dict(cfg),
            "sensors": ["aerial"],
        }
        save_checkpoint(ck, out / f"step-{s:06d}.pt")
        save_checkpoint(ck, out / "last.pt")
    for name in ("config.yaml", "metrics.csv", *RUN_OUTPUTS, "probe_results.json"):
        (out / name).write_text(f"old {name}")
    return {p.name: p.read_bytes() for p in out.iterdir()}


def _unchanged(out, before):
    return {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_new_run_in_a_new_or_empty_folder(tmp_path):
    assert prepare_run_dir(tmp_path / "new", _cfg(tmp_path / "new")) is None
    assert (tmp_path / "new").is_dir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")  # files that are not a run's do not count
    assert prepare_run_dir(tmp_path / "other", _cfg(tmp_path / "other")) is None
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_a_folder_holding_a_run_is_refused_and_left_untouched(tmp_path):
    before = _fake_run(tmp_path)
    with pytest.raises(
        RunDirError,
        match=r"already holds a run \(config.yaml, encoder-online.json, encoder-online.safetensors, encoder.json, "
        r"\.\.\.\); continue it with --resume .* replace it with --force .* or "
        r"choose a new folder",
    ):
        prepare_run_dir(tmp_path, _cfg(tmp_path))
    assert _unchanged(tmp_path, before)


def test_force_deletes_exactly_the_old_run(tmp_path):
    _fake_run(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert prepare_run_dir(tmp_path, _cfg(tmp_path), force=True) is None
    assert _unchanged(tmp_path, before)  # the check deletes nothing: the new run may still fail to start
    clear_run_dir(tmp_path)
    assert run_files(tmp_path) == [] and [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    with pytest.raises(RunDirError, match="--resume and --force exclude each other"):
        prepare_run_dir(tmp_path, _cfg(tmp_path), resume=True, force=True)


def test_force_keeps_the_old_run_when_the_new_one_cannot_start(tmp_path):
    from anysat_lite.train import pretrain

    before = _fake_run(tmp_path)
    missing = tmp_path / "no-such-dataset"
    cfg = get_config(
        "cpu-demo", [f"train.out_dir={tmp_path}", f"data.datasets=[{{name: treesatai-ts, path: {missing}}}]"]
    )
    with pytest.raises(MissingFileError, match="train_filenames.lst not found"):
        pretrain(cfg, force=True, progress=False)
    assert _unchanged(tmp_path, before)


def test_resume_loads_and_checks_the_checkpoint(tmp_path):
    before = _fake_run(tmp_path, steps=(4,))
    ck = prepare_run_dir(tmp_path, _cfg(tmp_path), resume=True)
    assert ck["step"] == 4 and torch.equal(ck["model"]["encoder.w"], torch.full((2,), 4.0))
    assert _unchanged(tmp_path, before)
    # train.* may change on resume (here: more steps); the weights' meaning may not
    assert prepare_run_dir(tmp_path, _cfg(tmp_path, "train.steps=20", "train.lr=1e-3"), resume=True)["step"] == 4
    with pytest.raises(
        RunDirError,
        match=r"trained with jepa.n_targets=4, the config now says 2; resume with the "
        r"config it was trained with \(--set jepa.n_targets=4\)",
    ):  # one key: the --set that restores it
        prepare_run_dir(tmp_path, _cfg(tmp_path, "jepa.n_targets=2"), resume=True)
    with pytest.raises(
        RunDirError,
        match=r"last.pt was trained with model.embed_dim=64, the config now says 256 "
        r"\(and \d+ more\); resume with the config it was trained with \(--config "
        r".*config.yaml as the run wrote it, or leave --config out\)",
    ):
        prepare_run_dir(tmp_path, get_config("tiny", [f"train.out_dir={tmp_path}"]), resume=True)
    with pytest.raises(RunDirError, match=r"last.pt is at step 4, beyond train.steps=2; set train.steps >= 4"):
        prepare_run_dir(tmp_path, _cfg(tmp_path, "train.steps=2"), resume=True)
    assert _unchanged(tmp_path, before)


# The keys of the model, data and jepa sections on 2026-11-27 (commit 224f87f), before ADDED_KEYS existed.
KEYS_2026_11_27 = {
    "model": "depth drop_path dropout embed_dim ltae_dk ltae_heads ltae_in_width mlp_ratio num_heads sensors "
    "subpatch_order",
    "data": "cache_dir datasets epoch_steps mixing n_dates n_tiles norm_samples num_workers persistent_workers "
    "pin_memory prefetch_factor root seed tile_m",
    "data.datasets[*]": "batch_size max_dates name norm options patch_sizes path sensors tile_m weight",
    "jepa": "allow_overlap center_targets context context_scale contrastive contrastive_scope contrastive_tau "
    "contrastive_weight date_drop_ratio ema mask min_keep modality_mask_ratio monitor_every n_targets "
    "predictor_depth predictor_heads random_keep relax series_views single_sensor_views standardise_targets "
    "target target_aspect target_scale view_band_shift warn_cos warn_erank warn_std",
}


def test_every_key_added_since_runs_were_saved_says_what_older_runs_did():
    sections = {"model": ModelConfig, "data": DataConfig, "data.datasets[*]": DatasetSpec, "jepa": JEPAConfig}
    added = {
        f"{name}.{f.name}"
        for name, cls in sections.items()
        for f in dataclasses.fields(cls)
        if f.name not in KEYS_2026_11_27[name].split()
    }
    assert added == set(ADDED_KEYS), "list a new config key in train.rundir.ADDED_KEYS with its old behaviour"


def test_a_run_saved_before_a_key_existed_resumes_with_its_old_behaviour(tmp_path):
    cfg = config_to_dict(_cfg(tmp_path))
    del cfg["jepa"]["context_gather"]  # as a checkpoint of 2026-11-27 holds it
    ck = {"model": {}, "optimizer": {}, "step": 4, "rng": {}, "config": cfg, "sensors": ["aerial"]}
    save_checkpoint(ck, tmp_path / "last.pt")
    assert prepare_run_dir(tmp_path, _cfg(tmp_path), resume=True)["step"] == 4
    with pytest.raises(RunDirError, match=r"last.pt was trained with jepa.context_gather='by_patch', the config now"):
        prepare_run_dir(tmp_path, _cfg(tmp_path, "jepa.context_gather=official"), resume=True)
    del cfg["jepa"]["warn_cos"]  # a key this version does not know the history of
    save_checkpoint(ck, tmp_path / "last.pt")
    with pytest.raises(
        RunDirError,
        match=r"last.pt was saved by an older anysat_lite, before jepa.warn_cos existed \(the config now says "
        r"0.95\); this version cannot tell how that run was trained: continue it with the version that saved it",
    ):
        prepare_run_dir(tmp_path, _cfg(tmp_path), resume=True)


def test_resume_of_a_finished_run(tmp_path):
    _fake_run(tmp_path)
    with pytest.raises(
        RunFinishedError,
        match=r"last.pt is at step 8 = train.steps: the run is finished; raise "
        r"train.steps \(e.g. --set train.steps=16\)",
    ) as e:
        prepare_run_dir(tmp_path, _cfg(tmp_path), resume=True)
    assert e.value.step == 8 and e.value.checkpoint == tmp_path / "last.pt"


OUTPUTS = ("encoder.safetensors", "encoder.json", "encoder-online.safetensors", "encoder-online.json")


@pytest.mark.parametrize("lost", [*OUTPUTS, "training_curves.png", "summary.json"])
def test_a_run_stopped_before_writing_its_outputs_resumes_to_write_them(tmp_path, lost):
    assert set(RUN_OUTPUTS) == {*OUTPUTS, "training_curves.png", "summary.json"}
    _fake_run(tmp_path)
    (tmp_path / lost).unlink()  # killed after the last checkpoint, before this file
    assert prepare_run_dir(tmp_path, _cfg(tmp_path), resume=True)["step"] == 8


def test_resuming_an_earlier_step_never_replaces_the_later_ones(tmp_path):
    before = _fake_run(tmp_path, steps=(4, 8))
    cfg = _cfg(tmp_path, "train.steps=12")
    with pytest.raises(
        RunDirError,
        match=r"step-000004.pt is at step 4, but .* holds the run up to step 8 \(step-000008.pt\): continuing from "
        r"the earlier step would replace the later checkpoints, .*\(--set train.out_dir=.*-from-4\)",
    ):
        prepare_run_dir(tmp_path, cfg, resume=tmp_path / "step-000004.pt")
    assert _unchanged(tmp_path, before)
    new = tmp_path.parent / f"{tmp_path.name}-from-4"  # the way the message offers
    assert prepare_run_dir(new, _cfg(new, "train.steps=12"), resume=tmp_path / "step-000004.pt")["step"] == 4
    (tmp_path / "step-000008.pt").write_bytes(b"damaged")  # the newest intact step is the one to resume from
    assert prepare_run_dir(tmp_path, cfg, resume=tmp_path / "step-000004.pt")["step"] == 4


def test_resume_without_a_checkpoint(tmp_path):
    with pytest.raises(
        RunDirError,
        match=r"nothing to resume: .*last.pt does not exist; start the run without "
        r"--resume",
    ):
        prepare_run_dir(tmp_path, _cfg(tmp_path), resume=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b"", lambda b: b"\x00" * 100])
def test_corrupt_last_names_the_newest_intact_step(tmp_path, damage):
    _fake_run(tmp_path, steps=(4, 8, 12))
    (tmp_path / "step-000012.pt").write_bytes(b"truncated")  # the newest step file is bad too
    last = tmp_path / "last.pt"
    last.write_bytes(damage(last.read_bytes()))
    with pytest.raises(
        RunDirError,
        match=r"last.pt: (not a readable checkpoint|empty file).*; resume from the newest "
        r"intact checkpoint: --resume .*step-000008.pt$",
    ) as e:
        prepare_run_dir(tmp_path, _cfg(tmp_path, "train.steps=20"), resume=True)
    assert "weights_only" not in str(e.value) and "\n" not in str(e.value)
    ck = prepare_run_dir(tmp_path, _cfg(tmp_path, "train.steps=20"), resume=tmp_path / "step-000008.pt")
    assert ck["step"] == 8


def test_corrupt_last_without_an_intact_step_names_the_command_that_starts_again(tmp_path):
    """The fix names the folder: ``--force`` alone would start the preset's default train.out_dir."""
    _fake_run(tmp_path, steps=(4,))
    (tmp_path / "step-000004.pt").write_bytes(b"truncated")
    (tmp_path / "last.pt").write_bytes(b"truncated")
    with pytest.raises(
        RunDirError,
        match=r"last.pt: .*; no intact step-\*.pt in .*: start the run again without --resume, replacing it "
        rf"\(--set train.out_dir={tmp_path} --force; Python: force=True\), or in a new train.out_dir$",
    ):
        prepare_run_dir(tmp_path, _cfg(tmp_path, "train.steps=20"), resume=True)


def test_resume_into_a_folder_holding_another_run(tmp_path):
    _fake_run(tmp_path / "a")
    _fake_run(tmp_path / "b")
    with pytest.raises(RunDirError, match=r"already holds another run; resume .*step-000004.pt into its own folder"):
        prepare_run_dir(tmp_path / "b", _cfg(tmp_path / "b"), resume=tmp_path / "a" / "step-000004.pt")


def test_pretrain_refuses_before_writing(tmp_path):
    """The training loop calls prepare_run_dir first: a refused run leaves the folder as it was."""
    from anysat_lite.train import pretrain

    before = _fake_run(tmp_path)
    with pytest.raises(RunDirError, match="already holds a run"):
        pretrain(_cfg(tmp_path), progress=False)
    with pytest.raises(RunFinishedError):
        pretrain(_cfg(tmp_path), resume=True, progress=False)
    assert _unchanged(tmp_path, before)


def test_a_run_that_cannot_start_leaves_nothing_that_blocks_the_rerun(tmp_path):
    """A dataset path that does not exist fails at the data, before config.yaml is written: the corrected
    run then starts in the same folder."""
    from anysat_lite.train import pretrain

    out = tmp_path / "run"
    with pytest.raises(MissingFileError, match="nosuch"):
        pretrain(_cfg(out, f"data.datasets=[{{name: treesatai-ts, path: {tmp_path / 'nosuch'}}}]"), progress=False)
    assert run_files(out) == []
    assert prepare_run_dir(out, _cfg(out)) is None


def test_a_run_without_a_checkpoint_is_not_offered_to_resume(tmp_path):
    for name in ("config.yaml", "metrics.csv"):  # a run that stopped before its first checkpoint
        (tmp_path / name).write_text(f"old {name}")
    with pytest.raises(
        RunDirError, match=r"already holds a run \(config.yaml, metrics.csv\); replace it with --force \(force=True\)"
    ):
        prepare_run_dir(tmp_path, _cfg(tmp_path))


def test_demo_resume_that_trains_further_replaces_only_its_own_unedited_probe_results(tmp_path):
    """demo --resume with train.steps raised re-probed and replaced whatever probe results the folder held: another
    encoder's (written there by probe --out) or a table the user had added notes to. Refused before any training."""
    import hashlib
    import json

    from anysat_lite.demo import _not_own_results, run_demo
    from anysat_lite.errors import UserError
    from anysat_lite.probe import format_table, run_probe

    over = ["data.n_tiles=30", "data.tile_m=40", "data.n_dates=4", "probe.patch_sizes=[20]", "probe.bootstrap=0"]
    over += ["probe.modality_sets=[[s2]]", "probe.seg_epochs=1", "probe.online=false"]
    report = run_probe(get_config("cpu-demo", over), progress=False)
    table = format_table(report) + "\n"
    written = report | {"table_sha256": hashlib.sha256(table.encode()).hexdigest()}  # as the probes write it
    _fake_run(tmp_path)
    for checkpoint, notes, resume, why in (
        ("/elsewhere/encoder", "", True, r"describe another encoder \(/elsewhere/encoder\)"),
        ("/elsewhere/encoder", "", str(tmp_path), r"describe another encoder"),  # --resume RUN_FOLDER
        (str(tmp_path / "encoder"), "my notes\n", True, r"hold a table edited since the probes wrote it"),
    ):
        (tmp_path / "probe_results.json").write_text(json.dumps(written | {"checkpoint": checkpoint}))
        (tmp_path / "probe_results.md").write_text(table + notes)
        before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
        with pytest.raises(UserError, match=rf"^demo --resume: .*probe_results.\* {why}.*, and probing the resumed"):
            run_demo(_cfg(tmp_path, "train.steps=12"), resume=resume, progress=False)
        assert _unchanged(tmp_path, before)
    (tmp_path / "probe_results.md").write_text(table)  # the run's own, as written, however its path is spelt
    assert _not_own_results(tmp_path) is None
    (tmp_path / "probe_results.json").write_text(json.dumps(written | {"checkpoint": os.path.relpath(tmp_path)}))
    assert _not_own_results(tmp_path) == f"describe another encoder ({os.path.relpath(tmp_path)})"
    (tmp_path / "probe_results.json").write_text(
        json.dumps(written | {"checkpoint": os.path.relpath(tmp_path / "encoder")})
    )
    assert _not_own_results(tmp_path) is None
    (tmp_path / "probe_results.json").write_text("[]")
    assert _not_own_results(tmp_path) == "cannot be read back as the probes' own files"


def test_resume_from_weights_that_are_no_training_checkpoint_names_a_few_keys(tmp_path):
    save_checkpoint({f"block{i}.weight": torch.zeros(1) for i in range(200)}, tmp_path / "weights.pt")
    with pytest.raises(
        RunDirError,
        match=r"weights.pt: not a training checkpoint \(expected the keys model, optimizer, step, rng; got "
        r"block0.weight, block1.weight, block10.weight, block100.weight, \.\.\. \(200 keys\)\); resume from a last.pt",
    ) as e:
        prepare_run_dir(tmp_path / "run", _cfg(tmp_path / "run"), resume=tmp_path / "weights.pt")
    assert len(str(e.value)) < 300  # not every weight's name


def test_demo_resume_of_a_finished_run_keeps_its_probe_results(tmp_path):
    """Nothing would be trained, so nothing is re-probed: the run's results stay (probe --force replaces them)."""
    from anysat_lite.demo import run_demo
    from anysat_lite.errors import UserError

    before = _fake_run(tmp_path)
    with pytest.raises(
        UserError, match=r"already holds probe results, .*\(Python: run_demo\(\.\.\., reprobe=True\)\)$"
    ):
        run_demo(_cfg(tmp_path), resume=True, progress=False)
    assert _unchanged(tmp_path, before)


def test_a_run_folder_that_cannot_be_made_names_train_out_dir(tmp_path):
    (tmp_path / "afile").write_text("mine")
    with pytest.raises(UserError, match=r"^train.out_dir \S+afile/sub: cannot write in .*\(Not a directory\)"):
        prepare_run_dir(tmp_path / "afile" / "sub", _cfg(tmp_path / "afile" / "sub"))
    assert (tmp_path / "afile").read_text() == "mine"


def test_a_damaged_metric_log_stops_the_resume_before_config_yaml_is_rewritten(tmp_path):
    from anysat_lite.train import pretrain

    small = ["data.n_tiles=48", "data.tile_m=40", "data.n_dates=6", "train.batch_size=8", "train.ckpt_every=1"]
    small += ["train.log_every=1", "jepa.monitor_every=0", f"data.cache_dir={tmp_path / 'cache'}"]
    out = tmp_path / "run"
    pretrain(_cfg(out, "train.steps=1", *small), progress=False)
    with (out / "metrics.jsonl").open("a") as f:
        f.write('{"step": 1, "loss":\n')
    config = (out / "config.yaml").read_text()
    with pytest.raises(UserError, match=r"metrics.jsonl line 2: not a JSON row \(.*\), expected one row per logged"):
        pretrain(_cfg(out, "train.steps=2", *small), resume=True, progress=False)
    assert (out / "config.yaml").read_text() == config


def test_a_resume_that_changes_the_config_keeps_the_file_the_earlier_steps_ran_under(tmp_path):
    """config.yaml was rewritten, comments and all, when a resume changed a value: the earlier file is kept as
    config-until-step-N.yaml (a second resume from the same step keeps the first), and --force removes it."""
    from anysat_lite.config import load_config
    from anysat_lite.train import pretrain

    small = ["data.n_tiles=48", "data.tile_m=40", "data.n_dates=6", "train.batch_size=8", "train.ckpt_every=1"]
    small += ["train.log_every=1", "jepa.monitor_every=0", f"data.cache_dir={tmp_path / 'cache'}"]
    out = tmp_path / "run"
    pretrain(_cfg(out, "train.steps=1", *small), progress=False)
    mine = "# my notes on this run\n" + (out / "config.yaml").read_text()
    (out / "config.yaml").write_text(mine)
    with pytest.raises(RunFinishedError):
        pretrain(_cfg(out, "train.steps=1", *small), resume=True, progress=False)
    assert (out / "config.yaml").read_text() == mine and not list(out.glob("config-until-*"))
    pretrain(_cfg(out, "train.steps=2", *small), resume=True, progress=False)
    assert (out / "config-until-step-000001.yaml").read_text() == mine
    assert load_config(out / "config.yaml").train.steps == 2
    (out / "last.pt").unlink()  # resume from step 1 again, with another change
    for later in out.glob("step-000002.pt"):
        later.unlink()
    pretrain(_cfg(out, "train.steps=3", *small), resume=out / "step-000001.pt", progress=False)
    assert (out / "config-until-step-000001.yaml").read_text() == mine
    assert load_config(out / "config.yaml").train.steps == 3
    # the same folder spelt another way is no change; a config.yaml edited past reading is kept all the same
    assert keep_earlier_config(out, _cfg(Path(os.path.relpath(out)), "train.steps=3", *small), 3) is None
    (out / "config.yaml").write_text("# my notes\nstepz: 4\n")
    kept = keep_earlier_config(out, _cfg(out, "train.steps=3", *small), 3)
    assert kept == (out / "config-until-step-000003.yaml", ["(the file could not be read as a config)"])
    assert (out / "config-until-step-000003.yaml").read_text() == "# my notes\nstepz: 4\n"
    clear_run_dir(out)  # what --force deletes
    assert not list(out.glob("config-until-*"))


def test_a_folder_in_use_by_another_run_is_refused(tmp_path):
    import json
    import os
    import socket
    import subprocess
    import sys

    from anysat_lite.train.rundir import run_lock

    lock = tmp_path / ".run.lock"
    with run_lock(tmp_path):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        with run_lock(tmp_path):  # this process may take its own lock again
            pass
    assert not lock.exists()  # released
    alive = {"pid": os.getppid(), "host": socket.gethostname(), "started": "2026-11-28 01:00:00"}
    lock.write_text(json.dumps(alive))
    with pytest.raises(
        RunDirError,
        match=rf"is in use by another run \(process {os.getppid()} on .*, started 2026-11-28 01:00:00\); wait for it "
        r"to end or choose another folder .*; if no run uses this folder any more, delete .*\.run\.lock",
    ):
        with run_lock(tmp_path):
            pass
    assert json.loads(lock.read_text()) == alive  # not taken
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(json.dumps(alive | {"pid": int(ended.stdout)}))  # a run killed without releasing its lock
    with run_lock(tmp_path):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists() and not list(tmp_path.glob(".run.lock.*"))


def test_pretrain_holds_the_lock_and_releases_it(tmp_path):
    import json
    import os
    import socket

    from anysat_lite.train import pretrain

    cfg = _cfg(tmp_path, "train.steps=2", "data.n_tiles=8", "train.threads=1")
    other = {"pid": os.getppid(), "host": socket.gethostname(), "started": "now"}
    (tmp_path / ".run.lock").write_text(json.dumps(other))
    with pytest.raises(RunDirError, match="is in use by another run"):
        pretrain(cfg, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == [".run.lock"]  # nothing written
    (tmp_path / ".run.lock").unlink()

    class LockSeen:  # at every step the folder is locked by this process
        pids = []

        def on_step_start(self, step, state):
            self.pids.append(json.loads((tmp_path / ".run.lock").read_text())["pid"])

    pretrain(cfg, progress=False, callbacks=[LockSeen()])
    assert LockSeen.pids == [os.getpid()] * 2
    assert not (tmp_path / ".run.lock").exists() and (tmp_path / "summary.json").exists()


def test_a_folder_the_run_cannot_write_into_is_named_with_the_fix(tmp_path, monkeypatch):
    import errno
    from pathlib import Path

    from anysat_lite.train.rundir import run_lock

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "write_text", read_only)
    with pytest.raises(
        RunDirError,
        match=r"cannot write into .* \(Read-only file system\); make it writable or choose another folder "
        r"\(--set train.out_dir=...\)",
    ):
        with run_lock(tmp_path):
            pass
