"""Test-only wrappers around ``pretrain``: a crash after a step, a non-finite loss on one process.

Run as a script, alone or as one process of a group (``RANK``/``WORLD_SIZE`` in the environment)::

    python tests/train_helpers.py --config cpu-demo --set train.steps=12 [--set ...] [--resume]

Environment variables read here (never by the package):

* ``ANYSAT_LITE_TEST_KILL_AFTER=N``: SIGKILL this process once step ``N`` is done (logged and
  checkpointed), as a crash or a pre-empted job would.
* ``ANYSAT_LITE_TEST_NAN_AT=R:N``: the loss of process ``R`` is NaN at step ``N``; each process
  then writes ``<out_dir>/error-rank<r>.txt`` (the error it stopped with) and exits with code 3.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

KILL_ENV = "ANYSAT_LITE_TEST_KILL_AFTER"
NAN_ENV = "ANYSAT_LITE_TEST_NAN_AT"


class KillAfter:
    """Callback: SIGKILL the process at the end of step ``step``."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, step, state):
        if step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class NanOnRank:
    """Make the loss of process ``rank`` NaN at step ``step`` by wrapping ``JEPA.forward`` in this process."""

    def __init__(self, rank: int, step: int, folder: Path):
        from anysat_lite.jepa.model import JEPA

        self.rank, self.step, self.folder, self.current = rank, step, folder, -1
        forward = JEPA.forward

        def poisoned(model, *args, **kwargs):
            out = forward(model, *args, **kwargs)
            if model.training and self.current == self.step and int(os.environ.get("RANK", "0")) == self.rank:
                (self.folder / "nan-injected.txt").write_text(str(time.time()))
                out = dict(out, loss=out["loss"] * float("nan"))
            return out

        JEPA.forward = poisoned

    def on_step_start(self, step, state):
        self.current = step


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="cpu-demo")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--resume", action="store_true")
    args = p.parse_args(argv)
    from anysat_lite.config import get_config
    from anysat_lite.train import pretrain
    from anysat_lite.train.loop import NonFiniteLossError

    cfg = get_config(args.config, args.set)
    callbacks = []
    if os.environ.get(KILL_ENV):
        callbacks.append(KillAfter(int(os.environ[KILL_ENV])))
    if os.environ.get(NAN_ENV):
        rank, step = (int(v) for v in os.environ[NAN_ENV].split(":"))
        callbacks.append(NanOnRank(rank, step, Path(cfg.train.out_dir)))
    try:
        pretrain(cfg, resume=args.resume, progress=False, callbacks=callbacks)
    except NonFiniteLossError as e:
        (Path(cfg.train.out_dir) / f"error-rank{os.environ.get('RANK', '0')}.txt").write_text(str(e))
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
