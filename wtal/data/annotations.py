"""Temporal action annotations: one in-memory form for every public layout.

Readers for ActivityNet-style JSON (ActivityNet 1.2/1.3, the THUMOS14 `gt_basnet.json` with
string segments and no durations, the BackTAL variant with fps and durations), a bare
`{video_id: {...}}` database, and the W-TALC `.npy` folder layout. Every reader validates its
input and raises `AnnotationError` naming the file and the field, so that a bad file fails with
one readable line instead of a traceback deep inside training or evaluation.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wtal._io import as_text, load_npy, parse_number, write_json_atomic
from wtal.errors import WtalError

log = logging.getLogger(__name__)

TRAIN_SUBSET_CANDIDATES = ("training", "train", "validation", "val")
WTALC_REQUIRED = ("videoname.npy", "subset.npy", "segments.npy", "labels.npy")


class AnnotationError(WtalError, ValueError):
    """Invalid or unusable annotation input; the message names the file and the field."""


@dataclass(frozen=True)
class Segment:
    """One ground-truth action instance, in seconds."""

    label: str
    start: float
    end: float


@dataclass
class VideoAnnotation:
    """Ground truth of one video; `duration`/`fps` are None where the layout lacks them."""

    video_id: str
    subset: str
    duration: float | None
    fps: float | None
    segments: list[Segment] = field(default_factory=list)


@dataclass
class AnnotationSet:
    """All videos of one annotation file, in file order.

    `class_names` are the sorted unique labels of the whole file (every subset), so a class
    index is stable between training, detection and evaluation.
    """

    videos: dict[str, VideoAnnotation]
    class_names: list[str]
    source: str

    def subsets(self) -> list[str]:
        """Subset names present, sorted."""
        return sorted({v.subset for v in self.videos.values()})

    def subset(self, name: str) -> list[VideoAnnotation]:
        """Videos of one subset in file order; an unknown name lists the available ones."""
        videos = [v for v in self.videos.values() if v.subset == name]
        if not videos:
            raise AnnotationError(
                f"{self.source}: subset: no videos in subset {name!r}; "
                f"available: {', '.join(self.subsets()) or 'none'}"
            )
        return videos

    def default_subsets(self) -> tuple[str, str]:
        """(train, eval) subsets: the defaults of `wtal train` / `wtal evaluate` (README "Commands").

        train is the first of training, train, validation, val present; eval is `validation`
        when train is `training`, otherwise `test`.
        """
        present = set(self.subsets())
        train = next((s for s in TRAIN_SUBSET_CANDIDATES if s in present), None)
        if train is None:
            raise AnnotationError(
                f"{self.source}: subset: none of {', '.join(TRAIN_SUBSET_CANDIDATES)} present "
                f"(available: {', '.join(sorted(present)) or 'none'}); name the subset explicitly"
            )
        evaluation = "validation" if train == "training" else "test"
        if evaluation not in present:
            raise AnnotationError(
                f"{self.source}: subset: default evaluation subset {evaluation!r} missing "
                f"(available: {', '.join(sorted(present))}); name the subset explicitly"
            )
        return train, evaluation

    def label_vector(self, video_id: str) -> np.ndarray:
        """Multi-hot float32 vector of the video's labels over `class_names`."""
        video = self.videos.get(video_id)
        if video is None:
            raise AnnotationError(f"{self.source}: database.{video_id}: no such video")
        index = {name: i for i, name in enumerate(self.class_names)}
        vector = np.zeros(len(self.class_names), dtype=np.float32)
        for segment in video.segments:
            vector[index[segment.label]] = 1.0
        return vector

    def num_instances(self, subset: str | None = None) -> int:
        """Number of ground-truth segments, in one subset or overall."""
        return sum(
            len(v.segments) for v in self.videos.values() if subset is None or v.subset == subset
        )


def fail(path, where: str, problem: str) -> AnnotationError:
    """The "file: field: problem" error of annotation and click readers."""
    return AnnotationError(f"{path}: {where}: {problem}")


def _number(value, path, where: str, what: str = "a number") -> float:
    """A finite float from a JSON number or a numeric string (gt_basnet.json uses strings)."""
    return parse_number(value, path, where, AnnotationError, what)


def _segment(value, path, where: str) -> tuple[float, float]:
    """(start, end) in seconds from a two-element list; start <= end is required."""
    if not isinstance(value, (list, tuple, np.ndarray)) or len(value) != 2:
        raise fail(path, where, f"expected two numbers, got {value!r}")
    start = _number(value[0], path, where, "two numbers")
    end = _number(value[1], path, where, "two numbers")
    if end < start:
        raise fail(path, where, f"end {end} is before start {start}")
    return start, end


def _label(value, path, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise fail(path, where, f"expected a non-empty string, got {value!r}")
    return value


def _optional_nonnegative(value, path, where: str) -> float | None:
    if value is None:
        return None
    number = _number(value, path, where)
    if number < 0:
        raise fail(path, where, f"expected a non-negative number, got {value!r}")
    return number


def _build(videos: dict[str, VideoAnnotation], source: str) -> AnnotationSet:
    labels = sorted({s.label for v in videos.values() for s in v.segments})
    return AnnotationSet(videos=videos, class_names=labels, source=source)


def _parse_database(database: dict, path, prefix: str) -> dict[str, VideoAnnotation]:
    videos: dict[str, VideoAnnotation] = {}
    for video_id, entry in database.items():
        where = f"{prefix}{video_id}"
        if not isinstance(entry, dict):
            raise fail(path, where, f"expected an object, got {type(entry).__name__}")
        if "subset" not in entry:
            raise fail(path, f"{where}.subset", "missing")
        subset = _label(entry["subset"], path, f"{where}.subset")
        if "annotations" not in entry:
            raise fail(path, f"{where}.annotations", "missing")
        items = entry["annotations"]
        if not isinstance(items, list):
            raise fail(path, f"{where}.annotations", f"expected a list, got {items!r:.60}")
        segments = []
        for i, item in enumerate(items):
            item_where = f"{where}.annotations[{i}]"
            if not isinstance(item, dict):
                raise fail(path, item_where, f"expected an object, got {item!r:.60}")
            for key in ("label", "segment"):
                if key not in item:
                    raise fail(path, f"{item_where}.{key}", "missing")
            label = _label(item["label"], path, f"{item_where}.label")
            start, end = _segment(item["segment"], path, f"{item_where}.segment")
            segments.append(Segment(label, start, end))
        duration = _optional_nonnegative(entry.get("duration"), path, f"{where}.duration")
        fps = _optional_nonnegative(entry.get("fps"), path, f"{where}.fps")
        videos[video_id] = VideoAnnotation(video_id, subset, duration, fps, segments)
    return videos


def _load_json(path: Path) -> AnnotationSet:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise fail(path, f"line {e.lineno} column {e.colno}", f"invalid JSON ({e.msg})") from None
    except UnicodeDecodeError as e:
        raise fail(path, "encoding", f"not UTF-8 text ({e.reason})") from None
    except OSError as e:
        raise fail(path, "path", f"unreadable ({e.strerror})") from None
    if not isinstance(data, dict):
        raise fail(path, "top level", f"expected an object, got {type(data).__name__}")
    if "database" in data:
        database = data["database"]
        if not isinstance(database, dict):
            raise fail(path, "database", f"expected an object, got {type(database).__name__}")
        prefix = "database."
    elif data and all(isinstance(v, dict) and "annotations" in v for v in data.values()):
        database, prefix = data, ""
    else:
        raise fail(path, "database", "missing (expected an ActivityNet-style annotation file)")
    videos = _parse_database(database, path, prefix)
    if not videos:
        raise fail(path, "database", "no videos")
    return _build(videos, str(path))


def _load_npy(path: Path, allow_pickle: bool) -> np.ndarray:
    return load_npy(path, allow_pickle, AnnotationError, hint=", or convert them once with `wtal convert`")


def _load_wtalc(folder: Path, allow_pickle: bool) -> AnnotationSet:
    missing = [name for name in WTALC_REQUIRED if not (folder / name).is_file()]
    if missing:
        raise fail(folder, "layout", f"not a W-TALC annotation folder: missing {', '.join(missing)}")
    names = [as_text(v) for v in _load_npy(folder / "videoname.npy", allow_pickle).ravel()]
    subsets = [as_text(v) for v in _load_npy(folder / "subset.npy", allow_pickle).ravel()]
    segments = _load_npy(folder / "segments.npy", allow_pickle)
    labels = _load_npy(folder / "labels.npy", allow_pickle)
    n = len(names)
    for file, array in (("subset.npy", subsets), ("segments.npy", segments), ("labels.npy", labels)):
        if len(array) != n:
            raise fail(folder / file, "length", f"{len(array)} entries, videoname.npy has {n}")

    def optional_column(file: str) -> list[float | None]:
        """Per-video non-negative numbers of an optional .npy column (None when absent)."""
        if not (folder / file).is_file():
            return [None] * n
        raw = _load_npy(folder / file, allow_pickle).reshape(-1)
        if len(raw) != n:
            raise fail(folder / file, "length", f"{len(raw)} entries, expected {n}")
        return [_optional_nonnegative(v, folder / file, f"[{i}] ({names[i]})") for i, v in enumerate(raw)]

    durations = optional_column("duration.npy")
    fps = optional_column("original_fps.npy")
    videos: dict[str, VideoAnnotation] = {}
    for i, video_id in enumerate(names):
        if video_id in videos:
            raise fail(folder / "videoname.npy", f"[{i}]", f"duplicate video {video_id!r}")
        video_segments, video_labels = list(segments[i]), list(labels[i])
        if len(video_segments) != len(video_labels):
            raise fail(
                folder / "labels.npy",
                f"[{i}] ({video_id})",
                f"{len(video_labels)} labels for {len(video_segments)} segments",
            )
        items = []
        for j, (seg, label) in enumerate(zip(video_segments, video_labels)):
            start, end = _segment(seg, folder / "segments.npy", f"[{i}][{j}] ({video_id})")
            items.append(Segment(_label(as_text(label), folder / "labels.npy", f"[{i}][{j}]"), start, end))
        videos[video_id] = VideoAnnotation(video_id, subsets[i], durations[i], fps[i], items)
    return _build(videos, str(folder))


def load_annotations(path, allow_pickle: bool = False) -> AnnotationSet:
    """Read any supported annotation layout.

    `path` is a `.json` file (ActivityNet 1.2/1.3 with or without taxonomy/version,
    `gt_basnet.json`, the BackTAL variant) or a W-TALC folder (or a `.npy` file inside one).
    The W-TALC layout stores ragged lists as pickled object arrays, so it is refused unless
    `allow_pickle` is set: unpickling an untrusted file can execute arbitrary code.
    """
    path = Path(path)
    if not path.exists():
        raise fail(path, "path", "no such file or directory")
    if path.is_dir():
        return _load_wtalc(path, allow_pickle)
    if path.suffix == ".npy" and (path.parent / "videoname.npy").is_file():
        return _load_wtalc(path.parent, allow_pickle)
    return _load_json(path)


def save_annotations_json(ann: AnnotationSet, path) -> None:
    """Write ActivityNet-style JSON (the layout `load_annotations` reads without pickle)."""
    database = {}
    for video in ann.videos.values():
        entry: dict = {"subset": video.subset}
        if video.duration is not None:
            entry["duration"] = video.duration
        if video.fps is not None:
            entry["fps"] = video.fps
        entry["annotations"] = [
            {"label": s.label, "segment": [s.start, s.end]} for s in video.segments
        ]
        database[video.video_id] = entry
    write_json_atomic(path, {"version": "wtal-annotations-1", "database": database}, indent=None)
    log.info("wrote %d videos to %s", len(database), path)


def load_ambiguous(path) -> dict[str, list[tuple[float, float]]]:
    """Read THUMOS14 `Ambiguous_test.txt` (lines `video start end`, seconds)."""
    path = Path(path)
    result: dict[str, list[tuple[float, float]]] = {}
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise fail(path, "path", f"unreadable ({e.strerror})") from None
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 3:
            raise fail(path, f"line {number}", f"expected 'video start end', got {line!r}")
        start, end = _segment(fields[1:], path, f"line {number}")
        result.setdefault(fields[0], []).append((start, end))
    return result
