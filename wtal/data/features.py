"""Readers for snippet-feature folders: wtal caches, plain `<vid>.npy` folders, rgb/ + flow/ splits.

Every reader yields (T, D) float32 arrays, one row per snippet, and knows the snippet length in
seconds (16 frames at 25 fps = 0.64 s unless `meta.json` or the caller says otherwise).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

DEFAULT_SNIPPET_SECONDS = 16 / 25


class FeatureError(ValueError):
    """A feature file or folder that cannot be used; the message names the file and field."""


def _load_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises several types for damaged files
        raise FeatureError(f"{path}: not a readable .npy array ({exc})") from None
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise FeatureError(f"{path}: expected shape (T, D) with T >= 1, got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise FeatureError(f"{path}: expected float features, got dtype {arr.dtype}")
    return arr.astype(np.float32, copy=False)


class FeatureSource:
    """A set of per-video feature arrays addressed by video id."""

    kind = "folder"

    def __init__(self, path: Path, files: dict[str, list[Path]], snippet_seconds: float, fps: float | None):
        self.path = path
        self._files = files
        self.snippet_seconds = snippet_seconds
        self.fps = fps

    def ids(self) -> list[str]:
        return sorted(self._files)

    def __contains__(self, video_id: str) -> bool:
        return video_id in self._files

    def load(self, video_id: str) -> np.ndarray:
        """(T, D) float32 features of one video; split streams are concatenated rgb first."""
        if video_id not in self._files:
            raise FeatureError(f"{self.path}: no features for video {video_id!r}")
        parts = [_load_npy(p) for p in self._files[video_id]]
        if len(parts) > 1:
            lengths = {p.shape[0] for p in parts}
            if len(lengths) != 1:
                names = ", ".join(f"{p} T={a.shape[0]}" for p, a in zip(self._files[video_id], parts))
                raise FeatureError(f"{self.path}: rgb and flow lengths differ for {video_id}: {names}")
        return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]

    @property
    def feature_dim(self) -> int:
        first = self.ids()[0]
        return int(sum(np.load(p, mmap_mode="r").shape[1] for p in self._files[first]))


def _read_meta(folder: Path) -> dict:
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        return {}
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise FeatureError(f"{meta_path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    for key in ("snippet_seconds", "fps"):
        if key in meta and not (isinstance(meta[key], (int, float)) and meta[key] > 0):
            raise FeatureError(f"{meta_path}: field {key!r} must be a positive number, got {meta[key]!r}")
    return meta


def open_features(path: str | Path, snippet_seconds: float | None = None) -> FeatureSource:
    """Open a cache directory, a plain `<vid>.npy` folder or an `rgb/` + `flow/` folder."""
    path = Path(path)
    if not path.is_dir():
        raise FeatureError(f"{path}: features must be a directory (a wtal cache or a folder of <video_id>.npy)")
    from ..extract.cache import FeatureCache, is_cache

    if is_cache(path):
        cache = FeatureCache(path)
        files = {vid: [cache.entry_path(key)] for vid, key in cache.current().items()}
        seconds = snippet_seconds or cache.snippet_seconds() or DEFAULT_SNIPPET_SECONDS
        source = FeatureSource(path, files, seconds, None)
        source.kind = "cache"
    else:
        meta = _read_meta(path)
        seconds = snippet_seconds or meta.get("snippet_seconds", DEFAULT_SNIPPET_SECONDS)
        if (path / "rgb").is_dir() and (path / "flow").is_dir():
            rgb = {p.stem: p for p in (path / "rgb").glob("*.npy")}
            flow = {p.stem: p for p in (path / "flow").glob("*.npy")}
            missing = sorted(set(rgb) ^ set(flow))
            if missing:
                raise FeatureError(f"{path}: rgb/ and flow/ disagree on videos, e.g. {missing[:3]}")
            files = {vid: [rgb[vid], flow[vid]] for vid in rgb}
        else:
            files = {p.stem: [p] for p in path.glob("*.npy")}
        source = FeatureSource(path, files, float(seconds), meta.get("fps"))
    if not source.ids():
        raise FeatureError(f"{path}: no feature files found (expected <video_id>.npy, rgb/ + flow/, or a wtal cache)")
    return source
