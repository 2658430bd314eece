"""Feature extraction of real clips end to end (decode -> TV-L1 -> I3D), without Ray."""
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from wtal.extract.cache import FeatureCache, entry_key
from wtal.extract.features import Extractor, ExtractSettings

from data_paths import SHARED_DATA

VIDEOS = SHARED_DATA / "videos"

pytestmark = pytest.mark.skipif(not VIDEOS.is_dir(), reason="shared test videos not found")


def frames_at_25fps(path: Path) -> int:
    """25-fps frame count from the stream's timestamps, read with PyAV directly."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        pts = sorted(p.pts for p in container.demux(stream) if p.pts is not None)
        tb = stream.time_base
        rate = stream.average_rate or stream.guessed_rate
    span = (pts[-1] - pts[0]) * tb + 1 / Fraction(rate)
    n = 0
    while Fraction(n, 25) < span:
        n += 1
    return n


@pytest.fixture(scope="module")
def fast_extractor():
    torch.set_num_threads(1)
    return Extractor(ExtractSettings(crop_size=112, flow="opencv-cpu", flow_preset="fast"), device="cpu", batch=4)


@pytest.mark.parametrize("name", ["mmaction2_test.avi", "mmaction2_test.mp4"])
def test_real_clip_gives_one_row_per_full_snippet(fast_extractor, name):
    path = VIDEOS / name
    expected = frames_at_25fps(path) // 16
    frames = []
    features = fast_extractor.extract(str(path), on_frames=frames.append)
    assert sum(frames) == frames_at_25fps(path)
    assert features.shape == (expected, 2048)
    assert features.dtype == np.float32
    assert np.isfinite(features).all()
    # rows differ: the features follow the content
    assert np.linalg.norm(features[0] - features[-1]) > 1e-3


def test_batch_size_does_not_change_features(fast_extractor):
    path = VIDEOS / "mmaction2_test.avi"
    other = Extractor(fast_extractor.settings, device="cpu", batch=3)
    other.rgb.load_state_dict(fast_extractor.rgb.state_dict())
    other.flow.load_state_dict(fast_extractor.flow.state_dict())
    a = fast_extractor.extract(str(path))
    b = other.extract(str(path))
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_clip_shorter_than_a_snippet_gives_one_padded_snippet():
    path = VIDEOS / "decord_rotated_90.mov"
    assert frames_at_25fps(path) < 16
    torch.set_num_threads(1)
    ex = Extractor(ExtractSettings(crop_size=224, flow="opencv-cpu", flow_preset="fast"), device="cpu", batch=2)
    features = ex.extract(str(path))
    assert features.shape == (1, 2048)
    assert np.isfinite(features).all()


def test_pad_last_keeps_the_trailing_partial_snippet(fast_extractor):
    path = VIDEOS / "mmaction2_test.avi"
    n = frames_at_25fps(path)
    assert n % 16
    padded = Extractor(ExtractSettings(crop_size=112, flow="opencv-cpu", flow_preset="fast", pad_last=True), "cpu", 4)
    padded.rgb.load_state_dict(fast_extractor.rgb.state_dict())
    padded.flow.load_state_dict(fast_extractor.flow.state_dict())
    assert padded.extract(str(path)).shape == (n // 16 + 1, 2048)


def test_settings_change_the_cache_key():
    base = ExtractSettings(crop_size=112, flow="opencv-cpu", flow_preset="fast")
    keys = {entry_key("abc", s.key_fields("cpu")) for s in (
        base,
        ExtractSettings(crop_size=112, flow="opencv-cpu", flow_preset="default"),
        ExtractSettings(fps=30, crop_size=112, flow="opencv-cpu", flow_preset="fast"),
        ExtractSettings(crop_size=224, flow="opencv-cpu", flow_preset="fast"),
    )}
    assert len(keys) == 4
    same = ExtractSettings(crop_size=112, flow="opencv-cpu", flow_preset="fast")
    assert entry_key("abc", base.key_fields("cpu")) == entry_key("abc", same.key_fields("cpu"))
    assert entry_key("abd", base.key_fields("cpu")) not in keys


def test_cache_roundtrip_verify_export_gc(tmp_path):
    cache = FeatureCache(tmp_path / "c", create=True)
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    settings = {"fps": 25.0, "snippet_frames": 16}
    cache.put("k1", "vid_a", x, settings, "a.mp4")
    cache.put_failure("k2", "vid_b", "DecodeError: b.mp4: broken\nmore", settings, "b.mp4")
    cache.put("old", "vid_a", x * 2, settings, "a.mp4")
    cache.update_manifest({"vid_a": "k1", "vid_b": "k2"})
    records = {r["video_id"]: r for r in cache.records()}
    assert records["vid_a"]["status"] == "ok" and records["vid_a"]["shape"] == [3, 4]
    assert records["vid_b"]["status"] == "failed" and records["vid_b"]["reason"] == "DecodeError: b.mp4: broken"
    assert cache.current() == {"vid_a": "k1"}
    assert cache.snippet_seconds() == pytest.approx(0.64)
    assert cache.verify() == []
    assert cache.export(tmp_path / "plain") == 1
    np.testing.assert_array_equal(np.load(tmp_path / "plain" / "vid_a.npy"), x)
    removed, _ = cache.gc()
    assert removed == 2  # old.npy + old.json
    assert not cache.entry_path("old").exists() and cache.entry_path("k1").exists()
    # damage an entry: verify names it
    cache.entry_path("k1").write_bytes(b"garbage")
    problems = cache.verify()
    assert len(problems) == 1 and "vid_a" in problems[0] and "sha256" in problems[0]
    # no temporary files are left behind by writes
    assert not [p for p in (tmp_path / "c" / "entries").iterdir() if p.name.startswith(".")]


def test_memory_stays_bounded_for_any_video_length(tmp_path, monkeypatch):
    """Flow and I3D never get more than one chunk (batch snippets + 1 frame), and the host memory
    traced during extraction does not grow with the video's length beyond its (T, 2048) output."""
    import tracemalloc

    from wtal.data.synthetic_videos import render_video

    torch.set_num_threads(1)
    batch = 2
    ex = Extractor(ExtractSettings(crop_size=32, flow="opencv-cpu", flow_preset="fast"), device="cpu", batch=batch)
    handed: list[int] = []
    original = Extractor._snippets

    def spy(self, frames, nxt, n):
        handed.append(len(frames) + (nxt is not None))
        return original(self, frames, nxt, n)

    monkeypatch.setattr(Extractor, "_snippets", spy)
    peaks, outputs, chunks = {}, {}, {}
    for seconds in (8.0, 24.0):
        path = tmp_path / f"v{seconds:.0f}.mp4"
        render_video(path, [], seconds, seed=0, size=(37, 50))
        chunks[seconds] = []
        tracemalloc.start()
        try:
            outputs[seconds] = ex.extract(str(path), on_frames=chunks[seconds].append)
            peaks[seconds] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert outputs[8.0].shape == (200 // 16, 2048) and outputs[24.0].shape == (600 // 16, 2048)
    assert sum(chunks[24.0]) == 600 and max(chunks[24.0]) <= batch * 16 + 1
    assert max(handed) <= batch * 16 + 1 and len(handed) == 12 // batch + -(-37 // batch)  # ceil(snippets / batch) per video
    # three times the video, about the same peak: only the output (and its final copy) grows
    assert peaks[24.0] <= 1.25 * peaks[8.0] + 2 * outputs[24.0].nbytes


@pytest.mark.parametrize("count", [2, 5, 7, 10])
def test_torch_flow_in_cpu_batches_equals_one_batch(count):
    """The Extractor's torch TV-L1 runs 4 pairs at a time on CPU: 1, 4, 6 and 9 pairs (whole and
    partial last batches) give the flow of one batch of all pairs."""
    from wtal.extract.flow import PRESETS
    from wtal.extract.tvl1 import tvl1_pairs

    rng = np.random.default_rng(count)
    gray = rng.integers(0, 256, size=(count, 24, 30), dtype=np.uint8)
    ex = Extractor(ExtractSettings(crop_size=16, flow="torch", flow_preset="fast"), device="cpu", batch=1)
    got = ex._raw_flow(gray)
    frames = torch.from_numpy(gray).float().unsqueeze(1)
    want = tvl1_pairs(frames[:-1], frames[1:], PRESETS["fast"]).permute(0, 2, 3, 1)
    assert got.shape == (count - 1, 24, 30, 2)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_conv_math_in_the_cache_key_and_device_defaults():
    """The key says which arithmetic made the features: strict fp32, TF32 (CUDA only) or bf16;
    building it touches no CUDA. Chunks default to 8 snippets on CPU and 32 on CUDA."""
    from wtal.extract.features import conv_math, default_batch

    fields = {p: ExtractSettings(precision=p).key_fields for p in ("fp32", "tf32", "bf16")}
    assert [fields[p]("cuda")["conv_math"] for p in ("fp32", "tf32", "bf16")] == ["fp32", "tf32", "bf16"]
    assert [fields[p]("cpu")["conv_math"] for p in ("fp32", "tf32", "bf16")] == ["fp32", "fp32", "bf16"]
    assert fields["fp32"]("cuda")["flow"] == "torch"
    assert entry_key("abc", fields["fp32"]("cuda")) != entry_key("abc", fields["tf32"]("cuda"))
    with pytest.raises(ValueError, match="precision must be one of fp32, tf32, bf16"):
        conv_math("fp16", "cuda")
    assert (default_batch("cpu"), default_batch("cuda"), default_batch(torch.device("cuda", 1))) == (8, 32, 32)
    assert Extractor(ExtractSettings(crop_size=32, flow="opencv-cpu"), device="cpu").batch == 8


def test_next_video_decodes_ahead_and_micro_batches_keep_features(tmp_path, monkeypatch):
    """extract(a, next_path=b) starts decoding b before it returns; extract(b) then uses that
    stream (b is opened once) and gives b's features. I3D in micro-batches of 1 clip gives the
    features of whole-chunk batches."""
    import time

    from wtal.data.synthetic_videos import render_video
    from wtal.extract import decode

    torch.set_num_threads(1)
    paths = []
    for seed in (1, 2):
        paths.append(tmp_path / f"v{seed}.mp4")
        render_video(paths[-1], [], 3.0, seed=seed, size=(37, 50))
    settings = ExtractSettings(crop_size=32, flow="opencv-cpu", flow_preset="fast")
    alone = Extractor(settings, device="cpu", batch=2)
    want = [alone.extract(str(p)) for p in paths]
    opened = []
    original = decode.iter_frames

    def spy(path, **kwargs):
        opened.append(path)
        return original(path, **kwargs)

    monkeypatch.setattr(decode, "iter_frames", spy)
    ex = Extractor(settings, device="cpu", batch=2)
    ex.i3d_batch = 1
    first = ex.extract(str(paths[0]), next_path=str(paths[1]))
    deadline = time.monotonic() + 30
    while str(paths[1]) not in opened and time.monotonic() < deadline:
        time.sleep(0.01)
    assert opened == [str(paths[0]), str(paths[1])]
    second = ex.extract(str(paths[1]))
    assert opened == [str(paths[0]), str(paths[1])]
    np.testing.assert_allclose(first, want[0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(second, want[1], rtol=0, atol=1e-5)
