"""One self-contained HTML page per evaluation (`wtal report`, `wtal evaluate --html`).

The page embeds its data as one compact JSON block and draws everything with inline JavaScript
and SVG (no network, no external file): the summary of `evaluate` (the same numbers as
`wtal evaluate --json`), a sortable per-class AP table, precision-recall curves, the DETAD-style
error analysis of wtal.evaluate.diagnosis, and one timeline per video of its ground truth
against its top detections per class (coloured by outcome), with the class activation sequence
(CAS) when the run's inference is given. Every number comes from the metric's own matching.

To stay small for THUMOS14-sized inputs (210 videos, 50k predictions: about 1 MB), the page
holds all ground truth but per video only the top detections of each class it shows (the classes
of its ground truth and of its three best detections): `max_per_class`, or twice the class's
ground truths in the video when that is more; and CAS curves
averaged down to at most `CAS_POINTS` points and quantised to 64 levels.
"""
from __future__ import annotations

import datetime
import itertools
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from wtal._io import atomic_write
from wtal.data.annotations import AnnotationSet
from wtal.evaluate import diagnosis
from wtal.evaluate.metrics import EvaluationReport, match_predictions
from wtal.evaluate.reports import EvaluationInputs

CAS_POINTS = 400
CAS_LEVELS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
TOP_CLASSES = 3


@dataclass
class ClassActivations:
    """A run's CAS per video: (T, C) arrays in [0, 1], a row every `snippet_seconds[video]`."""

    class_names: list[str]
    values: dict[str, np.ndarray]
    snippet_seconds: dict[str, float]


def _round(values, digits: int) -> list:
    return np.round(np.asarray(values, dtype=np.float64), digits).tolist()


def _encode_cas(curve: np.ndarray, snippet_seconds: float) -> tuple[float, str]:
    """A CAS curve averaged into at most CAS_POINTS bins, one character (64 levels) per bin."""
    factor = max(1, int(np.ceil(len(curve) / CAS_POINTS)))
    padded = np.pad(curve.astype(np.float64), (0, (-len(curve)) % factor), mode="edge")
    pooled = padded.reshape(-1, factor).mean(axis=1)
    levels = np.clip(np.round(pooled * 63), 0, 63).astype(int)
    return snippet_seconds * factor, "".join(CAS_LEVELS[v] for v in levels)


def _video_entries(ann: AnnotationSet, m, codes: np.ndarray, scale: float, max_per_class: int,
                   cas: ClassActivations | None) -> list[dict]:
    """Per video: ground truth with its found-mask per threshold, capped detections with their
    outcome per threshold, and the CAS of the classes shown."""
    digits = "".join(map(str, range(len(diagnosis.OUTCOMES))))
    bits = (1 << np.arange(len(m.tious)))[:, None]
    gt_mask = (m.gt_matched * bits).sum(axis=0)
    gt_by_video = np.argsort(m.gt_video, kind="stable")
    gt_bounds = np.searchsorted(m.gt_video[gt_by_video], np.arange(len(m.video_ids) + 1))
    pred_by_video = np.lexsort((-m.pred_score, m.pred_video))
    pred_bounds = np.searchsorted(m.pred_video[pred_by_video], np.arange(len(m.video_ids) + 1))
    cas_index = {name: i for i, name in enumerate(cas.class_names)} if cas else {}
    entries = []
    for v, video_id in enumerate(m.video_ids):
        g = gt_by_video[gt_bounds[v]:gt_bounds[v + 1]]
        p = pred_by_video[pred_bounds[v]:pred_bounds[v + 1]]  # best first
        shown = list(dict.fromkeys(m.gt_class[g].tolist() + m.pred_class[p[:TOP_CLASSES]].tolist()))
        per_class = np.bincount(m.gt_class[g], minlength=len(m.classes))
        kept = [i for c in shown for i in p[m.pred_class[p] == c][:max(max_per_class, 2 * per_class[c])]]
        duration = ann.videos[video_id].duration
        ends = [0.0] + (m.gt_seg[g, 1] * scale).tolist() + (m.pred_seg[kept, 1] * scale).tolist()
        entry = {
            "id": video_id,
            "dur": round(float(duration) if duration else max(ends), 2),
            "rows": shown,
            "npred": len(p),
            "gt": [[int(m.gt_class[i]), *_round(m.gt_seg[i] * scale, 2), int(gt_mask[i])] for i in g],
            "det": [[int(m.pred_class[i]), *_round(m.pred_seg[i] * scale, 2), round(float(m.pred_score[i]), 3),
                     "".join(digits[c] for c in codes[:, i])] for i in kept],
        }
        if cas is not None and video_id in cas.values:
            values = np.asarray(cas.values[video_id])
            curves = {}
            for c in shown:
                name = m.classes[c]
                if name in cas_index:
                    step, text = _encode_cas(values[:, cas_index[name]], cas.snippet_seconds[video_id])
                    curves[str(c)] = text
            if curves:
                entry["cas"] = {"step": round(step, 4), "curves": curves}
        entries.append(entry)
    return entries


def _pr_ranks(m) -> list[list[list[int]]]:
    """Per threshold and class, the 1-based ranks of the true positives in the class's ranking
    (precision at the i-th is i / rank, recall i / G)."""
    order, bounds = diagnosis.ranked_by_class(m)
    out = []
    for t in range(len(m.tious)):
        flags = m.pred_tp[t, order]
        out.append([(np.flatnonzero(flags[bounds[c]:bounds[c + 1]]) + 1).tolist() for c in range(len(m.classes))])
    return out


def report_data(
    inputs: EvaluationInputs,
    report: EvaluationReport | None = None,
    cas: ClassActivations | None = None,
    model: dict | None = None,
    sources: dict | None = None,
    max_per_class: int = 8,
) -> dict:
    """Everything the page shows, as plain JSON-able values; `report` is `inputs.evaluate()`
    (computed when not given), `model` the run's settings, `sources` the input files."""
    report = report if report is not None else inputs.evaluate()
    m = match_predictions(inputs.ann, inputs.detections, inputs.subset, report.tiou, protocol=inputs.protocol,
                          exclude=inputs.exclude, ambiguous=inputs.ambiguous,
                          ignore_extra_videos=inputs.ignore_extra_videos)
    codes = diagnosis.outcomes(m)
    profile = diagnosis.class_profile(m, codes)
    scale = 1.0 / m.units_per_second if m.units_per_second else 1.0
    edges, total, missed = diagnosis.missed_by_length(m)
    n_classes = len(m.classes)
    return {
        "title": f"wtal report: {inputs.subset}" + (f" ({model['model']})" if model and "model" in model else ""),
        "created": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "sources": sources or {},
        "report": report.to_json(),
        "model": model,
        "classes": m.classes,
        "npos": np.bincount(m.gt_class, minlength=n_classes).tolist(),
        "npred": np.bincount(m.pred_class, minlength=n_classes).tolist(),
        "pr": _pr_ranks(m),
        "errors": {
            "outcomes": list(diagnosis.OUTCOMES),
            "min_tiou": diagnosis.MIN_TIOU,
            "counts": [np.bincount(row, minlength=len(diagnosis.OUTCOMES)).tolist() for row in codes],
            "profile": profile.sum(axis=0).tolist(),
            "class_top_g": profile[:, :, 0].tolist(),
            "gain": _round(diagnosis.removal_gain(m, codes).T, 5),
            "localization_kinds": list(diagnosis.LOCALIZATION_KINDS),
            "localization": diagnosis.localization_kinds(m, codes).tolist(),
            "background_kinds": list(diagnosis.BACKGROUND_KINDS),
            "background": diagnosis.background_kinds(m, codes).tolist(),
            "length_bins": [[lo, None if np.isinf(hi) else hi] for lo, hi in itertools.pairwise(edges)],
            "length_names": list(diagnosis.BIN_NAMES),
            "length_total": total.tolist(),
            "length_missed": missed.tolist(),
        },
        "max_per_class": max_per_class,
        "has_cas": cas is not None,
        "videos": _video_entries(inputs.ann, m, codes, scale, max_per_class, cas),
    }


def render_html(data: dict) -> str:
    """The page: the template with `data` embedded as JSON; every "<" is written as \\u003c, so
    no string in it can end or re-open the script element."""
    template = resources.files("wtal.evaluate").joinpath("report_template.html").read_text(encoding="utf-8")
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    title = str(data.get("title", "wtal report")).replace("&", "&amp;").replace("<", "&lt;")
    return template.replace("__WTAL_TITLE__", title).replace("__WTAL_DATA__", payload)


def write_html_report(out, inputs: EvaluationInputs, **kwargs) -> Path:
    """Write the report page of one evaluation to `out` (atomically); kwargs as `report_data`."""
    return atomic_write(out, render_html(report_data(inputs, **kwargs)))
