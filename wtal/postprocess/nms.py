"""Temporal non-maximum suppression (pure numpy)."""
from __future__ import annotations

import numpy as np

from ..evaluate.metrics import tiou as segment_iou


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
