"""Temporal non-maximum suppression (pure numpy)."""
from __future__ import annotations

import numpy as np


def segment_iou(segment: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """tIoU of one [start, end] against (N, 2) segments, continuous coordinates without +1."""
    inter = np.clip(np.minimum(segment[1], segments[:, 1]) - np.maximum(segment[0], segments[:, 0]), 0, None)
    union = (segment[1] - segment[0]) + (segments[:, 1] - segments[:, 0]) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(segments: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Indices kept by greedy NMS, highest score first; ties keep input order.

    A segment is suppressed when its tIoU with an already kept one is strictly above `threshold`.
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
        order = rest[segment_iou(segments[i], segments[rest]) <= threshold]
    return np.asarray(keep, dtype=np.int64)
