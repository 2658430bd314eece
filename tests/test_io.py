"""wtal._io: atomic writes keep old or new content whole, with the permissions open() would give."""
import os

import pytest

from wtal._io import atomic_write, sha256_file, write_json_atomic


def test_atomic_write_permissions_follow_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_json_atomic(tmp_path / "a" / "report.json", {"x": 1})
    finally:
        os.umask(old)
    assert path.read_text() == '{\n "x": 1\n}\n'
    assert path.stat().st_mode & 0o777 == 0o644


def test_atomic_write_failure_keeps_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write(path, b"old")

    def broken(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, broken)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_sha256_file_known_digest(tmp_path):
    path = atomic_write(tmp_path / "abc", "abc")
    assert sha256_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
