"""Batched Dual TV-L1 optical flow in PyTorch, following OpenCV's ``DualTVL1OpticalFlow``.

The algorithm is the one of Zach, Pock and Bischof (2007) in the formulation of Sánchez Pérez,
Meinhardt-Llopis and Facciolo ("TV-L1 optical flow estimation", IPOL 2013), with OpenCV's CPU
choices so that results agree with ``cv2.optflow.DualTVL1OpticalFlow_create`` to a small
fraction of a pixel:

* intensities in [0, 255] as float32; a pyramid built by repeated bilinear resizing by
  ``scale_step`` (sizes rounded, pixel-centre mapping, no anti-aliasing), stopping before a side
  drops under 16 pixels; the flow is upsampled bilinearly and multiplied by ``1 / scale_step``;
* per warp, ``I1`` and its centred gradient are warped by bicubic interpolation with zero
  outside the image; the proximal steps use forward differences for the flow gradient and
  backward differences (zero outside) for the divergence; the dual variables persist across
  the warps of one scale;
* each outer iteration first median-filters the flow (``median_filtering`` x
  ``median_filtering``, replicated border); iterations of a warp stop once the squared change
  of the flow, summed over the image, drops to ``epsilon ** 2 * H * W``.

Pairs are processed as a batch (B, 1, H, W). The stopping test is evaluated per pair: a pair
that has converged is frozen for the rest of that warp while the others go on, so a batched
result equals the pair-by-pair result.
"""
from __future__ import annotations

import logging
from typing import Iterator

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..device import resolve_device
from .flow import PRESETS

logger = logging.getLogger(__name__)

DEFAULT_PARAMS = PRESETS["default"]

_MIN_SIDE = 16  # OpenCV stops adding pyramid levels below this size.

# Pairs per batch on CPU: a batch's working set (~150 bytes per pixel and pair) must stay in the
# caches. Measured at 256x341, 1 thread: 1-8 pairs 2.5-2.8 pairs/s, 32 pairs 1.9, 129 pairs ~1.1.
# On a GPU larger batches are what keeps it busy.
CPU_PAIRS_PER_BATCH = 4
GPU_PAIRS_PER_BATCH = 256


def pairs_per_batch(device: torch.device) -> int:
    """How many frame pairs `tvl1_pairs` should get at once on `device` (see the constants)."""
    return CPU_PAIRS_PER_BATCH if device.type == "cpu" else GPU_PAIRS_PER_BATCH


def resolve_params(params: dict | None) -> dict:
    """Return ``DEFAULT_PARAMS`` updated with ``params``; unknown keys or bad values raise."""
    merged = dict(DEFAULT_PARAMS)
    if params:
        unknown = sorted(set(params) - set(DEFAULT_PARAMS))
        if unknown:
            raise ValueError(f"unknown TV-L1 parameter(s) {unknown}; known: {sorted(DEFAULT_PARAMS)}")
        merged.update(params)
    for key in ("nscales", "warps", "inner_iterations", "outer_iterations"):
        if int(merged[key]) != merged[key] or merged[key] < 1:
            raise ValueError(f"TV-L1 parameter {key} must be a positive integer, got {merged[key]!r}")
        merged[key] = int(merged[key])
    median = merged["median_filtering"]
    if int(median) != median or median < 0 or (median > 1 and median % 2 == 0):
        raise ValueError(f"TV-L1 parameter median_filtering must be 0, 1 or an odd size, got {median!r}")
    merged["median_filtering"] = int(median)
    if not 0.0 < merged["scale_step"] < 1.0:
        raise ValueError(f"TV-L1 parameter scale_step must lie in (0, 1), got {merged['scale_step']!r}")
    for key in ("tau", "lambda_", "theta", "epsilon"):
        if not merged[key] > 0:
            raise ValueError(f"TV-L1 parameter {key} must be positive, got {merged[key]!r}")
    return merged


def _to_grid(x: torch.Tensor, y: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Pixel coordinates (pixel centres at integers) to a ``grid_sample`` grid, align_corners=True."""
    gx = x * (2.0 / max(width - 1, 1)) - 1.0
    gy = y * (2.0 / max(height - 1, 1)) - 1.0
    return torch.stack((gx, gy), dim=-1)


def _resize_bilinear(
    img: torch.Tensor, out_h: int, out_w: int, scale_y: float, scale_x: float
) -> torch.Tensor:
    """Bilinear resize like ``cv::resize(INTER_LINEAR)``: source coordinate
    (dst + 0.5) * scale - 0.5, clamped to the image (replicated border), no anti-aliasing."""
    batch, _, height, width = img.shape
    rows = torch.arange(out_h, device=img.device, dtype=torch.float64)
    cols = torch.arange(out_w, device=img.device, dtype=torch.float64)
    ys = ((rows + 0.5) * scale_y - 0.5).clamp(0, height - 1)
    xs = ((cols + 0.5) * scale_x - 0.5).clamp(0, width - 1)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = _to_grid(gx, gy, width, height).expand(batch, out_h, out_w, 2)
    # float64 keeps the normalised-coordinate round trip exact enough to reproduce OpenCV's weights.
    out = F.grid_sample(img.double(), grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.to(img.dtype)


def _centered_gradient(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences, one-sided halves at the border (OpenCV's ``centeredGradient``)."""
    px = F.pad(img, (1, 1, 0, 0), mode="replicate")
    py = F.pad(img, (0, 0, 1, 1), mode="replicate")
    return 0.5 * (px[..., :, 2:] - px[..., :, :-2]), 0.5 * (py[..., 2:, :] - py[..., :-2, :])


_MEDIAN_CHUNK_BYTES = 256 * 2**20  # unfolded windows held at once by the torch median


def _median_filter_torch(u: torch.Tensor, size: int) -> torch.Tensor:
    """``size`` x ``size`` median of each (H, W) plane of (B, C, H, W), replicated border, in torch.

    The unfolded windows take ``size**2`` times the memory of the planes, so planes are filtered
    a few at a time (at most ``_MEDIAN_CHUNK_BYTES`` of windows): a batch of hundreds of 256x341
    flows would otherwise need ~10 GB of GPU memory for each median.
    """
    batch, channels, height, width = u.shape
    r = size // 2
    planes = u.reshape(batch * channels, 1, height, width)
    step = max(1, _MEDIAN_CHUNK_BYTES // (height * width * size * size * u.element_size()))
    out = torch.empty_like(planes)
    for start in range(0, planes.shape[0], step):
        padded = F.pad(planes[start:start + step], (r, r, r, r), mode="replicate")
        out[start:start + step, 0] = F.unfold(padded, size).median(dim=1).values.view(-1, height, width)
    return out.reshape(batch, channels, height, width)


def _median_filter(u: torch.Tensor, size: int) -> torch.Tensor:
    """Median filter as ``cv::medianBlur`` on float planes.

    On CPU, sizes 3 and 5 (the only float sizes OpenCV has) call ``cv2.medianBlur`` itself: it is
    exact and about 50x faster than the torch median over unfolded windows used elsewhere.
    """
    if u.device.type != "cpu" or size not in (3, 5):
        return _median_filter_torch(u, size)
    src = u.detach().reshape(-1, *u.shape[-2:]).contiguous().numpy()
    out = np.empty_like(src)
    for i in range(src.shape[0]):
        cv2.medianBlur(src[i], size, dst=out[i])
    return torch.from_numpy(out).reshape(u.shape)


def _pyramid_sizes(height: int, width: int, nscales: int, scale_step: float) -> list[tuple[int, int]]:
    """Level sizes as ``cv::resize(fx=scale_step)`` rounds them, cut where a side would drop under 16."""
    sizes = [(height, width)]
    for _ in range(1, nscales):
        h, w = sizes[-1]
        nh, nw = int(np.rint(h * scale_step)), int(np.rint(w * scale_step))
        if nh < _MIN_SIDE or nw < _MIN_SIDE:
            break
        sizes.append((nh, nw))
    return sizes


class _Warp:
    """State of the pairs of one warp that have not met the stopping test yet (a compacted batch)."""

    def __init__(self, index, u, dual, rho_c, direction, neg_inv_grad):
        self.index = index
        self.u = u
        self.dual = dual
        self.rho_c = rho_c
        self.direction = direction
        self.neg_inv_grad = neg_inv_grad

    def keep(self, mask: torch.Tensor) -> None:
        """Drop the pairs where ``mask`` is False."""
        for name in ("index", "u", "dual", "rho_c", "direction", "neg_inv_grad"):
            setattr(self, name, getattr(self, name)[mask])


def _inner_iteration(
    w: _Warp, l_t: float, theta: float, taut: float, grad_u: torch.Tensor
) -> torch.Tensor:
    """One primal-dual step on the active pairs; updates ``w.u`` and ``w.dual`` (in place) and
    returns each pair's summed squared flow change."""
    u, dual = w.u, w.dual
    rho = torch.addcmul(w.rho_c, w.direction[:, 0:1], u[:, 0:1])
    for c in range(1, u.shape[1]):
        rho.addcmul_(w.direction[:, c : c + 1], u[:, c : c + 1])
    # Thresholding of the linearised L1 data term (OpenCV's estimateV): the step along the image
    # gradient is -rho / |grad I|^2 clipped to +-lambda*theta.
    coef = rho.mul_(w.neg_inv_grad).clamp_(-l_t, l_t)
    px, py = dual[:, :, 0], dual[:, :, 1]
    step = px.clone()
    step[..., :, 1:] -= px[..., :, :-1]
    step += py
    step[..., 1:, :] -= py[..., :-1, :]
    step.mul_(theta).addcmul_(coef, w.direction)
    u += step
    error = step.square_().sum(dim=(1, 2, 3))
    torch.sub(u[..., :, 1:], u[..., :, :-1], out=grad_u[:, :, 0, :, :-1])
    torch.sub(u[..., 1:, :], u[..., :-1, :], out=grad_u[:, :, 1, :-1, :])
    gx, gy = grad_u[:, :, 0], grad_u[:, :, 1]
    denom = torch.addcmul(gx * gx, gy, gy).sqrt_().mul_(taut).add_(1.0)
    dual.add_(grad_u, alpha=taut).div_(denom.unsqueeze(2))
    return error


def _one_scale(i0: torch.Tensor, i1: torch.Tensor, u: torch.Tensor, p: dict) -> torch.Tensor:
    """Run the warps of one pyramid level on a batch; ``u`` is (B, 2 or 3, H, W), returned updated.

    Within a warp, pairs whose summed squared flow change drops to ``epsilon^2 * H * W`` leave
    the batch (their flow and dual variables are frozen), exactly as OpenCV's per-pair loop stops.
    """
    batch, channels, height, width = u.shape
    theta = float(p["theta"])
    l_t = float(p["lambda_"] * p["theta"])
    taut = float(p["tau"] / p["theta"])
    scaled_eps = float(p["epsilon"] ** 2 * height * width)
    median = p["median_filtering"]
    dev = u.device

    i1x, i1y = _centered_gradient(i1)
    stack = torch.cat((i1, i1x, i1y), dim=1).double()
    ys = torch.arange(height, device=dev, dtype=torch.float64).view(1, height, 1)
    xs = torch.arange(width, device=dev, dtype=torch.float64).view(1, 1, width)
    dual = torch.zeros(batch, channels, 2, height, width, device=dev, dtype=u.dtype)
    u = u.clone()

    for _ in range(p["warps"]):
        # Bicubic in float64: a float32 grid normalisation would perturb even the identity warp
        # by ~1e-3 grey levels, which the thresholding step turns into spurious flow on flat areas.
        grid = _to_grid(xs + u[:, 0].double(), ys + u[:, 1].double(), width, height)
        warped = F.grid_sample(stack, grid, mode="bicubic", padding_mode="zeros", align_corners=True)
        warped = warped.float()
        i1w, i1wx, i1wy = warped[:, 0:1], warped[:, 1:2], warped[:, 2:3]
        grad = i1wx * i1wx + i1wy * i1wy
        rho_c = i1w - i1wx * u[:, 0:1] - i1wy * u[:, 1:2] - i0
        dirs = [i1wx, i1wy] + ([torch.full_like(i1wx, p["gamma"])] if channels == 3 else [])
        # 1 / |grad I|^2 floored at 1e-30 instead of OpenCV's zero step where |grad I|^2 is under
        # FLT_EPSILON and |rho| <= lambda*theta*|grad I|^2 (< 1e-8): there the flow step differs by
        # at most lambda*theta*|grad I| < 2e-5 px.
        neg_inv_grad = -1.0 / grad.clamp_min(1e-30)
        direction = torch.cat(dirs, dim=1)
        w = _Warp(torch.arange(batch, device=dev), u, dual, rho_c, direction, neg_inv_grad)
        grad_u = torch.zeros_like(dual)
        for _ in range(p["outer_iterations"]):
            if w.index.numel() == 0:
                break
            if median > 1:
                w.u = torch.cat((_median_filter(w.u[:, :2], median), w.u[:, 2:]), dim=1)
            for _ in range(p["inner_iterations"]):
                error = _inner_iteration(w, l_t, theta, taut, grad_u[: w.index.numel()])
                going = error > scaled_eps
                if bool(going.all()):
                    continue
                done = ~going
                u[w.index[done]] = w.u[done]
                dual[w.index[done]] = w.dual[done]
                w.keep(going)
                if w.index.numel() == 0:
                    break
        if w.u is not u:
            u[w.index] = w.u
        if w.dual is not dual:
            dual[w.index] = w.dual
    return u


@torch.no_grad()
def tvl1_pairs(i0: torch.Tensor, i1: torch.Tensor, params: dict | None = None) -> torch.Tensor:
    """TV-L1 flow of a batch of image pairs on their device.

    ``i0``, ``i1``: (B, 1, H, W) float intensities in [0, 255]. Returns (B, 2, H, W) float32 flow
    in pixels (x then y) that maps ``i0`` onto ``i1``: ``i0(x) ~ i1(x + u(x))``.
    """
    if i0.shape != i1.shape or i0.dim() != 4 or i0.shape[1] != 1:
        shapes = f"{tuple(i0.shape)} and {tuple(i1.shape)}"
        raise ValueError(f"expected two (B, 1, H, W) tensors of equal shape, got {shapes}")
    p = resolve_params(params)
    batch, _, height, width = i0.shape
    if height < 3 or width < 3:
        raise ValueError(f"TV-L1 needs frames of at least 3x3 pixels, got {height}x{width}")
    step = float(p["scale_step"])
    sizes = _pyramid_sizes(height, width, p["nscales"], step)
    i0s, i1s = [i0.float()], [i1.float()]
    for h, w in sizes[1:]:
        i0s.append(_resize_bilinear(i0s[-1], h, w, 1.0 / step, 1.0 / step))
        i1s.append(_resize_bilinear(i1s[-1], h, w, 1.0 / step, 1.0 / step))

    channels = 3 if p["gamma"] != 0 else 2
    h, w = sizes[-1]
    u = torch.zeros(batch, channels, h, w, device=i0.device, dtype=torch.float32)
    for level in range(len(sizes) - 1, -1, -1):
        u = _one_scale(i0s[level], i1s[level], u, p)
        if level == 0:
            break
        fh, fw = sizes[level - 1]
        u = _resize_bilinear(u, fh, fw, h / fh, w / fw)
        u[:, :2] *= 1.0 / step
        h, w = fh, fw
    return u[:, :2].contiguous()


def tvl1_batches(frames: torch.Tensor, params: dict | None = None,
                 batch_size: int | None = None) -> Iterator[torch.Tensor]:
    """TV-L1 flow between consecutive frames, yielded in order one batch of pairs at a time.

    ``frames``: (N, 1, H, W) intensities in [0, 255] (uint8 or float) on their device. Yields
    (b, 2, H, W) float32 flows of pairs (t, t+1), ``batch_size`` pairs at a time (default:
    `pairs_per_batch` of the device), so a caller can store each batch before the next exists.
    """
    step = pairs_per_batch(frames.device) if batch_size is None else batch_size
    if step < 1:
        raise ValueError(f"batch_size must be positive, got {step}")
    p = resolve_params(params)
    pairs = len(frames) - 1
    for start in range(0, pairs, step):
        stop = min(start + step, pairs)
        yield tvl1_pairs(frames[start:stop], frames[start + 1:stop + 1], p)
        logger.debug("TV-L1 pairs %d-%d of %d done on %s", start, stop, pairs, frames.device)


def tvl1_flow_torch(
    frames: np.ndarray, params: dict | None = None, device: str = "cpu", batch_size: int | None = None
) -> np.ndarray:
    """TV-L1 flow between consecutive grayscale frames, computed in batches of pairs.

    ``frames``: (N, H, W) uint8. Returns (N-1, H, W, 2) float32 raw flow in pixels, frame t paired
    with t+1, x component first (the layout of ``cv2.optflow.DualTVL1OpticalFlow.calc``).
    ``batch_size`` pairs are computed at once (see `tvl1_batches`).
    """
    if not isinstance(frames, np.ndarray) or frames.ndim != 3 or frames.dtype != np.uint8:
        desc = (f"{frames.dtype} array of shape {frames.shape}" if isinstance(frames, np.ndarray)
                else type(frames).__name__)
        raise ValueError(f"frames must be a uint8 array of shape (N, H, W), got {desc}")
    resolve_params(params)
    num, height, width = frames.shape
    out = np.empty((max(num - 1, 0), height, width, 2), dtype=np.float32)
    on_device = torch.from_numpy(np.ascontiguousarray(frames)).to(resolve_device(device)).unsqueeze(1)
    start = 0
    for flow in tvl1_batches(on_device, params, batch_size):
        out[start:start + len(flow)] = flow.permute(0, 2, 3, 1).cpu().numpy()
        start += len(flow)
    return out


__all__ = ["DEFAULT_PARAMS", "pairs_per_batch", "resolve_params", "tvl1_batches", "tvl1_pairs", "tvl1_flow_torch"]

