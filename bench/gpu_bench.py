"""The measuring steps of bench/gpu.sh, one per call, each printing its figures as it goes.

Runs wtal's extractor in-process (no Ray) on what bench/gpu_prep.py left in gpu_carry/ (real
frames, OpenCV CPU TV-L1 flows and CPU features computed on the CPU machine). Steps:

  tvl1     torch TV-L1 pairs/s at shorter side 256 and 224 (whole frames) for several pairs per
           call and modes (compiled, eager, graphs), with the mean end-point error of the first 8
           pairs against OpenCV's CPU flow of the same pairs
  i3d      two-stream I3D snippets/s (RGB + flow, 16 x 224 x 224) in fp32, tf32 and bf16 for
           several batch sizes; features of 2 real snippets in each precision against the CPU
           fp32 features (relative difference per snippet)
  e2e      end-to-end frames/s of the Extractor (decode -> gray/crop -> H2D -> TV-L1 -> I3D) on
           the carried clips decoded with OpenCV and repeated to --seconds of 25 fps video, fp32
           and bf16, peak GPU memory; then the features of the carried frames against the CPU's
  profile  where end-to-end time goes over a few chunks (decode wait, host prep, H2D copy,
           flow, I3D; each phase synchronised, so overlap is removed), and the top CUDA kernels

Every line is printed when measured, so a step cut off by its timeout still reports.
`--device cpu` runs the same code on tiny sizes, to check the script without a GPU.

    python3 bench/gpu_bench.py tvl1|i3d|e2e|profile [--device cuda] [--seconds 120]
"""
from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from wtal.extract.decode import resize_short_side
from wtal.extract.features import SNIPPET_FRAMES, Extractor, ExtractSettings, prefetch
from wtal.extract.flow import PRESETS
from wtal.extract.tvl1 import tvl1_pairs

ROOT = Path(__file__).resolve().parents[1]
CARRY = ROOT / "gpu_carry"


def say(text: str) -> None:
    print(text, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn):
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return result, time.perf_counter() - start


def load_ref() -> dict:
    path = CARRY / "ref.npz"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run bench/gpu_prep.py on the CPU machine and carry gpu_carry")
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def epe(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(((a - b) ** 2).sum(-1)).mean())


def relative(a: np.ndarray, b: np.ndarray) -> float:
    """Largest per-row relative difference ||a - b|| / ||b||."""
    return float((np.linalg.norm(a - b, axis=-1) / np.linalg.norm(b, axis=-1)).max())


def step_tvl1(device: torch.device, quick: bool) -> None:
    ref = load_ref()
    params = PRESETS["fast" if quick else "default"]
    batches = (4,) if quick else (64, 256, 512)
    plans = [("compiled", b) for b in batches] + [("eager", b) for b in batches] + [("graphs", batches[-1])]
    say(f"torch TV-L1 on {device}, preset {'fast' if quick else 'default'}; pairs tiled from 8 real pairs; "
        "second call timed (the first compiles/captures)")
    say(f"{'size':>9} {'mode':>9} {'pairs':>6} {'first s':>8} {'pairs/s':>9} {'EPE vs OpenCV':>14}")
    for side in (256, 224):
        gray = torch.from_numpy(ref[f"gray_{side}"]).float().unsqueeze(1).to(device)
        reference = ref[f"flow_{side}"]
        for mode, batch in plans:
            reps = -(-batch // 8)
            i0, i1 = gray[:-1].repeat(reps, 1, 1, 1)[:batch], gray[1:].repeat(reps, 1, 1, 1)[:batch]
            try:
                _, first = timed(device, lambda: tvl1_pairs(i0, i1, params, mode=mode))
                flow, seconds = timed(device, lambda: tvl1_pairs(i0, i1, params, mode=mode))
            except Exception as exc:  # reported, and the next configuration runs
                say(f"{side:>5} px {mode:>9} {batch:>6}   failed: {type(exc).__name__}: {str(exc).splitlines()[0][:150]}")
                torch.cuda.empty_cache()
                continue
            got = flow[:8].permute(0, 2, 3, 1).cpu().numpy()
            err = epe(got, reference) if not quick else float("nan")
            shape = "x".join(map(str, gray.shape[-2:]))
            say(f"{shape:>9} {mode:>9} {batch:>6} {first:>8.2f} {batch / seconds:>9.1f} {err:>11.4f} px")
    if device.type == "cuda":
        say(f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")


def step_i3d(device: torch.device, quick: bool) -> None:
    ref = load_ref()
    size = 64 if quick else 224
    batches = (2,) if quick else (8, 32, 64)
    say(f"two-stream I3D on {device} (random weights), clips 16x{size}x{size}; median of 3 timed calls")
    say(f"{'precision':>9} {'batch':>6} {'snippets/s':>11} {'frames/s':>9}")
    extractors = {}
    for precision in ("fp32", "tf32", "bf16"):
        ex = Extractor(ExtractSettings(crop_size=size, precision=precision, flow="torch"), device=str(device))
        extractors[precision] = ex
        for batch in batches:
            ex.i3d_batch = batch
            rgb = torch.rand(batch, 3, SNIPPET_FRAMES, size, size, device=device) * 2 - 1
            flow = torch.rand(batch, 2, SNIPPET_FRAMES, size, size, device=device) * 2 - 1
            try:
                def run(ex=ex, rgb=rgb, flow=flow):
                    return ex._i3d(ex.rgb, rgb), ex._i3d(ex.flow, flow)

                run()
                seconds = sorted(timed(device, run)[1] for _ in range(3))[1]
            except Exception as exc:  # reported, and the next configuration runs
                say(f"{precision:>9} {batch:>6}   failed: {type(exc).__name__}: {str(exc).splitlines()[0][:150]}")
                torch.cuda.empty_cache()
                continue
            say(f"{precision:>9} {batch:>6} {batch / seconds:>11.1f} {batch * SNIPPET_FRAMES / seconds:>9.0f}")
    if quick:
        return
    from wtal.extract.decode import center_crop

    frames = ref["frames_256"][: 2 * SNIPPET_FRAMES]
    rgb = torch.from_numpy(center_crop(frames, 224)).to(device).float() / 127.5 - 1.0
    clips = rgb.reshape(2, SNIPPET_FRAMES, 224, 224, 3).permute(0, 4, 1, 2, 3)
    feats = {p: ex._i3d(ex.rgb, clips).cpu().numpy() for p, ex in extractors.items()}
    for p in ("fp32", "tf32", "bf16"):
        say(f"RGB features of 2 real snippets, {p} on {device} vs CPU fp32: relative difference "
            f"{relative(feats[p], ref['rgb_i3d']):.2e}" + (f"; vs {device} fp32 {relative(feats[p], feats['fp32']):.2e}"
                                                           if p != "fp32" else ""))
    if device.type == "cuda":
        say(f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")


def cv2_chunks(paths: list[Path], frames: int, short_side: int, chunk: int):
    """RGB chunks of `paths` decoded with OpenCV, resized as wtal does, repeated to `frames`."""
    done, buffer = 0, []
    while done < frames:
        for path in paths:
            capture = cv2.VideoCapture(str(path))
            ok, bgr = capture.read()
            while ok and done < frames:
                buffer.append(resize_short_side(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), short_side))
                done += 1
                if len(buffer) == chunk:
                    yield np.stack(buffer)
                    buffer = []
                ok, bgr = capture.read()
            capture.release()
            if buffer and done < frames:  # clips differ in size: never mix two in one chunk
                yield np.stack(buffer)
                buffer = []
    if buffer:
        yield np.stack(buffer)


def clips() -> list[Path]:
    return [CARRY / "videos" / n for n in ("mmaction2_demo.mp4", "activitynet_v_GGSY1Qvo990.mp4")]


def step_e2e(device: torch.device, quick: bool, seconds: float) -> None:
    ref = load_ref()
    size = 112 if quick else 224
    preset = "fast" if quick else "default"
    frames = int(seconds * 25)
    say(f"end to end on {device}: {frames} frames ({seconds:.0f} s at 25 fps) of {', '.join(p.name for p in clips())} "
        f"decoded with OpenCV {cv2.__version__} (the clips' own rates), crop {size}, preset {preset}, torch flow")
    for precision in ("fp32", "bf16"):
        settings = ExtractSettings(crop_size=size, flow="torch", flow_preset=preset, precision=precision)
        ex = Extractor(settings, device=str(device))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        chunk = ex.batch * SNIPPET_FRAMES + 1
        warm = ex.extract_chunks(iter([ref["frames_256"][:SNIPPET_FRAMES + 1]]), "warm-up")  # compiles
        del warm
        count = []
        stream = prefetch(cv2_chunks(clips(), frames, ex.settings.short_side, chunk))
        feats, wall = timed(device, lambda: ex.extract_chunks(stream, "clips", on_frames=count.append))
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
        say(f"{precision}: {sum(count)} frames in {wall:.1f} s = {sum(count) / wall:.1f} frames/s "
            f"({feats.shape[0]} snippets, batch {ex.batch} snippets, I3D micro-batch {ex.i3d_batch}); "
            f"peak GPU memory {peak:.2f} GiB")
        if not quick:
            carried = ex.extract_chunks(iter([ref["frames_256"]]), "carried")
            say(f"{precision}: features of the 2 carried snippets vs CPU fp32 with torch flow "
                f"{relative(carried, ref['feats_torch']):.2e}, with OpenCV flow {relative(carried, ref['feats_opencv']):.2e}")


def step_profile(device: torch.device, quick: bool) -> None:
    size = 112 if quick else 224
    preset = "fast" if quick else "default"
    ex = Extractor(ExtractSettings(crop_size=size, flow="torch", flow_preset=preset), device=str(device))
    phases = {"decode wait": 0.0, "H2D copy": 0.0, "flow": 0.0, "I3D": 0.0}

    def wrap(name, fn):
        def inner(*args, **kwargs):
            sync(device)
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            if name == "H2D copy" and ex.copy_stream is not None:
                ex.copy_stream.synchronize()
            sync(device)
            phases[name] += time.perf_counter() - start
            return out
        return inner

    ex._upload = wrap("H2D copy", ex._upload)
    ex._raw_flow = wrap("flow", ex._raw_flow)
    ex._i3d = wrap("I3D", ex._i3d)
    chunk = ex.batch * SNIPPET_FRAMES + 1
    frames = 2 * chunk if quick else 4 * chunk
    ref = load_ref()
    ex.extract_chunks(iter([ref["frames_256"][:SNIPPET_FRAMES + 1]]), "warm-up")
    for key in phases:
        phases[key] = 0.0
    source = prefetch(cv2_chunks(clips(), frames, ex.settings.short_side, chunk))

    def waited():
        while True:
            start = time.perf_counter()
            try:
                item = next(source)
            except StopIteration:
                return
            phases["decode wait"] += time.perf_counter() - start
            yield item

    _, wall = timed(device, lambda: ex.extract_chunks(waited(), "clips"))
    rest = wall - sum(phases.values())
    say(f"profile on {device}: {frames} frames in {wall:.1f} s ({frames / wall:.1f} frames/s with every phase "
        f"synchronised), chunks of {chunk} frames")
    for name, seconds in list(phases.items()) + [("host prep + other", rest)]:
        say(f"  {name:18} {seconds:8.2f} s  {100 * seconds / wall:5.1f} %")
    if device.type != "cuda":
        return
    from torch.profiler import ProfilerActivity, profile

    gray = torch.from_numpy(ref["gray_256"]).float().unsqueeze(1).to(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        tvl1_pairs(gray[:-1], gray[1:], PRESETS[preset])
        sync(device)
    say("top kernels of one 8-pair TV-L1 call (torch.profiler, by self CUDA time):")
    say(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=12, max_name_column_width=60))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=["tvl1", "i3d", "e2e", "profile"])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--seconds", type=float, default=120.0, help="video seconds of the end-to-end step")
    args = parser.parse_args()
    device = torch.device(args.device)
    quick = device.type != "cuda"
    with contextlib.suppress(KeyboardInterrupt):
        if args.step == "tvl1":
            step_tvl1(device, quick)
        elif args.step == "i3d":
            step_i3d(device, quick)
        elif args.step == "e2e":
            step_e2e(device, quick, 8.0 if quick else args.seconds)
        else:
            step_profile(device, quick)


if __name__ == "__main__":
    main()
