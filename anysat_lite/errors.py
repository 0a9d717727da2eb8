"""The one exception type for user mistakes.

A :class:`UserError` message is one line that names what was wrong, what was expected, what
was received and what to do.  The command line prints it without a traceback (exit code 2;
``--debug`` or ``ANYSAT_LITE_DEBUG=1`` shows the traceback).  It subclasses ``ValueError``,
so code that caught ``ValueError`` keeps working.  :func:`check_output_file`, :func:`check_output_files`,
:func:`check_output_folder` and :func:`check_device` are the checks the commands run, before any work, on
what they will write and on ``--device``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = [
    "UserError",
    "check_output_file",
    "check_output_files",
    "check_output_folder",
    "remove_empty_created_folders",
    "check_device",
    "not_utf8",
    "yaml_problem",
    "UnknownNameError",
    "MissingFileError",
    "did_you_mean",
]


class UserError(ValueError):
    """A mistake in the user's input (command line, config, files, tensors), with the fix in the message."""


class UnknownNameError(UserError, KeyError):
    """A name that no registry holds (preset, model size, sensor, config key); also a ``KeyError``, as before."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named that is not there; also a ``FileNotFoundError``, as before."""

    def __str__(self) -> str:  # the message alone, without OSError's errno formatting
        return str(self.args[0])


def did_you_mean(name, choices, cutoff: float = 0.6) -> str:
    """``"did you mean 'tiny'? "`` for the choice closest to ``name`` (case ignored), or ``""``."""
    if not isinstance(name, str):
        return ""
    lower = {str(c).lower(): c for c in choices}
    close = difflib.get_close_matches(name.lower(), list(lower), n=1, cutoff=cutoff)
    return f"did you mean {lower[close[0]]!r}? " if close else ""


def check_output_file(option: str, path: str | Path, force: bool, replace: str = "--force") -> None:
    """Refuse the output file ``path`` (given with ``option``, e.g. ``--out``) before any work.

    Refused: a file that exists (unless ``force``; ``replace`` names how to ask for that, e.g.
    ``overwrite=True`` in Python), a folder in its place, and a file where its path needs a folder.
    A missing folder is fine: the command creates it when it writes.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path}: expected a file name, got a folder; name a file in it")
    if path.exists() and not force:
        raise UserError(f"{option} {path}: the file exists; write elsewhere, or replace it with {replace}")
    for parent in path.parents:  # the nearest part of the path that exists must be a folder
        if parent.exists():
            if not parent.is_dir():
                raise UserError(
                    f"{option} {path}: {parent} is a file, expected a folder; choose a path whose folders are folders"
                )
            break
    _check_writable(option, path, path.parent)


def check_output_files(
    option: str,
    folder: str | Path,
    names: Iterable[str],
    force: bool,
    writer: str,
    note: str = "",
    unchanged: Callable[[Path], bool] | None = None,
) -> None:
    """Refuse, before any work, the files ``names`` that a command writes in the output folder ``folder``
    (given with ``option``, e.g. ``--out``).

    Refused: a folder where one of the files goes, and, unless ``force``, a file that exists, except one
    for which ``unchanged(path)`` is true (writing it again would change nothing).  ``writer`` says, in
    the message, what would replace the file (``"the probes"``; ``{name}`` stands for the file's name),
    ``note`` what the file that exists is (``" (an executed notebook)"``).
    """
    folder, flag = Path(folder), option.split()[0]
    for name in names:
        path = folder / name
        if path.is_dir():
            raise UserError(
                f"{option} {folder}: {path} is a folder, expected a file or nothing ({writer.format(name=name)} "
                f"would write that file); write elsewhere with {flag} DIR, or move that folder"
            )
        if path.exists() and not force and not (unchanged is not None and unchanged(path)):
            raise UserError(
                f"{option} {folder}: {path} exists{note} and {writer.format(name=name)} would replace it; write "
                f"elsewhere with {flag} DIR, or replace it with --force"
            )


def check_output_folder(option: str, path: str | Path) -> None:
    """Refuse the output folder ``path`` (given with ``option``) before any work: a file in its place, or a
    folder this process cannot write in.  A missing folder is created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path}: expected a folder, got a file; name a folder (it is created if missing)")
    _check_writable(option, path, path)


CREATED_FOLDERS: list[Path] = []
"""Folders the checks created, deepest last: :func:`remove_empty_created_folders` takes back those a failed command
left empty."""


def remove_empty_created_folders() -> None:
    """Remove the folders the checks created that are still empty (the command line calls it when a command
    fails, so that a refused or failed run leaves no empty output folder behind)."""
    while CREATED_FOLDERS:
        folder = CREATED_FOLDERS.pop()
        try:
            folder.rmdir()  # only an empty folder
        except OSError:
            pass


def _check_writable(option: str, path: Path, folder: Path) -> None:
    """Create ``folder`` if missing and check that a file can be created in it (permissions, read-only disks)."""
    import tempfile

    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        CREATED_FOLDERS.extend(reversed(missing))
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise UserError(
            f"{option} {path}: cannot write in {folder} ({reason}); choose a folder you can write to"
        ) from None


def check_device(option: str, name):
    """The ``torch.device`` that ``name`` (given with ``option``: a string or a ``torch.device``) names;
    ``None``, ``""`` or ``"auto"``: cuda when available, else cpu.

    Refused: a name other than cpu, cuda or cuda:N (or mps, Apple's GPU, which the notebooks' ``DEVICE``
    offers), and a GPU this machine does not have.
    """
    import torch  # here, so that importing this module stays light

    name = None if name in (None, "", "auto") else str(name)
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise UserError(f"{option} mps: this machine has no MPS (Apple GPU) device; use {option} cpu")
        return torch.device("mps")
    if name != "cpu" and not re.fullmatch(r"cuda(:\d+)?", name):
        raise UserError(f"{option} {name}: expected cpu, cuda or cuda:N (N: the GPU's number); e.g. {option} cuda")
    if name.startswith("cuda"):
        n, index = torch.cuda.device_count(), int(name.partition(":")[2] or 0)
        if index >= n:
            have = f"{n} CUDA device(s), cuda:0 to cuda:{n - 1}; choose one of them or" if n else "no CUDA device; use"
            raise UserError(f"{option} {name}: this machine has {have} {option} cpu")
    return torch.device(name)


def not_utf8(what: str, error: UnicodeDecodeError, fix: str) -> str:
    """The message for a file ``what`` (e.g. ``config file PATH``) that is not UTF-8 text: the byte, where, ``fix``."""
    return f"{what}: expected UTF-8 text, got byte {error.object[error.start]:#04x} at position {error.start}; {fix}"


def yaml_problem(e: Exception) -> str:
    """``"expected ',' or ']', but got '<stream end>' (line 1, column 24)"`` from a PyYAML error, for a message."""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    mark = getattr(e, "problem_mark", None)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else problem
