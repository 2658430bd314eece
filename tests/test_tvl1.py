"""Torch TV-L1 (wtal.extract.tvl1) against OpenCV's CPU Dual TV-L1 on real clips, plus invariants."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

try:
    import av
except ImportError:  # the GPU machine of bench/gpu.sh has no PyAV: frames come from OpenCV there
    av = None

from wtal.extract import tvl1
from wtal.extract.decode import center_crop, resize_short_side
from wtal.extract.tvl1 import (
    DEFAULT_PARAMS,
    _median_filter_torch,
    resolve_params,
    tvl1_flow_torch,
)

from data_paths import SHARED_DATA

VIDEOS = SHARED_DATA / "videos"
FAST = {**DEFAULT_PARAMS, "nscales": 3, "warps": 1, "inner_iterations": 10, "outer_iterations": 2}
# (clip, first frame index) of consecutive-frame pairs with visible motion.
PAIRS = [("mmaction2_demo.mp4", 10), ("activitynet_v_GGSY1Qvo990.mp4", 30), ("mmaction2_test.avi", 5)]


def decoded_gray(path: Path):
    """Gray frames of a clip in order: PyAV's, or OpenCV's decoder where PyAV is missing."""
    if av is not None:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                yield frame.to_ndarray(format="gray")
        return
    capture = cv2.VideoCapture(str(path))
    ok, frame = capture.read()
    while ok:
        yield cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        ok, frame = capture.read()
    capture.release()


def gray_crop(path: Path, start: int, count: int, size: int = 224) -> np.ndarray:
    """Decode `count` frames from `start`, to gray, shorter side `size`, centre crop."""
    frames = []
    for index, gray in enumerate(decoded_gray(path)):
        if index < start:
            continue
        frames.append(resize_short_side(gray, size))
        if len(frames) == count:
            break
    assert len(frames) == count, f"{path.name}: fewer than {start + count} frames"
    return center_crop(np.stack(frames), size)


def opencv_flow(i0: np.ndarray, i1: np.ndarray, p: dict) -> np.ndarray:
    """Reference: cv2.optflow.DualTVL1OpticalFlow with the same parameters."""
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create(
        p["tau"], p["lambda_"], p["theta"], p["nscales"], p["warps"], p["epsilon"],
        p["inner_iterations"], p["outer_iterations"], p["scale_step"], p["gamma"],
        p["median_filtering"],
    )
    return tvl1.calc(i0, i1, None)


def reference_flow(i0: np.ndarray, i1: np.ndarray, p: dict) -> np.ndarray:
    """OpenCV's CPU TV-L1, or, where this OpenCV has no contrib modules (the GPU machine of
    bench/gpu.sh), wtal's eager torch TV-L1 on CPU, which the CPU tests hold to OpenCV's."""
    if hasattr(cv2, "optflow"):
        return opencv_flow(i0, i1, p)
    return tvl1_flow_torch(np.stack([i0, i1]), p, device="cpu", mode="eager")[0]


def epe(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(((a - b) ** 2).sum(-1)).mean())


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    yield
    torch.set_num_threads(threads)
    cv2.setNumThreads(cv_threads)


@pytest.fixture(scope="module")
def real_pairs() -> list[np.ndarray]:
    return [gray_crop(VIDEOS / name, start, 2) for name, start in PAIRS]


def test_matches_opencv_default_on_real_clips(real_pairs):
    """Acceptance: mean end-point error to OpenCV's default TV-L1 <= 0.1 px on 224x224 crops."""
    for frames, (name, _) in zip(real_pairs, PAIRS):
        ref = opencv_flow(frames[0], frames[1], DEFAULT_PARAMS)
        assert np.sqrt((ref**2).sum(-1)).mean() > 0.3, f"{name}: pair has too little motion to test"
        out = tvl1_flow_torch(frames, DEFAULT_PARAMS)[0]
        assert epe(out, ref) <= 0.1, f"{name}: EPE {epe(out, ref):.4f} px"


def test_fast_preset_matches_opencv(real_pairs):
    frames = real_pairs[0]
    out = tvl1_flow_torch(frames, FAST)
    assert out.shape == (1, 224, 224, 2) and out.dtype == np.float32
    assert epe(out[0], opencv_flow(frames[0], frames[1], FAST)) <= 0.01


def textured(size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.random((size, size)), (0, 0), 2.0)
    return ((img - img.min()) / (img.max() - img.min()) * 255).round().astype(np.uint8)


def test_recovers_synthetic_shift():
    """Frame 1 is frame 0 moved by (+3, -2) px, so the flow is (3, -2): I0(x) = I1(x + u)."""
    size, pad, dx, dy = 96, 8, 3, -2
    tex = textured(size + 2 * pad)
    i0 = tex[pad : pad + size, pad : pad + size]
    i1 = tex[pad - dy : pad - dy + size, pad - dx : pad - dx + size]
    flow = tvl1_flow_torch(np.stack([i0, i1]), DEFAULT_PARAMS)[0]
    inner = flow[10:-10, 10:-10]
    assert np.abs(inner[..., 0] - dx).mean() < 0.05 and np.abs(inner[..., 1] - dy).mean() < 0.05
    assert np.abs(inner - [dx, dy]).max() < 0.5


def test_batch_equals_pair_by_pair(real_pairs):
    """A pair that stops early inside a batch (identical frames stop after one iteration) must not
    change the others, and each pair's batched result must equal its own run, also when the host
    looks at the device-side convergence mask only every 4 or 10 inner iterations (frozen pairs
    wait in the batch until then)."""
    a, b = (cv2.resize(f, (112, 112), interpolation=cv2.INTER_AREA) for f in real_pairs[0])
    frames = np.stack([a, b, b, a])  # pairs: forward motion, no motion, backward motion
    singles = np.stack([tvl1_flow_torch(frames[t : t + 2], DEFAULT_PARAMS, check_every=1)[0] for t in range(3)])
    for check_every in (1, 4, 10):
        batched = tvl1_flow_torch(frames, DEFAULT_PARAMS, batch_size=3, check_every=check_every)
        assert np.abs(batched[1]).max() < 1e-6
        assert np.abs(batched[0]).mean() > 0.5 and np.abs(batched[2]).mean() > 0.5
        np.testing.assert_allclose(batched, singles, rtol=0, atol=1e-4)
    split = tvl1_flow_torch(frames, DEFAULT_PARAMS, batch_size=2)
    np.testing.assert_allclose(split, singles, rtol=0, atol=1e-4)


def test_median_network_selects_the_median():
    """The min/max network returns the middle order statistic: for 3x3 on every 0/1 input (the
    0-1 principle makes that a proof for all inputs), for 5x5 and 7x7 on random inputs with ties."""
    network = tvl1._median_network(9)
    for code in range(2**9):
        values = [(code >> bit) & 1 for bit in range(9)]
        for op, a, b in network:
            values.append(min(values[a], values[b]) if op == "min" else max(values[a], values[b]))
        assert values[-1] == sorted(values[:9])[4]
    rng = np.random.default_rng(0)
    for count in (25, 49):
        views = torch.from_numpy(rng.integers(0, 6, size=(count, 4000)).astype(np.float32))
        assert torch.equal(tvl1._median_of_views(list(views)), views.median(dim=0).values)
    assert len(tvl1._median_network(25)) == 202


def test_modes_resolve_and_fall_back(real_pairs, monkeypatch, caplog):
    """auto is eager on CPU; graphs need CUDA; a mode that fails to compile warns once and runs the
    same iteration eagerly (here a stand-in for torch.compile's result that raises)."""
    cpu = torch.device("cpu")
    assert tvl1.resolve_mode("auto", cpu) == "eager" and tvl1.resolve_mode("graphs", cpu) == "compiled"
    with pytest.raises(ValueError, match="unknown TV-L1 mode"):
        tvl1.resolve_mode("fused", cpu)

    def broken(*args):
        raise RuntimeError("no compiler")

    monkeypatch.setattr(tvl1, "_BROKEN", set())
    monkeypatch.setitem(tvl1._COMPILED, "compiled", (broken, None))
    frames = np.stack([cv2.resize(f, (48, 48), interpolation=cv2.INTER_AREA) for f in real_pairs[0]])
    out = tvl1_flow_torch(frames, FAST, mode="compiled", check_every=5)
    assert "failed (RuntimeError: no compiler)" in caplog.text and tvl1._BROKEN == {"compiled"}
    assert tvl1.resolve_mode("compiled", cpu) == "eager"
    monkeypatch.setattr(tvl1, "_BROKEN", set())
    monkeypatch.setitem(tvl1._COMPILED, "compiled", (tvl1._iteration, tvl1._median_planes))
    functional = tvl1_flow_torch(frames, FAST, mode="compiled", check_every=5)
    np.testing.assert_array_equal(out, functional)
    assert epe(functional[0], tvl1_flow_torch(frames, FAST)[0]) < 1e-3


@pytest.mark.slow
def test_compiled_iteration_matches_opencv(real_pairs, monkeypatch):
    """torch.compile of the iteration and the median (the CUDA default) on CPU: flows stay within
    the OpenCV tolerance of the fast preset and near the eager result (the loop amplifies float
    rounding locally, so the comparison is by mean end-point error)."""
    monkeypatch.setattr(tvl1, "_BROKEN", set())
    frames = np.stack([cv2.resize(f, (64, 64), interpolation=cv2.INTER_AREA) for f in real_pairs[0]])
    out = tvl1_flow_torch(frames, FAST, mode="compiled", check_every=5)
    assert not tvl1._BROKEN
    assert epe(out[0], tvl1_flow_torch(frames, FAST)[0]) < 1e-3
    assert epe(out[0], opencv_flow(frames[0], frames[1], FAST)) <= 0.01


def test_shapes_dtypes_and_validation():
    frames = np.stack([textured(40, seed=s) for s in range(3)])
    out = tvl1_flow_torch(frames, FAST, batch_size=1)
    assert out.shape == (2, 40, 40, 2) and out.dtype == np.float32 and np.isfinite(out).all()
    assert tvl1_flow_torch(frames[:1], FAST).shape == (0, 40, 40, 2)
    with pytest.raises(ValueError, match="uint8"):
        tvl1_flow_torch(frames.astype(np.float32), FAST)
    with pytest.raises(ValueError, match="unknown TV-L1 parameter"):
        tvl1_flow_torch(frames, {"lambda": 0.1})
    with pytest.raises(ValueError, match="median_filtering"):
        resolve_params({"median_filtering": 4})
    assert resolve_params(None) == DEFAULT_PARAMS


@pytest.mark.parametrize("size", [3, 5])
@pytest.mark.parametrize("chunk_planes", [None, 1, 4])
def test_torch_median_matches_opencv(size, chunk_planes, monkeypatch):
    """The median used off-CPU equals cv::medianBlur (replicated border) exactly, also when its
    memory budget makes it filter the planes a few at a time (here 1 or 4 of 6 per chunk)."""
    if chunk_planes is not None:
        monkeypatch.setattr(tvl1, "_MEDIAN_CHUNK_BYTES", chunk_planes * 17 * 23 * size * size * 4)
    rng = np.random.default_rng(size)
    planes = rng.standard_normal((2, 3, 17, 23)).astype(np.float32)
    out = _median_filter_torch(torch.from_numpy(planes), size).numpy()
    ref = np.stack([[cv2.medianBlur(p, size) for p in pair] for pair in planes])
    np.testing.assert_array_equal(out, ref)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", ["auto", "eager", "compiled", "graphs"])
def test_cuda_matches_opencv(real_pairs, mode):
    frames = np.concatenate([real_pairs[0], real_pairs[1]])  # pairs 0-1 and 2-3 are the real ones
    out = tvl1_flow_torch(frames, DEFAULT_PARAMS, device="cuda", mode=mode)
    for t in (0, 2):
        assert epe(out[t], reference_flow(frames[t], frames[t + 1], DEFAULT_PARAMS)) <= 0.1
    assert tvl1.resolve_mode(mode, torch.device("cuda")) != "eager" or mode == "eager"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_median_equals_opencv():
    planes = np.random.default_rng(1).standard_normal((3, 2, 57, 61)).astype(np.float32)
    out = _median_filter_torch(torch.from_numpy(planes).cuda(), 5).cpu().numpy()
    np.testing.assert_array_equal(out, np.stack([[cv2.medianBlur(p, 5) for p in pair] for pair in planes]))
