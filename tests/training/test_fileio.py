import pytest

from training.fileio import atomic_write_bytes, atomic_writer


def test_failed_write_keeps_the_old_file_and_cleans_up(tmp_path):
    target = tmp_path / "model.npz"
    target.write_bytes(b"old and complete")
    with pytest.raises(RuntimeError), atomic_writer(target) as fh:
        fh.write(b"half of the new")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old and complete"
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]


def test_successful_write_replaces_and_creates_parents(tmp_path):
    target = tmp_path / "a" / "b" / "file.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]


def test_written_files_get_the_ordinary_mode(tmp_path):
    import os
    import stat

    atomic_write_bytes(tmp_path / "f", b"x")
    (tmp_path / "g").write_bytes(b"x")
    mode = stat.S_IMODE(os.stat(tmp_path / "f").st_mode)
    assert mode == stat.S_IMODE(os.stat(tmp_path / "g").st_mode)
