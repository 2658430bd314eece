"""Dense TV-L1 optical flow between consecutive grayscale frames, and its network input form.

Backends: "opencv-cpu" (`cv2.optflow.DualTVL1OpticalFlow`), "opencv-cuda"
(`cv2.cuda_OpticalFlowDual_TVL1`, iterations = inner x outer and no median filter, as OpenCV's
CUDA class has neither) and "torch" (`wtal.extract.tvl1`, batched, CPU or GPU). All return raw
flow in pixels, x component first, frame t paired with t + 1. Library code leaves
`cv2.setNumThreads` alone: workers choose their own thread counts.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..errors import SettingsError, UnavailableError
from .presets import PRESETS

BACKENDS = ("opencv-cpu", "opencv-cuda", "torch")


def _opencv_cuda_available() -> bool:
    """True when this OpenCV build has CUDA TV-L1 and sees at least one CUDA device."""
    if not (hasattr(cv2, "cuda_OpticalFlowDual_TVL1") or hasattr(getattr(cv2, "cuda", None),
                                                                "OpticalFlowDual_TVL1_create")):
        return False
    try:
        return cv2.cuda.getCudaEnabledDeviceCount() > 0
    except cv2.error:
        return False


def resolve_backend(name: str, device: str, probe: bool = True) -> str:
    """Map a backend name ("auto" or one of BACKENDS) to the backend that will run.

    "auto" picks "torch" on every device: batched, it is the fastest backend on a GPU and also
    on a CPU (2.1-2.8x OpenCV's CPU TV-L1 at equal results, bench/flow.py and bench/extract.py).
    With ``probe=False`` nothing is asked of this process's OpenCV (a driver on a CPU-only node
    naming the workers' cache keys; the workers then check availability themselves).
    """
    if name == "auto":
        return "torch"
    if name not in BACKENDS:
        raise SettingsError(f"unknown flow backend {name!r}; choose one of auto, {', '.join(BACKENDS)}")
    if probe and name == "opencv-cuda" and not _opencv_cuda_available():
        raise UnavailableError(
            f"flow backend 'opencv-cuda' needs an OpenCV build with CUDA and a CUDA device "
            f"(cv2 {cv2.__version__} has none); use 'torch' or 'opencv-cpu'"
        )
    return name


def _preset(preset: str) -> dict:
    if preset not in PRESETS:
        raise SettingsError(f"unknown flow preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return dict(PRESETS[preset])


def _opencv_cpu(frames: np.ndarray, p: dict, out: np.ndarray) -> None:
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()  # type: ignore[attr-defined]  # contrib, not in the stubs
    tvl1.setTau(p["tau"])
    tvl1.setLambda(p["lambda_"])
    tvl1.setTheta(p["theta"])
    tvl1.setScalesNumber(p["nscales"])
    tvl1.setWarpingsNumber(p["warps"])
    tvl1.setEpsilon(p["epsilon"])
    tvl1.setInnerIterations(p["inner_iterations"])
    tvl1.setOuterIterations(p["outer_iterations"])
    tvl1.setScaleStep(p["scale_step"])
    tvl1.setGamma(p["gamma"])
    tvl1.setMedianFiltering(p["median_filtering"])
    for t in range(len(frames) - 1):
        out[t] = tvl1.calc(frames[t], frames[t + 1], None)


def _opencv_cuda(frames: np.ndarray, p: dict, out: np.ndarray) -> None:
    args = (p["tau"], p["lambda_"], p["theta"], p["nscales"], p["warps"], p["epsilon"],
            p["inner_iterations"] * p["outer_iterations"], p["scale_step"], p["gamma"], False)
    if hasattr(cv2, "cuda_OpticalFlowDual_TVL1"):
        tvl1 = cv2.cuda_OpticalFlowDual_TVL1.create(*args)
    else:
        tvl1 = cv2.cuda.OpticalFlowDual_TVL1_create(*args)  # type: ignore[attr-defined]  # CUDA builds only
    prev = cv2.cuda_GpuMat()  # type: ignore[attr-defined]
    prev.upload(frames[0])
    for t in range(len(frames) - 1):
        nxt = cv2.cuda_GpuMat()  # type: ignore[attr-defined]
        nxt.upload(frames[t + 1])
        out[t] = tvl1.calc(prev, nxt, None).download()
        prev = nxt


def compute_flow(frames, backend="opencv-cpu", preset="default", device="cpu") -> np.ndarray:
    """TV-L1 flow of grayscale frames (N, H, W) uint8 -> (N-1, H, W, 2) float32 pixels (x, y)."""
    if not isinstance(frames, np.ndarray) or frames.ndim != 3 or frames.dtype != np.uint8:
        desc = (f"{frames.dtype} array of shape {frames.shape}" if isinstance(frames, np.ndarray)
                else type(frames).__name__)
        raise ValueError(f"compute_flow expects grayscale uint8 frames (N, H, W), got {desc}")
    params = _preset(preset)
    backend = resolve_backend(backend, device)
    num, height, width = frames.shape
    if num < 2:
        return np.empty((0, height, width, 2), dtype=np.float32)
    frames = np.ascontiguousarray(frames)
    if backend == "torch":
        try:
            from .tvl1 import tvl1_flow_torch
        except ImportError as exc:
            raise RuntimeError(f"flow backend 'torch' is unavailable: cannot import "
                               f"wtal.extract.tvl1 ({exc}); use 'opencv-cpu'") from exc
        flow = tvl1_flow_torch(frames, params, device)
        expected = (num - 1, height, width, 2)
        if flow.shape != expected:
            raise RuntimeError(f"torch TV-L1 returned shape {flow.shape}, expected {expected}")
        return np.asarray(flow, dtype=np.float32)
    out = np.empty((num - 1, height, width, 2), dtype=np.float32)
    if backend == "opencv-cpu":
        _opencv_cpu(frames, params, out)
    else:
        _opencv_cuda(frames, params, out)
    return out


def flow_to_input(flow, bound=20.0, quantize=False):
    """Raw flow -> network input in [-1, 1]: clip to +-bound, optionally quantise, divide by bound.

    Quantisation reproduces the 8-bit flow images of the original features:
    q = round((f + bound) / (2 bound) * 255), f = q / 255 * 2 bound - bound. `flow` is a numpy
    array (float32 array returned) or a torch tensor (converted on its device, same values).
    """
    if not bound > 0:
        raise ValueError(f"bound must be positive, got {bound!r}")
    if not isinstance(flow, np.ndarray) and hasattr(flow, "clamp"):
        f = flow.float().clamp(-bound, bound)
        if quantize:
            q = ((f.double() + bound) / (2 * bound) * 255.0).round()
            return (q * (2.0 / 255.0) - 1.0).float()
        return f / bound
    f = np.clip(np.asarray(flow, dtype=np.float32), -bound, bound)
    if quantize:
        q = np.round((f.astype(np.float64) + bound) / (2 * bound) * 255.0)
        return (q * (2.0 / 255.0) - 1.0).astype(np.float32)
    return (f / bound).astype(np.float32)


__all__ = ["PRESETS", "BACKENDS", "resolve_backend", "compute_flow", "flow_to_input"]
