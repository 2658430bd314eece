"""`wtal run` and `wtal demo`: extract on Ray actors, train and detect as Ray tasks, evaluate here.

One orchestration for both commands; each stage's outcome is reported to a hook as it finishes
(step names "extracted", "trained", "detected", "evaluated"), so a caller can print it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..extract.features import ExtractSettings
from ..progress import Hook, report
from . import PipelineError
from .extraction import ExtractSummary, extract_videos
from .runtime import run_stage_on_ray
from .stages import DetectResult, TrainResult, detect_stage, train_stage


@dataclass
class RunResult:
    """The outcome of every stage of `run_pipeline`, the output paths and where train/detect ran."""

    extraction: ExtractSummary
    train: TrainResult
    detect: DetectResult
    report: Any  # wtal.evaluate.reports.Report
    cache: str
    run: str
    detections: str
    report_path: str
    train_where: dict[str, Any]
    detect_where: dict[str, Any]


def run_pipeline(inputs: list[str], annotations: str, model: str, out: str, settings: ExtractSettings, *,
                 cache: str | None = None, batch: int = 8, device: str = "auto", ray_address: str | None = None,
                 workers: int | None = None, clicks: list[str] | None = None, seed: int = 0,
                 sets: dict[str, Any] | None = None, val_fraction: float = 0.0, standardize: bool = False,
                 annotator: str | None = None, require_all: bool = False, keep_inferences: bool = False,
                 hook: Hook | None = None) -> RunResult:
    """Extract `inputs` into the cache (default OUT/cache), train into OUT/run, detect into
    OUT/detections.json and write OUT/report.json.

    Extraction progress goes to `hook`; train and detect run as Ray tasks without one. With
    `require_all`, a failed video stops the run after extraction (otherwise training goes on
    with the videos that have features, and the caller reports the failures).
    """
    from ..evaluate.reports import evaluate_files, write_json

    out_dir = Path(out).resolve()
    cache = str(Path(cache).resolve()) if cache else str(out_dir / "cache")
    annotations = str(Path(annotations).resolve())
    clicks = [str(Path(c).resolve()) for c in clicks] if clicks else None
    summary = extract_videos(list(inputs), cache, settings, batch=batch, hook=hook, device=device,
                             ray_address=ray_address, workers=workers)
    report(hook, "extracted", summary)
    if require_all and summary.failed:
        raise PipelineError(f"{len(summary.failed)} of {summary.total} videos failed to extract (see `wtal cache ls {cache}`)")
    run_dir = str(out_dir / "run")
    trained, train_where = run_stage_on_ray(
        train_stage, device, ray_address, workers, features=cache, annotations=annotations, model=model, out=run_dir,
        clicks=clicks, seed=seed, sets=sets, val_fraction=val_fraction, standardize=standardize, annotator=annotator)
    report(hook, "trained", (trained, train_where))
    det = str(out_dir / "detections.json")
    detected, detect_where = run_stage_on_ray(detect_stage, device, ray_address, workers, features=cache, checkpoint=run_dir,
                                              out=det, annotations=annotations, keep_inferences=keep_inferences)
    report(hook, "detected", (detected, detect_where))
    evaluation = evaluate_files(det, annotations)
    report_path = str(out_dir / "report.json")
    write_json(evaluation, report_path)
    report(hook, "evaluated", evaluation)
    return RunResult(summary, trained, detected, evaluation, cache, run_dir, det, report_path, train_where, detect_where)
