"""The ActivityNet temporal detection metric: tIoU, greedy matching, interpolated AP and mAP.

Conventions (README "Evaluation"):

- tIoU is computed on continuous seconds without the +1 of frame-index formulas; a pair whose
  union is empty (two zero-length segments) has tIoU 0.
- Per class, predictions are ranked by score, highest first. Ties keep the input order: the
  order of videos in the detections mapping, then the order inside each video's list (a stable
  sort on -score).
- Each prediction takes the highest-tIoU ground truth of its video and class that is still
  unmatched and has tIoU >= threshold (so a prediction whose best ground truth is taken falls
  back to the next one); ground truths with equal tIoU are taken in file order. Otherwise the
  prediction is a false positive.
- AP is the all-points interpolated area under the precision-recall curve. mAP averages AP over
  the classes present in the evaluated subset's ground truth; a class without predictions has
  AP 0.
- Predictions on videos outside the evaluated subset (videos of another subset, or absent from
  the annotations) are false positives, as in the ActivityNet evaluator, with a warning giving
  their number; `ignore_extra_videos=True` (CLI `--ignore-extra-videos`) drops them instead.
  Predictions on videos left out with `exclude` are dropped. A video of the subset without
  segments of a class still makes that class's predictions false positives. Predictions of a class
  known to the annotation file but absent from the evaluated subset are ignored (there is no AP to
  charge them to). An unknown label is an error.

`average_precision` is the vectorised implementation (the greedy matching is resolved in
parallel rounds: a prediction is settled as soon as no better-ranked unsettled prediction of the
same video and class can still claim its best ground truth). `loop_average_precision` is the
plain per-prediction loop, kept as the reference the tests and the benchmark compare against.
"""
from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass, field

import numpy as np

from wtal.data.annotations import AnnotationError, AnnotationSet
from wtal.errors import WtalError
from wtal.evaluate.protocols import ambiguous_mask, get_protocol
from wtal.segments import pair_tiou, tiou

log = logging.getLogger(__name__)

DEFAULT_TIOUS = np.round(np.arange(0.1, 0.75, 0.1), 10)


class EvaluationError(WtalError, ValueError):
    """Invalid detections or evaluation settings; the message names the input and field."""


def parse_tiou(spec: str) -> np.ndarray:
    """Thresholds from `start:stop:step` (stop included), `a,b,c` or a single value."""
    text = str(spec).strip()
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            if len(parts) != 3 or parts[2] <= 0 or parts[1] < parts[0]:
                raise ValueError
            count = int(math.floor((parts[1] - parts[0]) / parts[2] + 1e-9)) + 1
            values = parts[0] + parts[2] * np.arange(count)
        else:
            values = np.array([float(p) for p in text.split(",")])
    except ValueError:
        raise EvaluationError(
            f"--tiou: expected start:stop:step, a comma list or one value, got {spec!r}"
        ) from None
    return _check_tious(np.round(values, 10), f"--tiou {spec}")


def _check_tious(tious, what: str = "tious") -> np.ndarray:
    values = np.atleast_1d(np.asarray(tious, dtype=np.float64))
    if values.size == 0 or not np.all((values > 0) & (values <= 1)):
        raise EvaluationError(f"{what}: thresholds must lie in (0, 1], got {values.tolist()}")
    return values


def _interpolated_ap(tp: np.ndarray, npos: int) -> np.ndarray:
    """All-points interpolated AP per row of `tp` (T, n): predictions already ranked."""
    if tp.shape[1] == 0 or npos == 0:
        return np.zeros(tp.shape[0])
    hits = np.cumsum(tp, axis=1, dtype=np.float64)
    precision = hits / np.arange(1, tp.shape[1] + 1)
    recall = hits / npos
    envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    return np.sum(np.diff(recall, axis=1, prepend=0.0) * envelope, axis=1)


def _match(gt_key, gt_seg, pred_key, pred_seg, tious) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching for ranked predictions; True where a prediction is a true positive.

    Keys group ground truths and predictions that may match (same video and class); predictions
    are in rank order. Returns (T, P) true-positive flags and (T, G) flags of the ground truths
    taken, one row per threshold.
    """
    n_gt, n_pred, n_thr = len(gt_key), len(pred_key), len(tious)
    tp = np.zeros(n_thr * n_pred, dtype=bool)
    taken = np.zeros(n_thr * n_gt, dtype=bool)
    if n_gt == 0 or n_pred == 0:
        return tp.reshape(n_thr, n_pred), taken.reshape(n_thr, n_gt)
    order = np.argsort(gt_key, kind="stable")
    sorted_keys = gt_key[order]
    lo = np.searchsorted(sorted_keys, pred_key, "left")
    counts = np.searchsorted(sorted_keys, pred_key, "right") - lo
    pair_pred = np.repeat(np.arange(n_pred), counts)
    within = np.arange(len(pair_pred)) - np.repeat(np.cumsum(counts) - counts, counts)
    pair_gt = order[np.repeat(lo, counts) + within]
    iou = pair_tiou(
        pred_seg[pair_pred, 0], pred_seg[pair_pred, 1], gt_seg[pair_gt, 0], gt_seg[pair_gt, 1]
    )
    keep = iou >= tious.min()
    pair_pred, pair_gt, iou = pair_pred[keep], pair_gt[keep], iou[keep]
    ranked = np.lexsort((pair_gt, -iou, pair_pred))
    pair_pred, pair_gt, iou = pair_pred[ranked], pair_gt[ranked], iou[ranked]
    # One independent matching problem per threshold: offset ids so they never collide.
    above = [iou >= t for t in tious]
    pp = np.concatenate([pair_pred[m] + i * n_pred for i, m in enumerate(above)])
    gg = np.concatenate([pair_gt[m] + i * n_gt for i, m in enumerate(above)])
    first_claim = np.full(n_thr * n_gt, np.iinfo(np.int64).max, dtype=np.int64)
    while pp.size:
        # Pairs are ordered by (prediction rank, -tIoU, gt index): a prediction's first live
        # pair is its best available ground truth.
        head = np.empty(pp.size, dtype=bool)
        head[0] = True
        np.not_equal(pp[1:], pp[:-1], out=head[1:])
        head_pred, head_gt = pp[head], gg[head]
        first_claim[gg] = np.iinfo(np.int64).max
        np.minimum.at(first_claim, gg, pp)
        # Settled: no better-ranked live prediction can still claim this ground truth.
        settled = first_claim[head_gt] == head_pred
        tp[head_pred[settled]] = True
        taken[head_gt[settled]] = True
        live = ~tp[pp] & ~taken[gg]
        pp, gg = pp[live], gg[live]
    return tp.reshape(n_thr, n_pred), taken.reshape(n_thr, n_gt)


def _rank(scores: np.ndarray) -> np.ndarray:
    """Indices by descending score, ties in input order."""
    return np.argsort(-scores, kind="stable")


def average_precision(gt, pred, tious) -> np.ndarray:
    """AP of one class at each threshold (vectorised).

    gt = (video_idx (G,), segments (G, 2)); pred = (video_idx (P,), segments (P, 2), scores (P,)).
    """
    tious = _check_tious(tious)
    gt_video, gt_seg = np.asarray(gt[0], dtype=np.int64), np.asarray(gt[1], dtype=np.float64)
    p_video = np.asarray(pred[0], dtype=np.int64)
    p_seg = np.asarray(pred[1], dtype=np.float64).reshape(-1, 2)
    order = _rank(np.asarray(pred[2], dtype=np.float64))
    tp, _ = _match(gt_video, gt_seg.reshape(-1, 2), p_video[order], p_seg[order], tious)
    return _interpolated_ap(tp, len(gt_video))


def _loop_interpolated_ap(tp: list[int], npos: int) -> float:
    """The VOC/ActivityNet interpolation, written out with explicit loops."""
    if not tp:
        return 0.0
    hits, precision, recall = 0, [], []
    for rank, flag in enumerate(tp, start=1):
        hits += flag
        precision.append(hits / rank)
        recall.append(hits / npos)
    mprec = [0.0] + precision + [0.0]
    mrec = [0.0] + recall + [1.0]
    for i in range(len(mprec) - 2, -1, -1):
        mprec[i] = max(mprec[i], mprec[i + 1])
    return sum((mrec[i] - mrec[i - 1]) * mprec[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1])


def loop_average_precision(gt, pred, tious) -> np.ndarray:
    """Reference AP of one class: one prediction at a time, one ground truth at a time."""
    tious = _check_tious(tious)
    gt_video = [int(v) for v in gt[0]]
    gt_seg = np.asarray(gt[1], dtype=np.float64).reshape(-1, 2)
    p_video = [int(v) for v in pred[0]]
    p_seg = np.asarray(pred[1], dtype=np.float64).reshape(-1, 2)
    scores = [float(s) for s in pred[2]]
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # stable: ties keep input order
    by_video: dict[int, list[int]] = {}
    for j, v in enumerate(gt_video):
        by_video.setdefault(v, []).append(j)
    overlaps = {}
    for i in order:
        candidates = by_video.get(p_video[i], [])
        overlaps[i] = tiou(p_seg[i], gt_seg[candidates]) if candidates else np.zeros(0)
    result = []
    for threshold in tious:
        taken = [False] * len(gt_video)
        tp = []
        for i in order:
            best, best_iou = None, -1.0
            for j, iou in zip(by_video.get(p_video[i], []), overlaps[i]):
                if not taken[j] and iou >= threshold and iou > best_iou:
                    best, best_iou = j, iou
            if best is None:
                tp.append(0)
            else:
                taken[best] = True
                tp.append(1)
        result.append(_loop_interpolated_ap(tp, len(gt_video)))
    return np.array(result)


@dataclass
class EvaluationReport:
    """Result of `evaluate`; `to_json` gives the `--json` report of `wtal evaluate`."""

    tiou: list[float]
    mAP: list[float]
    average_mAP: float
    per_class_ap: dict[str, list[float]]
    num_videos: int
    num_predictions: int
    protocol: str
    subset: str
    excluded: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "tiou": [float(t) for t in self.tiou],
            "mAP": [float(m) for m in self.mAP],
            "average_mAP": float(self.average_mAP),
            "per_class_ap": {k: [float(a) for a in v] for k, v in self.per_class_ap.items()},
            "num_videos": int(self.num_videos),
            "num_predictions": int(self.num_predictions),
            "protocol": self.protocol,
            "subset": self.subset,
            "excluded": list(self.excluded),
        }


@dataclass
class _Prepared:
    """Ground truth and predictions of one evaluation as flat arrays in protocol units."""

    classes: list[str]
    num_videos: int
    video_ids: list[str]
    excluded: list[str]
    num_extra_videos: int
    gt_class: np.ndarray
    gt_video: np.ndarray
    gt_seg: np.ndarray
    pred_class: np.ndarray
    pred_video: np.ndarray
    pred_seg: np.ndarray
    pred_score: np.ndarray


def _check_item(item, video_id: str, i: int) -> None:
    """Raise a precise error for one malformed prediction (the slow path of `_flatten`)."""
    where = f"detections: results.{video_id}[{i}]"
    try:
        label, score, segment = item["label"], item["score"], item["segment"]
        values = [float(score), float(segment[0]), float(segment[1])]
        if len(segment) != 2 or not isinstance(label, str):
            raise ValueError
    except (KeyError, TypeError, ValueError, IndexError):
        raise EvaluationError(
            f"{where}: expected {{'label': str, 'score': number, 'segment': [start, end]}}, "
            f"got {item!r:.80}"
        ) from None
    if not all(map(math.isfinite, values)):
        raise EvaluationError(f"{where}: score and segment must be finite, got {item!r:.80}")
    if values[2] < values[1]:
        raise EvaluationError(f"{where}.segment: end {values[2]} is before start {values[1]}")


def _flatten(detections) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """Video ids, labels, scores (P,) and segments (P, 2) of all predictions, in input order.

    The common case is checked with whole-array operations; only when a check fails is the
    offending prediction located one by one to name it in the error.
    """
    video_ids: list[str] = []
    labels: list = []
    scores: list = []
    segments: list = []
    for video_id, items in detections.items():
        if not isinstance(items, (list, tuple)):
            raise EvaluationError(f"detections: results.{video_id}: expected a list, got {items!r:.60}")
        try:
            labels.extend([item["label"] for item in items])
            scores.extend([item["score"] for item in items])
            segments.extend([item["segment"] for item in items])
        except (KeyError, TypeError, IndexError):
            for i, item in enumerate(items):
                _check_item(item, video_id, i)
        video_ids.extend([video_id] * len(items))
    try:
        score_arr = np.asarray(scores, dtype=np.float64).reshape(-1)
        lengths = set(map(len, segments))
        seg_arr = np.fromiter(itertools.chain.from_iterable(segments), np.float64).reshape(-1, 2)
        valid = (
            lengths <= {2}
            and len(score_arr) == len(labels) == len(seg_arr)
            and set(map(type, labels)) <= {str}
            and np.isfinite(score_arr).all()
            and np.isfinite(seg_arr).all()
            and (seg_arr[:, 1] >= seg_arr[:, 0]).all()
        )
    except (TypeError, ValueError):
        valid = False
    if not valid:
        for video_id, items in detections.items():
            for i, item in enumerate(items):
                _check_item(item, video_id, i)
        raise EvaluationError("detections: malformed predictions")
    return video_ids, labels, score_arr, seg_arr


def _prepare(ann, detections, subset, protocol, exclude, ambiguous, ignore_extra_videos=False) -> _Prepared:
    proto = get_protocol(protocol)
    if proto.needs_ambiguous and ambiguous is None:
        raise EvaluationError(
            f"protocol {proto.name}: removes predictions overlapping Ambiguous segments; pass "
            "ambiguous (e.g. load_ambiguous('Ambiguous_test.txt'), or {} to remove none)"
        )
    videos = ann.subset(subset)
    exclude = set(exclude)
    excluded = sorted(v.video_id for v in videos if v.video_id in exclude)
    absent = sorted(exclude - set(excluded))
    if absent:
        log.warning("excluded videos not in subset %r: %s", subset, ", ".join(absent))
    videos = [v for v in videos if v.video_id not in exclude]
    video_index = {v.video_id: i for i, v in enumerate(videos)}
    classes = sorted({s.label for v in videos for s in v.segments})
    if not classes:
        raise AnnotationError(f"{ann.source}: subset {subset!r}: no ground-truth segments to evaluate")
    class_index = {c: i for i, c in enumerate(classes)}
    known = set(ann.class_names)
    gt = [(class_index[s.label], video_index[v.video_id], s.start, s.end) for v in videos for s in v.segments]
    gt_arr = np.array(gt, dtype=np.float64).reshape(-1, 4)

    video_ids, labels, scores, segments = _flatten(detections)
    unknown = sorted(set(labels) - known)
    if unknown:
        k = labels.index(unknown[0])
        raise EvaluationError(
            f"detections: results.{video_ids[k]}: label {unknown[0]!r} is not a class of "
            f"{ann.source} ({len(unknown)} unknown label(s): {', '.join(map(repr, unknown[:5]))})"
        )
    # videos outside the subset get indices after its own (no ground truth: every prediction a FP)
    extra_ids = [] if ignore_extra_videos else sorted(set(video_ids) - set(video_index) - exclude)
    extra_index = {v: len(videos) + i for i, v in enumerate(extra_ids)}
    pred_video = np.array([video_index.get(v, extra_index.get(v, -1)) for v in video_ids], dtype=np.int64)
    pred_class = np.array([class_index.get(label, -1) for label in labels], dtype=np.int64)
    outside = int((pred_video < 0).sum())
    extra = int(((pred_video >= len(videos)) & (pred_class >= 0)).sum())
    other_class = int(((pred_video >= 0) & (pred_class < 0)).sum())
    if extra:
        log.warning("%d predictions on %d videos outside subset %r counted as false positives, as the "
                    "ActivityNet evaluator does (--ignore-extra-videos drops them)", extra, len(extra_ids), subset)
    if outside:
        log.info("ignored %d predictions on videos outside the evaluated ground truth", outside)
    if other_class:
        log.info("ignored %d predictions of classes absent from subset %r", other_class, subset)
    keep = (pred_video >= 0) & (pred_class >= 0)
    pred_arr = np.column_stack([pred_class, pred_video, segments, scores])[keep].reshape(-1, 5)
    pred_video = pred_arr[:, 1].astype(np.int64)
    pred_seg = proto.to_units(pred_arr[:, 2:4])
    if ambiguous:
        ids = np.array([v.video_id for v in videos] + extra_ids, dtype=object)
        drop = ambiguous_mask(proto, ids[pred_video], pred_seg, ambiguous)
        if drop.any():
            log.info("removed %d predictions overlapping Ambiguous segments", int(drop.sum()))
        keep = ~drop
        pred_arr, pred_video, pred_seg = pred_arr[keep], pred_video[keep], pred_seg[keep]
    return _Prepared(
        classes=classes,
        num_videos=len(videos),
        video_ids=[v.video_id for v in videos],
        excluded=excluded,
        num_extra_videos=len(extra_ids),
        gt_class=gt_arr[:, 0].astype(np.int64),
        gt_video=gt_arr[:, 1].astype(np.int64),
        gt_seg=proto.to_units(gt_arr[:, 2:4]),
        pred_class=pred_arr[:, 0].astype(np.int64),
        pred_video=pred_video,
        pred_seg=pred_seg,
        pred_score=pred_arr[:, 4],
    )


def _ranked_matches(prep: _Prepared, tious: np.ndarray):
    """Ranked prediction order (by class, then score), its (T, P) true-positive flags and the
    (T, G) flags of the ground truths taken."""
    order = np.lexsort((-prep.pred_score, prep.pred_class))
    n_videos = max(prep.num_videos + prep.num_extra_videos, 1)
    gt_key = prep.gt_class * n_videos + prep.gt_video
    pred_key = prep.pred_class[order] * n_videos + prep.pred_video[order]
    tp, taken = _match(gt_key, prep.gt_seg, pred_key, prep.pred_seg[order], tious)
    return order, tp, taken


def _per_class_ap(prep: _Prepared, tious: np.ndarray, method: str) -> np.ndarray:
    n_classes = len(prep.classes)
    ap = np.zeros((n_classes, len(tious)))
    npos = np.bincount(prep.gt_class, minlength=n_classes)
    if method == "loop":
        for c in range(n_classes):
            g, p = prep.gt_class == c, prep.pred_class == c
            ap[c] = loop_average_precision(
                (prep.gt_video[g], prep.gt_seg[g]),
                (prep.pred_video[p], prep.pred_seg[p], prep.pred_score[p]),
                tious,
            )
        return ap
    if method != "vectorised":
        raise EvaluationError(f"method: expected 'vectorised' or 'loop', got {method!r}")
    order, tp, _ = _ranked_matches(prep, tious)
    ranked_class = prep.pred_class[order]
    bounds = np.searchsorted(ranked_class, np.arange(n_classes + 1))
    for c in range(n_classes):
        ap[c] = _interpolated_ap(tp[:, bounds[c]:bounds[c + 1]], int(npos[c]))
    return ap


def evaluate(
    ann: AnnotationSet,
    detections: dict[str, list[dict]],
    subset: str,
    tious=DEFAULT_TIOUS,
    protocol: str = "activitynet",
    exclude=(),
    ambiguous: dict[str, list[tuple[float, float]]] | None = None,
    method: str = "vectorised",
    ignore_extra_videos: bool = False,
) -> EvaluationReport:
    """mAP of `detections` ({video_id: [{label, score, segment}]}) against one subset.

    `exclude` drops videos from ground truth and predictions (e.g. THUMOS14_EXCLUDED);
    `ambiguous` ({video_id: [(start, end)]}) removes predictions that overlap those segments;
    `protocol` picks the segment units (see wtal.evaluate.protocols); `method="loop"` runs the
    reference implementation instead of the vectorised one (same numbers, slower);
    `ignore_extra_videos` drops predictions on videos outside the subset instead of counting them
    as false positives.
    """
    tious = _check_tious(tious)
    prep = _prepare(ann, detections, subset, protocol, exclude, ambiguous, ignore_extra_videos)
    ap = _per_class_ap(prep, tious, method)
    m_ap = ap.mean(axis=0)
    return EvaluationReport(
        tiou=[float(t) for t in tious],
        mAP=[float(m) for m in m_ap],
        average_mAP=float(m_ap.mean()),
        per_class_ap={c: [float(a) for a in ap[i]] for i, c in enumerate(prep.classes)},
        num_videos=prep.num_videos,
        num_predictions=len(prep.pred_score),
        protocol=protocol,
        subset=subset,
        excluded=prep.excluded,
    )


def precision_recall(
    ann: AnnotationSet,
    detections: dict[str, list[dict]],
    subset: str,
    threshold: float,
    protocol: str = "activitynet",
    exclude=(),
    ambiguous=None,
    ignore_extra_videos: bool = False,
) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """Per class (precision, recall, AP) along the ranked predictions at one tIoU threshold."""
    tious = _check_tious([threshold])
    prep = _prepare(ann, detections, subset, protocol, exclude, ambiguous, ignore_extra_videos)
    order, tp, _ = _ranked_matches(prep, tious)
    ranked_class = prep.pred_class[order]
    npos = np.bincount(prep.gt_class, minlength=len(prep.classes))
    curves = {}
    for c, name in enumerate(prep.classes):
        flags = tp[0, ranked_class == c]
        hits = np.cumsum(flags, dtype=np.float64)
        precision = hits / np.arange(1, len(flags) + 1)
        curves[name] = (precision, hits / npos[c], float(_interpolated_ap(flags[None], int(npos[c]))[0]))
    return curves


@dataclass
class Matching:
    """The metric's outcome for every judged prediction and ground truth of one evaluation.

    Predictions are those the metric ranks (absent classes and Ambiguous overlaps removed), in
    input order; those on videos outside the subset (counted as false positives unless ignored)
    have `pred_video` >= len(video_ids). Segments are in the protocol's units (`units_per_second`
    None: seconds). `pred_tp` (T, P) and `gt_matched` (T, G) hold the matching per threshold.
    """

    tious: np.ndarray
    classes: list[str]
    video_ids: list[str]
    units_per_second: float | None
    gt_class: np.ndarray
    gt_video: np.ndarray
    gt_seg: np.ndarray
    gt_matched: np.ndarray
    pred_class: np.ndarray
    pred_video: np.ndarray
    pred_seg: np.ndarray
    pred_score: np.ndarray
    pred_tp: np.ndarray


def match_predictions(
    ann: AnnotationSet,
    detections: dict[str, list[dict]],
    subset: str,
    tious=DEFAULT_TIOUS,
    protocol: str = "activitynet",
    exclude=(),
    ambiguous=None,
    ignore_extra_videos: bool = False,
) -> Matching:
    """Which predictions are true positives and which ground truths are found, per threshold:
    the matching `evaluate` scores, exposed for diagnosis (wtal.evaluate.diagnosis)."""
    tious = _check_tious(tious)
    prep = _prepare(ann, detections, subset, protocol, exclude, ambiguous, ignore_extra_videos)
    order, tp, taken = _ranked_matches(prep, tious)
    pred_tp = np.zeros_like(tp)
    pred_tp[:, order] = tp
    return Matching(
        tious=tious,
        classes=prep.classes,
        video_ids=prep.video_ids,
        units_per_second=get_protocol(protocol).snippets_per_second,
        gt_class=prep.gt_class,
        gt_video=prep.gt_video,
        gt_seg=prep.gt_seg,
        gt_matched=taken,
        pred_class=prep.pred_class,
        pred_video=prep.pred_video,
        pred_seg=prep.pred_seg,
        pred_score=prep.pred_score,
        pred_tp=pred_tp,
    )
