"""Small file helpers every writer and reader shares: atomic writes, file hashing, safe loading.

`atomic_write` writes to a temporary file in the target's folder, fsyncs it and renames it over
the target, so a reader (or a crash) sees either the old file or the whole new one, never a part;
two writers never share a temporary name. The new file gets the permissions a plain `open`
would give it (0666 less the umask), not `mkstemp`'s owner-only 0600, so caches and reports on
shared storage stay readable by the other users of a cluster.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Sequence, Union

Content = Union[bytes, str, Callable[[BinaryIO], Any]]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, content: Content) -> Path:
    """Write `content` (bytes, text, or a callback given the open binary file) to `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode() if isinstance(content, str) else content)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, data: Any, indent: int | None = 1, sort_keys: bool = False) -> Path:
    """`atomic_write` of `data` as JSON (UTF-8, trailing newline)."""
    return atomic_write(path, json.dumps(data, indent=indent, sort_keys=sort_keys) + "\n")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (streamed, constant memory)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# ------------------------------------------------------------------ readers' shared checks
PICKLE_REFUSAL = (
    "holds object arrays, which numpy can only read by unpickling, and unpickling a file can execute "
    "arbitrary code; pass allow_pickle=True (CLI: --allow-pickle) only for files from a source you trust"
)


def load_npy(path: str | os.PathLike, allow_pickle: bool, error: type[Exception], hint: str = "") -> Any:
    """`np.load` of a possibly pickled `.npy`, refusing pickles unless allowed.

    Any failure is `error("<path>: field 'format': ...")`; `hint` is appended to the refusal.
    """
    import numpy as np

    try:
        return np.load(path, allow_pickle=allow_pickle)
    except ValueError as exc:
        if not allow_pickle and "allow_pickle" in str(exc):
            raise error(f"{path}: field 'format': {PICKLE_REFUSAL}{hint}") from None
        raise error(f"{path}: field 'format': unreadable .npy ({exc})") from None
    except Exception as exc:  # truncated pickles raise EOFError, UnpicklingError, ...
        raise error(f"{path}: field 'format': unreadable .npy ({exc})") from None


def load_torch_dict(path: str | os.PathLike, what: str, error: type[Exception], required: Sequence[str] = (),
                    hint: str = "") -> dict:
    """The dict in a torch file, loaded with `weights_only=True` (tensors and plain values only).

    A missing, unreadable or non-dict file, or one without a `required` key, is
    `error("<path>: <what>: ...")`; `what` names the file's role, `hint` is appended to the
    refusal of pickled objects. Checking the fields' values is the caller's part.
    """
    import torch

    if not os.path.isfile(path):
        raise error(f"{path}: {what}: no such file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for files that are no (safe) torch file
        text = str(exc).strip()
        pickled = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        detail = re.search(r"WeightsUnpickler error:\s*(\S.*)", text)  # why weights_only refused it
        if pickled:
            reason = f"it pickles {pickled[1]}, not only tensors and plain values, so loading refuses it{hint}"
        else:
            line = detail[1] if detail else (text.splitlines() or ["unreadable"])[0]
            reason = f"{type(exc).__name__}: {line.split('. ')[0][:200]}"
        raise error(f"{path}: {what}: not a readable torch file ({reason})") from None
    if not isinstance(payload, dict):
        raise error(f"{path}: {what}: expected a dict, got {type(payload).__name__}")
    missing = [key for key in required if key not in payload]
    if missing:
        raise error(f"{path}: {what}: missing field(s) {', '.join(missing)}")
    return payload


def parse_number(value: Any, path: Any, where: str, error: type[Exception], what: str = "a number") -> float:
    """A finite float from a JSON number or a numeric string, else `error("<path>: <where>: ...")`."""
    import math

    import numpy as np

    if isinstance(value, bool) or not isinstance(value, (int, float, str, np.number)):
        raise error(f"{path}: {where}: expected {what}, got {value!r:.60}")
    try:
        number = float(value)
    except ValueError:
        raise error(f"{path}: {where}: expected {what}, got {value!r:.60}") from None
    if not math.isfinite(number):
        raise error(f"{path}: {where}: expected a finite number, got {value!r}")
    return number


def as_text(value: Any) -> str:
    """A string from numpy's bytes or str array items (W-TALC files hold either)."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
