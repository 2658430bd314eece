"""From a class activation sequence to scored, suppressed proposals.

Shared by every localizer: class rejection, multi-threshold grouping of snippets, the
outer-inner-contrast (OIC) score and per-class NMS. All functions are pure and work on snippet
indices; `to_seconds` converts at the end.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .nms import nms


@dataclass(frozen=True)
class Proposal:
    """One scored segment of class `label` (index) over snippets [start, end)."""

    label: int
    score: float
    start: float
    end: float


def threshold_range(start: float, stop: float, step: float) -> np.ndarray:
    """Thresholds start, start+step, ... strictly below stop (the papers' np.arange)."""
    return np.arange(start, stop - 1e-6 * step, step)


def group_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous True runs of a 1-D boolean mask as [start, end) index pairs."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return []
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


def oic_score(signal: np.ndarray, start: int, end: int, outer_ratio: float) -> float:
    """Outer-inner contrast: mean inside [start, end) minus mean of the two outer bands.

    Each outer band is `outer_ratio` x the proposal length (at least one snippet), clipped to
    the sequence; a proposal covering the whole sequence has no outer region and scores its
    inner mean.
    """
    length = end - start
    pad = max(1, int(round(outer_ratio * length)))
    outer_start, outer_end = max(0, start - pad), min(len(signal), end + pad)
    inner = float(signal[start:end].mean())
    outer_parts = np.concatenate([signal[outer_start:start], signal[end:outer_end]])
    outer = float(outer_parts.mean()) if outer_parts.size else 0.0
    return inner - outer


def cas_proposals(
    cas: np.ndarray,
    video_scores: np.ndarray,
    class_threshold: float,
    thresholds: np.ndarray,
    outer_ratio: float,
    class_weight: float,
    score_signal: np.ndarray | None = None,
) -> list[Proposal]:
    """Multi-threshold proposals with OIC scores for every class that passes rejection.

    `cas` (T, C) in [0, 1] is thresholded; the OIC contrast is computed on `score_signal`
    (defaults to `cas`) and `class_weight * video_scores[c]` is added.
    """
    cas = np.asarray(cas, dtype=np.float64)
    signal = cas if score_signal is None else np.asarray(score_signal, dtype=np.float64)
    proposals = []
    for c in np.flatnonzero(np.asarray(video_scores) >= class_threshold):
        for thr in thresholds:
            for s, e in group_runs(cas[:, c] > thr):
                score = oic_score(signal[:, c], s, e, outer_ratio) + class_weight * float(video_scores[c])
                proposals.append(Proposal(int(c), score, float(s), float(e)))
    return proposals


def per_class_nms(proposals: list[Proposal], threshold: float, top_k: int | None = None) -> list[Proposal]:
    """NMS within each class; result sorted by score (descending), optionally truncated."""
    kept = []
    labels = sorted({p.label for p in proposals})
    for c in labels:
        group = [p for p in proposals if p.label == c]
        seg = np.array([[p.start, p.end] for p in group])
        scores = np.array([p.score for p in group])
        kept.extend(group[i] for i in nms(seg, scores, threshold))
    kept.sort(key=lambda p: -p.score)
    return kept[:top_k] if top_k else kept


def to_seconds(proposals: list[Proposal], snippet_seconds: float, duration: float | None) -> list[Proposal]:
    """Snippet indices to seconds, clipped to the video duration when known."""
    out = []
    for p in proposals:
        start, end = p.start * snippet_seconds, p.end * snippet_seconds
        if duration is not None:
            start, end = min(start, duration), min(end, duration)
        if end > start:
            out.append(Proposal(p.label, p.score, start, end))
    return out


def minmax_normalise(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """Min-max normalise along `axis` into [0, 1] (constant rows become 0)."""
    lo, hi = x.min(axis=axis, keepdims=True), x.max(axis=axis, keepdims=True)
    return (x - lo) / np.where(hi - lo > 0, hi - lo, 1.0)
