"""Writing a file the user will keep: all of it or none of it.

:func:`atomic_write` writes to a temporary file in the destination's folder and renames it over the
destination only once the write has succeeded, so an interrupted or failed write (a full disk, a
crash, Ctrl-C) leaves the previous file as it was and no half-written one.  A write the disk or
the file system refuses is one line naming the file, the reason and what to do
(:class:`~.errors.UserError`); any other error of the writer passes through unchanged.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

from .errors import UserError

__all__ = ["atomic_write", "write_text_atomic"]

# torch.save reports a failed write (a full disk) as a RuntimeError with one of these in its message
_TORCH_WRITE_FAILURES = ("unexpected pos", "file write failed", "PytorchStreamWriter failed")
_FULL = (errno.ENOSPC, errno.EDQUOT)
_FORBIDDEN = (errno.EACCES, errno.EPERM, errno.EROFS)
_NEARLY_FULL = 2**20  # bytes: less free space than this when a write failed means the disk was full
_BAD_PATH = (errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.ELOOP, errno.EEXIST)


def _os_error_code(e: BaseException) -> int | None:
    """The errno of ``e``: an ``OSError``'s, or the ``(os error N)`` a Rust writer (safetensors) puts in its message."""
    if isinstance(e, OSError):
        return e.errno
    m = re.search(r"\(os error (\d+)\)", str(e))
    return int(m.group(1)) if m else None


def _refused_write(e: BaseException) -> bool:
    """Whether ``e`` is the file system refusing the write (not an error of the writer's own)."""
    if isinstance(e, RuntimeError) and any(s in str(e) for s in _TORCH_WRITE_FAILURES):
        return True
    return _os_error_code(e) in _FULL + _FORBIDDEN + _BAD_PATH


def _free_bytes(path: Path) -> int | None:
    """Free space on the disk of ``path``'s nearest existing folder (``None`` if unknown)."""
    for folder in path.parents:
        if folder.exists():
            try:
                return shutil.disk_usage(folder).free
            except OSError:
                break
    return None


def _advice(path: Path, e: BaseException, full: bool) -> str:
    """What to do about a write ``e`` refused, by its cause (measured once the temporary file is gone)."""
    code = _os_error_code(e)
    if full or code in _FULL or isinstance(e, RuntimeError):
        free = _free_bytes(path)
        return (
            f"{'?' if free is None else f'{free / 2**20:.0f}'} MiB free on its disk: free some space or write elsewhere"
        )
    if code in _FORBIDDEN:
        return "this process may not write there: choose a folder you can write to"
    return "check the path, or write elsewhere"


def _temporary_beside(path: Path) -> Path:
    """A new empty file in ``path``'s folder, with ``path``'s suffix (writers read the format from it).

    Created with mode 0o666 less the umask, as ``open()`` creates files (``mkstemp`` would give 0o600).
    """
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{path.suffix}")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path))


def atomic_write(path: str | Path, write: Callable[[str], object]) -> None:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it to ``path``.

    The folder is created if missing; a symbolic link is followed (the file it points to is replaced);
    an existing file keeps its permissions.
    """
    path = Path(path)
    tmp = None
    try:
        if path.is_symlink():
            try:
                path = path.resolve(strict=True)
            except RuntimeError as loop:  # Python < 3.13 reports a symlink loop as a RuntimeError
                raise OSError(errno.ELOOP, str(loop)) from None
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temporary_beside(path)
        if path.exists():
            try:
                os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
            except OSError:  # some network file systems refuse chmod: keep the default mode
                pass
        mode = stat.S_IMODE(os.stat(tmp).st_mode)
        write(str(tmp))
        if stat.S_IMODE(os.stat(tmp).st_mode) != mode:  # a writer that made its own file (safetensors: 0o600)
            with contextlib.suppress(OSError):
                os.chmod(tmp, mode)
        os.replace(tmp, path)
    except Exception as e:
        # a full disk makes some writers fail with their own words (NetCDF: "HDF error"): read it at the failure
        free = _free_bytes(path) if tmp is not None else None
        full = free is not None and free < _NEARLY_FULL
        if not (_refused_write(e) or full):
            raise  # the writer's own error, not the file system's
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)  # before the free space is measured for the message
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"could not write {path} ({reason}); {_advice(path, e, full)} (the previous file, if any, is unchanged)"
        ) from e
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` with :func:`atomic_write`."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def sha256_of(path: str | Path) -> str:
    """The SHA-256 of a file's bytes (hex), read in 16 MiB chunks: names exactly which checkpoint a result is of."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()
