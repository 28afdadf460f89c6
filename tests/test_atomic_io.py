"""The single atomic writer (monai_dpaat.atomic_io) the reports, plots, Grad-CAM outputs and checkpoints share."""

import os

import pytest

from monai_dpaat import atomic_io
from monai_dpaat.atomic_io import atomic_write, atomic_write_bytes, atomic_write_text, fsync_dir


def test_content_and_mode_follow_the_umask(tmp_path):
    old_umask = os.umask(0o022)
    try:
        a = atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01bytes")
        b = atomic_write_text(tmp_path / "b.txt", "héllo")
        c = atomic_write(tmp_path / "c.bin", lambda f: (f.write(b"part1"), f.write(b"part2")))
    finally:
        os.umask(old_umask)
    assert a.read_bytes() == b"\x00\x01bytes"
    assert b.read_text(encoding="utf-8") == "héllo"
    assert c.read_bytes() == b"part1part2"
    assert {oct(os.stat(p).st_mode & 0o777) for p in (a, b, c)} == {oct(0o644)}  # not tempfile's 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.txt", "c.bin"]


def test_replacing_keeps_the_mode_of_the_umask_not_of_the_old_file(tmp_path):
    target = tmp_path / "f"
    atomic_write_text(target, "old")
    os.chmod(target, 0o600)
    old_umask = os.umask(0o022)
    try:
        atomic_write_text(target, "new")
    finally:
        os.umask(old_umask)
    assert target.read_text() == "new" and oct(os.stat(target).st_mode & 0o777) == oct(0o644)


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_a_writer_that_raises_mid_way_leaves_the_old_file_and_no_temporary_file(tmp_path, error):
    target = tmp_path / "model.pt"
    atomic_write_bytes(target, b"old")

    def write(f):
        f.write(b"half of the new")
        f.flush()
        raise error

    with pytest.raises(type(error)):
        atomic_write(target, write)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_a_failing_fsync_propagates_and_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "report.md"
    atomic_write_text(target, "old")

    def broken_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="Input/output error"):
        atomic_write_text(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_the_folder_is_synced_after_the_rename(tmp_path, monkeypatch):
    calls = []
    real_replace, real_fsync_dir = os.replace, atomic_io.fsync_dir
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b)))
    monkeypatch.setattr(atomic_io, "fsync_dir", lambda p: (calls.append(("fsync_dir", str(p))), real_fsync_dir(p)))
    atomic_write_text(tmp_path / "x", "x")
    assert calls == ["replace", ("fsync_dir", str(tmp_path))]


def test_temporary_names_are_hidden_unique_and_in_the_same_folder(tmp_path):
    names = {atomic_io.temp_name(tmp_path / "report.md") for _ in range(50)}
    assert len(names) == 50
    assert all(p.parent == tmp_path and p.name.startswith(".report.md.") and p.name.endswith(".tmp") for p in names)


def test_fsync_dir_ignores_folders_that_cannot_be_opened_or_synced(tmp_path, monkeypatch):
    fsync_dir(tmp_path / "missing")  # cannot be opened: a no-op
    fsync_dir(tmp_path)

    def unsupported(fd):
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(os, "fsync", unsupported)
    fsync_dir(tmp_path)  # EINVAL: the file system cannot sync folders

    def io_error(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", io_error)
    with pytest.raises(OSError, match="Input/output error"):
        fsync_dir(tmp_path)
