"""Benchmark of wtal's feature extraction against a naive loop of the same algorithms.

On the same clips, in the same run, it times (frames per second of decoded 25-fps video):
  * naive: one process; PyAV decodes one frame at a time (resampled to 25 fps by timestamps),
    each frame is resized and converted to gray, OpenCV's TV-L1 runs per frame pair, and every
    16-frame snippet goes through I3D alone (batch 1), rgb then flow. Once with the libraries'
    default thread counts, as a plain script runs, and once with one thread (the fair baseline
    of the ratios: on a busy host, two torch threads can be several times slower than one);
  * wtal Extractor: one process with one torch/OpenCV thread, decode prefetched in a thread,
    I3D on `--batch` snippets at once (what each Ray worker runs); once more with the batched
    torch TV-L1 (`--flow torch`) in place of OpenCV's, which changes the flow slightly;
  * wtal extract_videos: a pool of `--workers` Ray actors (default: all cores) as one `wtal
    extract` call runs it, i.e. including the start of the worker processes and the loading of
    I3D in each; Ray's own start is timed and printed but not counted; then again with
    `--flow torch`.
The wtal rows with OpenCV's TV-L1 must give the naive loop's features (same weights, same
algorithms): the largest difference of every row is printed. Then bf16 autocast against fp32 on
the first clip on the CPU: both times and the features' largest relative difference per snippet
(slow where the CPU has no native bf16). With a CUDA device (`--device cuda`, or `auto` on a GPU
machine) it also times the Extractor on the GPU (flow `auto`, i.e. batched torch TV-L1) in fp32
and bf16 with the same difference, and the torch TV-L1 alone in flows (frame pairs) per second.

Defaults are small so it finishes in a few minutes on 2 cores: four synthetic 2.6 s clips,
crop 112 and the `fast` flow preset. Real settings, e.g.:

    .venv/bin/python bench/extract.py --videos ../shared/data/videos/mmaction2_demo.mp4 \\
        --crop-size 224 --preset default --device cuda
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from dataclasses import replace
from fractions import Fraction
from functools import partial
from pathlib import Path

import av
import cv2
import numpy as np
import torch

from wtal.data.synthetic_videos import make_video_dataset
from wtal.device import resolve_device
from wtal.extract.features import SNIPPET_FRAMES, Extractor, ExtractSettings
from wtal.extract.flow import PRESETS
from wtal.extract.i3d import bf16_is_fast


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def resized_shape(h: int, w: int, short_side: int) -> tuple[int, int]:
    """Height and width with the shorter side `short_side` (longer side rounded half up), as wtal."""
    if h <= w:
        return short_side, max(1, (2 * w * short_side + h) // (2 * h))
    return max(1, (2 * h * short_side + w) // (2 * w)), short_side


def naive_frames(path: str, fps: int, short_side: int):
    """Resized RGB frames at `fps` by timestamps, decoding and yielding one frame at a time.

    The i-th decoded frame gets the i-th smallest packet pts, as in wtal's decoder: decoders output
    display order, but AVI frames carry pts in decode order (mmaction2_test.avi), and trusting
    them would duplicate and drop a third of the frames.
    """
    with av.open(path) as container:
        stream = container.streams.video[0]
        times = sorted(p.pts for p in container.demux(stream) if p.pts is not None)
    with av.open(path) as container:
        stream = container.streams.video[0]
        base, rate = stream.time_base, stream.average_rate
        first, previous, k = times[0], None, 0
        for index, frame in enumerate(container.decode(stream)):
            t = (times[index] - first) * base
            if previous is not None:
                while Fraction(k, fps) < t:  # the previous frame is the latest one at time k / fps
                    yield previous
                    k += 1
            img = frame.to_ndarray(format="rgb24")
            h, w = resized_shape(*img.shape[:2], short_side)
            previous = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
            last_t = t
        while Fraction(k, fps) < last_t + 1 / Fraction(rate):
            yield previous
            k += 1


def naive_extract(path: str, settings: ExtractSettings, rgb_net, flow_net) -> tuple[np.ndarray, int]:
    """The plain loop: per-pair OpenCV TV-L1, I3D one snippet at a time. Returns (features, frames)."""
    p = PRESETS[settings.flow_preset]
    # "innnerIterations" (sic) is the keyword OpenCV's binding exposes
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create(
        tau=p["tau"], lambda_=p["lambda_"], theta=p["theta"], nscales=p["nscales"], warps=p["warps"],
        epsilon=p["epsilon"], innnerIterations=p["inner_iterations"], outerIterations=p["outer_iterations"],
        scaleStep=p["scale_step"], gamma=p["gamma"], medianFiltering=p["median_filtering"])
    size = settings.crop_size

    def crop(a):
        top, left = (a.shape[0] - size) // 2, (a.shape[1] - size) // 2
        return a[top:top + size, left:left + size]

    def snippet(frames, flows):
        rgb = np.stack([crop(f) for f in frames]).astype(np.float32) / 127.5 - 1.0
        flow = np.clip(np.stack([crop(f) for f in flows]), -20, 20) / 20.0
        with torch.inference_mode():
            a = rgb_net(torch.from_numpy(rgb.transpose(3, 0, 1, 2)[None]).contiguous())
            b = flow_net(torch.from_numpy(flow.astype(np.float32).transpose(3, 0, 1, 2)[None]).contiguous())
        return np.concatenate([a.numpy(), b.numpy()], 1)

    rows, frames, flows, prev_gray, count = [], [], [], None, 0
    for img in naive_frames(path, int(settings.fps), settings.short_side):
        count += 1
        gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        if prev_gray is not None:
            flows.append(tvl1.calc(prev_gray, gray, None))
        prev_gray = gray
        if len(flows) == SNIPPET_FRAMES:  # 16 frames and the flow of the 16th, which needs the 17th
            rows.append(snippet(frames[:SNIPPET_FRAMES], flows))
            frames, flows = frames[SNIPPET_FRAMES:], []
        frames.append(img)
    if len(frames) == SNIPPET_FRAMES:  # the last frame has no successor: repeat the previous flow
        rows.append(snippet(frames, flows + flows[-1:]))
    return np.concatenate(rows, 0), count


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def row(name: str, frames: int, seconds: float, bases: tuple[float, ...] = (), note: str = "") -> float:
    """Print one row with its frame rate divided by each baseline rate in `bases`; returns the rate."""
    rate = frames / seconds
    ratios = " ".join(f"{rate / b:5.2f}x" for b in bases) if bases else " " * 13
    print(f"{name:46} {frames:6d} frames {seconds:8.1f} s {rate:8.2f} frames/s {ratios}  {note}", flush=True)
    return rate


def naive_row(name: str, clips: list[str], settings: ExtractSettings, nets):
    """Run the naive loop over all clips; returns (frames/s, features by clip)."""
    out, frames, seconds = {}, 0, 0.0
    for clip in clips:
        (out[clip], n), s = timed(lambda: naive_extract(clip, settings, *nets))
        frames, seconds = frames + n, seconds + s
    note = f"torch {torch.get_num_threads()} threads, OpenCV {cv2.getNumThreads()} threads"
    return row(name, frames, seconds, note=note), out


def ray_extract(clips: list[str], settings: ExtractSettings, batch: int, workers: int):
    """extract_videos into a throwaway cache; returns (summary, seconds, features by clip)."""
    from wtal.extract.cache import FeatureCache
    from wtal.pipeline.extraction import extract_videos

    with tempfile.TemporaryDirectory(prefix="wtal-bench-cache-") as cache:
        summary, seconds = timed(lambda: extract_videos(clips, cache, settings, device="cpu", batch=batch,
                                                        workers=workers))
        if summary.failed:
            raise SystemExit(f"extraction failed: {summary.failed[0]['reason']}")
        store = FeatureCache(cache)
        out = {r["source"]: store.load(r["key"]) for r in summary.records}
    return summary, seconds, out


def cpu_comparison(clips: list[str], settings: ExtractSettings, batch: int, workers: int) -> None:
    from wtal.pipeline.runtime import init_ray

    reference = Extractor(settings, device="cpu", batch=batch)
    nets = (reference.rgb, reference.flow)
    with torch.inference_mode():  # first-call set-up of the convolutions, not timed
        reference.rgb(torch.zeros(1, 3, SNIPPET_FRAMES, settings.crop_size, settings.crop_size))
    print(f"\nCPU: {len(clips)} clips, crop {settings.crop_size}, flow preset {settings.flow_preset} (OpenCV TV-L1 in "
          f"every row), wtal batch {batch} snippets, {workers} Ray workers; "
          "ratios against the 1-thread naive loop, then the library-threads one")
    library, naive_out = naive_row("naive loop, library threads", clips, settings, nets)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    single, _ = naive_row("naive loop, 1 thread", clips, settings, nets)
    bases = (single, library)

    counted, diff, seconds = [], 0.0, 0.0
    for clip in clips:
        out, s = timed(lambda: reference.extract(clip, on_frames=counted.append))
        seconds += s
        diff = max(diff, float(np.abs(out - naive_out[clip]).max()))
    row("wtal Extractor, 1 process", sum(counted), seconds, bases, note=f"1 thread; max |diff| vs naive {diff:.1e}")
    torch_flow = Extractor(replace(settings, flow="torch"), device="cpu", batch=batch)
    counted, diff, seconds = [], 0.0, 0.0
    for clip in clips:
        out, s = timed(lambda: torch_flow.extract(clip, on_frames=counted.append))
        seconds += s
        diff = max(diff, float(np.abs(out - naive_out[clip]).max()))
    row("wtal Extractor, 1 process, --flow torch", sum(counted), seconds, bases,
        note=f"batched torch TV-L1 instead of OpenCV's; max |diff| vs naive {diff:.1e}")

    ray, ray_seconds = timed(lambda: init_ray(None, workers))
    summary, seconds, out = ray_extract(clips, settings, batch, workers)
    diff = max(float(np.abs(out[str(Path(clip).resolve())] - naive_out[clip]).max()) for clip in clips)
    row(f"wtal extract_videos, Ray x{workers}", summary.frames, seconds, bases,
        note=f"max |diff| vs naive {diff:.1e}; worker start-up included (Ray start {ray_seconds:.0f} s not counted)")
    summary, seconds, out = ray_extract(clips, replace(settings, flow="torch"), batch, workers)
    diff = max(float(np.abs(out[str(Path(clip).resolve())] - naive_out[clip]).max()) for clip in clips)
    row(f"wtal extract_videos, Ray x{workers}, --flow torch", summary.frames, seconds, bases,
        note=f"max |diff| vs naive {diff:.1e}; worker start-up included")
    ray.shutdown()


def relative_difference(fp32: np.ndarray, low: np.ndarray) -> str:
    """Largest per-snippet |low - fp32| / |fp32| of each stream, as printed by the precision rows."""
    parts = []
    for name, cols in (("rgb", slice(0, 1024)), ("flow", slice(1024, 2048))):
        rel = np.linalg.norm(low[:, cols] - fp32[:, cols], axis=1) / np.linalg.norm(fp32[:, cols], axis=1)
        parts.append(f"{name} {rel.max():.2e}")
    return "max relative difference per snippet: " + ", ".join(parts)


def cpu_precision(clip: str, settings: ExtractSettings, batch: int) -> None:
    """bf16 autocast against fp32 on one clip on the CPU: the features' difference and the time."""
    torch.set_num_threads(1)
    out, seconds = {}, {}
    for precision in ("fp32", "bf16"):
        ex = Extractor(replace(settings, flow="torch", precision=precision), device="cpu", batch=batch)
        out[precision], seconds[precision] = timed(lambda: ex.extract(clip))
    native = "native" if bf16_is_fast(torch.device("cpu")) else "no native bf16 convolutions"
    print(f"\nCPU precision, first clip, 1 thread ({native}): fp32 {seconds['fp32']:.1f} s, bf16 "
          f"{seconds['bf16']:.1f} s ({seconds['fp32'] / seconds['bf16']:.2f}x); bf16 vs fp32 "
          f"{relative_difference(out['fp32'], out['bf16'])} (target 1e-2)", flush=True)


def gpu_comparison(clips: list[str], settings: ExtractSettings, batch: int, device: torch.device) -> None:
    from wtal.extract.tvl1 import tvl1_pairs

    print(f"\n{device} ({torch.cuda.get_device_name(device)}): flow auto (torch TV-L1), batch {batch} snippets")
    first = {}
    for precision in ("fp32", "bf16"):
        if precision == "bf16" and not bf16_is_fast(device):
            print(f"{'Extractor bf16':46} skipped: no native bf16 on this device")
            continue
        ex = Extractor(replace(settings, flow="auto", precision=precision), device=str(device), batch=batch)
        first[precision] = ex.extract(clips[0])  # also the warm-up: CUDA context, kernels, pinned buffers
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        counted, seconds = [], 0.0
        for clip in clips:
            _, s = timed(partial(ex.extract, clip, on_frames=counted.append))
            seconds += s
        peak = torch.cuda.max_memory_allocated(device) / 2 ** 30
        row(f"Extractor {precision} on {device.type}", sum(counted), seconds, note=f"peak GPU memory {peak:.2f} GiB")
        del ex
    if len(first) == 2:
        print(f"{'bf16 vs fp32 features':46} {relative_difference(first['fp32'], first['bf16'])} (target 1e-2)")
    from wtal.extract.decode import iter_frames, to_gray

    frames = to_gray(next(iter_frames(clips[0], fps=settings.fps, short_side=settings.short_side,
                                      chunk_size=batch * SNIPPET_FRAMES + 1)))
    x = torch.from_numpy(frames).to(device).float().unsqueeze(1)
    params = PRESETS[settings.flow_preset]
    tvl1_pairs(x[:2], x[1:3], params)  # warm-up
    torch.cuda.synchronize(device)
    _, seconds = timed(lambda: (tvl1_pairs(x[:-1], x[1:], params), torch.cuda.synchronize(device)))
    pairs = len(frames) - 1
    print(f"{'torch TV-L1 alone':46} {pairs:6d} pairs  {seconds:8.2f} s {pairs / seconds:8.2f} flows/s   "
          f"{frames.shape[1]}x{frames.shape[2]}, preset {settings.flow_preset}, one batch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", nargs="+", help="clips to use (default: synthetic clips)")
    parser.add_argument("--clips", type=int, default=4, help="number of synthetic clips")
    parser.add_argument("--duration", type=float, default=2.6, help="seconds per synthetic clip")
    parser.add_argument("--crop-size", type=int, default=112)
    parser.add_argument("--preset", default="fast", choices=sorted(PRESETS))
    parser.add_argument("--batch", type=int, default=8, help="snippets per chunk (I3D batch) on CPU")
    parser.add_argument("--gpu-batch", type=int, default=32, help="snippets per chunk (I3D batch) on CUDA")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="Ray workers")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto: cuda adds the GPU rows")
    parser.add_argument("--no-cpu-precision", action="store_true",
                        help="skip the CPU bf16 row (bf16 is 20-100x slower than fp32 on CPUs without native bf16)")
    args = parser.parse_args()

    device = resolve_device(args.device)
    settings = ExtractSettings(crop_size=args.crop_size, flow="opencv-cpu", flow_preset=args.preset)
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}, OpenCV {cv2.__version__}; "
          f"device {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    h = int(round(args.crop_size * 256 / 224))  # synthetic clips are made at the resized size
    with tempfile.TemporaryDirectory(prefix="wtal-bench-videos-") as tmp:
        if args.videos:
            clips = [str(Path(v).resolve()) for v in args.videos]
        else:
            video_dir, _ = make_video_dataset(tmp, num_classes=3, num_train=args.clips, num_test=0,
                                              duration=(args.duration, args.duration), seed=0,
                                              size=(h, int(round(h * 4 / 3))))
            clips = sorted(str(p) for p in video_dir.glob("*.mp4"))
        cpu_comparison(clips, settings, args.batch, args.workers)
        if not args.no_cpu_precision:
            cpu_precision(clips[0], settings, args.batch)
        if device.type == "cuda":
            gpu_comparison(clips, settings, args.gpu_batch, device)


if __name__ == "__main__":
    main()
