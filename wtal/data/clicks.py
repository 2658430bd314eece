"""Background clicks for BackTAL: read, simulate and write `{video_id: [seconds, ...]}`.

The public THUMOS14 click files (`background_clicks_A1/A2/A3.csv`, one per annotator, UTF-8
with BOM, header `URLID,URL,TagID,Tag,Start,End,Time,State`) hold one row per click. In them
`Start == End` for almost every row and that value is the click position in seconds; a handful
of rows span 0.5-1 s, read as their midpoint. The `Time` column is not a position: it is a
small integer (1, 2, 4 or 6) constant over a video, an annotation-session counter, so it is
ignored, as are `URL`, `TagID`, `Tag` (always background) and `State`.

`simulate_clicks` draws clicks under a `ClickProtocol`: `human` (default), measured from those
three files, or `uniform`, one click in every background gap (SF-Net). `click_stats` measures any
click file against a ground truth (`wtal clicks stats`); `choose_click_file` is the one rule that
picks a file among several or in a folder by annotator.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wtal._io import write_json_atomic
from wtal.data.annotations import AnnotationError, AnnotationSet, VideoAnnotation, _number, fail
from wtal.errors import SettingsError

log = logging.getLogger(__name__)

CSV_REQUIRED = ("URLID", "Start", "End")
ANNOTATION_FPS = 2.0  # BackTAL's annotators saw frames extracted at 2 fps (paper Sec. 4.2, Fig. 6)


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


def choose_click_file(paths, annotator: str | None = None) -> Path:
    """The one click file that `paths` (a path or a list of them) and `annotator` name.

    The single rule behind `load_clicks` and `wtal train --clicks ... --annotator A`: a folder
    gives its `background_clicks_<annotator>.csv`; several files give the one whose name (without
    suffix) is `annotator` or ends with it; one file is itself, and `annotator` is then an error.
    """
    files = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    if not files:
        raise AnnotationError("clicks: no click file given")
    if len(files) == 1 and files[0].is_dir():
        folder = files[0]
        available = sorted(p.stem[len("background_clicks_"):] for p in folder.glob("background_clicks_*.csv"))
        if annotator is None or annotator not in available:
            raise fail(
                folder,
                "annotator",
                f"{'choose' if annotator is None else f'unknown annotator {annotator!r}; choose'} "
                f"one of {', '.join(available) or 'none (no background_clicks_*.csv here)'}",
            )
        return folder / f"background_clicks_{annotator}.csv"
    if len(files) == 1:
        if annotator is not None:
            raise fail(files[0], "annotator", "an annotator is chosen only when the path is a folder or several files are given")
        return files[0]
    if folders := [f for f in files if f.is_dir()]:
        raise fail(folders[0], "path", "a folder of click files is given alone, not among other click files")
    names = ", ".join(f.stem for f in files)
    if annotator is None:
        raise fail(files[0], "annotator", f"{len(files)} click files given ({names}): choose one with --annotator NAME")
    chosen = [f for f in files if f.stem == annotator or f.stem.endswith(annotator)]
    if len(chosen) != 1:
        raise fail(files[0], "annotator", f"{annotator!r} matches {len(chosen)} of the click files {names}; it must match one")
    return chosen[0]


def load_clicks(paths, annotator: str | None = None) -> dict[str, list[float]]:
    """Read background clicks: wtal JSON or a public THUMOS14 CSV.

    `paths` is a file, a folder of `background_clicks_<annotator>.csv` files or a list of files;
    `annotator` (e.g. `A1`) picks one (`choose_click_file`). Click times are sorted per video;
    duplicates are kept.
    """
    path = choose_click_file(paths, annotator)
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


def _require_duration(ann: AnnotationSet, video_id: str) -> VideoAnnotation:
    video = ann.videos[video_id]
    if video.duration is None:
        raise AnnotationError(
            f"{ann.source}: database.{video_id}.duration: missing; background gaps need video "
            "durations (use an annotation file that has them, e.g. gt_thumos14_backtal.json or "
            "the W-TALC layout)"
        )
    return video


def action_spans(ann: AnnotationSet, video_id: str) -> list[tuple[float, float]]:
    """The video's ground-truth segments clipped to [0, duration], overlapping or touching ones merged."""
    duration = _require_duration(ann, video_id).duration
    assert duration is not None
    spans: list[tuple[float, float]] = []
    clipped = ((min(max(0.0, s.start), duration), min(max(0.0, s.end), duration)) for s in ann.videos[video_id].segments)
    for start, end in sorted(clipped):
        if spans and start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], end))
        else:
            spans.append((start, end))
    return spans


def background_segments(ann: AnnotationSet, video_id: str) -> list[tuple[float, float]]:
    """Gaps of positive length between the merged ground-truth segments of a video.

    Includes the gap before the first and after the last segment, so the video duration is
    required. Segments are clipped to [0, duration].
    """
    duration = _require_duration(ann, video_id).duration
    assert duration is not None
    gaps, cursor = [], 0.0
    for start, end in action_spans(ann, video_id):
        if start > cursor:
            gaps.append((cursor, start))
        cursor = max(cursor, end)
    if duration > cursor:
        gaps.append((cursor, duration))
    return gaps


def frame_step(video: VideoAnnotation, frame_rate: float = ANNOTATION_FPS) -> float:
    """Seconds between the frames an annotator saw: every floor(fps / frame_rate)-th video frame.

    The public THUMOS14 clicks sit on this grid: 0.5 s on 30 and 24 fps videos, 0.48 s (every
    12th frame) on 25 fps ones. A video without a known fps gets 1 / frame_rate.
    """
    if not video.fps or video.fps <= 0:
        return 1.0 / frame_rate
    return max(1, int(video.fps // frame_rate)) / video.fps


@dataclass(frozen=True)
class ClickProtocol:
    """How simulated annotators click; `PROTOCOLS` names the two used by wtal.

    `human` (the default) imitates the three THUMOS14 annotators of BackTAL (paper Sec. 4.2,
    Fig. 6): every value is the mean over the public files A1, A2, A3 measured against the
    THUMOS14 validation ground truth (gt_thumos14_backtal.json; the W-TALC folder gives the same
    figures) with `wtal clicks stats`; tests/test_clicks_stats.py checks both.
    `uniform` is the SF-Net protocol the paper uses for ActivityNet and HACS: one click drawn
    uniformly in every background gap, none in actions, no frame grid.

    - `gap_fraction`: expected share of background gaps that get at least one click.
    - `short_gap_seconds` (L0): a gap of length L is clicked with probability proportional to
      1 - exp(-L / L0), scaled to give `gap_fraction` (annotators skip short gaps: 10 % of gaps
      under 0.5 s were clicked, 96 % of those over 16 s; L0 = 1.3 s is the maximum-likelihood
      fit). 0: every gap equally likely.
    - `clicks_per_gap`: mean clicks in a clicked gap; the clicks beyond the first are
      Poisson-distributed in proportion to the gap's length (long gaps got the repeated clicks).
    - `inside_fraction`: share of all clicks that fall strictly inside an action, placed
      `inside_seconds` (mean, exponential) inwards from a boundary of a ground-truth segment
      (the annotators' errors sit next to the boundaries: median 0.2-0.4 s).
    - `frame_rate`: the annotators saw frames at this rate (`frame_step`); every click lies on
      one of those frames, so a gap holding no such frame is never clicked. 0: continuous times.
    """

    gap_fraction: float = 0.7171
    short_gap_seconds: float = 1.3
    clicks_per_gap: float = 1.0756
    inside_fraction: float = 0.0430
    inside_seconds: float = 0.758
    frame_rate: float = ANNOTATION_FPS

    def __post_init__(self):
        for name, low, high in (("gap_fraction", 0.0, 1.0), ("short_gap_seconds", 0.0, math.inf),
                                ("clicks_per_gap", 1.0, math.inf), ("inside_fraction", 0.0, 0.5),
                                ("inside_seconds", 0.0, math.inf), ("frame_rate", 0.0, math.inf)):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and low <= value <= high and math.isfinite(value)):
                raise SettingsError(f"clicks: {name}: {value!r} is not a number in [{low}, {high}]")
        if self.inside_fraction > 0 and self.inside_seconds <= 0:
            raise SettingsError("clicks: inside_seconds: must be positive when inside_fraction is")


PROTOCOLS = {
    "human": ClickProtocol(),
    "uniform": ClickProtocol(gap_fraction=1.0, short_gap_seconds=0.0, clicks_per_gap=1.0, inside_fraction=0.0,
                             inside_seconds=0.0, frame_rate=0.0),
}


def click_protocol(name: str = "human", overrides: Mapping[str, str | float] | None = None) -> ClickProtocol:
    """A named protocol with some fields replaced (`wtal clicks simulate --protocol P --set k=v`)."""
    if name not in PROTOCOLS:
        raise SettingsError(f"clicks: protocol: unknown {name!r}; choose one of {', '.join(PROTOCOLS)}")
    fields = {f.name for f in dataclasses.fields(ClickProtocol)}
    values: dict[str, float] = {}
    for key, value in (overrides or {}).items():
        if key not in fields:
            raise SettingsError(f"clicks: {key}: unknown setting; choose among {', '.join(sorted(fields))}")
        try:
            values[key] = float(value)
        except ValueError:
            raise SettingsError(f"clicks: {key}: expected a number, got {value!r}") from None
    return dataclasses.replace(PROTOCOLS[name], **values)


def _grid_range(a: float, b: float, step: float) -> tuple[int, int]:
    """First and last frame index (multiples of `step`) strictly inside the gap (a, b), else on its ends.

    An annotator clicks a frame showing background, so a frame on an action boundary is taken
    only when the gap holds no other; first > last when it holds none at all.
    """
    first, last = math.floor(a / step + 1e-6) + 1, math.ceil(b / step - 1e-6) - 1
    if first > last:
        first, last = math.ceil(a / step - 1e-6), math.floor(b / step + 1e-6)
    return first, last


def simulate_clicks(ann: AnnotationSet, subset: str, seed: int,
                    protocol: ClickProtocol | str = "human") -> dict[str, list[float]]:
    """Simulated background clicks on every video of `subset` under `protocol` (`ClickProtocol`).

    The default imitates THUMOS14's human annotators; `"uniform"` gives one uniform click in every
    background gap (SF-Net; the clicks wtal simulated before the `human` protocol existed, drawn
    identically). Videos are visited in sorted id order, so a seed gives the same clicks whatever
    the file order. Videos without a duration are an error, listed together.
    """
    p = click_protocol(protocol) if isinstance(protocol, str) else protocol
    videos = sorted(ann.subset(subset), key=lambda v: v.video_id)
    missing = [v.video_id for v in videos if v.duration is None]
    if missing:
        raise AnnotationError(
            f"{ann.source}: database.<video>.duration: missing for {len(missing)} of {len(videos)} "
            f"videos of subset {subset!r} (first: {missing[0]}); simulating clicks needs durations "
            "(use gt_thumos14_backtal.json or the W-TALC layout)"
        )
    steps = {v.video_id: frame_step(v, p.frame_rate) if p.frame_rate > 0 else 0.0 for v in videos}
    gaps = {v.video_id: background_segments(ann, v.video_id) for v in videos}

    def weight(video_id: str, a: float, b: float) -> float:
        first, last = _grid_range(a, b, steps[video_id]) if steps[video_id] else (0, 0)
        if first > last:
            return 0.0  # no frame the annotator saw lies in this gap
        return 1.0 - math.exp(-(b - a) / p.short_gap_seconds) if p.short_gap_seconds > 0 else 1.0

    weights = {vid: [weight(vid, a, b) for a, b in video_gaps] for vid, video_gaps in gaps.items()}
    n_gaps, total = sum(map(len, gaps.values())), sum(map(sum, weights.values()))
    scale = p.gap_fraction * n_gaps / total if total > 0 else 0.0
    if scale > 1.0 + 1e-9:
        raise SettingsError(
            f"clicks: gap_fraction: {p.gap_fraction} is more than these {n_gaps} gaps can reach with "
            f"short_gap_seconds={p.short_gap_seconds} and frame_rate={p.frame_rate} "
            f"(at most {total / n_gaps:.3f})"
        )
    chance = {vid: [min(1.0, scale * w) for w in ws] for vid, ws in weights.items()}
    covered_length = sum(c * (b - a) for vid in gaps for c, (a, b) in zip(chance[vid], gaps[vid]))
    extra_rate = (p.clicks_per_gap - 1.0) * sum(map(sum, chance.values())) / covered_length if covered_length else 0.0

    rng = np.random.default_rng(seed)
    clicks = {}
    for video in videos:
        vid, step = video.video_id, steps[video.video_id]
        times = []
        for (a, b), c in zip(gaps[vid], chance[vid]):
            if c <= 0.0 or (c < 1.0 and rng.random() >= c):
                continue
            k = 1 + (int(rng.poisson(extra_rate * (b - a))) if extra_rate > 0 else 0)
            if step:
                first, last = _grid_range(a, b, step)
                frames = rng.choice(last - first + 1, size=min(k, last - first + 1), replace=False) + first
                times += [_on_grid(int(f), step, video) for f in frames]
            else:
                times += [float(rng.uniform(a, b)) for _ in range(k)]
        if p.inside_fraction > 0:
            times += _inside_clicks(action_spans(ann, vid), len(times) * p.inside_fraction / (1 - p.inside_fraction),
                                    p.inside_seconds, step, video, rng)
        clicks[vid] = sorted(times)
    return clicks


def _on_grid(frame: int, step: float, video: VideoAnnotation) -> float:
    """Seconds of grid position `frame`, computed from whole video frames where the fps is known."""
    if video.fps and video.fps > 0 and abs(step * video.fps - round(step * video.fps)) < 1e-9:
        return frame * round(step * video.fps) / video.fps
    return frame * step


def _inside_clicks(spans, expected: float, depth: float, step: float, video: VideoAnnotation, rng) -> list[float]:
    """Poisson(`expected`) mistaken clicks, each `depth` (mean, exponential) inside a segment boundary."""
    if not spans or expected <= 0:
        return []
    out = []
    for _ in range(int(rng.poisson(expected))):
        for _attempt in range(100):  # a draw that lands (or is snapped) outside its segment is redrawn
            start, end = spans[int(rng.integers(len(spans)))]
            d = float(rng.exponential(depth))
            t = start + d if rng.random() < 0.5 else end - d
            if step:
                t = _on_grid(round(t / step), step, video)
            if start + 1e-6 < t < end - 1e-6:
                out.append(t)
                break
    return out


@dataclass
class ClickStats:
    """How a click file relates to a ground truth (`click_stats`, `wtal clicks stats`).

    Clicks count only on videos of the subset; a click on a segment boundary counts in its gap
    (and in `on_boundaries`), not inside the action.
    """

    subset: str
    videos: int
    videos_with_clicks: int
    clicks: int
    gaps: int
    gaps_covered: int
    clicks_in_gaps: int
    inside_actions: int
    on_boundaries: int
    on_grid: int
    outside_video: int
    missing_videos: list[str]
    other_subset_videos: list[str]

    @property
    def clicks_per_covered_gap(self) -> float:
        return self.clicks_in_gaps / self.gaps_covered if self.gaps_covered else 0.0

    @property
    def inside_share(self) -> float:
        return self.inside_actions / self.clicks if self.clicks else 0.0

    @property
    def grid_share(self) -> float:
        return self.on_grid / self.clicks if self.clicks else 0.0

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.update(gap_fraction=self.gaps_covered / self.gaps if self.gaps else 0.0,
                   clicks_per_covered_gap=self.clicks_per_covered_gap, inside_share=self.inside_share,
                   grid_share=self.grid_share)
        return out


def click_stats(clicks: dict[str, list[float]], ann: AnnotationSet, subset: str, tol: float = 1e-6) -> ClickStats:
    """Gaps covered, clicks inside actions, on the 2 fps frame grid (`frame_step`) and outside the video.

    Times within `tol` seconds of a boundary or grid position count as on it.
    """
    videos = ann.subset(subset)
    stats = ClickStats(subset, len(videos), 0, 0, 0, 0, 0, 0, 0, 0, 0,
                       sorted(v for v in clicks if v not in ann.videos),
                       sorted(v for v in clicks if v in ann.videos and ann.videos[v].subset != subset))
    for video in videos:
        gaps, spans = background_segments(ann, video.video_id), action_spans(ann, video.video_id)
        times = clicks.get(video.video_id, [])
        step = frame_step(video)
        stats.gaps += len(gaps)
        stats.videos_with_clicks += bool(times)
        stats.clicks += len(times)
        stats.gaps_covered += sum(any(a - tol <= t <= b + tol for t in times) for a, b in gaps)
        assert video.duration is not None  # background_segments required it
        for t in times:
            stats.on_grid += abs(t / step - round(t / step)) * step <= tol
            if t < -tol or t > video.duration + tol:
                stats.outside_video += 1
            elif any(s + tol < t < e - tol for s, e in spans):
                stats.inside_actions += 1
            else:
                stats.clicks_in_gaps += 1
                stats.on_boundaries += any(abs(t - s) <= tol or abs(t - e) <= tol for s, e in spans)
    return stats


def save_clicks(clicks: dict[str, list[float]], path) -> None:
    """Write `{video_id: [seconds, ...]}` JSON, keys sorted."""
    write_json_atomic(path, {k: [float(t) for t in v] for k, v in sorted(clicks.items())}, indent=None)
