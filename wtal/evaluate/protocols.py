"""Evaluation protocols: the units segments are compared in, and THUMOS14 conventions.

- `activitynet` (default): continuous seconds, the rules of `wtal.evaluate.metrics` (README "Evaluation").
- `wtalc`: the THUMOS14 evaluation of W-TALC and the methods built on its code. Ground truth,
  predictions and Ambiguous segments are converted to snippet indices, `round(seconds * 25/16)`
  (16-frame snippets at 25 fps; Python's round, i.e. half to even, as in that code), and tIoU is
  computed on the index ranges [start, end) as sets (so an index range shorter than one snippet
  is empty and never matches). Predictions whose index range overlaps an Ambiguous segment of
  their video are removed before ranking, so `ambiguous` is required. Matching and AP follow
  `wtal.evaluate.metrics` (best-tIoU greedy, interpolated AP); the original W-TALC script instead
  takes the first ground truth in list order above the threshold, and its first version used
  non-interpolated AP, so its numbers can differ slightly.

THUMOS14 test variants: `THUMOS14_EXCLUDED` lists the three test videos that many codebases
drop (270 and 1496 carry annotations reaching past the end of the video; 1292 has no annotated
action, so most ground-truth files already lack it); pass it as `exclude` to evaluate without
them. The report lists the excluded videos that were actually in the subset. The ActivityNet
protocol can also drop Ambiguous overlaps (overlap measured in seconds) when `ambiguous` is
given.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import SettingsError

THUMOS14_EXCLUDED = ("video_test_0000270", "video_test_0001292", "video_test_0001496")
WTALC_SNIPPETS_PER_SECOND = 25 / 16


@dataclass(frozen=True)
class Protocol:
    """How segments are compared: `snippets_per_second` None means continuous seconds."""

    name: str
    description: str
    snippets_per_second: float | None
    needs_ambiguous: bool

    def to_units(self, segments: np.ndarray) -> np.ndarray:
        """(N, 2) seconds -> (N, 2) float array in this protocol's units."""
        segments = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
        if self.snippets_per_second is None:
            return segments.copy()
        return np.round(segments * self.snippets_per_second)


PROTOCOLS = {
    "activitynet": Protocol(
        "activitynet", "ActivityNet detection metric on continuous seconds", None, False
    ),
    "wtalc": Protocol(
        "wtalc",
        "W-TALC THUMOS14 evaluation: snippet indices at 25/16 per second, Ambiguous removal",
        WTALC_SNIPPETS_PER_SECOND,
        True,
    ),
}


def get_protocol(name: str) -> Protocol:
    """The protocol called `name`; an unknown name lists the known ones."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise SettingsError(
            f"protocol: unknown {name!r}; choose one of {', '.join(PROTOCOLS)}"
        ) from None


def ambiguous_mask(
    protocol: Protocol,
    video_ids: np.ndarray,
    segments: np.ndarray,
    ambiguous: dict[str, list[tuple[float, float]]],
) -> np.ndarray:
    """True for predictions (segments already in protocol units) overlapping an Ambiguous
    segment of their video; touching end points do not count as overlap."""
    video_ids = np.asarray(video_ids, dtype=object)
    drop = np.zeros(len(video_ids), dtype=bool)
    for video_id, spans in ambiguous.items():
        rows = np.flatnonzero(video_ids == video_id)
        if rows.size == 0 or not spans:
            continue
        amb = protocol.to_units(np.array(spans, dtype=np.float64))
        seg = segments[rows]
        inter = np.minimum(seg[:, None, 1], amb[None, :, 1]) - np.maximum(seg[:, None, 0], amb[None, :, 0])
        drop[rows] = (inter > 0).any(axis=1)
    return drop
