"""ActivityNet result JSON: building and writing detections."""
from __future__ import annotations

import os
from typing import Any, Iterable

import numpy as np

from .._io import write_json_atomic
from .proposals import Proposal

RESULT_VERSION = "VERSION 1.3"


def proposals_to_results(proposals: Iterable[Proposal], class_names: list[str]) -> list[dict]:
    """Detections of one video as result dicts, sorted by score (descending, stable)."""
    rows: list[dict[str, Any]] = [
        {"label": class_names[p.label], "score": float(p.score), "segment": [round(float(p.start), 3), round(float(p.end), 3)]}
        for p in proposals
    ]
    rows.sort(key=lambda r: -r["score"])
    return rows


def whole_video_results(video_scores: np.ndarray, duration: float, class_names: list[str]) -> list[dict]:
    """The trivial detector: the whole video as one detection of its top-scoring class."""
    c = int(np.argmax(video_scores))
    return [{"label": class_names[c], "score": float(video_scores[c]), "segment": [0.0, round(float(duration), 3)]}]


def write_detections(path: str | os.PathLike, results: dict[str, list[dict]], external_data: dict | None = None) -> None:
    """Write `{"version", "results", "external_data"}` atomically (`wtal._io.write_json_atomic`)."""
    payload = {
        "version": RESULT_VERSION,
        "results": {vid: sorted(rows, key=lambda r: -r["score"]) for vid, rows in sorted(results.items())},
        "external_data": external_data or {},
    }
    write_json_atomic(path, payload, indent=1)
