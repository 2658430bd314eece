"""Readers for every public snippet-feature layout, behind one `FeatureSource` interface.

Layouts:
- a wtal cache directory (`wtal extract`);
- a plain folder of `<video_id>.npy` arrays (T, D), optionally with `meta.json`;
- a folder split into `rgb/` and `flow/` (one `<video_id>.npy` per stream), concatenated rgb first;
- the BackTAL / ECM folder of `<video_id>.npz`, each holding `feat_spa` (rgb) and `feat_tem` (flow)
  channel-first (1024, T), returned as (T, 2048) rgb first;
- the W-TALC single `.npy` object array (e.g. `Thumos14reduced-I3D-JOINTFeatures.npy`), one (T, D)
  array per video in the order of the annotation folder's `videoname.npy`. It is pickled, so it is
  read only with `allow_pickle=True`.

Every reader yields (T, D) float32 arrays, one row per snippet, and knows each video's time base
(`time_base`: seconds per snippet, frames per second when known, and the rule it came from):

- native-rate layouts (cache, plain and rgb/flow folders, W-TALC): one fixed snippet length, from
  the cache's settings (frames per snippet / fps), `meta.json` (`snippet_seconds`, `fps`), the
  caller, or 16 frames at 25 fps = 0.64 s. A video whose length disagrees with its annotated
  duration by more than one snippet is an error naming the file (`require_lengths`).
- fixed-length layouts (the BackTAL / ECM `.npz`, 750 snippets whatever the video's length): per
  file, `frame_num / fps / T` when the archive holds `frame_num` and `fps`, else `duration / T`
  from its `duration` field, else from the annotated duration. `snippet_seconds` from the caller
  does not apply to them.

Nothing is resampled here (see `wtal.models.sampling` for that).
"""
from __future__ import annotations

import json
import logging
import math
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wtal._io import as_text, load_npy
from wtal.errors import WtalError

log = logging.getLogger(__name__)

DEFAULT_SNIPPET_SECONDS = 16 / 25
DEFAULT_FPS = 25.0
NPZ_TIME_FIELDS = ("frame_num", "fps", "duration")
NPZ_STREAMS = ("feat_spa", "feat_tem")
NPZ_CHANNELS = 1024


class FeatureError(WtalError, ValueError):
    """A feature file or folder that cannot be used; the message names the file and field."""


def _check_array(arr: np.ndarray, where: str) -> np.ndarray:
    """`arr` as (T, D) float32, or a FeatureError naming `where` (file and field)."""
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise FeatureError(f"{where}: expected shape (T, D) with T >= 1, got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise FeatureError(f"{where}: expected float features, got dtype {arr.dtype}")
    return arr.astype(np.float32, copy=False)


def _load_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises several types for damaged files
        raise FeatureError(f"{path}: field 'data': not a readable .npy array ({exc})") from None
    return _check_array(arr, f"{path}: field 'shape'")


def _npy_shape(path: Path) -> tuple[int, ...]:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False).shape
    except Exception as exc:
        raise FeatureError(f"{path}: field 'header': not a readable .npy array ({exc})") from None


@dataclass(frozen=True)
class TimeBase:
    """How one video's snippets map to seconds: snippet i spans [i, i + 1) x seconds_per_snippet.

    `fps` is the source video's frame rate when known (for frame-level CAS upsampling); `rule`
    names where the value came from (recorded in checkpoints).
    """

    seconds_per_snippet: float
    fps: float | None
    rule: str

    @property
    def frames_per_snippet(self) -> float | None:
        return self.seconds_per_snippet * self.fps if self.fps else None


class FeatureSource:
    """A set of per-video feature arrays addressed by video id.

    Subclasses implement `_read` (the validated (T, D) float32 array), `_shape` (its shape, read
    cheaply where the format allows) and `file_of` (where a video's features live, for messages).
    Fixed-length layouts set `fixed_length` and override `time_base`.
    """

    kind = "base"
    fixed_length = False
    time_rule = "native rate"
    extraction: dict | None = None  # a cache's extraction settings (those in its keys)

    def __init__(self, path: Path, video_ids, snippet_seconds: float, fps: float | None):
        self.path = path
        self._ids = set(video_ids)
        self.snippet_seconds = float(snippet_seconds)
        self.fps = fps

    def ids(self) -> list[str]:
        return sorted(self._ids)

    def __contains__(self, video_id: str) -> bool:
        return video_id in self._ids

    def _require(self, video_id: str) -> None:
        if video_id not in self._ids:
            raise FeatureError(f"{self.path}: no features for video {video_id!r}")

    def load(self, video_id: str) -> np.ndarray:
        """(T, D) float32 features of one video."""
        self._require(video_id)
        return self._read(video_id)

    def length(self, video_id: str) -> int:
        """Number of snippets T of one video, without loading the whole array where possible."""
        self._require(video_id)
        return int(self._shape(video_id)[0])

    @property
    def feature_dim(self) -> int:
        return int(self._shape(self.ids()[0])[1])

    def file_of(self, video_id: str) -> str:
        raise NotImplementedError

    def time_base(self, video_id: str, duration: float | None = None) -> TimeBase:
        """Seconds per snippet of one video (`duration`: its annotated duration, if any)."""
        self._require(video_id)
        fps = self.fps
        if fps is None and math.isclose(self.snippet_seconds, DEFAULT_SNIPPET_SECONDS):
            fps = DEFAULT_FPS
        return TimeBase(self.snippet_seconds, fps, self.time_rule)

    def settings(self) -> dict:
        """The feature settings a checkpoint records: layout, time base rule and snippet length."""
        out: dict[str, Any] = {"layout": self.kind, "time_base": "fixed length" if self.fixed_length else self.time_rule,
               "snippet_seconds": None if self.fixed_length else self.snippet_seconds}
        if self.extraction is not None:
            out["extraction"] = self.extraction
        return out

    def _read(self, video_id: str) -> np.ndarray:
        raise NotImplementedError

    def _shape(self, video_id: str) -> tuple[int, int]:
        return self._read(video_id).shape


class NpyFolderSource(FeatureSource):
    """`<vid>.npy` files (one per video, or one per stream concatenated in the given order)."""

    kind = "folder"

    def __init__(self, path: Path, files: dict[str, list[Path]], snippet_seconds: float, fps: float | None):
        super().__init__(path, files, snippet_seconds, fps)
        self._files = files

    def file_of(self, video_id: str) -> str:
        return " + ".join(str(p) for p in self._files[video_id])

    def _read(self, video_id: str) -> np.ndarray:
        paths = self._files[video_id]
        parts = [_load_npy(p) for p in paths]
        if len(parts) == 1:
            return parts[0]
        if len({a.shape[0] for a in parts}) != 1:
            names = ", ".join(f"{p} T={a.shape[0]}" for p, a in zip(paths, parts))
            raise FeatureError(f"{self.path}: rgb and flow lengths differ for {video_id}: {names}")
        return np.concatenate(parts, axis=1)

    def _shape(self, video_id: str) -> tuple[int, int]:
        shapes = [_npy_shape(p) for p in self._files[video_id]]
        for p, shape in zip(self._files[video_id], shapes):
            if len(shape) != 2:
                raise FeatureError(f"{p}: field 'shape': expected shape (T, D), got {shape}")
        return shapes[0][0], sum(s[1] for s in shapes)


class NpzFolderSource(FeatureSource):
    """BackTAL / ECM `<vid>.npz` files with channel-first `feat_spa` (rgb) and `feat_tem` (flow)."""

    kind = "npz"
    fixed_length = True

    def __init__(self, path: Path, files: dict[str, Path], snippet_seconds: float, fps: float | None):
        super().__init__(path, files, snippet_seconds, fps)
        self._files = files
        self._times: dict[str, dict[str, float]] = {}

    def _time_fields(self, video_id: str) -> dict[str, float]:
        """The archive's scalar `frame_num`, `fps` and `duration` fields that are present."""
        if video_id not in self._times:
            file = self._files[video_id]
            fields = {}
            with self._open(file) as archive:
                for key in NPZ_TIME_FIELDS:
                    if key not in archive.files:
                        continue
                    value = np.asarray(archive[key])
                    if value.size != 1 or not np.issubdtype(value.dtype, np.number):
                        raise FeatureError(f"{file}: field {key!r}: expected one number, got {value.dtype} {value.shape}")
                    number = float(value.reshape(-1)[0])
                    if not (number > 0 and math.isfinite(number)):
                        raise FeatureError(f"{file}: field {key!r} must be a positive number, got {number!r}")
                    fields[key] = number
            self._times[video_id] = fields
        return self._times[video_id]

    def time_base(self, video_id: str, duration: float | None = None) -> TimeBase:
        """frame_num / fps / T, else the file's duration / T, else the annotated duration / T."""
        self._require(video_id)
        fields, T = self._time_fields(video_id), self.length(video_id)
        fps = fields.get("fps")
        if "frame_num" in fields and fps:
            return TimeBase(fields["frame_num"] / fps / T, fps, "npz frame_num/fps")
        if "duration" in fields:
            return TimeBase(fields["duration"] / T, fps, "npz duration")
        if duration is not None and duration > 0:
            return TimeBase(duration / T, fps, "annotated duration")
        raise FeatureError(
            f"{self._files[video_id]}: fields 'frame_num'/'fps' and 'duration' missing and no annotated duration: "
            f"a fixed-length layout ({T} snippets) needs one of them to place its snippets in seconds"
        )

    def file_of(self, video_id: str) -> str:
        return str(self._files[video_id])

    def _open(self, file: Path):
        if not zipfile.is_zipfile(file):
            raise FeatureError(f"{file}: field 'archive': not a .npz (zip) archive")
        try:
            return np.load(file, allow_pickle=False)
        except Exception as exc:
            raise FeatureError(f"{file}: field 'archive': unreadable .npz ({exc})") from None

    def _check_streams(self, file: Path, shapes: dict[str, tuple[int, ...]]) -> tuple[int, int]:
        """Validate the two streams' shapes; returns (T, D) of the concatenation."""
        for key, shape in shapes.items():
            if len(shape) != 2 or shape[0] != NPZ_CHANNELS or shape[1] == 0:
                raise FeatureError(
                    f"{file}: field {key!r}: expected channel-first shape ({NPZ_CHANNELS}, T) with T >= 1, got {shape}"
                )
        spa, tem = (shapes[k][1] for k in NPZ_STREAMS)
        if spa != tem:
            raise FeatureError(f"{file}: fields 'feat_spa' and 'feat_tem' differ in length: T={spa} and T={tem}")
        return spa, 2 * NPZ_CHANNELS

    def _members(self, file: Path, names: list[str]) -> None:
        missing = [k for k in NPZ_STREAMS if k not in names]
        if missing:
            raise FeatureError(f"{file}: field {missing[0]!r} missing (archive holds: {', '.join(names) or 'nothing'})")

    def _read(self, video_id: str) -> np.ndarray:
        file = self._files[video_id]
        with self._open(file) as archive:
            self._members(file, archive.files)
            streams = {}
            for key in NPZ_STREAMS:
                try:
                    arr = archive[key]
                except Exception as exc:
                    raise FeatureError(f"{file}: field {key!r}: unreadable ({exc})") from None
                if not np.issubdtype(arr.dtype, np.floating):
                    raise FeatureError(f"{file}: field {key!r}: expected float features, got dtype {arr.dtype}")
                streams[key] = arr
        self._check_streams(file, {k: a.shape for k, a in streams.items()})
        return np.concatenate([streams[k].T for k in NPZ_STREAMS], axis=1).astype(np.float32, copy=False)

    def _shape(self, video_id: str) -> tuple[int, int]:
        """Shapes from the members' .npy headers, without decompressing the arrays."""
        file = self._files[video_id]
        if not zipfile.is_zipfile(file):
            raise FeatureError(f"{file}: field 'archive': not a .npz (zip) archive")
        try:
            zf = zipfile.ZipFile(file)
        except (zipfile.BadZipFile, OSError) as exc:
            raise FeatureError(f"{file}: field 'archive': unreadable .npz ({exc})") from None
        shapes = {}
        with zf:
            self._members(file, [n[:-4] for n in zf.namelist() if n.endswith(".npy")])
            for key in NPZ_STREAMS:
                try:
                    with zf.open(f"{key}.npy") as f:
                        version = np.lib.format.read_magic(f)
                        header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                  else np.lib.format.read_array_header_2_0)
                        shapes[key] = header(f)[0]
                except Exception as exc:
                    raise FeatureError(f"{file}: field {key!r}: unreadable header ({exc})") from None
        return self._check_streams(file, shapes)


class WtalcSource(FeatureSource):
    """The W-TALC object `.npy`: entry i holds the (T, D) features of `video_names[i]`."""

    kind = "wtalc"

    def __init__(self, path: Path, arrays, names: list[str], snippet_seconds: float):
        super().__init__(path, names, snippet_seconds, None)
        self._arrays = arrays
        self._index = {name: i for i, name in enumerate(names)}

    def file_of(self, video_id: str) -> str:
        return f"{self.path}[{self._index[video_id]}]"

    def _read(self, video_id: str) -> np.ndarray:
        i = self._index[video_id]
        entry = self._arrays[i]
        if not isinstance(entry, np.ndarray):
            raise FeatureError(f"{self.path}: field [{i}] ({video_id}): expected an array, got {type(entry).__name__}")
        return np.array(_check_array(entry, f"{self.path}: field [{i}] ({video_id})"), dtype=np.float32)

    def _shape(self, video_id: str) -> tuple[int, int]:
        i = self._index[video_id]
        entry = self._arrays[i]
        shape: tuple[int, ...] = getattr(entry, "shape", ())
        if len(shape) != 2:
            raise FeatureError(f"{self.path}: field [{i}] ({video_id}): expected shape (T, D), got {shape}")
        return int(shape[0]), int(shape[1])


def _read_meta(folder: Path) -> dict:
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        return {}
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise FeatureError(f"{meta_path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(meta, dict):
        raise FeatureError(f"{meta_path}: top level: expected an object, got {type(meta).__name__}")
    for key in ("snippet_seconds", "fps"):
        value = meta.get(key)
        if key in meta and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0
                            or not math.isfinite(value)):
            raise FeatureError(f"{meta_path}: field {key!r} must be a positive number, got {value!r}")
    return meta


def _read_video_names(source: Path, allow_pickle: bool) -> list[str]:
    """Names from a W-TALC `videoname.npy` or the annotation folder holding it."""
    file = source / "videoname.npy" if source.is_dir() else source
    if not file.is_file():
        raise FeatureError(f"{file}: no such file (video_names must name a W-TALC annotation folder or its videoname.npy)")
    return [as_text(v) for v in np.asarray(_load_pickled(file, allow_pickle)).ravel()]


def _load_pickled(path: Path, allow_pickle: bool):
    """np.load of a possibly pickled .npy, refusing pickles unless allowed; errors name the file."""
    return load_npy(path, allow_pickle, FeatureError)


def _default_names_file(path: Path) -> Path | None:
    """`videoname.npy` beside the feature file, or in the `<Dataset>-Annotations` folder beside it.

    The public W-TALC release puts `Thumos14reduced-I3D-JOINTFeatures.npy` next to
    `Thumos14reduced-Annotations/`; the dataset name is the file name up to its first '-'.
    """
    candidates = [path.parent / "videoname.npy", path.parent / f"{path.name.split('-')[0]}-Annotations" / "videoname.npy"]
    return next((c for c in candidates if c.is_file()), None)


def _open_wtalc(path: Path, seconds: float, allow_pickle: bool, video_names) -> WtalcSource:
    if isinstance(video_names, (str, os.PathLike)):
        names = _read_video_names(Path(video_names), allow_pickle)
        names_from = str(video_names)
    elif video_names is not None:
        names = [str(n) for n in video_names]
        names_from = "video_names"
    else:
        found = _default_names_file(path)
        if found is None:
            raise FeatureError(
                f"{path}: field 'video names': a W-TALC feature file is ordered like its annotation folder's "
                f"videoname.npy; none found beside it, so pass video_names (CLI: --annotations pointing to the "
                f"W-TALC annotation folder)"
            )
        names = _read_video_names(found, allow_pickle)
        names_from = str(found)
    arrays = _load_pickled(path, allow_pickle)
    if not isinstance(arrays, np.ndarray) or not (arrays.dtype == object and arrays.ndim == 1 or arrays.ndim == 3):
        shape = getattr(arrays, "shape", None)
        raise FeatureError(
            f"{path}: field 'shape': expected a W-TALC object array of per-video (T, D) arrays, got "
            f"{getattr(arrays, 'dtype', type(arrays).__name__)} array of shape {shape} "
            f"(a single video's features belong in a folder as <video_id>.npy)"
        )
    if len(arrays) != len(names):
        raise FeatureError(f"{path}: field 'length': {len(arrays)} videos, but {names_from} names {len(names)}")
    seen = set()
    for i, name in enumerate(names):
        if name in seen:
            raise FeatureError(f"{names_from}: field [{i}]: duplicate video {name!r}")
        seen.add(name)
    return WtalcSource(path, arrays, names, seconds)


def _open_folder(path: Path, seconds: float | None) -> FeatureSource:
    meta = _read_meta(path)
    seconds = seconds or meta.get("snippet_seconds", DEFAULT_SNIPPET_SECONDS)
    fps = meta.get("fps")
    if (path / "videoname.npy").is_file() and (path / "segments.npy").is_file():
        raise FeatureError(f"{path}: a W-TALC annotation folder, not features (pass it as the annotations)")
    if (path / "rgb").is_dir() and (path / "flow").is_dir():
        rgb = {p.stem: p for p in (path / "rgb").glob("*.npy")}
        flow = {p.stem: p for p in (path / "flow").glob("*.npy")}
        missing = sorted(set(rgb) ^ set(flow))
        if missing:
            raise FeatureError(f"{path}: rgb/ and flow/ disagree on videos, e.g. {missing[:3]}")
        return NpyFolderSource(path, {vid: [rgb[vid], flow[vid]] for vid in rgb}, seconds, fps)
    npy = {p.stem: p for p in path.glob("*.npy")}
    npz = {p.stem: p for p in path.glob("*.npz")}
    if npy and npz:
        raise FeatureError(f"{path}: holds both .npy and .npz feature files; keep one layout per folder")
    if npz:
        return NpzFolderSource(path, npz, seconds, fps)
    return NpyFolderSource(path, {vid: [p] for vid, p in npy.items()}, seconds, fps)


def open_features(path: str | Path, snippet_seconds: float | None = None, *, allow_pickle: bool = False,
                  video_names: Sequence[str] | str | os.PathLike | None = None) -> FeatureSource:
    """Open any supported feature layout (see the module docstring).

    `snippet_seconds` overrides meta.json / the cache's settings / the 0.64 s default.
    `allow_pickle` and `video_names` concern only the W-TALC object `.npy` file: `video_names` is a
    list of ids in file order, or a W-TALC annotation folder (or its `videoname.npy`); without it the
    `videoname.npy` beside the file or in `<Dataset>-Annotations/` beside it is used.
    """
    path = Path(path)
    if snippet_seconds is not None and not (snippet_seconds > 0 and math.isfinite(snippet_seconds)):
        raise FeatureError(f"snippet_seconds must be a positive number, got {snippet_seconds!r}")
    from .cache import CacheReader, is_cache

    source: FeatureSource
    if path.is_file() and path.suffix == ".npy":
        source = _open_wtalc(path, snippet_seconds or DEFAULT_SNIPPET_SECONDS, allow_pickle, video_names)
    elif not path.is_dir():
        raise FeatureError(
            f"{path}: features must be a directory (a wtal cache, a folder of <video_id>.npy or .npz, or rgb/ + flow/) "
            f"or a W-TALC .npy feature file" + ("" if path.exists() else "; no such file or directory")
        )
    elif is_cache(path):
        cache = CacheReader(path)
        current = cache.current()
        files = {vid: [cache.entry_path(key)] for vid, key in current.items()}
        # the settings in the entries' keys (everything but the per-video content hash)
        distinct = {json.dumps((cache.read_record(k) or {}).get("settings", {}), sort_keys=True) for k in current.values()}
        extraction = json.loads(distinct.pop()) if len(distinct) == 1 else None
        fps = (extraction or {}).get("fps")
        source = NpyFolderSource(path, files, snippet_seconds or cache.snippet_seconds() or DEFAULT_SNIPPET_SECONDS,
                                 fps if isinstance(fps, (int, float)) and fps > 0 else None)
        source.kind = "cache"
        source.extraction = extraction
    else:
        source = _open_folder(path, snippet_seconds)
    if not source.ids():
        raise FeatureError(
            f"{path}: no feature files found (expected <video_id>.npy, <video_id>.npz, rgb/ + flow/, or a wtal cache)"
        )
    log.debug("opened %s features at %s: %d videos, %.3f s per snippet", source.kind, path, len(source.ids()),
              source.snippet_seconds)
    return source


def check_lengths(source: FeatureSource, ann, subset: str) -> list[str]:
    """One message per video of `subset` whose snippet count differs from duration / snippet_seconds by > 1.

    Videos without features or without an annotated duration are skipped (the stages report missing
    features themselves), and so are fixed-length layouts, whose snippet length follows from the
    duration. Lengths are only reported, never stretched to fit.
    """
    messages: list[str] = []
    if source.fixed_length:
        return messages
    for video in ann.subset(subset):
        if video.duration is None or video.video_id not in source:
            continue
        length = source.length(video.video_id)
        expected = video.duration / source.snippet_seconds
        if abs(length - expected) > 1 + 1e-6:
            messages.append(
                f"{source.file_of(video.video_id)}: {video.video_id} has T={length} snippets, but its annotated "
                f"duration {video.duration:.2f} s at {source.snippet_seconds:.3f} s per snippet implies "
                f"T={expected:.1f}"
            )
    return messages


def require_lengths(source: FeatureSource, ann, subset: str) -> None:
    """A FeatureError naming the file(s) when a native-rate layout disagrees with the annotated
    durations by more than one snippet (`check_lengths`): its seconds would be wrong."""
    messages = check_lengths(source, ann, subset)
    if messages:
        more = f" (and {len(messages) - 1} more videos)" if len(messages) > 1 else ""
        raise FeatureError(
            f"{messages[0]}{more}; these {source.kind} features claim a fixed snippet length, so their seconds "
            f"would be wrong: pass the right snippet length (--snippet-seconds, meta.json) or matching features"
        )


def settings_mismatch(trained: dict, current: dict) -> list[str]:
    """Differences between the feature settings a model was trained on and those of other features.

    Compared where both sides know them: the time base rule, the snippet length of native-rate
    layouts and a cache's extraction settings. A different layout alone (a cache and its export)
    is not a difference.
    """
    diffs = []
    if trained.get("time_base") != current.get("time_base"):
        diffs.append(f"time base {trained.get('time_base')!r} vs {current.get('time_base')!r}")
    elif trained.get("snippet_seconds") and current.get("snippet_seconds") and not math.isclose(
            trained["snippet_seconds"], current["snippet_seconds"], rel_tol=1e-6):
        diffs.append(f"snippet_seconds {trained['snippet_seconds']:.4f} vs {current['snippet_seconds']:.4f}")
    a, b = trained.get("extraction"), current.get("extraction")
    if a is not None and b is not None:
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                diffs.append(f"extraction {key} {a.get(key)!r} vs {b.get(key)!r}")
    return diffs
