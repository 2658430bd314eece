"""From a class activation sequence to scored, suppressed proposals.

Shared by every localizer: class rejection, multi-threshold grouping of snippets, the
outer-inner-contrast (OIC) score and per-class NMS. All functions are pure and work on snippet
indices; `to_seconds` converts at the end with the video's own seconds per snippet.

The conventions in which the methods' official code differs are named test settings
(`POSTPROCESS_DEFAULTS`, today's behaviour as defaults), applied by `cas_detections`:

- `class_fallback`: "none" (no detections when no class passes `class_threshold`) or "top" (the
  top-scoring class then);
- `cas_upsample`: "1" (none), a factor such as "24" (BaS-Net) or "frames" (the video's frames per
  snippet, official ECM / BackTAL): the CAS is linearly interpolated (half-pixel centres) before
  thresholding, and positions on that axis are mapped back to fractional snippets;
- `threshold_smoothing`: sigma (positions of that axis) of a Gaussian applied to the signal that
  is thresholded (DGAM on ActivityNet); 0 = off;
- `oic_signal`: "raw" (today) or "thresholded" (values below the threshold zeroed before the
  inner and outer means, as the official ECM, BackTAL and BaS-Net code does);
- `end_extension` / `min_run_length`: proposals one position longer at the end with that
  position in the inner mean, and runs shorter than the minimum dropped (RSKP: 1 and 2);
- `oic_bands`: "round" (max(1, round(ratio x L)) positions each side of the proposal) or "wtalc"
  (the official RSKP / W-TALC getActLoc: int(start - ratio L) .. start before and the extended end
  .. int(end + ratio L) after, L the run length before `end_extension`, the last position of the
  sequence never outer);
- `class_score`: "weighted" (`oic_class_weight` x video score) or "constant" (`oic_class_weight`
  for every selected class: BaS-Net binarises the score);
- `nms_overlap`: see `wtal.postprocess.nms` ("tiou", "tiou_plus_one" in seconds, "over_lower");
- `max_detections`: None (no cap) or the number of best detections kept per video.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import SettingsError
from .nms import NMS_OVERLAPS, nms

POSTPROCESS_DEFAULTS: dict = {
    "class_fallback": "none",
    "cas_upsample": "1",
    "threshold_smoothing": 0.0,
    "oic_signal": "raw",
    "oic_bands": "round",
    "end_extension": 0,
    "min_run_length": 1,
    "class_score": "weighted",
    "nms_overlap": "tiou",
    "max_detections": None,
}
# per-video entries `detect_videos` adds to the test config of each video (never user settings)
VIDEO_SNIPPET_SECONDS = "video_snippet_seconds"
VIDEO_FRAMES_PER_SNIPPET = "video_frames_per_snippet"
CLASS_FALLBACKS = ("none", "top")
OIC_SIGNALS = ("raw", "thresholded")
OIC_BANDS = ("round", "wtalc")
CLASS_SCORES = ("weighted", "constant")


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


def oic_score_wtalc(signal: np.ndarray, start: int, end: int, run_length: int, outer_ratio: float) -> float:
    """OIC with the official RSKP / W-TALC bands: mean inside [start, end) minus the mean of
    [max(0, int(start - r L)), start) and [end, min(T - 1, int(end + r L))), L = `run_length`
    (the thresholded run before any end extension); no outer positions scores the inner mean."""
    T = len(signal)
    left = np.arange(max(0, int(start - outer_ratio * run_length)), start)
    right = np.arange(end, min(T - 1, int(end + outer_ratio * run_length)))
    outer_idx = np.concatenate([left, right])
    inner = float(signal[start:end].mean())
    return inner - (float(signal[outer_idx].mean()) if outer_idx.size else 0.0)


def _choice(cfg: dict, key: str, choices: tuple[str, ...]) -> str:
    value = str(cfg.get(key, POSTPROCESS_DEFAULTS[key]))
    if value not in choices:
        raise SettingsError(f"{key}={value!r}: choose one of {', '.join(choices)}")
    return value


def select_classes(video_scores: np.ndarray, threshold: float, fallback: str = "none") -> np.ndarray:
    """Indices of the classes whose video score is >= `threshold`; with `fallback="top"` the
    top-scoring class when none passes (DGAM, CleanNet), with "none" no class."""
    if fallback not in CLASS_FALLBACKS:
        raise SettingsError(f"class_fallback={fallback!r}: choose one of {', '.join(CLASS_FALLBACKS)}")
    scores = np.asarray(video_scores, dtype=np.float64).reshape(-1)
    classes = np.flatnonzero(scores >= threshold)
    if classes.size == 0 and fallback == "top" and scores.size:
        classes = np.array([int(np.argmax(scores))])
    return classes


def upsample_linear(x: np.ndarray, length: int) -> np.ndarray:
    """(T, ...) linearly resized to (length, ...) along axis 0 with half-pixel centres (as an
    image resize does): position j samples source coordinate (j + 0.5) T / length - 0.5."""
    x = np.asarray(x, dtype=np.float64)
    T = x.shape[0]
    pos = np.clip((np.arange(length) + 0.5) * T / length - 0.5, 0.0, T - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, T - 1)
    w = (pos - lo).reshape((-1,) + (1,) * (x.ndim - 1))
    return x[lo] * (1 - w) + x[hi] * w


def upsample_length(T: int, setting, frames_per_snippet: float | None) -> int:
    """Length of the thresholding axis for `cas_upsample` = "1", a factor, or "frames"."""
    text = str(setting).strip()
    if text == "frames":
        if frames_per_snippet is None or not frames_per_snippet > 0:
            raise SettingsError("cas_upsample=frames needs the video's frames per snippet (its time base)")
        factor = float(frames_per_snippet)
    else:
        try:
            factor = float(text)
        except ValueError:
            raise SettingsError(f"cas_upsample={text!r}: expected a factor >= 1 or 'frames'") from None
        if not factor >= 1:
            raise SettingsError(f"cas_upsample={text!r}: expected a factor >= 1 or 'frames'")
    return max(T, round(T * factor))


def gaussian_smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian filter along axis 0 (radius 4 sigma, mirrored edges as scipy's default)."""
    x = np.asarray(x, dtype=np.float64)
    if sigma <= 0:
        return x
    radius = int(4 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    pad = [(radius, radius)] + [(0, 0)] * (x.ndim - 1)
    padded = np.pad(x, pad, mode="symmetric")
    while padded.shape[0] < x.shape[0] + 2 * radius:  # sequences shorter than the radius
        padded = np.pad(padded, pad, mode="symmetric")[: x.shape[0] + 2 * radius]
    out = np.zeros_like(x)
    for k, w in zip(offsets, kernel):
        out += w * padded[radius + k: radius + k + x.shape[0]]
    return out


def cas_proposals(
    cas: np.ndarray,
    video_scores: np.ndarray,
    class_threshold: float,
    thresholds: np.ndarray,
    outer_ratio: float,
    class_weight: float,
    score_signal: np.ndarray | None = None,
    conventions: dict | None = None,
    frames_per_snippet: float | None = None,
    agnostic_signal: np.ndarray | None = None,
    agnostic_thresholds: np.ndarray | tuple = (),
) -> list[Proposal]:
    """Multi-threshold proposals with OIC scores for every selected class, in snippet units.

    `cas` (T, C) in [0, 1] is thresholded; the OIC contrast is computed on `score_signal`
    (defaults to `cas`) plus the class-score term. `conventions` holds the settings of
    `POSTPROCESS_DEFAULTS` (missing keys take their defaults); NMS is not applied here.
    A class-agnostic `agnostic_signal` (T,) adds, for every selected class, the runs where it is
    >= each of `agnostic_thresholds`, scored the same way but always on the raw `score_signal`
    (BackTAL's feature-magnitude proposals); it is upsampled and smoothed as the CAS is.
    """
    cfg = {**POSTPROCESS_DEFAULTS, **(conventions or {})}
    fallback = _choice(cfg, "class_fallback", CLASS_FALLBACKS)
    oic_mode = _choice(cfg, "oic_signal", OIC_SIGNALS)
    score_mode = _choice(cfg, "class_score", CLASS_SCORES)
    bands = _choice(cfg, "oic_bands", OIC_BANDS)
    extension, min_length = int(cfg["end_extension"]), max(1, int(cfg["min_run_length"]))
    cas = np.asarray(cas, dtype=np.float64)
    signal = cas if score_signal is None else np.asarray(score_signal, dtype=np.float64)
    T = cas.shape[0]
    length = upsample_length(T, cfg["cas_upsample"], frames_per_snippet)
    agnostic = None if agnostic_signal is None else np.asarray(agnostic_signal, dtype=np.float64).reshape(-1)
    if length != T:
        cas, signal = upsample_linear(cas, length), upsample_linear(signal, length)
        agnostic = None if agnostic is None else upsample_linear(agnostic, length)
    scale = T / length  # snippets per position of the thresholding axis
    sigma = float(cfg["threshold_smoothing"])
    agnostic = None if agnostic is None else gaussian_smooth(agnostic, sigma)
    proposals = []

    def add_runs(above: np.ndarray, oic_signal: np.ndarray, c: int, term: float) -> None:
        for s, e in group_runs(above):
            if e - s < min_length:
                continue
            run = e - s
            e = min(length, e + extension)
            contrast = (oic_score(oic_signal, s, e, outer_ratio) if bands == "round"
                        else oic_score_wtalc(oic_signal, s, e, run, outer_ratio))
            proposals.append(Proposal(c, contrast + term, s * scale, e * scale))

    for c in select_classes(video_scores, class_threshold, fallback):
        thr_signal = gaussian_smooth(cas[:, c], sigma)
        term = class_weight * (float(video_scores[c]) if score_mode == "weighted" else 1.0)
        for thr in thresholds:
            oic_signal = signal[:, c] if oic_mode == "raw" else np.where(thr_signal >= thr, signal[:, c], 0.0)
            add_runs(thr_signal > thr, oic_signal, int(c), term)
        if agnostic is not None:
            for thr in agnostic_thresholds:
                add_runs(agnostic >= thr, signal[:, c], int(c), term)
    return proposals


def per_class_nms(proposals: list[Proposal], threshold: float, top_k: int | None = None, overlap: str = "tiou",
                  snippet_seconds: float | None = None) -> list[Proposal]:
    """NMS within each class; result sorted by score (descending), optionally truncated to `top_k`.

    Proposals are in snippet units; `overlap="tiou_plus_one"` adds one second, so it needs the
    video's `snippet_seconds`; "over_lower" adds one snippet.
    """
    if overlap not in NMS_OVERLAPS:
        raise SettingsError(f"nms_overlap={overlap!r}: choose one of {', '.join(NMS_OVERLAPS)}")
    if overlap == "tiou_plus_one" and not snippet_seconds:
        raise ValueError("nms_overlap=tiou_plus_one needs the video's seconds per snippet")
    unit = 1.0 / snippet_seconds if overlap == "tiou_plus_one" and snippet_seconds else 1.0
    kept: list[Proposal] = []
    labels = sorted({p.label for p in proposals})
    for c in labels:
        group = [p for p in proposals if p.label == c]
        seg = np.array([[p.start, p.end] for p in group])
        scores = np.array([p.score for p in group])
        kept.extend(group[i] for i in nms(seg, scores, threshold, overlap, unit))
    kept.sort(key=lambda p: -p.score)
    return kept[:int(top_k)] if top_k else kept


def suppress(proposals: list[Proposal], cfg: dict) -> list[Proposal]:
    """`per_class_nms` with the NMS settings of a test config (threshold, overlap, cap) and the
    per-video seconds per snippet that `detect_videos` puts in it."""
    overlap = _choice(cfg, "nms_overlap", NMS_OVERLAPS)
    return per_class_nms(proposals, cfg["nms_threshold"], cfg.get("max_detections"), overlap,
                         cfg.get(VIDEO_SNIPPET_SECONDS))


def cas_detections(cas: np.ndarray, video_scores: np.ndarray, cfg: dict, score_signal: np.ndarray | None = None,
                   agnostic_signal: np.ndarray | None = None, agnostic_thresholds: np.ndarray | tuple = ()
                   ) -> list[Proposal]:
    """Thresholded-CAS proposals of one video (plus those of a class-agnostic signal, see
    `cas_proposals`) after NMS, from a test config (`Localizer.detect`)."""
    proposals = cas_proposals(
        cas, video_scores,
        class_threshold=cfg["class_threshold"],
        thresholds=threshold_range(*cfg["cas_thresholds"]),
        outer_ratio=cfg["oic_outer_ratio"],
        class_weight=cfg["oic_class_weight"],
        score_signal=score_signal,
        conventions=cfg,
        frames_per_snippet=cfg.get(VIDEO_FRAMES_PER_SNIPPET),
        agnostic_signal=agnostic_signal,
        agnostic_thresholds=agnostic_thresholds,
    )
    return suppress(proposals, cfg)


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
