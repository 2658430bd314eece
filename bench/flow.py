"""Benchmark of the batched torch TV-L1 against OpenCV's TV-L1 on real frames.

Decodes consecutive frames of a real clip with PyAV, converts them to gray, resizes the shorter
side to --size and centre-crops a square, then for each preset (default, fast) times
  * OpenCV on the same device: `cv2.optflow.DualTVL1OpticalFlow` on CPU, the CUDA class on
    `--device cuda` when this OpenCV build has it (otherwise that column says it is missing),
  * `wtal.extract.tvl1.tvl1_flow_torch` with all pairs in one batch (or --batch-size), once per
    --variants entry MODE:CHECK (mode eager/compiled/graphs, convergence checked every CHECK
    inner iterations); the first variant is the baseline of the last column ("eager:1" is the
    schedule of the loop before device-side convergence masks: a host check every iteration),
and prints pairs per second, their ratios and the mean end-point error between torch and
OpenCV's CPU result (the accuracy reference). Then it times the 5x5 median of a batch of flow
planes: torch's sort-based ``unfold(...).median`` (the former non-CPU median), the min/max
selection network that replaced it, and ``cv2.medianBlur`` (the CPU path). Thread counts are
set with `torch.set_num_threads` and `cv2.setNumThreads` to the same --threads value and printed.

    .venv/bin/python bench/flow.py [--pairs 4] [--device cpu|cuda|auto] [--threads 1]
        [--variants eager:1,eager:10]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import av
import cv2
import numpy as np
import torch

from wtal.device import resolve_device
from wtal.extract.decode import center_crop, resize_short_side
from wtal.extract.flow import PRESETS, compute_flow, resolve_backend
from wtal.extract.tvl1 import _median_filter, _median_filter_torch, tvl1_flow_torch

VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"


def gray_frames(path: Path, start: int, count: int, size: int) -> np.ndarray:
    """`count` consecutive frames from index `start`: gray, shorter side `size`, centre crop."""
    frames = []
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index < start:
                continue
            frames.append(resize_short_side(frame.to_ndarray(format="gray"), size))
            if len(frames) == count:
                break
    if len(frames) < count:
        raise SystemExit(f"{path}: only {len(frames)} frames from index {start}, need {count}")
    return center_crop(np.stack(frames), size)


def timed(fn):
    start = time.perf_counter()
    result = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def unfold_median(u: torch.Tensor, size: int) -> torch.Tensor:
    """The sort-based median the torch path used before the selection network (baseline)."""
    b, c, h, w = u.shape
    padded = torch.nn.functional.pad(u.reshape(b * c, 1, h, w), (size // 2,) * 4, mode="replicate")
    return torch.nn.functional.unfold(padded, size).median(dim=1).values.view(b, c, h, w)


def median_rows(device: torch.device, planes: int, size: int, repeats: int = 3) -> None:
    """Time the three 5x5 medians on `planes` random size x size float planes; check they agree."""
    u = torch.randn(planes // 2, 2, size, size, device=device)
    rows = [("unfold+median (sort)", lambda: unfold_median(u, 5)),
            ("selection network", lambda: _median_filter_torch(u, 5))]
    if device.type == "cpu":
        rows.append(("cv2.medianBlur", lambda: _median_filter(u, 5)))
    reference = unfold_median(u, 5)
    base = None
    print(f"5x5 median of {planes} planes of {size}x{size} on {device}:")
    for name, fn in rows:
        fn()  # warm-up
        seconds = min(timed(fn)[1] for _ in range(repeats))
        base = base or seconds
        same = torch.equal(fn(), reference)
        print(f"  {name:22} {seconds * 1e3:9.2f} ms  {base / seconds:6.2f}x  equal to sort: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, default=VIDEOS / "mmaction2_demo.mp4")
    parser.add_argument("--start", type=int, default=10, help="first frame index")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--threads", type=int, default=1, help="torch and OpenCV CPU threads")
    parser.add_argument("--batch-size", type=int, default=0, help="torch pairs per batch (0: all)")
    parser.add_argument("--presets", default="default,fast")
    parser.add_argument("--variants", default="eager:1,eager:10",
                        help="torch variants MODE:CHECK_EVERY, the first is the baseline")
    parser.add_argument("--median-planes", type=int, default=32, help="planes for the median rows (0: skip)")
    args = parser.parse_args()

    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    frames = gray_frames(args.video, args.start, args.pairs + 1, args.size)
    batch = args.batch_size or args.pairs
    if device.type == "cuda":
        try:
            same_device = resolve_backend("opencv-cuda", "cuda")
        except RuntimeError:
            same_device = None
    else:
        same_device = "opencv-cpu"
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}); "
          f"torch.set_num_threads({args.threads}), cv2.setNumThreads({args.threads}); "
          f"torch {torch.__version__}, OpenCV {cv2.__version__}")
    print(f"{args.pairs} pairs of {frames.shape[1]}x{frames.shape[2]} gray frames from {args.video.name} "
          f"(frames {args.start}-{args.start + args.pairs}); torch batch {batch}")
    if same_device is None:
        print("OpenCV on cuda: this OpenCV build has no CUDA TV-L1; the OpenCV column is n/a")

    variants = [(v.split(":")[0], int(v.split(":")[1])) for v in args.variants.split(",")]
    for mode, check in variants:  # warm-up (and compilation), not timed
        tvl1_flow_torch(frames[:2], PRESETS["fast"], device=str(device), check_every=check, mode=mode)
    names = [f"torch {m}:{c}" for m, c in variants]
    header = (f"{'preset':8} {'OpenCV ' + (same_device or 'n/a'):>20} "
              + " ".join(f"{n:>18}" for n in names)
              + f" {'best torch/OpenCV':>18} {'new/base':>9}  EPE vs opencv-cpu per variant")
    print(header)
    print("-" * len(header))
    for preset in args.presets.split(","):
        params = PRESETS[preset]
        reference, cpu_seconds = timed(lambda preset=preset: compute_flow(frames, "opencv-cpu", preset, "cpu"))
        if same_device == "opencv-cpu":
            opencv_rate = args.pairs / cpu_seconds
        elif same_device is not None:
            compute_flow(frames[:2], same_device, preset, str(device))  # warm-up
            _, seconds = timed(lambda preset=preset: compute_flow(frames, same_device, preset, str(device)))
            opencv_rate = args.pairs / seconds
        else:
            opencv_rate = None
        rates, epes = [], []
        for mode, check in variants:
            flow, seconds = timed(lambda p=params, c=check, m=mode: tvl1_flow_torch(frames, p, str(device), batch, c, m))
            rates.append(args.pairs / seconds)
            epes.append(float(np.sqrt(((flow - reference) ** 2).sum(-1)).mean()))
        opencv_text = f"{opencv_rate:.3f} pairs/s" if opencv_rate else "n/a"
        ratio_text = f"{max(rates) / opencv_rate:.2f}x" if opencv_rate else "n/a"
        new_text = f"{max(rates[1:]) / rates[0]:.2f}x" if len(rates) > 1 else "n/a"
        print(f"{preset:8} {opencv_text:>20} " + " ".join(f"{r:>10.3f} pairs/s" for r in rates)
              + f" {ratio_text:>18} {new_text:>9}  " + " ".join(f"{e:.2e}" for e in epes) + " px")
    if args.median_planes:
        median_rows(device, args.median_planes, args.size)

if __name__ == "__main__":
    main()
