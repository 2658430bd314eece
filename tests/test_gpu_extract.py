"""The Extractor and TV-L1 on CUDA against the CPU path (skipped without a GPU).

Importable without PyAV, decord or Ray, so that bench/gpu.sh can run it on its GPU machine.
Frames are a smooth random texture moving by a few pixels per frame (real motion for TV-L1).
"""
import numpy as np
import pytest
import torch

from wtal.extract.features import Extractor, ExtractSettings
from wtal.extract.tvl1 import tvl1_flow_torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def moving_frames(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """(count, height, width, 3) uint8 RGB: a smooth texture translated by (2, 1) px per frame."""
    import cv2

    rng = np.random.default_rng(seed)
    pad = 2 * count + 8
    tex = cv2.GaussianBlur(rng.random((height + 2 * pad, width + 2 * pad, 3)), (0, 0), 3.0)
    tex = ((tex - tex.min()) / (tex.max() - tex.min()) * 255).round().astype(np.uint8)
    return np.stack([tex[pad - t:pad - t + height, pad - 2 * t:pad - 2 * t + width] for t in range(count)])


def relative(a: np.ndarray, b: np.ndarray) -> float:
    """Largest per-snippet relative difference ||a - b|| / ||b||."""
    return float((np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)).max())


@pytest.fixture(scope="module")
def frames():
    return moving_frames(2 * 16 + 1, 128, 171)


def test_cuda_tvl1_matches_cpu_per_pair(frames):
    import cv2

    gray = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames[:9]])
    cpu = tvl1_flow_torch(gray, device="cpu", mode="eager")
    for mode in ("eager", "compiled"):
        gpu = tvl1_flow_torch(gray, device="cuda", mode=mode)
        epe = np.sqrt(((gpu - cpu) ** 2).sum(-1)).mean(axis=(1, 2))
        assert epe.max() <= 0.02, (mode, epe)


@pytest.mark.parametrize("precision,tolerance", [("fp32", 1e-2), ("tf32", 2e-2), ("bf16", 5e-2)])
def test_cuda_features_match_the_cpu_path(frames, precision, tolerance):
    """Same settings on CPU (fp32, torch flow) and CUDA: features agree per snippet within the
    precision's tolerance (TV-L1 rounding moves the flow by ~0.01 px, TF32 and bf16 add theirs)."""
    settings = ExtractSettings(crop_size=112, flow="torch", flow_preset="fast", precision="fp32")
    cpu = Extractor(settings, device="cpu", batch=2).extract_chunks(iter([frames]), "moving")
    gpu_ex = Extractor(ExtractSettings(**{**settings.__dict__, "precision": precision}), device="cuda", batch=2)
    gpu_ex.i3d_batch = 1  # micro-batches smaller than the chunk
    gpu = gpu_ex.extract_chunks(iter([frames[:20], frames[20:]]), "moving")
    assert gpu.shape == cpu.shape == (2, 2048)
    assert relative(gpu, cpu) <= tolerance
