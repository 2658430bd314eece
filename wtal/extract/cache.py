"""Content-addressed feature cache.

Layout of a cache directory::

    wtal-cache.json          format marker
    entries/<key>.npy        (T, D) float32 features of one video under one set of settings
    entries/<key>.json       its record: video_id, status ok|failed, reason, key, created, shape,
                             sha256 of the .npy, settings, source path
    manifest.json            {"videos": {video_id: key}}: what the last extraction of each video
                             produced; readers and `gc` follow it

A key is the hash of the video's bytes and of every setting that changes its features, so
re-running with other settings computes new entries and leaves the old ones for `gc`. Entries are
written by workers (temporary file + rename, features before record: a record with status ok
always has its array); only the driver rewrites the manifest, under a file lock.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from wtal.errors import WtalError

MARKER = "wtal-cache.json"
FORMAT = "wtal-cache-v1"


class CacheError(WtalError, ValueError):
    """A cache directory or entry that cannot be used; names the file and field."""


def is_cache(path: str | os.PathLike) -> bool:
    return (Path(path) / MARKER).is_file()


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def entry_key(content_hash: str, settings: dict[str, Any]) -> str:
    """The key of one video's features under `settings` (JSON-serialisable, order-free)."""
    blob = json.dumps({"video": content_hash, "settings": settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _atomic_write_bytes(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_write_json(path: Path, data: Any) -> None:
    _atomic_write_bytes(path, lambda f: f.write(json.dumps(data, indent=1, sort_keys=True).encode()))


class FeatureCache:
    """A feature cache directory (created on first use with `create=True`)."""

    def __init__(self, root: str | os.PathLike, create: bool = False):
        self.root = Path(root)
        if create:
            (self.root / "entries").mkdir(parents=True, exist_ok=True)
            if not is_cache(self.root):
                _atomic_write_json(self.root / MARKER, {"format": FORMAT})
        if not is_cache(self.root):
            raise CacheError(f"{self.root}: not a wtal cache (no {MARKER})")
        marker = json.loads((self.root / MARKER).read_text())
        if marker.get("format") != FORMAT:
            raise CacheError(f"{self.root / MARKER}: field 'format' is {marker.get('format')!r}, expected {FORMAT!r}")

    # ------------------------------------------------------------------ entries
    def entry_path(self, key: str) -> Path:
        return self.root / "entries" / f"{key}.npy"

    def record_path(self, key: str) -> Path:
        return self.root / "entries" / f"{key}.json"

    def read_record(self, key: str) -> dict[str, Any] | None:
        path = self.record_path(key)
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return None

    def has_ok(self, key: str) -> bool:
        """True when `key` holds a finished, successful entry."""
        record = self.read_record(key)
        return bool(record and record.get("status") == "ok" and self.entry_path(key).exists())

    def put(self, key: str, video_id: str, features: np.ndarray, settings: dict[str, Any], source: str) -> dict[str, Any]:
        """Store features atomically, then their record; returns the record."""
        features = np.ascontiguousarray(features, dtype=np.float32)
        path = self.entry_path(key)
        _atomic_write_bytes(path, lambda f: np.save(f, features))
        record = {
            "video_id": video_id, "key": key, "status": "ok", "reason": "", "created": now_iso(),
            "shape": list(features.shape), "sha256": file_sha256(path), "settings": settings, "source": source,
        }
        _atomic_write_json(self.record_path(key), record)
        return record

    def put_failure(self, key: str, video_id: str, reason: str, settings: dict[str, Any], source: str) -> dict[str, Any]:
        """Record that a video failed (no array); a later run retries it."""
        record = {
            "video_id": video_id, "key": key, "status": "failed", "reason": reason.splitlines()[0] if reason else "",
            "created": now_iso(), "shape": None, "settings": settings, "source": source,
        }
        _atomic_write_json(self.record_path(key), record)
        return record

    def load(self, key: str) -> np.ndarray:
        return np.load(self.entry_path(key), allow_pickle=False)

    # ----------------------------------------------------------------- manifest
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.root / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read_manifest(self) -> dict[str, Any]:
        path = self.root / "manifest.json"
        if not path.exists():
            return {"videos": {}}
        try:
            manifest = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise CacheError(f"{path}: invalid JSON ({exc.msg})") from None
        if not isinstance(manifest.get("videos"), dict):
            raise CacheError(f"{path}: field 'videos' must be an object")
        return manifest

    def current(self, include_failed: bool = False) -> dict[str, str]:
        """video_id -> key of the latest extraction of each video (successful ones by default)."""
        videos = self._read_manifest()["videos"]
        if include_failed:
            return dict(videos)
        return {vid: key for vid, key in videos.items() if self.has_ok(key)}

    def update_manifest(self, mapping: dict[str, str]) -> None:
        """Point each video id at its newest key (read-modify-write under the lock)."""
        with self._locked():
            manifest = self._read_manifest()
            manifest["videos"].update(mapping)
            manifest["updated"] = now_iso()
            _atomic_write_json(self.root / "manifest.json", manifest)

    def snippet_seconds(self) -> float | None:
        """Snippet length recorded in the entries' settings (frames / fps), if consistent."""
        values = set()
        for key in self.current().values():
            record = self.read_record(key) or {}
            s = record.get("settings", {})
            if "fps" in s and "snippet_frames" in s:
                values.add(s["snippet_frames"] / s["fps"])
        if len(values) > 1:
            raise CacheError(f"{self.root}: entries mix snippet lengths {sorted(values)}; export them separately")
        return values.pop() if values else None

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
            if file_sha256(path) != record.get("sha256"):
                problems.append(f"{vid}: {path}: checksum differs from record field 'sha256'")
                continue
            try:
                shape = list(np.load(path, mmap_mode="r", allow_pickle=False).shape)
            except Exception as exc:
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
        (out / "meta.json").write_text(json.dumps(meta, indent=1))
        return len(current)

    def gc(self, dry_run: bool = False) -> tuple[int, int]:
        """Remove entries and temporary files no longer referenced by the manifest.

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
        return removed, freed
