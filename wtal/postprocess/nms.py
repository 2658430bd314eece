"""Temporal non-maximum suppression (pure numpy) with the overlap definitions the methods use.

- "tiou": the true temporal IoU; a segment is suppressed when its overlap with a kept one is
  strictly above the threshold (wtal's default).
- "tiou_plus_one": IoU with one unit added to every length and to the intersection, on the time
  axis given by `unit` (the official ECM, BackTAL and BaS-Net NMS add 1 second), suppressing
  when the overlap is at or above the threshold, as that code does.
- "over_lower": the intersection divided by the lower-scored segment's length, both with one
  snippet added (the official RSKP / W-TALC NMS), suppressing when strictly above the threshold.
"""
from __future__ import annotations

import numpy as np

from ..segments import tiou as segment_iou

NMS_OVERLAPS = ("tiou", "tiou_plus_one", "over_lower")


def overlaps(segment: np.ndarray, segments: np.ndarray, mode: str = "tiou", unit: float = 1.0) -> np.ndarray:
    """Overlap of one (start, end) `segment` (the higher-scored) with each row of `segments`.

    `unit` is the size of "one" on the segments' axis (for "tiou_plus_one": one second in the
    segments' units; for "over_lower": one snippet).
    """
    if mode == "tiou":
        return segment_iou(segment, segments)
    if mode not in NMS_OVERLAPS:
        raise ValueError(f"nms_overlap={mode!r}: choose one of {', '.join(NMS_OVERLAPS)}")
    seg = np.asarray(segment, dtype=np.float64)
    segs = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    inter = np.maximum(0.0, np.minimum(seg[1], segs[:, 1]) - np.maximum(seg[0], segs[:, 0]) + unit)
    if mode == "over_lower":
        return inter / (segs[:, 1] - segs[:, 0] + unit)
    union = (seg[1] - seg[0] + unit) + (segs[:, 1] - segs[:, 0] + unit) - inter
    return inter / union


def nms(segments: np.ndarray, scores: np.ndarray, threshold: float, overlap: str = "tiou",
        unit: float = 1.0) -> np.ndarray:
    """Indices kept by greedy NMS, highest score first; ties keep input order.

    With the default `overlap="tiou"` a segment is suppressed when its tIoU with an already kept
    one is strictly above `threshold`; see the module docstring for the other definitions.
    """
    segments = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        if order.size == 1:
            break
        rest = order[1:]
        ov = overlaps(segments[i], segments[rest], overlap, unit)
        order = rest[ov < threshold] if overlap == "tiou_plus_one" else rest[ov <= threshold]
    return np.asarray(keep, dtype=np.int64)
