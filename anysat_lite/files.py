"""Writing a file the user will keep: all of it or none of it.

:func:`atomic_write` writes to a temporary file in the destination's folder and renames it over the
destination only once the write has succeeded, so an interrupted or failed write (a full disk, a
crash, Ctrl-C) leaves the previous file as it was and no half-written one.  A write that fails on
the disk is one line naming the file, the reason and the space left (:class:`~.errors.UserError`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import UserError

__all__ = ["atomic_write", "write_text_atomic"]


def _default_mode() -> int:
    """``0o666`` less the process umask: the mode ``open()`` gives a new file (``mkstemp`` gives 0o600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | Path, write: Callable[[str], object]) -> None:
    """Call ``write(tmp)`` on a temporary path beside ``path`` (same suffix, so writers that read the
    format from it work), then rename it to ``path``.  The folder is created if missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        os.chmod(tmp, _default_mode())
        write(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError
        free = shutil.disk_usage(path.parent).free / 2**20
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"could not write {path} ({reason}); {free:.0f} MiB free on its disk: free some space or write "
            "elsewhere (the previous file, if any, is unchanged)"
        ) from e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` with :func:`atomic_write`."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
