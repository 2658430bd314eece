"""Content-addressed feature cache.

The format marker, entries and manifest are laid out as `wtal.data.cache` describes (the
readers' side); the writer adds two files of its own::

    hashes.jsonl             memo of video content hashes, one JSON line per hashed file:
                             {path, size, mtime_ns, inode, sha256}
    .lock                    the cache's file lock

A key is the hash of the video's bytes and of every setting that changes its features, so
re-running with other settings computes new entries and leaves the old ones for `gc`. A video's
hash is remembered by (path, size, mtime in ns, inode): a re-run over an unchanged folder reads
no video bytes, and any change of those four recomputes it.

Several extractions may share one cache at once (two cluster jobs on overlapping folders): every
file is written atomically (temporary file + rename), an entry's features are renamed into place
before its record (a record with status ok always has its array), and publishing an entry, the
manifest's read-modify-write and appends to the hash memo happen under one `filelock` lock, so
the first finished copy of an entry wins and a failure never replaces a finished entry.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import io
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from .._io import atomic_write, sha256_file, write_json_atomic
from ..data.cache import FORMAT, MARKER, CacheError, CacheReader, is_cache

HASHES = "hashes.jsonl"
LOCK_TIMEOUT_S = 600.0
# A file modified this recently may change again within the same mtime tick without its stat
# changing, so its hash is returned but not remembered.
RACY_MTIME_NS = 2_000_000_000
_HASH_FIELDS = {"path": str, "size": int, "mtime_ns": int, "inode": int, "sha256": str}


def entry_key(content_hash: str, settings: dict[str, Any]) -> str:
    """The key of one video's features under `settings` (JSON-serialisable, order-free)."""
    blob = json.dumps({"video": content_hash, "settings": settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


class FeatureCache(CacheReader):
    """A feature cache directory (created on first use with `create=True`); the format is `wtal.data.cache`."""

    def __init__(self, root: str | os.PathLike, create: bool = False):
        if create:
            (Path(root) / "entries").mkdir(parents=True, exist_ok=True)
            if not is_cache(root):
                write_json_atomic(Path(root) / MARKER, {"format": FORMAT}, sort_keys=True)
        super().__init__(root)
        self._hashes: dict[tuple, str] | None = None

    # ------------------------------------------------------------------ entries
    def put(self, key: str, video_id: str, features: np.ndarray, settings: dict[str, Any], source: str) -> dict[str, Any]:
        """Store features atomically, then their record; returns the entry's record.

        When another process (or a video with the same bytes) finished the entry first, its copy is
        kept and its record returned, naming this video.
        """
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(features, dtype=np.float32))
        data = buffer.getvalue()
        record = {
            "video_id": video_id, "key": key, "status": "ok", "reason": "", "created": now_iso(),
            "shape": list(np.shape(features)), "sha256": hashlib.sha256(data).hexdigest(), "settings": settings,
            "source": source,
        }
        with self._locked():
            if self.has_ok(key):
                return self._stored_for(key, video_id, source, record)
            atomic_write(self.entry_path(key), data)
            write_json_atomic(self.record_path(key), record, sort_keys=True)
        return record

    def put_failure(self, key: str, video_id: str, reason: str, settings: dict[str, Any], source: str) -> dict[str, Any]:
        """Record that a video failed (no array); a later run retries it. A finished entry is kept."""
        record = {
            "video_id": video_id, "key": key, "status": "failed", "reason": reason.splitlines()[0] if reason else "",
            "created": now_iso(), "shape": None, "settings": settings, "source": source,
        }
        with self._locked():
            if self.has_ok(key):
                return self._stored_for(key, video_id, source, record)
            write_json_atomic(self.record_path(key), record, sort_keys=True)
        return record

    def _stored_for(self, key: str, video_id: str, source: str, fallback: dict[str, Any]) -> dict[str, Any]:
        """The stored record of `key`, as the record of `video_id` (content-addressed: ids may differ)."""
        return {**(self.read_record(key) or fallback), "video_id": video_id, "source": source}

    def load(self, key: str) -> np.ndarray:
        return np.load(self.entry_path(key), allow_pickle=False)

    # ------------------------------------------------------------- video hashes
    def content_hash(self, path: str | os.PathLike) -> str:
        """sha256 of a video's bytes, remembered in hashes.jsonl by (path, size, mtime_ns, inode).

        A file whose stat changed while it was read, or that was modified in the last
        `RACY_MTIME_NS`, is hashed but not remembered (it may still be being written).
        """
        real = os.path.realpath(path)
        before = os.stat(real)
        ident = (real, before.st_size, before.st_mtime_ns, before.st_ino)
        memo = self._hash_memo()
        if ident in memo:
            return memo[ident]
        digest = sha256_file(real)
        after = os.stat(real)
        settled = time.time_ns() - after.st_mtime_ns > RACY_MTIME_NS
        if settled and (after.st_size, after.st_mtime_ns, after.st_ino) == ident[1:]:
            line = json.dumps({"path": real, "size": ident[1], "mtime_ns": ident[2], "inode": ident[3], "sha256": digest})
            with self._locked(), open(self.root / HASHES, "a+b") as f:
                cut_short = False
                if f.seek(0, os.SEEK_END) > 0:
                    f.seek(-1, os.SEEK_END)
                    cut_short = f.read(1) != b"\n"  # a crash mid-line: that line stays on its own
                f.write((b"\n" if cut_short else b"") + line.encode() + b"\n")
            memo[ident] = digest
        return digest

    def _hash_memo(self) -> dict[tuple, str]:
        """The remembered hashes, read once per FeatureCache; unreadable lines are skipped."""
        if self._hashes is None:
            self._hashes = {}
            for row in self._hash_rows():
                self._hashes[(row["path"], row["size"], row["mtime_ns"], row["inode"])] = row["sha256"]
        return self._hashes

    def _hash_rows(self) -> Iterator[dict[str, Any]]:
        path = self.root / HASHES
        if not path.exists():
            return
        with open(path, "rb") as f:
            for raw in f:
                try:
                    row = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(row, dict) and all(isinstance(row.get(k), t) for k, t in _HASH_FIELDS.items()):
                    yield row

    def _compact_hashes(self) -> None:
        """Keep the memo's lines that still describe a file as it is now (caller holds the lock)."""
        keep: dict[str, str] = {}
        for row in self._hash_rows():
            try:
                st = os.stat(row["path"])
            except OSError:
                continue
            if (st.st_size, st.st_mtime_ns, st.st_ino) == (row["size"], row["mtime_ns"], row["inode"]):
                keep[row["path"]] = json.dumps(row)
        if (self.root / HASHES).exists():
            atomic_write(self.root / HASHES, "".join(line + "\n" for line in keep.values()))
        self._hashes = None

    # ----------------------------------------------------------------- manifest
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The cache's inter-process lock (a `filelock` lock file in the cache folder)."""
        lock = FileLock(self.root / ".lock", timeout=LOCK_TIMEOUT_S)
        try:
            lock.acquire()
        except Timeout:
            raise CacheError(f"{self.root / '.lock'}: still locked after {LOCK_TIMEOUT_S:.0f} s "
                             "(another wtal process holds it)") from None
        try:
            yield
        finally:
            lock.release()

    def update_manifest(self, mapping: dict[str, str]) -> None:
        """Point each video id at its newest key (read-modify-write under the lock)."""
        with self._locked():
            manifest = self._read_manifest()
            manifest["videos"].update(mapping)
            manifest["updated"] = now_iso()
            write_json_atomic(self.root / "manifest.json", manifest, sort_keys=True)

    # ---------------------------------------------------------------- commands
    def records(self) -> list[dict[str, Any]]:
        """Records of the manifest's current entries, sorted by video id."""
        out = []
        for vid, key in sorted(self.current(include_failed=True).items()):
            record = self.read_record(key) or {
                "video_id": vid, "key": key, "status": "failed", "reason": "record missing (interrupted extraction)",
                "created": None, "shape": None,
            }
            out.append(record)
        return out

    def verify(self) -> list[str]:
        """Problems found in the current entries (empty when all is well)."""
        problems = []
        for vid, key in sorted(self.current(include_failed=True).items()):
            record = self.read_record(key)
            if record is None:
                problems.append(f"{vid}: {self.record_path(key)}: record missing or unreadable")
                continue
            if record.get("status") != "ok":
                continue
            path = self.entry_path(key)
            if not path.exists():
                problems.append(f"{vid}: {path}: features missing")
                continue
            if sha256_file(path) != record.get("sha256"):
                problems.append(f"{vid}: {path}: checksum differs from record field 'sha256'")
                continue
            try:
                shape = list(np.load(path, mmap_mode="r", allow_pickle=False).shape)
            except (OSError, ValueError, EOFError) as exc:
                problems.append(f"{vid}: {path}: unreadable ({exc})")
                continue
            if shape != record.get("shape"):
                problems.append(f"{vid}: {path}: shape {shape} differs from record field 'shape' {record.get('shape')}")
        return problems

    def export(self, out_dir: str | os.PathLike) -> int:
        """Copy current successful entries to a plain `<video_id>.npy` folder with meta.json."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        current = self.current()
        for vid, key in current.items():
            shutil.copyfile(self.entry_path(key), out / f"{vid}.npy")
        meta: dict[str, Any] = {"source_cache": str(self.root.resolve())}
        seconds = self.snippet_seconds()
        if seconds:
            meta["snippet_seconds"] = seconds
            fps = {(self.read_record(k) or {}).get("settings", {}).get("fps") for k in current.values()}
            if len(fps) == 1:
                meta["fps"] = fps.pop()
        write_json_atomic(out / "meta.json", meta)
        return len(current)

    def gc(self, dry_run: bool = False) -> tuple[int, int]:
        """Remove entries and temporary files no longer referenced by the manifest, and drop the
        hash memo's lines of files that are gone or changed.

        Returns (files removed, bytes freed).
        """
        with self._locked():
            keep = set(self._read_manifest()["videos"].values())
            removed, freed = 0, 0
            for path in (self.root / "entries").iterdir():
                if path.name.startswith("."):
                    # a temporary file of a running extraction is left alone for an hour
                    if time.time() - path.stat().st_mtime < 3600:
                        continue
                elif path.stem in keep:
                    continue
                freed += path.stat().st_size
                removed += 1
                if not dry_run:
                    path.unlink()
            if not dry_run:
                self._compact_hashes()
        return removed, freed
