"""Files the user keeps are written all at once or not at all (anysat_lite/files.py)."""

import errno
import os
from pathlib import Path

import pytest

from anysat_lite.errors import UserError
from anysat_lite.files import atomic_write, write_text_atomic


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary_one(tmp_path):
    path = tmp_path / "summary.json"
    write_text_atomic(path, '{"old": 1}')

    def half_then_full_disk(tmp):
        Path(tmp).write_text('{"new": ')
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(UserError) as e:
        atomic_write(path, half_then_full_disk)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"could not write {path} ([Errno 28] No space left on device); ")
    assert "MiB free on its disk: free some space or write elsewhere (the previous file, if any, is unchanged)" in msg
    assert path.read_text() == '{"old": 1}' and sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_torch_save_failures_are_one_line_too_and_other_errors_pass_through(tmp_path):
    def torch_like(tmp):  # what torch.save raises when the disk fills mid-write
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0\nmore")

    with pytest.raises(UserError, match=r"could not write .*last.pt \(\[enforce fail .* vs 0\); \d+ MiB free"):
        atomic_write(tmp_path / "last.pt", torch_like)
    with pytest.raises(KeyError):  # a bug in the writer is not a disk problem
        atomic_write(tmp_path / "x.json", lambda tmp: {}["missing"])

    def cuda_failure(tmp):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    with pytest.raises(RuntimeError, match="CUDA error"):  # nor is any other RuntimeError
        atomic_write(tmp_path / "x.pt", cuda_failure)
    assert list(tmp_path.iterdir()) == []


def test_a_refused_write_names_the_cause(tmp_path):
    def refused(tmp):
        raise PermissionError(errno.EACCES, "Permission denied")

    with pytest.raises(UserError, match=r"\(\[Errno 13\] Permission denied\); this process may not write there"):
        atomic_write(tmp_path / "a.json", refused)
    (tmp_path / "afile").write_text("mine")
    with pytest.raises(UserError, match=r"could not write .*afile/x.json \(.*\); check the path, or write elsewhere"):
        write_text_atomic(tmp_path / "afile" / "x.json", "{}")  # its folder is a file
    assert (tmp_path / "afile").read_text() == "mine"


def test_written_files_get_the_mode_of_an_ordinary_new_file_and_keep_their_own(tmp_path):
    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "sub" / "a.md", "x")  # the folder is created
    finally:
        os.umask(old)
    assert (tmp_path / "sub" / "a.md").stat().st_mode & 0o777 == 0o644  # mkstemp alone gives 0o600
    os.chmod(tmp_path / "sub" / "a.md", 0o600)
    write_text_atomic(tmp_path / "sub" / "a.md", "y")
    assert (tmp_path / "sub" / "a.md").stat().st_mode & 0o777 == 0o600


def test_a_symbolic_link_is_followed_not_replaced(tmp_path):
    (tmp_path / "README.md").write_text("old")
    (tmp_path / "link.md").symlink_to(tmp_path / "README.md")
    write_text_atomic(tmp_path / "link.md", "new")
    assert (tmp_path / "link.md").is_symlink() and (tmp_path / "README.md").read_text() == "new"


def test_the_temporary_file_keeps_the_suffix_that_writers_read_the_format_from(tmp_path):
    seen = []
    atomic_write(tmp_path / "probe_results.png", lambda tmp: (seen.append(tmp), Path(tmp).write_bytes(b"png")))
    assert seen[0].endswith(".png") and Path(seen[0]).parent == tmp_path
    assert (tmp_path / "probe_results.png").read_bytes() == b"png"


def test_a_symlink_loop_and_a_missing_link_target_are_one_line(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(UserError, match=r"could not write .*a \(.*\); check the path, or write elsewhere"):
        write_text_atomic(tmp_path / "a", "x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere" / "x.md")
    with pytest.raises(UserError, match=r"could not write .*dangling"):
        write_text_atomic(tmp_path / "dangling", "x")


def test_safetensors_files_get_the_same_mode_and_its_full_disk_is_one_line(tmp_path):
    import torch
    from safetensors.torch import save_file

    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "enc.safetensors", lambda tmp: save_file({"w": torch.zeros(2)}, tmp))
    finally:
        os.umask(old)
    assert (tmp_path / "enc.safetensors").stat().st_mode & 0o777 == 0o644  # safetensors alone gives 0o600

    def rust_full(tmp):  # what safetensors raises when the disk fills
        raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")

    with pytest.raises(UserError, match=r"could not write .*x.safetensors \(Error while .*\); \d+ MiB free on its"):
        atomic_write(tmp_path / "x.safetensors", rust_full)


def test_a_writer_failing_in_its_own_words_on_a_full_disk_is_named_a_full_disk(tmp_path, monkeypatch):
    import anysat_lite.files as files

    def netcdf_full(tmp):  # NetCDF's words when the disk fills; the disk has 2 kB left at that moment
        monkeypatch.setattr(files, "_free_bytes", lambda path: 2048)
        raise RuntimeError("NetCDF: HDF error")

    with pytest.raises(UserError, match=r"could not write .*e.nc \(NetCDF: HDF error\); 0 MiB free on its disk: free"):
        atomic_write(tmp_path / "e.nc", netcdf_full)
    monkeypatch.undo()
    with pytest.raises(RuntimeError, match="NetCDF: HDF error"):  # with room on the disk it is the writer's error
        atomic_write(tmp_path / "e.nc", lambda tmp: (_ for _ in ()).throw(RuntimeError("NetCDF: HDF error")))
    assert list(tmp_path.iterdir()) == []
