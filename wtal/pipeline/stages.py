"""The train and detect stages: file I/O around the training recipe of `wtal.models`.

Both are plain functions over paths, so `wtal train` / `wtal detect` run them in-process and
`wtal run` runs them as Ray tasks (`wtal.pipeline.runtime.run_stage_on_ray`); each returns a
small result record.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

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
    """What `detect_stage` wrote: the detections file, the subset and the counts."""

    out: str
    subset: str | None
    videos: int
    detections: int


# ------------------------------------------------------------------------------ train
def _open_inputs(features_path: str, annotations_path: str, snippet_seconds: float | None, allow_pickle: bool):
    """Features and annotations; a W-TALC annotation folder also names the W-TALC feature order."""
    from ..data.annotations import load_annotations
    from ..data.features import open_features

    names = annotations_path if Path(annotations_path).is_dir() else None
    return (open_features(features_path, snippet_seconds, allow_pickle=allow_pickle, video_names=names),
            load_annotations(annotations_path, allow_pickle=allow_pickle))


def _items(ann, features, subset: str, clicks: dict | None = None):
    """VideoItems for a subset; videos without features are an error listing a few."""
    from ..data.features import require_lengths
    from ..models.train import build_items

    videos = ann.subset(subset)
    missing = [v.video_id for v in videos if v.video_id not in features]
    if missing:
        raise PipelineError(
            f"{features.path}: no features for {len(missing)} of {len(videos)} {subset!r} videos, e.g. {', '.join(missing[:3])}"
        )
    require_lengths(features, ann, subset)
    items = build_items(ann, features, subset, clicks)
    return items


def train_stage(features: str, annotations: str, model: str, out: str, clicks: list[str] | None = None,
                epochs: int | None = None, seed: int = 0, device: str = "auto", sets: dict[str, str] | None = None,
                val_fraction: float = 0.0, train_subset: str | None = None, snippet_seconds: float | None = None,
                annotator: str | None = None, progress: bool = True, allow_pickle: bool = False,
                standardize: bool = False, preset: str = "thumos14") -> TrainResult:
    """Train a localizer and write RUN/checkpoint.pt and RUN/train_log.json.

    `preset` (wtal.models.presets) sets the dataset's published values first; `sets` override it.

    `standardize` z-scores every feature dimension with statistics of the training videos
    (saved in the checkpoint and applied again by detection); off by default, as in the papers.
    """
    import torch

    from ..device import resolve_device
    from ..evaluate.metrics import evaluate
    from ..models import get_localizer, split_settings
    from ..models.checkpoint import save_checkpoint
    from ..models.train import detect_videos, feature_stats, seed_everything, train_localizer
    from ..models.train import standardize as zscore

    feats, ann = _open_inputs(features, annotations, snippet_seconds, allow_pickle)
    default_train, default_eval = ann.default_subsets()
    train_subset = train_subset or default_train
    if not ann.class_names:
        raise PipelineError(f"{annotations}: no annotated action instances, nothing to learn")
    cls = get_localizer(model)
    from ..models.presets import preset_overrides, preset_tiou

    preset_values = preset_overrides(model, preset)
    sets = {**preset_values, **(sets or {})}
    click_map = None
    if cls.needs_clicks:
        if not clicks:
            raise PipelineError(f"{model} needs background clicks: pass --clicks FILE "
                                "(or create one with `wtal clicks simulate`)")
        from ..data.clicks import load_clicks

        annotator = annotator or sets.pop("annotator", None)
        files = list(clicks)
        if len(files) > 1:
            if annotator is None:
                raise PipelineError(f"{len(files)} click files given: choose one with --set annotator=NAME (file stem)")
            chosen = [f for f in files if Path(f).stem == annotator or Path(f).stem.endswith(annotator)]
            if len(chosen) != 1:
                stems = ", ".join(Path(f).stem for f in files)
                raise PipelineError(f"--set annotator={annotator}: matches {len(chosen)} of {stems}")
            files = chosen
        click_map = load_clicks(files[0])
    hparams, train_cfg, test_cfg = split_settings(cls, sets)
    dev = resolve_device(device)
    items = _items(ann, feats, train_subset, click_map)
    val_items = []
    if val_fraction > 0:
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(items))
        n_val = max(1, int(round(val_fraction * len(items))))
        val_items = [items[i] for i in order[:n_val]]
        items = [items[i] for i in order[n_val:]]
    norm = {}
    if standardize:
        mean, std = feature_stats(items)
        items, val_items = zscore(items, mean, std), zscore(val_items, mean, std)
        norm = {"feature_mean": torch.from_numpy(mean), "feature_std": torch.from_numpy(std)}
    seed_everything(seed)
    net = cls(feats.feature_dim, len(ann.class_names), **hparams)
    total_epochs = int(train_cfg["epochs"] if epochs is None else epochs)
    best: dict[str, Any] = {"score": -1.0, "epoch": total_epochs - 1, "state": None}
    val_ann = None
    on_epoch: Callable[[int, dict], None] | None = None
    if val_items:
        from ..data.annotations import AnnotationSet

        val_ann = AnnotationSet(videos={it.video_id: ann.videos[it.video_id] for it in val_items},
                                class_names=ann.class_names, source=ann.source)
        every = max(1, total_epochs // 10)

        def on_epoch(epoch: int, _losses: dict) -> None:
            if (epoch + 1) % every and epoch + 1 != total_epochs:
                return
            results, _ = detect_videos(net, val_items, test_cfg, ann.class_names, feats.snippet_seconds, dev)
            score = evaluate(val_ann, results, train_subset).average_mAP
            net.train()
            if score > best["score"]:
                best.update(score=score, epoch=epoch, state={k: v.detach().clone() for k, v in net.state_dict().items()})
    history = train_localizer(net, items, train_cfg, dev, seed=seed, epochs=total_epochs, on_epoch=on_epoch, progress=progress)
    if best["state"] is not None:
        net.load_state_dict(best["state"])
        selection = (f"best average mAP {best['score']:.4f} on {len(val_items)} validation videos carved from "
                     f"{train_subset!r} (val-fraction {val_fraction}), epoch {best['epoch'] + 1} of {total_epochs}")
    else:
        selection = f"fixed epoch count: last of {total_epochs} epochs"
    Path(out).mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, net, ann.class_names, train_cfg, test_cfg, feats.snippet_seconds, seed=seed, selection=selection,
                    annotations=str(Path(annotations).resolve()), train_subset=train_subset, eval_subset=default_eval,
                    epochs=total_epochs, device=str(dev), feature_settings=feats.settings(), preset=preset,
                    preset_values=preset_values, preset_tiou=preset_tiou(model, preset), **norm)
    log_data = {"model": model, "selection": selection, "history": history, "train_config": train_cfg,
                "test_config": {k: list(v) if isinstance(v, tuple) else v for k, v in test_cfg.items()},
                "hparams": {k: list(v) if isinstance(v, tuple) else v for k, v in hparams.items()},
                "num_train_videos": len(items), "num_val_videos": len(val_items), "seed": seed,
                "standardize": standardize, "feature_settings": feats.settings(),
                "preset": {"name": preset, "tiou": preset_tiou(model, preset),
                           "values": {k: list(v) if isinstance(v, tuple) else v for k, v in preset_values.items()}}}
    (Path(out) / "train_log.json").write_text(json.dumps(log_data, indent=1))
    return TrainResult(str(out), model, selection, history, len(items), len(val_items))


# ----------------------------------------------------------------------------- detect
def checkpoint_items(items: list, payload: dict) -> list:
    """Apply the feature standardisation a run was trained with (if any) to test videos."""
    from ..models.train import standardize

    info = payload.get("info", {})
    if "feature_mean" not in info:
        return items
    return standardize(items, info["feature_mean"].numpy(), info["feature_std"].numpy())


def detect_stage(features: str, checkpoint: str, out: str, subset: str | None = None, device: str = "auto",
                 annotations: str | None = None, snippet_seconds: float | None = None,
                 sets: dict[str, str] | None = None, allow_pickle: bool = False,
                 allow_mismatch: bool = False) -> DetectResult:
    """Run a trained localizer over a subset's videos (all feature videos without annotations).

    Features of another width are refused; features whose time base or extraction settings differ
    from those the checkpoint records are refused unless `allow_mismatch`.
    """
    from ..data.features import open_features, settings_mismatch
    from ..device import resolve_device
    from ..models.checkpoint import load_checkpoint
    from ..models.train import VideoItem, detect_videos
    from ..postprocess.detections import write_detections

    dev = resolve_device(device)
    net, payload = load_checkpoint(checkpoint, dev)
    info = payload.get("info", {})
    test_cfg = dict(payload["test_config"])
    if sets:
        from ..models import split_settings

        _, _, overrides = split_settings(type(net), sets)
        test_cfg.update({k: overrides[k] for k in sets if k in overrides})
    seconds = snippet_seconds or payload["snippet_seconds"]
    ann_path = annotations or info.get("annotations")
    if ann_path and Path(ann_path).exists():
        feats, ann = _open_inputs(features, ann_path, seconds, allow_pickle)
        subset = subset or info.get("eval_subset") or ann.default_subsets()[1]
    elif subset:
        raise PipelineError(f"--subset {subset} needs annotations: pass --annotations ANN")
    else:
        feats, ann = open_features(features, seconds, allow_pickle=allow_pickle), None
    if feats.feature_dim != payload["feature_dim"]:
        raise PipelineError(f"{features}: features are {feats.feature_dim}-d "
                            f"but {checkpoint} was trained on {payload['feature_dim']}-d")
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
        items = _items(ann, feats, subset)
    else:
        items = []
        for vid in feats.ids():
            tb = feats.time_base(vid)
            items.append(VideoItem(vid, feats.load(vid), np.zeros(0), None, snippet_seconds=tb.seconds_per_snippet,
                                   fps=tb.fps))
    items = checkpoint_items(items, payload)
    results, _ = detect_videos(net, items, test_cfg, payload["class_names"], feats.snippet_seconds, dev)
    write_detections(out, results, {"used": True, "details": "features + wtal " + payload["model"],
                                    "checkpoint": str(Path(checkpoint).resolve()), "subset": subset,
                                    "selection": info.get("selection")})
    return DetectResult(str(out), subset, len(items), sum(len(r) for r in results.values()))
