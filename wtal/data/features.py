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

Every reader yields (T, D) float32 arrays, one row per snippet, and knows the snippet length in
seconds (16 frames at 25 fps = 0.64 s unless `meta.json` or the caller says otherwise). Nothing is
resampled: `check_lengths` reports videos whose length disagrees with the annotated duration.
"""
from __future__ import annotations

from wtal.errors import WtalError

import json
import logging
import math
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_SNIPPET_SECONDS = 16 / 25
NPZ_STREAMS = ("feat_spa", "feat_tem")
NPZ_CHANNELS = 1024
PICKLE_REFUSAL = (
    "holds a pickled object array, and unpickling a file can execute arbitrary code; pass "
    "allow_pickle=True (CLI: --allow-pickle) only for a file from a source you trust"
)


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


class FeatureSource:
    """A set of per-video feature arrays addressed by video id.

    Subclasses implement `_read` (the validated (T, D) float32 array), `_shape` (its shape, read
    cheaply where the format allows) and `file_of` (where a video's features live, for messages).
    """

    kind = "base"

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

    def __init__(self, path: Path, files: dict[str, Path], snippet_seconds: float, fps: float | None):
        super().__init__(path, files, snippet_seconds, fps)
        self._files = files

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
        shape = getattr(entry, "shape", ())
        if len(shape) != 2:
            raise FeatureError(f"{self.path}: field [{i}] ({video_id}): expected shape (T, D), got {shape}")
        return shape


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


def _decode(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _read_video_names(source: Path, allow_pickle: bool) -> list[str]:
    """Names from a W-TALC `videoname.npy` or the annotation folder holding it."""
    file = source / "videoname.npy" if source.is_dir() else source
    if not file.is_file():
        raise FeatureError(f"{file}: no such file (video_names must name a W-TALC annotation folder or its videoname.npy)")
    return [_decode(v) for v in np.asarray(_load_pickled(file, allow_pickle)).ravel()]


def _load_pickled(path: Path, allow_pickle: bool):
    """np.load of a possibly pickled .npy, refusing pickles unless allowed; errors name the file."""
    try:
        return np.load(path, allow_pickle=allow_pickle)
    except ValueError as exc:
        if not allow_pickle and "allow_pickle" in str(exc):
            raise FeatureError(f"{path}: field 'format': {PICKLE_REFUSAL}") from None
        raise FeatureError(f"{path}: field 'format': unreadable .npy ({exc})") from None
    except Exception as exc:  # truncated pickles raise EOFError, UnpicklingError, ...
        raise FeatureError(f"{path}: field 'format': unreadable .npy ({exc})") from None


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
    from ..extract.cache import FeatureCache, is_cache

    if path.is_file() and path.suffix == ".npy":
        source = _open_wtalc(path, snippet_seconds or DEFAULT_SNIPPET_SECONDS, allow_pickle, video_names)
    elif not path.is_dir():
        raise FeatureError(
            f"{path}: features must be a directory (a wtal cache, a folder of <video_id>.npy or .npz, or rgb/ + flow/) "
            f"or a W-TALC .npy feature file" + ("" if path.exists() else "; no such file or directory")
        )
    elif is_cache(path):
        cache = FeatureCache(path)
        files = {vid: [cache.entry_path(key)] for vid, key in cache.current().items()}
        source = NpyFolderSource(path, files, snippet_seconds or cache.snippet_seconds() or DEFAULT_SNIPPET_SECONDS, None)
        source.kind = "cache"
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
    features themselves). Lengths are only reported, never stretched to fit.
    """
    messages = []
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
