"""Decoding against an independent PyAV reference: frame counts, resampling, rotation, errors."""
from __future__ import annotations

import os
import types
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from wtal.extract.decode import DecodeError, center_crop, iter_frames, probe, to_gray, video_id

from data_paths import SHARED_DATA

VIDEOS = SHARED_DATA / "videos"
CORRUPTED = "decord_corrupted.mp4"
CLIPS = sorted(p.name for p in VIDEOS.glob("*") if p.name != CORRUPTED) if VIDEOS.is_dir() else []

pytestmark = pytest.mark.skipif(not CLIPS, reason=f"test videos not found in {VIDEOS}")


def reference_timeline(name: str, fps=25):
    """PyAV's frame pts -> (sorted relative pts in seconds, target count) by the documented rule.

    span = (last pts - first pts) + 1 / native fps; targets k / fps for k >= 0 while < span.
    """
    with av.open(str(VIDEOS / name)) as container:
        stream = container.streams.video[0]
        pts = [frame.pts for frame in container.decode(stream)]
        tb, rate = Fraction(stream.time_base), Fraction(stream.average_rate)
    first = min(pts)
    rel = sorted((p - first) * tb for p in pts)
    span = rel[-1] + 1 / rate
    count = 0
    while Fraction(count, 1) / fps < span:
        count += 1
    return rel, count


def resized_size(h: int, w: int, short: int = 256) -> tuple[int, int]:
    """(H, W) with the shorter side `short` and the other side rounded half up."""
    if h <= w:
        return short, int(Fraction(w * short, h) + Fraction(1, 2))
    return int(Fraction(h * short, w) + Fraction(1, 2)), short


@pytest.fixture(scope="module")
def references():
    return {name: reference_timeline(name) for name in CLIPS}


@pytest.mark.parametrize("name", CLIPS)
def test_counts_shapes_and_backends_agree(name, references):
    _, expected = references[name]
    info = probe(VIDEOS / name)
    assert info.num_frames == expected
    assert info.video_id == name.rsplit(".", 1)[0]
    assert info.backend in ("decord", "pyav")
    size = resized_size(info.height, info.width)
    n_pyav = n_decord = 0
    for a, b in zip(iter_frames(VIDEOS / name, backend="pyav"), iter_frames(VIDEOS / name, backend="decord")):
        assert a.dtype == np.uint8 and a.shape[1:] == size + (3,)
        assert min(a.shape[1:3]) == 256
        assert a.shape == b.shape
        # Same source frames: identical pixels up to colour-conversion rounding.
        assert np.abs(a.astype(np.int16) - b).mean() < 0.5
        n_pyav += len(a)
        n_decord += len(b)
    assert n_pyav == n_decord == expected


@pytest.mark.parametrize("name, kind", [("activitynet_v_GGSY1Qvo990.mp4", "repeats"),
                                        ("mmaction2_test.mp4", "drops"),
                                        ("mmaction2_test.avi", "identity")])
def test_resampling_picks_last_frame_at_or_before_target_time(name, kind, references):
    """19.62 fps (repeats), 30 fps (drops) and an AVI whose frames carry pts in decode order."""
    rel, expected = references[name]
    with av.open(str(VIDEOS / name)) as container:
        stream = container.streams.video[0]
        monotonic = True
        last_pts = None
        prints = []
        for frame in container.decode(stream):
            if last_pts is not None and frame.pts < last_pts:
                monotonic = False
            last_pts = frame.pts
            img = frame.to_ndarray(format="rgb24")
            h, w = resized_size(*img.shape[:2])
            prints.append(cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)[::8, ::8])
    if kind == "identity":
        # Its pts are shuffled but the decoder's output order is the display order; at 25 fps
        # native, output frame k is target frame k.
        assert not monotonic
        wanted = list(range(expected))
    else:
        assert monotonic
        wanted = [sum(1 for r in rel if r <= Fraction(k, 25)) - 1 for k in range(expected)]
    if kind == "repeats":
        assert len(set(wanted)) == len(rel) < len(wanted)
    elif kind == "drops":
        assert len(set(wanted)) == len(wanted) < len(rel)
    got = np.concatenate([c[:, ::8, ::8] for c in iter_frames(VIDEOS / name, backend="pyav")])
    assert len(got) == expected
    for k, j in enumerate(wanted):
        assert np.array_equal(got[k], prints[j]), f"target frame {k} should be source frame {j}"


def test_probe_other_fps():
    name = "mmaction2_test.mp4"
    _, expected = reference_timeline(name, fps=10)
    info = probe(VIDEOS / name, fps=10)
    assert info.num_frames == expected == 100
    assert info.native_fps == 30.0
    assert info.duration == pytest.approx(10.0)


def test_rotated_clip_is_upright():
    path = VIDEOS / "decord_rotated_90.mov"
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        coded_w, coded_h = stream.codec_context.width, stream.codec_context.height
        frame = next(container.decode(stream))
        coded = frame.to_ndarray(format="rgb24")
    info = probe(path)
    assert (info.width, info.height) == (coded_h, coded_w) == (320, 568)
    assert info.rotation == 90
    # The display matrix asks for a 90 degree clockwise turn (np.rot90 with k=-1), checked by eye.
    upright = np.rot90(coded, k=-1)
    h, w = resized_size(*upright.shape[:2])
    ref = cv2.resize(np.ascontiguousarray(upright), (w, h), interpolation=cv2.INTER_LINEAR).astype(np.int16)
    for backend in ("pyav", "decord"):
        first = next(iter_frames(path, backend=backend))[0]
        assert first.shape == (454, 256, 3)
        err = np.abs(first - ref).mean()
        err_flipped = np.abs(first[::-1, ::-1] - ref).mean()
        assert err < 1.0, backend
        assert err_flipped > 20 * max(err, 0.5), backend


@pytest.mark.parametrize("backend", ["auto", "pyav", "decord"])
def test_corrupted_file_raises_one_line_error(backend):
    with pytest.raises(DecodeError) as info:
        for _ in iter_frames(VIDEOS / CORRUPTED, backend=backend):
            pass
    assert CORRUPTED in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(DecodeError, match="nope.mp4"):
        probe(tmp_path / "nope.mp4")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(DecodeError, match="garbage.mp4"):
        list(iter_frames(garbage))


def test_streaming_chunks():
    name = "mmaction2_test.avi"
    sizes = [len(c) for c in iter_frames(VIDEOS / name, chunk_size=7)]
    assert max(sizes) <= 7
    assert all(s == 7 for s in sizes[:-1])
    assert sum(sizes) == 164


def test_bad_arguments():
    with pytest.raises(ValueError, match="backend"):
        iter_frames(VIDEOS / CLIPS[0], backend="ffmpeg")
    with pytest.raises(ValueError, match="fps"):
        probe(VIDEOS / CLIPS[0], fps=0)


def test_video_id():
    assert video_id("/a/b/v_x.y.mp4") == "v_x.y"
    assert video_id(Path("clip.avi")) == "clip"


def test_center_crop():
    frames = np.arange(2 * 5 * 8 * 3).reshape(2, 5, 8, 3)
    out = center_crop(frames, 3)
    assert out.shape == (2, 3, 3, 3)
    # offsets floor((5 - 3) / 2) = 1 and floor((8 - 3) / 2) = 2
    assert out[0, 0, 0, 0] == frames[0, 1, 2, 0] == (1 * 8 + 2) * 3
    assert out[1, 2, 2, 2] == frames[1, 3, 4, 2]
    gray = frames[..., 0]
    assert np.array_equal(center_crop(gray, 3), out[..., 0])
    with pytest.raises(ValueError):
        center_crop(frames, 6)


def test_to_gray():
    rgb = np.array([[[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [10, 20, 30]]]], np.uint8)
    gray = to_gray(np.concatenate([rgb, rgb[:, :, ::-1]]))
    assert gray.shape == (2, 1, 5) and gray.dtype == np.uint8
    # BT.601: 0.299 R + 0.587 G + 0.114 B, rounded.
    assert gray[0, 0].tolist() == [76, 150, 29, 255, 18]
    assert gray[1, 0].tolist() == [18, 255, 29, 150, 76]
    with pytest.raises(ValueError):
        to_gray(rgb[..., :2])


def test_count_rule_boundaries():
    """Exact arithmetic: a 10 s span at 25 fps is 250 targets, not 251."""
    rel, count = reference_timeline("mmaction2_test.mp4")
    assert rel[-1] + Fraction(1, 30) == 10 and count == 250
    assert probe(VIDEOS / "mmaction2_test.mp4").num_frames == 250


def test_decord_failure_midway_resumes_with_pyav(monkeypatch):
    """auto: when decord fails after some chunks, PyAV delivers exactly the remaining frames."""
    import wtal.extract.decode as decode_mod

    real = decode_mod._decord_chunks

    def failing(*args, **kwargs):
        chunks = real(*args, **kwargs)
        yield next(chunks)
        yield next(chunks)
        raise RuntimeError("simulated decord seek failure")

    path = VIDEOS / "mmaction2_test.avi"
    reference = np.concatenate(list(iter_frames(path, backend="pyav", chunk_size=50)))
    monkeypatch.setattr(decode_mod, "_decord_chunks", failing)
    chunks = list(iter_frames(path, backend="auto", chunk_size=50))
    assert [len(c) for c in chunks] == [50, 50, 50, 14]
    assert np.array_equal(np.concatenate(chunks), reference)
    with pytest.raises(DecodeError, match="mmaction2_test.avi"):
        list(iter_frames(path, backend="decord", chunk_size=50))


def test_decord_rotation_check_handles_both_decord_behaviours():
    """Builds of decord that ignore the display matrix get the rotation applied by wtal."""
    import wtal.extract.decode as decode_mod

    tl = decode_mod._scan(VIDEOS / "decord_rotated_90.mov", 25)
    coded = np.ascontiguousarray(np.rot90(tl.first_frame, k=1))  # undo the clockwise turn

    class Reader:
        def __init__(self, frame):
            self.frame = frame

        def __getitem__(self, index):
            return types.SimpleNamespace(asnumpy=lambda: self.frame)

        def seek(self, index):
            pass

    assert decode_mod._decord_rotation(Reader(coded), tl) == 90
    assert decode_mod._decord_rotation(Reader(tl.first_frame), tl) == 0
