"""Decode a video into upright, resized RGB frames at a fixed frame rate, streamed in chunks.

Pixels come from decord when it can open the file and from PyAV otherwise (or when decord
fails mid-way: decoding resumes with PyAV at the first frame not yet delivered). Timestamps and
rotation always come from PyAV, so both backends deliver the same frames.

Timestamp rule (resampling to ``fps`` by presentation time, not by frame index):

* The presentation timestamps (pts) of the video stream's non-empty packets are sorted; the
  i-th decoded frame (decoders output display order) gets the i-th smallest pts. This also
  repairs AVI files whose frames carry pts in decode order.
* Times are relative to the first frame: ``r_i = (pts_i - pts_0) * time_base`` seconds.
* ``span = r_last + 1 / native_fps`` where ``native_fps`` is the stream's average frame rate.
* Target times are ``t_k = k / fps`` for k = 0, 1, ... while ``t_k < span``, so
  ``num_frames = ceil(span * fps)``; all of this is computed in exact rational arithmetic.
* Target frame k is the last source frame with ``r_i <= t_k``.

Only timestamps (one integer per source frame) are held for the whole video; frames are decoded
and delivered ``chunk_size`` at a time. Rotation metadata (the display matrix) is honoured by
rotating frames with ``np.rot90``; decord builds differ in whether they apply it themselves, so
this is checked on the first frame. Frames are then resized with ``cv2.resize`` (bilinear) so
the shorter side equals ``short_side`` (the longer side rounded half up), without cropping.
"""
from __future__ import annotations

import logging
import math
import os
import re
from bisect import bisect_right
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator

import cv2
import numpy as np

from wtal.errors import SettingsError, WtalError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "decord", "pyav")


class DecodeError(WtalError, RuntimeError):
    """A video could not be opened or decoded; the message names the file and what failed."""


@dataclass
class VideoInfo:
    """What `probe` learns about a video; sizes are upright (after rotation)."""

    path: str
    video_id: str
    width: int
    height: int
    rotation: int  # degrees clockwise that make the coded frames upright: 0, 90, 180 or 270
    native_fps: float
    duration: float  # span of the timestamp rule, seconds
    num_frames: int  # frames delivered at the target fps
    backend: str  # "decord" or "pyav": what iter_frames(backend="auto") decodes with


@dataclass
class _Timeline:
    """Sorted relative pts of the source frames and everything needed to resample them."""

    path: str
    pts: list  # sorted, relative to the first frame, in time_base units
    time_base: Fraction
    native_fps: Fraction
    fps: Fraction
    rotation: int
    first_frame: np.ndarray  # first decoded frame, RGB, upright

    @property
    def span(self) -> Fraction:
        return self.pts[-1] * self.time_base + 1 / self.native_fps

    @property
    def num_frames(self) -> int:
        return math.ceil(self.span * self.fps)

    def source_index(self, k: int) -> int:
        """Index of the last source frame whose relative pts is <= k / fps."""
        limit = Fraction(k) / (self.fps * self.time_base)
        return bisect_right(self.pts, math.floor(limit)) - 1


def video_id(path) -> str:
    """A video's id: its file name without the extension."""
    return os.path.splitext(os.path.basename(os.fspath(path)))[0]


def _error(path, what: str, exc: BaseException | None = None) -> DecodeError:
    """Build a one-line DecodeError naming the file, what failed and the underlying cause."""
    msg = f"{os.fspath(path)}: {what}"
    if exc is not None:
        detail = re.sub(r"\s+", " ", str(exc)).strip()
        if len(detail) > 200:
            detail = detail[:197] + "..."
        msg += f" ({type(exc).__name__}: {detail})" if detail else f" ({type(exc).__name__})"
    return DecodeError(msg)


def _as_fraction(value, name: str) -> Fraction:
    try:
        frac = Fraction(value).limit_denominator(1_000_000)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"{name} must be a positive number, got {value!r}") from exc
    if frac <= 0:
        raise SettingsError(f"{name} must be a positive number, got {value!r}")
    return frac


def _display_matrix_rotation(frame) -> float | None:
    """Counter-clockwise rotation from a frame's display-matrix side data (older PyAV)."""
    try:
        for side in frame.side_data:
            if "DISPLAYMATRIX" in str(getattr(side, "type", "")).upper():
                m = np.frombuffer(bytes(side), dtype="<i4", count=9).astype(np.float64)
                sx, sy = math.hypot(m[0], m[3]), math.hypot(m[1], m[4])
                if sx == 0 or sy == 0:
                    return None
                return -math.degrees(math.atan2(m[1] / sy, m[0] / sx))
    except (TypeError, ValueError, AttributeError):
        return None
    return None


def _rotation_cw(frame, stream) -> int:
    """Degrees clockwise (0/90/180/270) that make the coded frame upright."""
    ccw = getattr(frame, "rotation", None)
    if ccw is None:
        ccw = _display_matrix_rotation(frame)
    if ccw is not None:
        cw = -float(ccw)
    else:
        try:
            cw = float(stream.metadata.get("rotate", 0))
        except (TypeError, ValueError):
            cw = 0.0
    return int(round(cw / 90.0)) % 4 * 90


def _rotate(frames: np.ndarray, rotation_cw: int, axes=(0, 1)) -> np.ndarray:
    """Rotate an image (or a batch with axes=(1, 2)) clockwise by a multiple of 90 degrees."""
    if rotation_cw % 360 == 0:
        return frames
    return np.ascontiguousarray(np.rot90(frames, k=-(rotation_cw // 90), axes=axes))


def _native_fps(stream, pts: list, time_base: Fraction) -> Fraction | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return Fraction(rate)
    if len(pts) > 1:
        step = Fraction(int(np.median(np.diff(pts)))) * time_base
        if step > 0:
            return 1 / step
    return None


def _scan(path, fps) -> _Timeline:
    """Read the pts of every packet (no decoding) and decode the first frame for rotation."""
    import av  # imported where used: the frame helpers below work without PyAV installed

    path = os.fspath(path)
    fps = _as_fraction(fps, "fps")
    if not os.path.isfile(path):
        raise _error(path, "no such file")
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise _error(path, "no video stream")
            stream = container.streams.video[0]
            first = next(iter(container.decode(stream)), None)
            if first is None:
                raise _error(path, "no decodable video frames")
            rotation = _rotation_cw(first, stream)
            first_rgb = _rotate(first.to_ndarray(format="rgb24"), rotation)
        with av.open(path) as container:
            stream = container.streams.video[0]
            raw = []
            for packet in container.demux(stream):
                if packet.size > 0:
                    raw.append(packet.pts if packet.pts is not None else packet.dts)
            time_base = Fraction(stream.time_base) if stream.time_base else None
            rate = _native_fps(stream, sorted(p for p in raw if p is not None), time_base or Fraction(1))
    except DecodeError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise _error(path, "cannot read the video stream", exc) from exc
    if not raw:
        raise _error(path, "no video packets")
    if rate is None:
        raise _error(path, "unknown frame rate")
    if any(p is None for p in raw) or time_base is None:
        log.warning("%s: packets without timestamps; using frame index / %s fps", path, rate)
        pts, time_base = list(range(len(raw))), 1 / rate
    else:
        pts = sorted(raw)
        pts = [p - pts[0] for p in pts]
    return _Timeline(path, pts, time_base, rate, fps, rotation, first_rgb)


def resize_short_side(img: np.ndarray, short_side: int) -> np.ndarray:
    """Bilinear resize so the shorter side equals short_side, aspect kept (rounded half up)."""
    h, w = img.shape[:2]
    if h <= w:
        nh, nw = short_side, max(1, (2 * w * short_side + h) // (2 * h))
    else:
        nw, nh = short_side, max(1, (2 * h * short_side + w) // (2 * w))
    if (nh, nw) == (h, w):
        return img
    return cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)


def _open_decord(tl: _Timeline, strict: bool):
    """Open `tl.path` with decord; return (reader, extra clockwise rotation) or None."""
    try:
        import decord
    except ImportError as exc:
        if strict:
            raise _error(tl.path, "decord is not installed", exc) from exc
        return None
    try:
        reader = decord.VideoReader(tl.path, ctx=decord.cpu(0))
        count = len(reader)
        extra = _decord_rotation(reader, tl) if tl.rotation else 0
    except Exception as exc:  # decord raises its own DECORDError and plain RuntimeErrors
        if strict:
            raise _error(tl.path, "decord cannot open the file", exc) from exc
        log.info("%s: decord cannot open it (%s); using PyAV", tl.path, exc)
        return None
    if count != len(tl.pts):
        if strict:
            raise _error(tl.path, f"decord counts {count} frames but the stream has {len(tl.pts)} packets")
        log.info("%s: decord counts %d frames, PyAV %d; using PyAV", tl.path, count, len(tl.pts))
        return None
    return reader, extra


def _decord_rotation(reader, tl: _Timeline) -> int:
    """Clockwise rotation still needed by decord's frames: 0 if this decord build applied it."""
    frame = reader[0].asnumpy()
    reader.seek(0)
    best, best_err = tl.rotation, math.inf
    for extra in (0, tl.rotation):
        cand = _rotate(frame, extra)
        if cand.shape == tl.first_frame.shape:
            err = float(np.abs(cand.astype(np.int16) - tl.first_frame).mean())
            if err < best_err:
                best, best_err = extra, err
    return best


def _decord_chunks(reader, extra_rot: int, tl: _Timeline, start: int, short_side: int,
                   chunk_size: int) -> Iterator[np.ndarray]:
    total = tl.num_frames
    for k0 in range(start, total, chunk_size):
        src = [tl.source_index(k) for k in range(k0, min(k0 + chunk_size, total))]
        uniq, inverse = np.unique(np.asarray(src), return_inverse=True)
        batch = reader.get_batch(uniq.tolist()).asnumpy()
        resized = np.stack([resize_short_side(_rotate(img, extra_rot), short_side) for img in batch])
        yield resized[inverse.reshape(-1)]


def _pyav_chunks(tl: _Timeline, start: int, short_side: int, chunk_size: int) -> Iterator[np.ndarray]:
    import av

    total = tl.num_frames
    if start >= total:
        return
    k, buf, index, last = start, [], -1, None
    want = tl.source_index(k)
    try:
        with av.open(tl.path) as container:
            stream = container.streams.video[0]
            for frame in container.decode(stream):
                index += 1
                last = frame
                if index < want:
                    continue
                img = resize_short_side(_rotate(frame.to_ndarray(format="rgb24"), tl.rotation), short_side)
                while k < total and want == index:
                    buf.append(img)
                    k += 1
                    if k < total:
                        want = tl.source_index(k)
                    if len(buf) == chunk_size:
                        yield np.stack(buf)
                        buf = []
                if k >= total:
                    break
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise _error(tl.path, f"decoding failed after {index + 1} frames", exc) from exc
    if k < total:
        if last is None:
            raise _error(tl.path, "no decodable video frames")
        log.warning("%s: decoded %d frames but the stream has %d packets; repeating the last",
                       tl.path, index + 1, len(tl.pts))
        img = resize_short_side(_rotate(last.to_ndarray(format="rgb24"), tl.rotation), short_side)
        while k < total:
            buf.append(img)
            k += 1
            if len(buf) == chunk_size:
                yield np.stack(buf)
                buf = []
    if buf:
        yield np.stack(buf)


def probe(path, fps=25.0) -> VideoInfo:
    """Size (upright), rotation, native fps, duration and frame count at `fps` of a video."""
    tl = _scan(path, fps)
    backend = "decord" if _open_decord(tl, strict=False) is not None else "pyav"
    h, w = tl.first_frame.shape[:2]
    return VideoInfo(path=os.fspath(path), video_id=video_id(path), width=w, height=h,
                     rotation=tl.rotation, native_fps=float(tl.native_fps),
                     duration=float(tl.span), num_frames=tl.num_frames, backend=backend)


def iter_frames(path, fps=25.0, short_side=256, chunk_size=64, backend="auto") -> Iterator[np.ndarray]:
    """Yield uint8 RGB chunks (n <= chunk_size, H, W, 3) at `fps`, upright, shorter side resized.

    The chunks concatenate to exactly `probe(path, fps).num_frames` frames. `backend` is
    "auto" (decord, PyAV fallback), "decord" (no fallback) or "pyav". Arguments and the file's
    header are checked at the call; a DecodeError naming the file is raised then, or during
    iteration when the file is corrupted mid-way (after the chunks decoded before the damage).
    """
    if backend not in BACKENDS:
        raise ValueError(f"decode backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if int(short_side) != short_side or short_side < 1:
        raise ValueError(f"short_side must be a positive integer, got {short_side!r}")
    if int(chunk_size) != chunk_size or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    tl = _scan(path, fps)
    return _frames(tl, int(short_side), int(chunk_size), backend)


def _frames(tl: _Timeline, short_side: int, chunk_size: int, backend: str) -> Iterator[np.ndarray]:
    """decord chunks while decord works, then PyAV from the first frame not yet delivered."""
    done = 0
    opened = _open_decord(tl, strict=backend == "decord") if backend != "pyav" else None
    if opened is not None:
        reader, extra = opened
        chunks = _decord_chunks(reader, extra, tl, 0, short_side, chunk_size)
        while True:
            try:
                chunk = next(chunks)
            except StopIteration:
                return
            except Exception as exc:  # decord raises DECORDError / RuntimeError on bad data
                if backend == "decord":
                    raise _error(tl.path, f"decord failed after {done} frames", exc) from exc
                log.warning("%s: decord failed after %d frames (%s); continuing with PyAV",
                               tl.path, done, re.sub(r"\s+", " ", str(exc))[:200])
                break
            done += len(chunk)
            yield chunk
        del reader, chunks
    yield from _pyav_chunks(tl, done, short_side, chunk_size)


def center_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """Centre crop (n, H, W[, C]) to (n, size, size[, C]); the offset is floor((H - size) / 2)."""
    if frames.ndim not in (3, 4):
        raise ValueError(f"center_crop expects (n, H, W) or (n, H, W, C), got shape {frames.shape}")
    h, w = frames.shape[1:3]
    if size < 1 or size > h or size > w:
        raise ValueError(f"crop size {size} does not fit frames of size {h}x{w}")
    top, left = (h - size) // 2, (w - size) // 2
    return frames[:, top:top + size, left:left + size]


def to_gray(frames_rgb: np.ndarray) -> np.ndarray:
    """(n, H, W, 3) uint8 RGB -> (n, H, W) uint8 luma (OpenCV's BT.601 RGB2GRAY)."""
    if frames_rgb.ndim != 4 or frames_rgb.shape[-1] != 3 or frames_rgb.dtype != np.uint8:
        raise ValueError(f"to_gray expects uint8 (n, H, W, 3), got {frames_rgb.dtype} {frames_rgb.shape}")
    n, h, w, _ = frames_rgb.shape
    if n == 0:
        return np.empty((0, h, w), dtype=np.uint8)
    flat = np.ascontiguousarray(frames_rgb).reshape(n * h, w, 3)
    return cv2.cvtColor(flat, cv2.COLOR_RGB2GRAY).reshape(n, h, w)


__all__ = ["DecodeError", "VideoInfo", "video_id", "probe", "iter_frames", "center_crop", "to_gray"]
