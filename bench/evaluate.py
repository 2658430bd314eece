"""Benchmark of the evaluation metric at THUMOS14 scale.

Builds synthetic ground truth shaped like the THUMOS14 test set (210 videos, about 3.3k
instances over 20 classes) and 50k predictions shaped like WTAL output (several overlapping
multi-threshold proposals around each action, plus scattered false alarms), then times the
vectorised `evaluate` and the loop reference in the same run at 9 tIoU thresholds
(0.1:0.9:0.1), checks that every AP agrees to 1e-9 and prints both times and their ratio.
It also times the real `gt_basnet.json` test subset with random predictions.

    .venv/bin/python bench/evaluate.py [--predictions 50000] [--seed 0]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from wtal.data.annotations import AnnotationSet, Segment, VideoAnnotation, load_annotations
from wtal.evaluate.metrics import evaluate, parse_tiou

GT_BASNET = Path(__file__).resolve().parents[1] / "../shared/data/annotations/thumos14/gt_basnet.json"


def synthetic_annotations(rng: np.random.Generator, videos=210, classes=20, instances=3300) -> AnnotationSet:
    """THUMOS14-shaped ground truth: 1-2 classes per video, instances spread over videos."""
    names = [f"class_{c:02d}" for c in range(classes)]
    per_video = rng.multinomial(instances - videos, np.full(videos, 1 / videos)) + 1
    result = {}
    for v in range(videos):
        duration = float(rng.uniform(30, 600))
        labels = rng.choice(names, size=rng.integers(1, 3), replace=False)
        segments = []
        for _ in range(per_video[v]):
            length = float(rng.uniform(1, 12))
            start = float(rng.uniform(0, duration - length))
            segments.append(Segment(str(rng.choice(labels)), round(start, 1), round(start + length, 1)))
        vid = f"video_test_{v:07d}"
        result[vid] = VideoAnnotation(vid, "test", duration, 30.0, segments)
    return AnnotationSet(result, names, "synthetic")


def synthetic_detections(rng: np.random.Generator, ann: AnnotationSet, subset: str, total: int) -> dict:
    """Random predictions on the `subset` videos: about 60 % jittered proposals around ground
    truth, the rest false alarms anywhere in the video."""
    videos = ann.subset(subset)
    gts = [(v.video_id, s) for v in videos for s in v.segments]
    detections: dict[str, list[dict]] = {v.video_id: [] for v in videos}
    # gt_basnet.json has no durations: fall back to the last annotated end plus a margin.
    extent = {
        v.video_id: v.duration if v.duration is not None else max([s.end for s in v.segments] + [0.0]) + 30.0
        for v in videos
    }
    near = int(total * 0.6)
    picks = rng.integers(0, len(gts), near)
    for i in picks:
        vid, seg = gts[i]
        length = seg.end - seg.start
        start = seg.start + rng.normal(0, 0.3) * length
        end = seg.end + rng.normal(0, 0.3) * length
        label = seg.label if rng.random() < 0.9 else str(rng.choice(ann.class_names))
        score = float(np.round(rng.random(), 3))  # rounded: plenty of score ties
        segment = [min(start, end), max(start, end)]
        detections[vid].append({"label": label, "score": score, "segment": segment})
    for _ in range(total - near):
        video = videos[rng.integers(0, len(videos))]
        length = float(rng.uniform(0.5, 30))
        start = float(rng.uniform(0, extent[video.video_id]))
        detections[video.video_id].append(
            {"label": str(rng.choice(ann.class_names)), "score": float(np.round(rng.random() * 0.6, 3)),
             "segment": [start, start + length]}
        )
    return detections


def timed(fn):
    """Result, wall seconds and CPU seconds (the CPU time is what to trust on a busy host)."""
    start, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictions", type=int, default=50000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    tious = parse_tiou("0.1:0.9:0.1")

    ann = synthetic_annotations(rng)
    detections = synthetic_detections(rng, ann, "test", args.predictions)
    print(f"synthetic: {len(ann.videos)} videos, {ann.num_instances()} instances, "
          f"{len(ann.class_names)} classes, {sum(map(len, detections.values()))} predictions, "
          f"{len(tious)} thresholds")
    fast, t_fast, c_fast = timed(lambda: evaluate(ann, detections, "test", tious))
    slow, t_slow, c_slow = timed(lambda: evaluate(ann, detections, "test", tious, method="loop"))
    worst = max(
        abs(a - b)
        for name in fast.per_class_ap
        for a, b in zip(fast.per_class_ap[name], slow.per_class_ap[name])
    )
    assert worst <= 1e-9, f"vectorised and loop APs differ by {worst}"
    assert all(abs(a - b) <= 1e-9 for a, b in zip(fast.mAP, slow.mAP))
    print(f"vectorised evaluate: {t_fast:.3f} s (cpu {c_fast:.3f} s)   loop reference: "
          f"{t_slow:.3f} s (cpu {c_slow:.3f} s)   ratio {t_slow / t_fast:.1f}x "
          f"(cpu {c_slow / c_fast:.1f}x)   max |AP difference| {worst:.1e}")
    print("mAP per tIoU: " + " ".join(f"{100 * m:.2f}" for m in fast.mAP))

    if GT_BASNET.is_file():
        real = load_annotations(GT_BASNET)
        rng_real = np.random.default_rng(args.seed + 1)
        random_detections = synthetic_detections(rng_real, real, "test", args.predictions)
        report, t_real, c_real = timed(lambda: evaluate(real, random_detections, "test", tious))
        print(f"gt_basnet.json test ({report.num_videos} videos, "
              f"{real.num_instances('test')} instances, {report.num_predictions} predictions): "
              f"{t_real:.3f} s (cpu {c_real:.3f} s), average mAP {100 * report.average_mAP:.2f}")
    else:
        print(f"skipped the real-annotation timing: {GT_BASNET} not found")


if __name__ == "__main__":
    main()
