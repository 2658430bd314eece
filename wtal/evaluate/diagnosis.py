"""Error diagnosis of temporal detections in the style of DETAD (Alwassel et al., ECCV 2018,
"Diagnosing Error in Temporal Action Detectors"), on the metric's own matching.

It starts from `match_predictions`, so a true positive here is exactly a true positive of the
mAP. At threshold `a` every other prediction is one false-positive type, decided by the ground
truth of its video (any class) with the highest tIoU (ties: file order), as DETAD does:

- double detection: tIoU >= a with a ground truth of its own label (which a better-ranked
  prediction already took);
- wrong label: tIoU >= a with a ground truth of another label;
- localization: `MIN_TIOU` (0.1) <= tIoU < a, own label;
- confusion: 0.1 <= tIoU < a, another label;
- background: tIoU < 0.1 with every ground truth of the video.

Summaries: the share of each outcome among each class's top-kG predictions (G: the class's
number of ground truths, k = 1..10, pooled over classes; DETAD's false-positive profile), the mAP
gain at each threshold when the predictions of one type are removed (the others keep their
matches, since a false positive takes no ground truth), and the ground truths missed by instance
length (DETAD's false-negative analysis by length). Two finer splits answer "too short, too
long or shifted?" and "fired on context?": localization errors by their shape against their best
ground truth, and background errors by their distance to the nearest instance of their class.
"""
from __future__ import annotations

import numpy as np

from wtal.evaluate.metrics import Matching, _interpolated_ap
from wtal.segments import pair_tiou

MIN_TIOU = 0.1
OUTCOMES = ("true positive", "double detection", "wrong label", "localization", "confusion", "background")
TRUE_POSITIVE, DOUBLE, WRONG_LABEL, LOCALIZATION, CONFUSION, BACKGROUND = range(6)
# Instance lengths in seconds: DETAD's THUMOS14 bins for short actions, its ActivityNet bins
# when the median instance is longer than 30 s.
SHORT_BINS = (0.0, 3.0, 6.0, 12.0, 18.0, np.inf)
LONG_BINS = (0.0, 30.0, 60.0, 120.0, 180.0, np.inf)
BIN_NAMES = ("XS", "S", "M", "L", "XL")
LOCALIZATION_KINDS = ("too short (inside)", "too long (covers)", "early (starts before)", "late (starts after)")
BACKGROUND_KINDS = ("in context (within one instance length)", "far from its class", "class absent from video")


def _video_pairs(m: Matching) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (prediction, ground truth) pair of the same video, any class, and its tIoU."""
    order = np.argsort(m.gt_video, kind="stable")
    sorted_video = m.gt_video[order]
    lo = np.searchsorted(sorted_video, m.pred_video, "left")
    counts = np.searchsorted(sorted_video, m.pred_video, "right") - lo
    pair_pred = np.repeat(np.arange(len(m.pred_video)), counts)
    within = np.arange(len(pair_pred)) - np.repeat(np.cumsum(counts) - counts, counts)
    pair_gt = order[np.repeat(lo, counts) + within]
    iou = pair_tiou(m.pred_seg[pair_pred, 0], m.pred_seg[pair_pred, 1], m.gt_seg[pair_gt, 0], m.gt_seg[pair_gt, 1])
    return pair_pred, pair_gt, iou


def best_overlap(m: Matching) -> tuple[np.ndarray, np.ndarray]:
    """Per prediction, the highest tIoU with any ground truth of its video and the index of that
    ground truth (-1 where the video has no ground truth)."""
    n_pred = len(m.pred_video)
    best_iou = np.zeros(n_pred)
    best_gt = np.full(n_pred, -1, dtype=np.int64)
    pair_pred, pair_gt, iou = _video_pairs(m)
    if len(pair_pred) == 0:
        return best_iou, best_gt
    ranked = np.lexsort((pair_gt, -iou, pair_pred))
    head = np.ones(len(ranked), dtype=bool)
    head[1:] = pair_pred[ranked][1:] != pair_pred[ranked][:-1]
    first = ranked[head]
    best_iou[pair_pred[first]] = iou[first]
    best_gt[pair_pred[first]] = pair_gt[first]
    return best_iou, best_gt


def outcomes(m: Matching) -> np.ndarray:
    """(T, P) outcome codes (indices into OUTCOMES) of every prediction at every threshold."""
    best_iou, best_gt = best_overlap(m)
    same = (best_gt >= 0) & (m.gt_class[best_gt] == m.pred_class)
    codes = np.empty(m.pred_tp.shape, dtype=np.int8)
    for i, threshold in enumerate(m.tious):
        near = best_iou >= MIN_TIOU
        code = np.where(best_iou >= threshold, np.where(same, DOUBLE, WRONG_LABEL),
                        np.where(near, np.where(same, LOCALIZATION, CONFUSION), BACKGROUND))
        codes[i] = np.where(m.pred_tp[i], TRUE_POSITIVE, code)
    return codes


def ranked_by_class(m: Matching) -> tuple[np.ndarray, np.ndarray]:
    """Prediction indices ranked as the metric ranks them (by class, then score, ties in input
    order) and the bounds of each class's run in that order."""
    order = np.lexsort((-m.pred_score, m.pred_class))
    bounds = np.searchsorted(m.pred_class[order], np.arange(len(m.classes) + 1))
    return order, bounds


def class_profile(m: Matching, codes: np.ndarray, k_max: int = 10) -> np.ndarray:
    """(C, T, k_max, 6) counts of each outcome among each class's top-kG predictions, k = 1..k_max."""
    order, bounds = ranked_by_class(m)
    npos = np.bincount(m.gt_class, minlength=len(m.classes))
    out = np.zeros((len(m.classes), len(m.tious), k_max, len(OUTCOMES)), dtype=np.int64)
    for c in range(len(m.classes)):
        ranked = codes[:, order[bounds[c]:bounds[c + 1]]]
        for k in range(k_max):
            top = ranked[:, : (k + 1) * npos[c]]
            for t in range(len(m.tious)):
                out[c, t, k] = np.bincount(top[t], minlength=len(OUTCOMES))
    return out


def fp_profile(m: Matching, codes: np.ndarray, k_max: int = 10) -> np.ndarray:
    """(T, k_max, 6) counts of each outcome among the top-kG predictions of every class, pooled."""
    return class_profile(m, codes, k_max).sum(axis=0)


def class_ap(m: Matching, keep: np.ndarray | None = None) -> np.ndarray:
    """(C, T) AP of each class from the matching, over the predictions where `keep` (T, P) is
    True (all when None); with all predictions it equals `evaluate`'s per-class AP."""
    order, bounds = ranked_by_class(m)
    npos = np.bincount(m.gt_class, minlength=len(m.classes))
    ap = np.zeros((len(m.classes), len(m.tious)))
    for c in range(len(m.classes)):
        idx = order[bounds[c]:bounds[c + 1]]
        for t in range(len(m.tious)):
            flags = m.pred_tp[t, idx] if keep is None else m.pred_tp[t, idx[keep[t, idx]]]
            ap[c, t] = _interpolated_ap(flags[None], int(npos[c]))[0]
    return ap


def removal_gain(m: Matching, codes: np.ndarray) -> np.ndarray:
    """(5, T) mAP gain at each threshold when the false positives of one type (DOUBLE ..
    BACKGROUND, in that order) are removed."""
    base = class_ap(m).mean(axis=0)
    return np.array([class_ap(m, codes != code).mean(axis=0) - base for code in range(DOUBLE, BACKGROUND + 1)])


def gt_lengths(m: Matching) -> np.ndarray:
    """Ground-truth instance lengths in seconds."""
    length = m.gt_seg[:, 1] - m.gt_seg[:, 0]
    return length / m.units_per_second if m.units_per_second else length


def missed_by_length(m: Matching) -> tuple[tuple[float, ...], np.ndarray, np.ndarray]:
    """(bin edges in seconds, (5,) ground truths per length bin, (T, 5) of them missed)."""
    length = gt_lengths(m)
    edges = LONG_BINS if len(length) and np.median(length) > 30.0 else SHORT_BINS
    # Bins are (lo, hi]; a zero-length instance joins the first.
    which = np.clip(np.searchsorted(np.asarray(edges), length, "left") - 1, 0, len(BIN_NAMES) - 1)
    total = np.bincount(which, minlength=len(BIN_NAMES))
    missed = np.array([np.bincount(which[~found], minlength=len(BIN_NAMES)) for found in m.gt_matched])
    return edges, total, missed.reshape(len(m.tious), len(BIN_NAMES))


def localization_kinds(m: Matching, codes: np.ndarray) -> np.ndarray:
    """(T, 4) localization errors by shape against their best ground truth: inside it (too
    short), covering it (too long), starting before it (early) or after it (late)."""
    _, best_gt = best_overlap(m)
    seg, gt = m.pred_seg, m.gt_seg[np.maximum(best_gt, 0)]
    inside = (seg[:, 0] >= gt[:, 0]) & (seg[:, 1] <= gt[:, 1])
    covers = (seg[:, 0] <= gt[:, 0]) & (seg[:, 1] >= gt[:, 1]) & ~inside
    kind = np.where(inside, 0, np.where(covers, 1, np.where(seg[:, 0] < gt[:, 0], 2, 3)))
    return np.array([np.bincount(kind[row == LOCALIZATION], minlength=len(LOCALIZATION_KINDS)) for row in codes])


def background_kinds(m: Matching, codes: np.ndarray) -> np.ndarray:
    """(T, 3) background errors by context: within one instance length of a ground truth of their
    class (its context), farther from every one, or in a video without their class."""
    pair_pred, pair_gt, _ = _video_pairs(m)
    own = m.gt_class[pair_gt] == m.pred_class[pair_pred]
    pair_pred, pair_gt = pair_pred[own], pair_gt[own]
    gap = np.maximum(m.gt_seg[pair_gt, 0] - m.pred_seg[pair_pred, 1], m.pred_seg[pair_pred, 0] - m.gt_seg[pair_gt, 1])
    length = m.gt_seg[pair_gt, 1] - m.gt_seg[pair_gt, 0]
    near = np.zeros(len(m.pred_video), dtype=bool)
    near[pair_pred[gap <= length]] = True
    has_class = np.zeros(len(m.pred_video), dtype=bool)
    has_class[pair_pred] = True
    kind = np.where(near, 0, np.where(has_class, 1, 2))
    return np.array([np.bincount(kind[row == BACKGROUND], minlength=len(BACKGROUND_KINDS)) for row in codes])
