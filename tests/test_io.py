"""wtal._io: atomic writes keep old or new content whole, with the permissions open() would give;
torch files load as dicts of safe values or fail naming file and field."""
import os
from fractions import Fraction

import pytest

from wtal._io import atomic_write, load_torch_dict, sha256_file, write_json_atomic
from wtal.errors import WtalError


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


class LoadError(WtalError, ValueError):
    """The error class a reader passes to load_torch_dict."""


def test_load_torch_dict_returns_the_dict_and_names_file_and_field_when_unusable(tmp_path):
    import torch

    good = tmp_path / "good.pt"
    torch.save({"a": torch.arange(3), "b": 2.5}, good)
    payload = load_torch_dict(good, "heads", LoadError, required=("a", "b"))
    assert payload["b"] == 2.5 and torch.equal(payload["a"], torch.arange(3))

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:40])
    (tmp_path / "text.pt").write_text("a = 1\n")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    torch.save({"a": Fraction(1, 2)}, tmp_path / "object.pt")
    cases = [
        ("absent.pt", "heads: no such file"),
        ("truncated.pt", "heads: not a readable torch file ("),
        ("text.pt", "heads: not a readable torch file ("),
        ("list.pt", "heads: expected a dict, got list"),
        ("object.pt", "heads: not a readable torch file (it pickles fractions.Fraction, not only tensors and "
                      "plain values, so loading refuses it; keep tensors)"),
        ("good.pt", "heads: missing field(s) c, d"),
    ]
    for name, message in cases:
        with pytest.raises(LoadError) as err:
            load_torch_dict(tmp_path / name, "heads", LoadError, required=("a", "c", "d"), hint="; keep tensors")
        assert str(err.value).startswith(f"{tmp_path / name}: ") and message in str(err.value), name
        assert name == "object.pt" or "pickles" not in str(err.value), name
