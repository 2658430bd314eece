"""Temporal segments: the one tIoU formula that post-processing (NMS) and evaluation (mAP) share.

Both use the same element-wise expression, so a detection suppressed at tIoU t by NMS and a match
at tIoU t in the metric agree bit for bit.
"""
from __future__ import annotations

import numpy as np


def pair_tiou(a_start, a_end, b_start, b_end) -> np.ndarray:
    """Element-wise tIoU of segments (a_start, a_end) and (b_start, b_end); 0 where the union is empty."""
    inter = np.maximum(np.minimum(a_end, b_end) - np.maximum(a_start, b_start), 0.0)
    union = (a_end - a_start) + (b_end - b_start) - inter
    out = np.zeros(np.broadcast(inter, union).shape)
    return np.divide(inter, union, out=out, where=union > 0)


def tiou(segment, segments) -> np.ndarray:
    """tIoU of one (start, end) segment with each row of `segments` (N, 2)."""
    seg = np.asarray(segment, dtype=np.float64)
    segs = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    return pair_tiou(seg[0], seg[1], segs[:, 0], segs[:, 1])
