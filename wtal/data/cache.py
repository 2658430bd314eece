"""Reading a wtal feature cache: its format marker, entry layout and manifest.

Layout of a cache directory (written by `wtal.extract.cache.FeatureCache`)::

    wtal-cache.json          format marker
    entries/<key>.npy        (T, D) float32 features of one video under one set of settings
    entries/<key>.json       its record: video_id, status ok|failed, reason, key, created, shape,
                             sha256 of the .npy, settings, source path
    manifest.json            {"videos": {video_id: key}}: what the last extraction of each video
                             produced; readers and `gc` follow it

The format lives here, with the other readers, so reading features never imports the
extraction code; the writer subclasses `CacheReader`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from wtal.errors import WtalError

MARKER = "wtal-cache.json"
FORMAT = "wtal-cache-v1"


class CacheError(WtalError, ValueError):
    """A cache directory or entry that cannot be used; names the file and field."""


def is_cache(path: str | os.PathLike) -> bool:
    return (Path(path) / MARKER).is_file()


class CacheReader:
    """A feature cache directory, read only: entries, records and the manifest."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not is_cache(self.root):
            raise CacheError(f"{self.root}: not a wtal cache (no {MARKER})")
        marker = json.loads((self.root / MARKER).read_text())
        if marker.get("format") != FORMAT:
            raise CacheError(f"{self.root / MARKER}: field 'format' is {marker.get('format')!r}, expected {FORMAT!r}")

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
