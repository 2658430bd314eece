"""Prepare, on this CPU machine, what bench/gpu.sh carries to a GPU machine (into gpu_carry/).

The GPU machine has CUDA torch, numpy and OpenCV without the contrib modules (so no OpenCV
TV-L1 there), no PyAV, decord or Ray, and no network; only the checkout (64 MiB in all) travels.
So the references are computed here, with the decoders and OpenCV build of the CPU path:

  gpu_carry/videos/     the real clips the GPU tests and the end-to-end step decode (OpenCV there)
  gpu_carry/ref.npz     frames_256: 33 decoded RGB frames (25 fps, shorter side 256, wtal's decoder)
                        of --clip; gray_224 / gray_256: 9 consecutive gray frames at shorter side
                        224 / 256 (whole frames); flow_224 / flow_256: OpenCV's CPU
                        TV-L1 (default preset) of their 8 pairs; feats_opencv / feats_torch:
                        CPU fp32 features (crop 224, default preset, random I3D weights) of the
                        2 snippets of frames_256 with OpenCV and torch TV-L1; rgb_i3d: the RGB
                        stream's CPU fp32 features alone
  gpu_carry/ref.json    what was computed, with which versions, and how long it took

    .venv/bin/python bench/gpu_prep.py [--clip mmaction2_demo.mp4] [--start 10]

Prints what it wrote and the carry's size (it must stay well under 64 MiB with the checkout).
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from wtal.extract.decode import iter_frames, to_gray
from wtal.extract.features import SNIPPET_FRAMES, Extractor, ExtractSettings
from wtal.extract.flow import PRESETS, compute_flow

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ROOT.parent / "shared" / "data" / "videos"
# The clips tests/test_tvl1.py reads, and the two the end-to-end step repeats.
CLIPS = ["mmaction2_demo.mp4", "activitynet_v_GGSY1Qvo990.mp4", "mmaction2_test.avi", "mmaction2_test.mp4"]
SNIPPETS = 2
PAIRS = 8


def decoded(path: Path, start: int, count: int, short_side: int) -> np.ndarray:
    """`count` RGB frames from index `start` at 25 fps, shorter side `short_side` (wtal's decoder)."""
    frames = np.concatenate(list(iter_frames(str(path), fps=25.0, short_side=short_side, chunk_size=64)), 0)
    if len(frames) < start + count:
        raise SystemExit(f"{path}: {len(frames)} frames, need {start + count}")
    return frames[start:start + count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", default="mmaction2_demo.mp4")
    parser.add_argument("--start", type=int, default=10, help="first frame index (25 fps)")
    parser.add_argument("--out", type=Path, default=ROOT / "gpu_carry")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    begin = time.perf_counter()
    out = args.out
    (out / "videos").mkdir(parents=True, exist_ok=True)
    for name in CLIPS:
        shutil.copy(VIDEOS / name, out / "videos" / name)

    clip = VIDEOS / args.clip
    ref: dict[str, np.ndarray] = {}
    ref["frames_256"] = decoded(clip, args.start, SNIPPETS * SNIPPET_FRAMES + 1, 256)
    ref["gray_256"] = to_gray(ref["frames_256"][:PAIRS + 1])
    ref["gray_224"] = to_gray(decoded(clip, args.start, PAIRS + 1, 224))
    timings = {}
    for size in (224, 256):
        t = time.perf_counter()
        ref[f"flow_{size}"] = compute_flow(ref[f"gray_{size}"], "opencv-cpu", "default", "cpu")
        timings[f"opencv_flow_{size}_s"] = round(time.perf_counter() - t, 1)
        print(f"OpenCV TV-L1 (default preset) of {PAIRS} pairs at {ref[f'gray_{size}'].shape[1:]}: "
              f"{timings[f'opencv_flow_{size}_s']} s", flush=True)

    for flow in ("opencv", "torch"):
        settings = ExtractSettings(crop_size=224, flow="opencv-cpu" if flow == "opencv" else "torch",
                                   flow_preset="default", precision="fp32")
        extractor = Extractor(settings, device="cpu", batch=SNIPPETS)
        t = time.perf_counter()
        ref[f"feats_{flow}"] = extractor.extract_chunks(iter([ref["frames_256"]]), args.clip)
        timings[f"cpu_features_{flow}_s"] = round(time.perf_counter() - t, 1)
        print(f"CPU fp32 features with {flow} flow: {ref[f'feats_{flow}'].shape} in "
              f"{timings[f'cpu_features_{flow}_s']} s", flush=True)
    from wtal.extract.decode import center_crop

    rgb = torch.from_numpy(center_crop(ref["frames_256"][:SNIPPETS * SNIPPET_FRAMES], 224)).float() / 127.5 - 1.0
    clips = rgb.reshape(SNIPPETS, SNIPPET_FRAMES, 224, 224, 3).permute(0, 4, 1, 2, 3)
    ref["rgb_i3d"] = extractor._i3d(extractor.rgb, clips).numpy()

    np.savez_compressed(out / "ref.npz", **ref)
    meta = {
        "clip": args.clip, "start": args.start, "snippets": SNIPPETS, "pairs": PAIRS,
        "preset": PRESETS["default"], "crop_size": 224, "i3d": "random weights (RANDOM_WEIGHTS_SEED)",
        "torch": torch.__version__, "opencv": cv2.__version__, "threads": args.threads,
        "timings": timings, "arrays": {k: [list(v.shape), str(v.dtype)] for k, v in ref.items()},
    }
    (out / "ref.json").write_text(json.dumps(meta, indent=1))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out}: {size / 2**20:.1f} MiB in {time.perf_counter() - begin:.0f} s "
          f"({', '.join(sorted(p.name for p in out.rglob('*') if p.is_file()))})")


if __name__ == "__main__":
    main()
