"""Background clicks for BackTAL: read, simulate and write `{video_id: [seconds, ...]}`.

The public THUMOS14 click files (`background_clicks_A1/A2/A3.csv`, one per annotator, UTF-8
with BOM, header `URLID,URL,TagID,Tag,Start,End,Time,State`) hold one row per click. In them
`Start == End` for almost every row and that value is the click position in seconds; a handful
of rows span 0.5-1 s, read as their midpoint. The `Time` column is not a position: it is a
small integer (1, 2, 4 or 6) constant over a video, an annotation-session counter, so it is
ignored, as are `URL`, `TagID`, `Tag` (always background) and `State`.
"""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np

from wtal._io import write_json_atomic
from wtal.data.annotations import AnnotationError, AnnotationSet, _number, fail

log = logging.getLogger(__name__)

CSV_REQUIRED = ("URLID", "Start", "End")


def _read_csv(path: Path) -> dict[str, list[float]]:
    clicks: dict[str, list[float]] = {}
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in CSV_REQUIRED if c not in header]
        if missing:
            raise fail(path, "header", f"missing column(s) {', '.join(missing)}; got {header}")
        for row in reader:
            where = f"line {reader.line_num}"
            video_id = (row["URLID"] or "").strip()
            if not video_id:
                raise fail(path, f"{where}.URLID", "empty")
            start = _number(row["Start"], path, f"{where}.Start")
            end = _number(row["End"], path, f"{where}.End")
            if end < start:
                raise fail(path, f"{where}.End", f"{end} is before Start {start}")
            clicks.setdefault(video_id, []).append((start + end) / 2)
    return clicks


def _read_json(path: Path) -> dict[str, list[float]]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise fail(path, f"line {e.lineno} column {e.colno}", f"invalid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise fail(path, "top level", "expected an object {video_id: [seconds, ...]}")
    clicks = {}
    for video_id, times in data.items():
        if not isinstance(times, list):
            raise fail(path, video_id, f"expected a list of seconds, got {times!r:.60}")
        clicks[video_id] = [_number(t, path, f"{video_id}[{i}]") for i, t in enumerate(times)]
    return clicks


def load_clicks(path, annotator: str | None = None) -> dict[str, list[float]]:
    """Read background clicks: wtal JSON or a public THUMOS14 CSV.

    `path` may also be a folder holding `background_clicks_<annotator>.csv` files; `annotator`
    (e.g. `A1`) picks one. Click times are sorted per video; duplicates are kept.
    """
    path = Path(path)
    if path.is_dir():
        available = sorted(p.stem[len("background_clicks_"):] for p in path.glob("background_clicks_*.csv"))
        if annotator is None or annotator not in available:
            raise fail(
                path,
                "annotator",
                f"{'choose' if annotator is None else f'unknown annotator {annotator!r}; choose'} "
                f"one of {', '.join(available) or 'none (no background_clicks_*.csv here)'}",
            )
        path = path / f"background_clicks_{annotator}.csv"
    elif annotator is not None:
        raise fail(path, "annotator", "an annotator is chosen only when the path is a folder")
    if not path.is_file():
        raise fail(path, "path", "no such file")
    with open(path, "rb") as f:
        head = f.read(64).lstrip(b"\xef\xbb\xbf").lstrip()
    try:
        clicks = _read_json(path) if head.startswith(b"{") else _read_csv(path)
    except UnicodeDecodeError as e:
        raise fail(path, "encoding", f"not UTF-8 text ({e.reason})") from None
    for times in clicks.values():
        times.sort()
    log.info("read %d clicks on %d videos from %s", sum(map(len, clicks.values())), len(clicks), path)
    return clicks


def background_segments(ann: AnnotationSet, video_id: str) -> list[tuple[float, float]]:
    """Gaps of positive length between the merged ground-truth segments of a video.

    Includes the gap before the first and after the last segment, so the video duration is
    required. Segments are clipped to [0, duration].
    """
    video = ann.videos[video_id]
    if video.duration is None:
        raise AnnotationError(
            f"{ann.source}: database.{video_id}.duration: missing; simulating clicks needs video "
            "durations (use an annotation file that has them, e.g. gt_thumos14_backtal.json or "
            "the W-TALC layout)"
        )
    spans = sorted(
        (max(0.0, s.start), min(video.duration, s.end)) for s in video.segments
    )
    gaps, cursor = [], 0.0
    for start, end in spans:
        if start > cursor:
            gaps.append((cursor, start))
        cursor = max(cursor, end)
    if video.duration > cursor:
        gaps.append((cursor, video.duration))
    return gaps


def simulate_clicks(ann: AnnotationSet, subset: str, seed: int) -> dict[str, list[float]]:
    """One click drawn uniformly inside every background segment of every video of `subset`.

    Videos are visited in sorted id order so a seed gives the same clicks whatever the file
    order. Videos without a duration are an error, listed together.
    """
    videos = sorted(ann.subset(subset), key=lambda v: v.video_id)
    missing = [v.video_id for v in videos if v.duration is None]
    if missing:
        raise AnnotationError(
            f"{ann.source}: database.<video>.duration: missing for {len(missing)} of {len(videos)} "
            f"videos of subset {subset!r} (first: {missing[0]}); simulating clicks needs durations "
            "(use gt_thumos14_backtal.json or the W-TALC layout)"
        )
    rng = np.random.default_rng(seed)
    clicks = {}
    for video in videos:
        gaps = background_segments(ann, video.video_id)
        clicks[video.video_id] = sorted(float(rng.uniform(a, b)) for a, b in gaps)
    return clicks


def save_clicks(clicks: dict[str, list[float]], path) -> None:
    """Write `{video_id: [seconds, ...]}` JSON, keys sorted."""
    write_json_atomic(path, {k: [float(t) for t in v] for k, v in sorted(clicks.items())}, indent=None)
