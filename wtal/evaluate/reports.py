"""Reading detection files, writing and printing evaluation reports, and the file-level entry
point `evaluate_files` that `wtal evaluate` calls."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wtal._io import parse_number, write_json_atomic
from wtal.data.annotations import AnnotationSet, load_ambiguous, load_annotations
from wtal.evaluate.metrics import EvaluationError, EvaluationReport, evaluate, parse_tiou
from wtal.evaluate.protocols import THUMOS14_EXCLUDED, get_protocol

log = logging.getLogger(__name__)


def _number(value, path, where: str) -> float:
    return parse_number(value, path, where, EvaluationError)


def read_detections(path) -> dict[str, list[dict]]:
    """Read an ActivityNet result JSON into {video_id: [{label, score, segment}]}.

    Segments may be numbers or numeric strings; every field is checked and an error names the
    file and the field. Videos keep file order and each list keeps its order (the tie order of
    the metric).
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise EvaluationError(f"{path}: path: unreadable ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise EvaluationError(f"{path}: line {e.lineno} column {e.colno}: invalid JSON ({e.msg})") from None
    except UnicodeDecodeError as e:
        raise EvaluationError(f"{path}: encoding: not UTF-8 text ({e.reason})") from None
    if not isinstance(data, dict) or "results" not in data:
        raise EvaluationError(f"{path}: results: missing (expected an ActivityNet result file)")
    results = data["results"]
    if not isinstance(results, dict):
        raise EvaluationError(f"{path}: results: expected an object, got {type(results).__name__}")
    detections = {}
    for video_id, items in results.items():
        if not isinstance(items, list):
            raise EvaluationError(f"{path}: results.{video_id}: expected a list, got {items!r:.60}")
        parsed = []
        for i, item in enumerate(items):
            where = f"results.{video_id}[{i}]"
            if not isinstance(item, dict):
                raise EvaluationError(f"{path}: {where}: expected an object, got {item!r:.60}")
            for key in ("label", "score", "segment"):
                if key not in item:
                    raise EvaluationError(f"{path}: {where}.{key}: missing")
            label = item["label"]
            if not isinstance(label, str) or not label:
                raise EvaluationError(
                    f"{path}: {where}.label: expected a non-empty string, got {label!r:.60}"
                )
            segment = item["segment"]
            if not isinstance(segment, list) or len(segment) != 2:
                raise EvaluationError(f"{path}: {where}.segment: expected two numbers, got {segment!r:.60}")
            start = _number(segment[0], path, f"{where}.segment")
            end = _number(segment[1], path, f"{where}.segment")
            if end < start:
                raise EvaluationError(f"{path}: {where}.segment: end {end} is before start {start}")
            score = _number(item["score"], path, f"{where}.score")
            parsed.append({"label": label, "score": score, "segment": [start, end]})
        detections[video_id] = parsed
    return detections


def write_json(report: EvaluationReport, path) -> None:
    """Write `report.to_json()` (the `--json REPORT.json` of `wtal evaluate`)."""
    write_json_atomic(path, report.to_json(), indent=2)


def _header(report: EvaluationReport) -> list[str]:
    lines = [
        f"protocol {report.protocol}, subset {report.subset}: {report.num_videos} videos, "
        f"{report.num_predictions} predictions, {len(report.per_class_ap)} classes"
    ]
    if report.excluded:
        lines.append(f"excluded: {', '.join(report.excluded)}")
    return lines


def format_table(report: EvaluationReport) -> str:
    """mAP (%) per tIoU threshold and their average, one row each."""
    lines = _header(report) + ["tIoU     mAP (%)"]
    lines += [f"{t:<8.2f} {100 * m:7.2f}" for t, m in zip(report.tiou, report.mAP)]
    lines.append(f"{'average':<8} {100 * report.average_mAP:7.2f}")
    return "\n".join(lines)


def format_per_class(report: EvaluationReport) -> str:
    """AP (%) per class (rows) and tIoU (columns), with each class's average."""
    width = max([len("class")] + [len(c) for c in report.per_class_ap])
    head = f"{'class':<{width}} " + " ".join(f"{t:>6.2f}" for t in report.tiou) + "    avg"
    lines = [head]
    for name, ap in report.per_class_ap.items():
        cells = " ".join(f"{100 * a:6.2f}" for a in ap)
        lines.append(f"{name:<{width}} {cells} {100 * sum(ap) / len(ap):6.2f}")
    cells = " ".join(f"{100 * m:6.2f}" for m in report.mAP)
    lines.append(f"{'mAP':<{width}} {cells} {100 * report.average_mAP:6.2f}")
    return "\n".join(lines)


def _default_ambiguous(annotations_path: Path) -> Path | None:
    folder = annotations_path if annotations_path.is_dir() else annotations_path.parent
    candidate = folder / "Ambiguous_test.txt"
    return candidate if candidate.is_file() else None


@dataclass
class EvaluationInputs:
    """Everything one evaluation reads: the arguments of `evaluate`, loaded from files."""

    ann: AnnotationSet
    detections: dict[str, list[dict]]
    subset: str
    tious: np.ndarray
    protocol: str = "activitynet"
    exclude: tuple = ()
    ambiguous: dict | None = None
    ignore_extra_videos: bool = False

    def evaluate(self) -> EvaluationReport:
        return evaluate(self.ann, self.detections, self.subset, self.tious, protocol=self.protocol,
                        exclude=self.exclude, ambiguous=self.ambiguous, ignore_extra_videos=self.ignore_extra_videos)


def load_evaluation(
    detections_path,
    annotations_path,
    subset: str | None = None,
    tiou: str = "0.1:0.7:0.1",
    protocol: str = "activitynet",
    exclude=(),
    exclude_thumos14: bool = False,
    ambiguous_path=None,
    allow_pickle: bool = False,
    ignore_extra_videos: bool = False,
) -> EvaluationInputs:
    """Read and check the inputs of `wtal evaluate` (see `evaluate_files`)."""
    proto = get_protocol(protocol)
    tious = parse_tiou(tiou)
    annotations_path = Path(annotations_path)
    ann = load_annotations(annotations_path, allow_pickle=allow_pickle)
    subset = subset or ann.default_subsets()[1]
    if ambiguous_path is None and proto.needs_ambiguous:
        ambiguous_path = _default_ambiguous(annotations_path)
        if ambiguous_path is None:
            raise EvaluationError(
                f"{annotations_path}: Ambiguous_test.txt: not found; protocol {protocol} needs "
                "the THUMOS14 Ambiguous segments (pass --ambiguous PATH)"
            )
        log.info("using Ambiguous segments from %s", ambiguous_path)
    ambiguous = load_ambiguous(ambiguous_path) if ambiguous_path is not None else None
    excluded = tuple(exclude) + (THUMOS14_EXCLUDED if exclude_thumos14 else ())
    detections = read_detections(detections_path)
    return EvaluationInputs(ann, detections, subset, tious, protocol, excluded, ambiguous, ignore_extra_videos)


def evaluate_files(
    detections_path,
    annotations_path,
    subset: str | None = None,
    tiou: str = "0.1:0.7:0.1",
    protocol: str = "activitynet",
    exclude=(),
    exclude_thumos14: bool = False,
    ambiguous_path=None,
    allow_pickle: bool = False,
    ignore_extra_videos: bool = False,
) -> EvaluationReport:
    """Evaluate a detections file against an annotation file or folder (`wtal evaluate`).

    `subset` defaults to the evaluation subset (`AnnotationSet.default_subsets`). `exclude_thumos14` adds
    THUMOS14_EXCLUDED to `exclude`. The `wtalc` protocol needs Ambiguous segments: without
    `ambiguous_path` it uses `Ambiguous_test.txt` next to the annotations, else fails.
    """
    return load_evaluation(detections_path, annotations_path, subset, tiou, protocol, exclude, exclude_thumos14,
                           ambiguous_path, allow_pickle, ignore_extra_videos).evaluate()
