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
result equals the pair-by-pair result. The per-pair test stays on the device: a converged pair's
step is multiplied by 0 until the host looks at the mask, once every ``check_every`` inner
iterations (and at the end of each outer iteration), and then writes finished pairs back and
drops them from the batch. On a GPU this replaces one blocking device-to-host copy per iteration
by one per ``check_every``; on a CPU, where reading the mask costs nothing, checking every
iteration wastes no frozen work and is faster (bench/flow.py measures both).

``mode`` picks how an iteration runs: "eager" (PyTorch ops, in place), "compiled"
(``torch.compile`` fuses the iteration and the median network into a few kernels) or "graphs"
(compiled and replayed as CUDA graphs; the batch is then kept at power-of-two sizes so the
graphs repeat, frozen pairs filling the gaps). A compile failure falls back to eager, once, with
a warning.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..device import resolve_device
from .presets import PRESETS

log = logging.getLogger(__name__)

DEFAULT_PARAMS = PRESETS["default"]

_MIN_SIDE = 16  # OpenCV stops adding pyramid levels below this size.

# Pairs per batch on CPU: a batch's working set (~150 bytes per pixel and pair) must stay in the
# caches. Measured at 256x341, 1 thread: 1-8 pairs 2.5-2.8 pairs/s, 32 pairs 1.9, 129 pairs ~1.1.
# On a GPU larger batches are what keeps it busy.
CPU_PAIRS_PER_BATCH = 4
GPU_PAIRS_PER_BATCH = 512
# Inner iterations between the host's looks at the per-pair convergence mask. On a GPU each look
# is a blocking copy (and a compaction); 10 divides OpenCV's 30 inner iterations. On a CPU a look
# is free and every iteration a frozen pair stays in the batch is wasted work (bench/flow.py).
CPU_CHECK_EVERY = 1
GPU_CHECK_EVERY = 10


# Working set of one pair on a GPU, per pixel of the frame (17 MB at 256x341, float64 warps included).
GPU_BYTES_PER_PIXEL_AND_PAIR = 200


def pairs_per_batch(device: torch.device, height: int | None = None, width: int | None = None) -> int:
    """How many frame pairs `tvl1_pairs` should get at once on `device` (see the constants); on
    CUDA, given the frame size, no more than half the free memory holds."""
    if device.type == "cpu":
        return CPU_PAIRS_PER_BATCH
    pairs = GPU_PAIRS_PER_BATCH
    if device.type == "cuda" and height and width:
        free, _ = torch.cuda.mem_get_info(device)
        pairs = max(1, min(pairs, int(free // 2 // (GPU_BYTES_PER_PIXEL_AND_PAIR * height * width))))
    return pairs


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


_MEDIAN_CHUNK_BYTES = 256 * 2**20  # shifted window planes held at once by the torch median


def _odd_even_merge_sort(n: int) -> list[tuple[int, int]]:
    """Comparators (low wire, high wire) of Batcher's odd-even merge sort of ``n`` (a power of 2) wires."""
    pairs = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return pairs


@functools.cache
def _median_network(count: int) -> tuple[tuple[str, int, int], ...]:
    """Min/max operations that select the median of ``count`` (odd) inputs, without a sort.

    Built from Batcher's network over the next power of two, the extra wires held at +inf
    (comparators with them are no-ops or relabellings), then cut back to the operations the
    middle output depends on. Each entry is (op, a, b): value ``count + i`` is ``op(values[a],
    values[b])``; the last entry's value is the median. 25 inputs (5x5) need 202 operations.
    """
    size = 1 << (count - 1).bit_length()
    inf = -1
    wires = list(range(count)) + [inf] * (size - count)
    ops: list[tuple[str, int, int]] = []
    for lo, hi in _odd_even_merge_sort(size):
        a, b = wires[lo], wires[hi]
        if b == inf:
            continue
        if a == inf:
            wires[lo], wires[hi] = b, a
            continue
        ops.append(("min", a, b))
        ops.append(("max", a, b))
        wires[lo], wires[hi] = count + len(ops) - 2, count + len(ops) - 1
    needed = {wires[count // 2]}
    keep = []
    for index in range(len(ops) - 1, -1, -1):
        if count + index in needed:
            keep.append(index)
            needed.update(ops[index][1:])
    keep.reverse()
    renumber = {v: v for v in range(count)}
    out = []
    for index in keep:
        op, a, b = ops[index]
        out.append((op, renumber[a], renumber[b]))
        renumber[count + index] = count + len(out) - 1
    return tuple(out)


def _median_of_views(views: list[torch.Tensor]) -> torch.Tensor:
    """Elementwise median of equally shaped tensors through `_median_network` (exact)."""
    values: list[Any] = list(views)  # entries become None once nothing reads them
    network = _median_network(len(values))
    last_use: dict[int, int] = {}
    for index, (_, a, b) in enumerate(network):
        last_use[a] = last_use[b] = index
    for index, (op, a, b) in enumerate(network):
        values.append(torch.minimum(values[a], values[b]) if op == "min" else torch.maximum(values[a], values[b]))
        for v in (a, b):
            if last_use[v] == index:
                values[v] = None  # free intermediate planes as soon as nothing reads them
    return values[-1]


def _median_planes(planes: torch.Tensor, size: int) -> torch.Tensor:
    """Median of (N, 1, H, W) planes over ``size`` x ``size`` windows, replicated border."""
    r = size // 2
    height, width = planes.shape[-2:]
    padded = F.pad(planes, (r, r, r, r), mode="replicate")
    views = [padded[..., dy:dy + height, dx:dx + width] for dy in range(size) for dx in range(size)]
    return _median_of_views(views)


def _median_filter_torch(u: torch.Tensor, size: int, median_fn=None) -> torch.Tensor:
    """``size`` x ``size`` median of each (H, W) plane of (B, C, H, W), replicated border, in torch.

    A min/max selection network over the ``size**2`` shifted views (`_median_network`), which
    is exact and needs no per-pixel sort; ``median_fn`` is a compiled `_median_planes`. The
    intermediate planes take up to ``size**2`` times the memory of the planes, so planes are
    filtered a few at a time (at most ``_MEDIAN_CHUNK_BYTES`` of them).
    """
    median_fn = median_fn or _median_planes
    batch, channels, height, width = u.shape
    planes = u.reshape(batch * channels, 1, height, width)
    step = max(1, _MEDIAN_CHUNK_BYTES // (height * width * size * size * u.element_size()))
    if step >= planes.shape[0]:
        return median_fn(planes, size).reshape(batch, channels, height, width)
    out = torch.empty_like(planes)
    for start in range(0, planes.shape[0], step):
        out[start:start + step] = median_fn(planes[start:start + step], size)
    return out.reshape(batch, channels, height, width)


def _median_filter(u: torch.Tensor, size: int, median_fn=None) -> torch.Tensor:
    """Median filter as ``cv::medianBlur`` on float planes.

    On CPU, sizes 3 and 5 (the only float sizes OpenCV has) call ``cv2.medianBlur`` itself: it is
    exact and faster than any torch formulation.
    """
    if u.device.type != "cpu" or size not in (3, 5):
        return _median_filter_torch(u, size, median_fn)
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
    """State of the pairs of one warp still in the batch (a compacted batch).

    ``index`` (host) maps rows to pairs of the scale's batch; ``alive`` (host, bool) says which
    rows had not converged at the last check; ``active`` is the device-side (b, 1, 1, 1) float
    mask of the rows still iterating (None: all of them).
    """

    def __init__(self, u, dual, rho_c, direction, neg_inv_grad):
        self.index = torch.arange(len(u))
        self.alive = np.ones(len(u), dtype=bool)
        self.active: torch.Tensor | None = None
        self.u = u
        self.dual = dual
        self.rho_c = rho_c
        self.direction = direction
        self.neg_inv_grad = neg_inv_grad

    def take(self, rows: np.ndarray) -> None:
        """Keep only ``rows`` (host indices into the current batch), in that order."""
        select = torch.from_numpy(rows).to(self.u.device)
        for name in ("u", "dual", "rho_c", "direction", "neg_inv_grad"):
            setattr(self, name, getattr(self, name).index_select(0, select))
        self.index = self.index[torch.from_numpy(rows)]
        self.alive = self.alive[rows]

    def write_back(self, rows: np.ndarray, u: torch.Tensor, dual: torch.Tensor) -> None:
        """Store the flow and dual variables of batch ``rows`` into the scale's ``u`` and ``dual``."""
        if len(rows) == 0 or self.u is u:
            return
        select = torch.from_numpy(rows).to(self.u.device)
        target = self.index[torch.from_numpy(rows)].to(self.u.device)
        u.index_copy_(0, target, self.u.index_select(0, select))
        dual.index_copy_(0, target, self.dual.index_select(0, select))

    def settle(self, going: torch.Tensor, u: torch.Tensor, dual: torch.Tensor, bucket: bool,
               always_mask: bool) -> bool:
        """The host's look at the convergence mask (one device-to-host copy): write finished pairs
        back, drop them (with ``bucket``, only down to the next power of two, finished pairs
        filling the rest), and return whether any pair is still iterating."""
        mask = going.cpu().numpy()
        self.write_back(np.flatnonzero(self.alive & ~mask), u, dual)
        self.alive = mask
        remaining = int(mask.sum())
        if remaining == 0:
            return False
        target = min(len(mask), 1 << (remaining - 1).bit_length()) if bucket else remaining
        if target < len(mask):
            self.take(np.concatenate([np.flatnonzero(mask), np.flatnonzero(~mask)])[:target])
        if self.alive.all() and not always_mask:
            self.active = None
        else:
            self.active = torch.from_numpy(self.alive.astype(np.float32)).to(self.u.device).view(-1, 1, 1, 1)
        return True


def _inner_iteration(
    w: _Warp, l_t: float, theta: float, taut: float, grad_u: torch.Tensor
) -> torch.Tensor:
    """One primal-dual step on the batch, in place on ``w.u`` and ``w.dual``; rows whose
    ``w.active`` is 0 keep their values exactly. Returns each pair's summed squared flow change."""
    u, dual, active = w.u, w.dual, w.active
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
    if active is not None:
        step.mul_(active)
    u += step
    error = step.square_().sum(dim=(1, 2, 3))
    torch.sub(u[..., :, 1:], u[..., :, :-1], out=grad_u[:, :, 0, :, :-1])
    torch.sub(u[..., 1:, :], u[..., :-1, :], out=grad_u[:, :, 1, :-1, :])
    if active is not None:  # a frozen pair's dual step is 0 / 1
        grad_u.mul_(active.unsqueeze(-1))
    gx, gy = grad_u[:, :, 0], grad_u[:, :, 1]
    denom = torch.addcmul(gx * gx, gy, gy).sqrt_().mul_(taut).add_(1.0)
    dual.add_(grad_u, alpha=taut).div_(denom.unsqueeze(2))
    return error


def _iteration(u, dual, rho_c, direction, neg_inv_grad, active, l_t: float, theta: float, taut: float,
               scaled_eps: float):
    """`_inner_iteration` without in-place updates, for ``torch.compile`` (it fuses the ~24 ops
    into a few kernels). Returns the new flow, the new dual variables and the per-pair mask of
    pairs that still iterate (error above ``scaled_eps``; frozen pairs have error 0)."""
    rho = rho_c + direction[:, 0:1] * u[:, 0:1]
    for c in range(1, u.shape[1]):
        rho = rho + direction[:, c : c + 1] * u[:, c : c + 1]
    coef = (rho * neg_inv_grad).clamp(-l_t, l_t)
    px, py = dual[:, :, 0], dual[:, :, 1]
    div = px - F.pad(px[..., :, :-1], (1, 0)) + py - F.pad(py[..., :-1, :], (0, 0, 1, 0))
    step = (div * theta + coef * direction) * active
    u = u + step
    error = step.square().sum(dim=(1, 2, 3))
    gx = F.pad(u[..., :, 1:] - u[..., :, :-1], (0, 1)) * active
    gy = F.pad(u[..., 1:, :] - u[..., :-1, :], (0, 0, 0, 1)) * active
    denom = (gx * gx + gy * gy).sqrt() * taut + 1.0
    dual = (dual + torch.stack((gx, gy), dim=2) * taut) / denom.unsqueeze(2)
    return u, dual, error > scaled_eps


MODES = ("auto", "eager", "compiled", "graphs")
_COMPILED: dict = {}
_BROKEN: set = set()


def resolve_mode(mode: str, device: torch.device) -> str:
    """"auto" -> "eager" on CPU (measured faster, see bench/flow.py), "compiled" on CUDA when
    Triton is installed; a mode whose compilation failed in this process resolves to "eager"."""
    if mode not in MODES:
        raise ValueError(f"unknown TV-L1 mode {mode!r}; choose one of {', '.join(MODES)}")
    if mode == "auto":
        mode = "eager"
        if device.type == "cuda":
            try:
                import triton  # noqa: F401

                mode = "compiled"
            except ImportError:
                pass
    if mode == "graphs" and device.type != "cuda":
        mode = "compiled"
    return "eager" if mode in _BROKEN else mode


def _compiled(mode: str):
    """(iteration, median) functions compiled for ``mode`` (built once per process)."""
    if mode not in _COMPILED:
        graphs: dict[str, Any] = {"mode": "reduce-overhead"} if mode == "graphs" else {}
        _COMPILED[mode] = (torch.compile(_iteration, dynamic=True, **graphs),
                           torch.compile(_median_planes, dynamic=True))
    return _COMPILED[mode]


def _call_compiled(mode: str, fn, fallback, *args):
    """``fn(*args)``; when compiling or running it fails (other than out of memory), warn once,
    use ``fallback`` from now on in this process and return ``fallback(*args)``."""
    if mode not in _BROKEN:
        try:
            if mode == "graphs":
                torch.compiler.cudagraph_mark_step_begin()
            return fn(*args)
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:  # torch.compile's errors have no common base class
            log.warning("TV-L1 mode %r failed (%s: %s); using eager PyTorch ops", mode,
                           type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            _BROKEN.add(mode)
    return fallback(*args)


def check_every_default(device: torch.device) -> int:
    """Inner iterations between the host's looks at the convergence mask on ``device``."""
    return CPU_CHECK_EVERY if device.type == "cpu" else GPU_CHECK_EVERY


def _one_scale(i0: torch.Tensor, i1: torch.Tensor, u: torch.Tensor, p: dict, check_every: int,
               mode: str) -> torch.Tensor:
    """Run the warps of one pyramid level on a batch; ``u`` is (B, 2 or 3, H, W), returned updated.

    Within a warp, pairs whose summed squared flow change drops to ``epsilon^2 * H * W`` are
    frozen (their flow and dual variables stay as they are), exactly as OpenCV's per-pair loop
    stops, and leave the batch at the next check.
    """
    batch, channels, height, width = u.shape
    theta = float(p["theta"])
    l_t = float(p["lambda_"] * p["theta"])
    taut = float(p["tau"] / p["theta"])
    scaled_eps = float(p["epsilon"] ** 2 * height * width)
    median = p["median_filtering"]
    dev = u.device
    fused = mode != "eager"
    iterate, median_fn = _compiled(mode) if fused else (None, None)

    i1x, i1y = _centered_gradient(i1)
    stack = torch.cat((i1, i1x, i1y), dim=1).double()
    ys = torch.arange(height, device=dev, dtype=torch.float64).view(1, height, 1)
    xs = torch.arange(width, device=dev, dtype=torch.float64).view(1, 1, width)
    dual = torch.zeros(batch, channels, 2, height, width, device=dev, dtype=u.dtype)
    u = u.clone()
    grad_u = dual.new_zeros(0) if fused else torch.zeros_like(dual)  # the fused iteration has its own

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
        w = _Warp(u, dual, rho_c, torch.cat(dirs, dim=1), neg_inv_grad)
        if fused:
            w.active = torch.ones(batch, 1, 1, 1, device=dev)
        going_on = True
        for _ in range(p["outer_iterations"]):
            if median > 1:
                filtered = _median_filter(w.u[:, :2], median, median_fn)
                if w.active is not None and not w.alive.all():
                    filtered = torch.where(w.active > 0, filtered, w.u[:, :2])
                w.u = torch.cat((filtered, w.u[:, 2:]), dim=1)
            for n in range(p["inner_iterations"]):
                if fused:
                    w.u, w.dual, going = _call_compiled(
                        mode, iterate, _iteration, w.u, w.dual, w.rho_c, w.direction, w.neg_inv_grad, w.active,
                        l_t, theta, taut, scaled_eps)
                else:
                    going = _inner_iteration(w, l_t, theta, taut, grad_u[: len(w.u)]) > scaled_eps
                if (n + 1) % check_every and n + 1 < p["inner_iterations"]:
                    w.active = going.to(u.dtype).view(-1, 1, 1, 1)
                    continue
                going_on = w.settle(going, u, dual, bucket=mode == "graphs", always_mask=fused)
                if not going_on:
                    break
            if not going_on:
                break
        w.write_back(np.flatnonzero(w.alive), u, dual)
    return u


def _pyramid(images: torch.Tensor, sizes: list[tuple[int, int]], step: float) -> list[torch.Tensor]:
    """Float32 levels of ``images`` (N, 1, H, W) at ``sizes`` (see `_pyramid_sizes`)."""
    levels = [images.float()]
    for h, w in sizes[1:]:
        levels.append(_resize_bilinear(levels[-1], h, w, 1.0 / step, 1.0 / step))
    return levels


def _flow(i0s: list[torch.Tensor], i1s: list[torch.Tensor], sizes, p: dict, check_every: int | None,
          mode: str) -> torch.Tensor:
    """Coarse-to-fine TV-L1 over pyramids of the two images of each pair; (B, 2, H, W) flow."""
    dev = i0s[0].device
    check_every = check_every_default(dev) if check_every is None else int(check_every)
    if check_every < 1:
        raise ValueError(f"check_every must be positive, got {check_every}")
    mode = resolve_mode(mode, dev)
    step = float(p["scale_step"])
    channels = 3 if p["gamma"] != 0 else 2
    h, w = sizes[-1]
    u = torch.zeros(len(i0s[0]), channels, h, w, device=dev, dtype=torch.float32)
    for level in range(len(sizes) - 1, -1, -1):
        u = _one_scale(i0s[level], i1s[level], u, p, check_every, mode)
        if level == 0:
            break
        fh, fw = sizes[level - 1]
        u = _resize_bilinear(u, fh, fw, h / fh, w / fw)
        u[:, :2] *= 1.0 / step
        h, w = fh, fw
    return u[:, :2].contiguous()


def _check_size(height: int, width: int) -> None:
    if height < 3 or width < 3:
        raise ValueError(f"TV-L1 needs frames of at least 3x3 pixels, got {height}x{width}")


@torch.no_grad()
def tvl1_pairs(i0: torch.Tensor, i1: torch.Tensor, params: dict | None = None, check_every: int | None = None,
               mode: str = "auto") -> torch.Tensor:
    """TV-L1 flow of a batch of image pairs on their device.

    ``i0``, ``i1``: (B, 1, H, W) float intensities in [0, 255]. Returns (B, 2, H, W) float32 flow
    in pixels (x then y) that maps ``i0`` onto ``i1``: ``i0(x) ~ i1(x + u(x))``. ``check_every``
    (default: `check_every_default`) and ``mode`` (see `MODES`, `resolve_mode`) change the speed,
    not the result beyond float rounding.
    """
    if i0.shape != i1.shape or i0.dim() != 4 or i0.shape[1] != 1:
        shapes = f"{tuple(i0.shape)} and {tuple(i1.shape)}"
        raise ValueError(f"expected two (B, 1, H, W) tensors of equal shape, got {shapes}")
    p = resolve_params(params)
    _check_size(*i0.shape[-2:])
    sizes = _pyramid_sizes(i0.shape[-2], i0.shape[-1], p["nscales"], float(p["scale_step"]))
    step = float(p["scale_step"])
    return _flow(_pyramid(i0, sizes, step), _pyramid(i1, sizes, step), sizes, p, check_every, mode)


@torch.no_grad()
def tvl1_batches(frames: torch.Tensor, params: dict | None = None, batch_size: int | None = None,
                 check_every: int | None = None, mode: str = "auto") -> Iterator[torch.Tensor]:
    """TV-L1 flow between consecutive frames, yielded in order one batch of pairs at a time.

    ``frames``: (N, 1, H, W) intensities in [0, 255] (uint8 or float) on their device. Yields
    (b, 2, H, W) float32 flows of pairs (t, t+1), ``batch_size`` pairs at a time (default:
    `pairs_per_batch` of the device), so a caller can store each batch before the next exists.
    One pyramid is built per batch of frames and shared by both sides of the pairs.
    """
    step = pairs_per_batch(frames.device) if batch_size is None else batch_size
    if step < 1:
        raise ValueError(f"batch_size must be positive, got {step}")
    p = resolve_params(params)
    _check_size(*frames.shape[-2:])
    sizes = _pyramid_sizes(frames.shape[-2], frames.shape[-1], p["nscales"], float(p["scale_step"]))
    pairs = len(frames) - 1
    for start in range(0, pairs, step):
        stop = min(start + step, pairs)
        levels = _pyramid(frames[start:stop + 1], sizes, float(p["scale_step"]))
        yield _flow([lv[:-1] for lv in levels], [lv[1:] for lv in levels], sizes, p, check_every, mode)
        log.debug("TV-L1 pairs %d-%d of %d done on %s", start, stop, pairs, frames.device)


def tvl1_flow_torch(
    frames: np.ndarray, params: dict | None = None, device: str = "cpu", batch_size: int | None = None,
    check_every: int | None = None, mode: str = "auto",
) -> np.ndarray:
    """TV-L1 flow between consecutive grayscale frames, computed in batches of pairs.

    ``frames``: (N, H, W) uint8. Returns (N-1, H, W, 2) float32 raw flow in pixels, frame t paired
    with t+1, x component first (the layout of ``cv2.optflow.DualTVL1OpticalFlow.calc``).
    ``batch_size`` pairs are computed at once; ``check_every`` and ``mode`` as in `tvl1_pairs`.
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
    for flow in tvl1_batches(on_device, params, batch_size, check_every, mode):
        out[start:start + len(flow)] = flow.permute(0, 2, 3, 1).cpu().numpy()
        start += len(flow)
    return out


__all__ = ["DEFAULT_PARAMS", "MODES", "check_every_default", "pairs_per_batch", "resolve_mode", "resolve_params",
           "tvl1_batches", "tvl1_flow_torch", "tvl1_pairs"]

