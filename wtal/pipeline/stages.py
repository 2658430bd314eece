"""The train and detect stages: file I/O around the training recipe of `wtal.models.recipe`.

Both are plain functions over paths, so `wtal train` / `wtal detect` run them in-process and
`wtal run` runs them as Ray tasks (`wtal.pipeline.runtime.run_stage_on_ray`); each returns a
small result record. What happens between reading and writing is the recipe's `fit` / `detect`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import PipelineError

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What `train_stage` did: the run folder, how the checkpoint's epoch was chosen, the loss history."""

    run: str
    model: str
    selection: str
    history: list[dict[str, float]]
    num_train_videos: int
    num_val_videos: int

    @property
    def final_loss(self) -> float:
        return self.history[-1].get("total", float("nan")) if self.history else float("nan")


@dataclass
class DetectResult:
    """What `detect_stage` wrote: the detections file, the subset and the counts; with
    `keep_inferences`, also the detections and each video's inference (for plots and baselines)."""

    out: str
    subset: str | None
    videos: int
    detections: int
    results: dict[str, list[dict]] | None = None
    inferences: dict[str, Any] | None = field(default=None, repr=False)


def open_inputs(features_path: str, annotations_path: str, snippet_seconds: float | None, allow_pickle: bool):
    """Features and annotations; a W-TALC annotation folder also names the W-TALC feature order."""
    from ..data.annotations import load_annotations
    from ..data.features import open_features

    names = annotations_path if Path(annotations_path).is_dir() else None
    return (open_features(features_path, snippet_seconds, allow_pickle=allow_pickle, video_names=names),
            load_annotations(annotations_path, allow_pickle=allow_pickle))


def subset_items(ann, features, subset: str, clicks: dict | None = None):
    """VideoItems of an annotation subset; videos without features are an error listing a few."""
    from ..data.features import require_lengths
    from ..models.train import build_items

    videos = ann.subset(subset)
    missing = [v.video_id for v in videos if v.video_id not in features]
    if missing:
        raise PipelineError(
            f"{features.path}: no features for {len(missing)} of {len(videos)} {subset!r} videos, e.g. {', '.join(missing[:3])}"
        )
    require_lengths(features, ann, subset)
    return build_items(ann, features, subset, clicks)


def _training_clicks(model: str, clicks: list[str] | None, annotator: str | None) -> dict[str, list[float]]:
    """The background clicks of the file that `clicks` and `annotator` name (`choose_click_file`)."""
    from ..data.clicks import load_clicks

    if not clicks:
        raise PipelineError(f"{model} needs background clicks: pass --clicks FILE (or create one with `wtal clicks simulate`)")
    return load_clicks(clicks, annotator)


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def train_stage(features: str, annotations: str, model: str, out: str, clicks: list[str] | None = None,
                seed: int = 0, device: str = "auto", sets: dict[str, Any] | None = None,
                val_fraction: float = 0.0, train_subset: str | None = None, snippet_seconds: float | None = None,
                annotator: str | None = None, hook=None, allow_pickle: bool = False,
                standardize: bool = False, preset: str = "thumos14") -> TrainResult:
    """Train a localizer (`wtal.models.recipe.fit`) and write RUN/checkpoint.pt and RUN/train_log.json.

    `preset` (wtal.models.presets) sets the dataset's published values first; `sets` (`--set`
    overrides of any of the model's three groups, epochs among them) override it.
    `standardize` z-scores every feature dimension with statistics of the training videos
    (saved in the checkpoint and applied again by detection); off by default, as in the papers.
    """
    from .._io import write_json_atomic
    from ..data.annotations import AnnotationSet
    from ..device import resolve_device
    from ..evaluate.metrics import evaluate
    from ..models import get_localizer
    from ..models.checkpoint import save_checkpoint
    from ..models.presets import preset_overrides, preset_tiou
    from ..models.recipe import fit

    dev = resolve_device(device)
    feats, ann = open_inputs(features, annotations, snippet_seconds, allow_pickle)
    default_train, default_eval = ann.default_subsets()
    train_subset = train_subset or default_train
    if not ann.class_names:
        raise PipelineError(f"{annotations}: no annotated action instances, nothing to learn")
    cls = get_localizer(model)
    preset_values = preset_overrides(model, preset)
    sets = {**preset_values, **(sets or {})}
    click_map = _training_clicks(model, clicks, annotator) if cls.needs_clicks else None
    items = subset_items(ann, feats, train_subset, click_map)

    def val_score(val_items, results) -> float:
        val_ann = AnnotationSet(videos={it.video_id: ann.videos[it.video_id] for it in val_items},
                                class_names=ann.class_names, source=ann.source)
        return evaluate(val_ann, results, train_subset).average_mAP

    run = fit(cls, items, ann.class_names, feats.snippet_seconds, sets=sets, seed=seed, device=dev,
              val_fraction=val_fraction, val_score=val_score, val_source=repr(train_subset), standardize=standardize,
              hook=hook)
    epochs = int(run.train_config["epochs"])
    norm = run.standardization.checkpoint_info() if run.standardization is not None else {}
    Path(out).mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, run.model, ann.class_names, run.train_config, run.test_config, feats.snippet_seconds, seed=seed,
                    selection=run.selection, annotations=str(Path(annotations).resolve()), train_subset=train_subset,
                    eval_subset=default_eval, epochs=epochs, device=str(dev), feature_settings=feats.settings(),
                    preset=preset, preset_values=preset_values, preset_tiou=preset_tiou(model, preset), **norm)
    write_json_atomic(Path(out) / "train_log.json", {
        "model": model, "selection": run.selection, "history": run.history, "train_config": _plain(run.train_config),
        "test_config": _plain(run.test_config), "hparams": _plain(run.hparams),
        "num_train_videos": run.num_train_videos, "num_val_videos": run.num_val_videos, "seed": seed,
        "standardize": standardize, "feature_settings": feats.settings(),
        "preset": {"name": preset, "tiou": preset_tiou(model, preset), "values": _plain(preset_values)}})
    return TrainResult(str(out), model, run.selection, run.history, run.num_train_videos, run.num_val_videos)


def detect_stage(features: str, checkpoint: str, out: str, subset: str | None = None, device: str = "auto",
                 annotations: str | None = None, snippet_seconds: float | None = None,
                 sets: dict[str, Any] | None = None, allow_pickle: bool = False, allow_mismatch: bool = False,
                 keep_inferences: bool = False) -> DetectResult:
    """Run a trained localizer over a subset's videos (all feature videos without annotations).

    `sets` may override test settings only: a model or training setting would be ignored here,
    so it is an error. Features of another width are refused; features whose time base or
    extraction settings differ from those the checkpoint records are refused unless
    `allow_mismatch`.
    """
    from ..data.features import open_features, settings_mismatch
    from ..device import resolve_device
    from ..models import split_settings
    from ..models.checkpoint import load_checkpoint
    from ..models.recipe import Standardization, detect
    from ..models.train import VideoItem
    from ..postprocess.detections import write_detections

    dev = resolve_device(device)
    net, payload = load_checkpoint(checkpoint, dev)
    info = payload.get("info", {})
    test_cfg = dict(payload["test_config"])
    if sets:
        _, _, overrides = split_settings(type(net), sets, groups=("test",), command="detect")
        test_cfg.update({k: overrides[k] for k in sets})
    seconds = snippet_seconds or payload["snippet_seconds"]
    ann_path = annotations or info.get("annotations")
    if ann_path and Path(ann_path).exists():
        feats, ann = open_inputs(features, ann_path, seconds, allow_pickle)
        subset = subset or info.get("eval_subset") or ann.default_subsets()[1]
    elif subset:
        raise PipelineError(f"--subset {subset} needs annotations: pass --annotations ANN")
    else:
        feats, ann = open_features(features, seconds, allow_pickle=allow_pickle), None
    if feats.feature_dim != payload["feature_dim"]:
        raise PipelineError(f"{features}: features are {feats.feature_dim}-d but {checkpoint} was trained on "
                            f"{payload['feature_dim']}-d")
    trained = info.get("feature_settings")
    diffs = settings_mismatch(trained, feats.settings()) if trained else []
    if diffs and not allow_mismatch:
        raise PipelineError(
            f"{features}: feature settings differ from those {checkpoint} was trained on ({'; '.join(diffs)}; "
            f"features: {feats.settings()}, checkpoint: {trained}); pass --allow-mismatch to detect anyway"
        )
    if diffs:
        log.warning("detecting on features whose settings differ from training: %s", "; ".join(diffs))
    if ann is not None and subset is not None:
        items = subset_items(ann, feats, subset)
    else:
        items = []
        for vid in feats.ids():
            tb = feats.time_base(vid)
            items.append(VideoItem(vid, feats.load(vid), np.zeros(0), None, snippet_seconds=tb.seconds_per_snippet,
                                   fps=tb.fps))
    results, inferences = detect(net, items, test_cfg, payload["class_names"], feats.snippet_seconds, dev,
                                 Standardization.from_checkpoint(payload))
    write_detections(out, results, {"used": True, "details": "features + wtal " + payload["model"],
                                    "checkpoint": str(Path(checkpoint).resolve()), "subset": subset,
                                    "selection": info.get("selection")})
    return DetectResult(str(out), subset, len(items), sum(len(r) for r in results.values()),
                        results if keep_inferences else None, inferences if keep_inferences else None)
