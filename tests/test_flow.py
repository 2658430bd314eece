"""TV-L1 flow: shift recovery on synthetic frames, presets, backends and the input transform."""
from __future__ import annotations

import sys
import types

import cv2
import numpy as np
import pytest

from wtal.extract import flow as flow_mod
from wtal.extract.flow import BACKENDS, PRESETS, compute_flow, flow_to_input, resolve_backend

SIZE = 64
MARGIN = 8


def textured(seed: int = 0, pad: int = 12) -> np.ndarray:
    """A smooth random texture larger than SIZE so that shifted crops stay inside it."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.random((SIZE + 2 * pad, SIZE + 2 * pad)), (0, 0), 1.5)
    return ((img - img.min()) / (img.max() - img.min()) * 255).round().astype(np.uint8)


def crop(img: np.ndarray, dx: int, dy: int, pad: int = 12) -> np.ndarray:
    """The frame whose content is the texture moved by (dx, dy): I(x, y) = T(x - dx, y - dy)."""
    return img[pad - dy:pad - dy + SIZE, pad - dx:pad - dx + SIZE]


@pytest.fixture(scope="module")
def frames():
    tex = textured()
    # frame 0 -> 1 moves by (+2, -1); frame 1 -> 2 moves by (-1, +2).
    return np.stack([crop(tex, 0, 0), crop(tex, 2, -1), crop(tex, 1, 1)])


def interior(flow: np.ndarray) -> np.ndarray:
    return flow[MARGIN:-MARGIN, MARGIN:-MARGIN]


def test_default_preset_recovers_shift(frames):
    out = compute_flow(frames, backend="opencv-cpu", preset="default")
    assert out.shape == (2, SIZE, SIZE, 2) and out.dtype == np.float32
    assert np.abs(interior(out[0]) - [2.0, -1.0]).max() < 0.3
    assert np.abs(interior(out[1]) - [-1.0, 2.0]).max() < 0.3


def test_fast_preset_is_close(frames):
    out = compute_flow(frames[:2], preset="fast")
    assert out.shape == (1, SIZE, SIZE, 2)
    assert np.abs(interior(out[0]) - [2.0, -1.0]).mean() < 0.1
    assert np.abs(interior(out[0]) - [2.0, -1.0]).max() < 0.5


def test_static_frames_give_zero_flow(frames):
    out = compute_flow(np.stack([frames[0], frames[0]]), preset="fast")
    assert np.abs(out).max() < 1e-3


def test_short_and_invalid_inputs(frames):
    assert compute_flow(frames[:1]).shape == (0, SIZE, SIZE, 2)
    with pytest.raises(ValueError, match="uint8"):
        compute_flow(frames.astype(np.float32))
    with pytest.raises(ValueError, match="uint8"):
        compute_flow(frames[..., None])
    with pytest.raises(ValueError, match="default, fast"):
        compute_flow(frames, preset="slow")


def test_presets():
    assert PRESETS["default"] == {
        "tau": 0.25, "lambda_": 0.15, "theta": 0.3, "nscales": 5, "warps": 5, "epsilon": 0.01,
        "inner_iterations": 30, "outer_iterations": 10, "scale_step": 0.8, "gamma": 0.0,
        "median_filtering": 5,
    }
    fast = dict(PRESETS["default"], nscales=3, warps=1, inner_iterations=10, outer_iterations=2)
    assert PRESETS["fast"] == fast


def test_flow_to_input_clip_and_scale():
    raw = np.array([-25.0, -20.0, 0.0, 0.1, 7.3, 20.0, 25.0], dtype=np.float32)
    out = flow_to_input(raw)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [-1.0, -1.0, 0.0, 0.005, 0.365, 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(flow_to_input(raw, bound=10.0), [-1, -1, 0, 0.01, 0.73, 1, 1], atol=1e-6)


def test_flow_to_input_quantized():
    raw = np.array([-25.0, -20.0, 0.0, 0.1, 7.3, 20.0, 25.0], dtype=np.float32)
    # levels: round((f + 20) / 40 * 255) = 0, 0, 128 (127.5), 128 (128.14), 174 (174.04), 255, 255
    expected = np.array([0, 0, 128, 128, 174, 255, 255]) / 255.0 * 2.0 - 1.0
    out = flow_to_input(raw, quantize=True)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert len(np.unique(flow_to_input(np.linspace(-30, 30, 10001), quantize=True))) == 256
    with pytest.raises(ValueError):
        flow_to_input(raw, bound=0)


def test_resolve_backend_without_probing_asks_nothing(monkeypatch):
    """A driver on a CPU-only node resolves the workers' backend asking nothing of CUDA or OpenCV
    (the probes below would fail)."""
    import wtal.device

    def no_probe(*args):
        raise AssertionError("probed")

    monkeypatch.setattr(wtal.device, "resolve_device", no_probe)
    monkeypatch.setattr(flow_mod, "_opencv_cuda_available", no_probe)
    assert resolve_backend("auto", "cuda", probe=False) == "torch"
    assert resolve_backend("auto", "cuda:1", probe=False) == "torch"
    assert resolve_backend("auto", "cpu", probe=False) == "torch"
    assert resolve_backend("opencv-cuda", "cuda", probe=False) == "opencv-cuda"


def test_resolve_backend_choices():
    assert BACKENDS == ("opencv-cpu", "opencv-cuda", "torch")
    assert resolve_backend("auto", "cpu") == "torch"
    assert resolve_backend("opencv-cpu", "cuda") == "opencv-cpu"
    assert resolve_backend("torch", "cpu") == "torch"
    with pytest.raises(ValueError) as info:
        resolve_backend("farneback", "cpu")
    for name in ("auto",) + BACKENDS:
        assert name in str(info.value)


@pytest.mark.skipif(flow_mod._opencv_cuda_available(), reason="this OpenCV build has CUDA")
def test_opencv_cuda_unavailable_is_a_clear_error(frames):
    with pytest.raises(RuntimeError, match="opencv-cuda"):
        resolve_backend("opencv-cuda", "cuda")
    with pytest.raises(RuntimeError, match="opencv-cuda"):
        compute_flow(frames, backend="opencv-cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not flow_mod._opencv_cuda_available(), reason="needs OpenCV with CUDA and a GPU")
def test_opencv_cuda_recovers_shift(frames):
    out = compute_flow(frames, backend="opencv-cuda")
    assert out.shape == (2, SIZE, SIZE, 2) and out.dtype == np.float32
    assert np.abs(interior(out[0]) - [2.0, -1.0]).max() < 0.3


def test_torch_backend_dispatch(frames, monkeypatch):
    calls = []

    def fake(frames_uint8, params, device):
        calls.append((frames_uint8.shape, params, device))
        return np.full((len(frames_uint8) - 1, SIZE, SIZE, 2), 0.5, np.float32)

    module = types.ModuleType("wtal.extract.tvl1")
    module.tvl1_flow_torch = fake
    monkeypatch.setitem(sys.modules, "wtal.extract.tvl1", module)
    out = compute_flow(frames, backend="torch", preset="fast", device="cpu")
    assert out.shape == (2, SIZE, SIZE, 2) and float(out[1, 3, 4, 1]) == 0.5
    assert calls == [((3, SIZE, SIZE), PRESETS["fast"], "cpu")]


def test_torch_backend_missing_module(frames, monkeypatch):
    monkeypatch.setitem(sys.modules, "wtal.extract.tvl1", None)
    with pytest.raises(RuntimeError, match="wtal.extract.tvl1"):
        compute_flow(frames, backend="torch")


def test_auto_backend_is_torch_on_every_device():
    """auto is wtal's batched torch TV-L1 on CPUs too (the faster backend there), and the cache
    key records the resolved backend, so auto and an explicit `torch` share entries."""
    torch = pytest.importorskip("torch")
    from wtal.device import resolve_device
    from wtal.extract.features import ExtractSettings

    for device in ("cpu", "cuda", "auto"):
        assert resolve_backend("auto", device) == "torch"
    assert ExtractSettings(flow="auto").key_fields("cpu")["flow"] == "torch"
    assert ExtractSettings(flow="auto").key_fields("cpu") == ExtractSettings(flow="torch").key_fields("cpu")
    assert ExtractSettings(flow="opencv-cpu").key_fields("cpu")["flow"] == "opencv-cpu"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            resolve_device("cuda")
