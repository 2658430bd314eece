"""`wtal report`: the HTML report of one evaluation, with the run's CAS and settings when features
and a checkpoint are given (torch is imported only then)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..errors import WtalError
from ..evaluate.html_report import ClassActivations, write_html_report
from ..evaluate.metrics import EvaluationReport
from ..evaluate.reports import EvaluationInputs, load_evaluation

log = logging.getLogger(__name__)


class ReportError(WtalError, ValueError):
    """Report options that do not fit together."""


def _plain(value: Any) -> Any:
    """Checkpoint metadata as JSON values (tensors, such as feature statistics, left out)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if _plain(v) is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return None


def run_settings(payload: dict) -> dict:
    """The model and settings of a checkpoint, as the report's summary shows them."""
    info = payload.get("info", {})
    settings = {"model": payload["model"], "classes": len(payload["class_names"]),
                "feature_dim": payload["feature_dim"], "snippet_seconds": payload["snippet_seconds"],
                "standardized features": "feature_mean" in info}
    settings.update({k: _plain(v) for k, v in info.items() if _plain(v) is not None})
    for key in ("hparams", "train_config", "test_config"):
        settings[key] = _plain(payload[key])
    return settings


def class_activations(inputs: EvaluationInputs, features: str, checkpoint: str, device: str = "auto",
                      snippet_seconds: float | None = None, allow_pickle: bool = False) -> tuple[ClassActivations, dict]:
    """The run's CAS on every evaluated video with features, through the detection code, and its
    settings. Features whose settings differ from training are drawn with a warning (the
    report shows the difference), not refused as `wtal detect` does: the CAS only illustrates."""
    from ..data.annotations import AnnotationSet
    from ..data.features import open_features, settings_mismatch
    from ..device import resolve_device
    from ..models.checkpoint import load_checkpoint
    from ..models.recipe import Standardization, detect
    from ..models.train import build_items
    from . import PipelineError
    from .runtime import set_threads

    dev = resolve_device(device)
    set_threads(dev)
    net, payload = load_checkpoint(checkpoint, dev)
    names = inputs.ann.source if Path(str(inputs.ann.source)).is_dir() else None  # W-TALC feature order
    feats = open_features(features, snippet_seconds or payload["snippet_seconds"], allow_pickle=allow_pickle,
                          video_names=names)
    if feats.feature_dim != payload["feature_dim"]:
        raise PipelineError(f"{features}: features are {feats.feature_dim}-d but {checkpoint} was trained on "
                            f"{payload['feature_dim']}-d")
    trained = payload.get("info", {}).get("feature_settings")
    diffs = settings_mismatch(trained, feats.settings()) if trained else []
    if diffs:
        log.warning("CAS from features whose settings differ from training: %s", "; ".join(diffs))
    videos = [v for v in inputs.ann.subset(inputs.subset) if v.video_id not in set(inputs.exclude)]
    missing = [v.video_id for v in videos if v.video_id not in feats]
    if len(missing) == len(videos):
        raise PipelineError(f"{features}: no features for any of the {len(videos)} {inputs.subset!r} videos")
    if missing:
        log.warning("no features for %d of %d videos (e.g. %s): drawn without CAS", len(missing), len(videos),
                    ", ".join(missing[:3]))
    present = AnnotationSet({v.video_id: v for v in videos if v.video_id in feats}, inputs.ann.class_names,
                            inputs.ann.source)
    items = build_items(present, feats, inputs.subset)
    _, inferences = detect(net, items, payload["test_config"], payload["class_names"], feats.snippet_seconds, dev,
                           Standardization.from_checkpoint(payload))
    settings = run_settings(payload)
    if diffs:
        settings["feature settings differ from training"] = "; ".join(diffs)
    return run_activations(inferences, payload, items, feats.snippet_seconds), settings


def run_activations(inferences: dict, payload: dict, items: list, snippet_seconds: float) -> ClassActivations:
    """The CAS of `detect_videos`' per-video inferences on `items`. A CAS row spans the video's
    feature time (its rows times its own `snippet_seconds`, else the source-wide one) over the
    CAS length, which also holds when `test_sampling` resampled the video."""
    cas = {vid: inference.cas for vid, inference in inferences.items()}
    step = {it.video_id: len(it.features) * (it.snippet_seconds or snippet_seconds) / max(len(cas[it.video_id]), 1)
            for it in items}
    return ClassActivations(list(payload["class_names"]), cas, step)


def report_stage(detections: str, annotations: str, out: str, subset: str | None = None, tiou: str = "0.1:0.7:0.1",
                 protocol: str = "activitynet", exclude=(), exclude_thumos14: bool = False, ambiguous_path=None,
                 allow_pickle: bool = False, ignore_extra_videos: bool = False, features: str | None = None,
                 checkpoint: str | None = None,
                 device: str = "auto", snippet_seconds: float | None = None) -> tuple[EvaluationReport, Path]:
    """Evaluate a detections file and write its HTML report; returns the report and the page."""
    if (features is None) != (checkpoint is None):
        raise ReportError("--features and --checkpoint go together: the CAS needs both")
    inputs = load_evaluation(detections, annotations, subset, tiou, protocol, exclude, exclude_thumos14,
                             ambiguous_path, allow_pickle, ignore_extra_videos)
    report = inputs.evaluate()
    cas = model = None
    sources = {"detections": str(Path(detections).resolve()), "annotations": str(Path(annotations).resolve())}
    if features is not None and checkpoint is not None:
        cas, model = class_activations(inputs, features, checkpoint, device, snippet_seconds, allow_pickle)
        sources.update(features=str(Path(features).resolve()), checkpoint=str(Path(checkpoint).resolve()))
    path = write_html_report(out, inputs, report=report, cas=cas, model=model, sources=sources)
    return report, path
