"""The pipeline's stages: extract (one Ray task per video), train, detect, evaluate.

Stages are plain functions; `extract_videos` fans out `extract_task` as Ray tasks with declared
resources, so the same code runs on the embedded local Ray and on a cluster. Train and detect
run in the calling process (`wtal run` wraps them in a Ray task with the right resources).
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..extract.cache import FeatureCache, entry_key, file_sha256
from ..extract.features import ExtractSettings

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"}


class PipelineError(RuntimeError):
    """A stage that cannot start or finish; the message is one line for the user."""


# ---------------------------------------------------------------------------- extract
def collect_videos(inputs: list[str]) -> dict[str, Path]:
    """video_id -> path for files and folders given on the command line.

    Two inputs with the same id (file name without extension) are an error.
    """
    from ..extract.decode import video_id

    found: dict[str, Path] = {}
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
        elif path.is_file():
            files = [path]
        else:
            raise PipelineError(f"{path}: no such file or directory")
        for f in files:
            vid = video_id(f)
            if vid in found and found[vid].resolve() != f.resolve():
                raise PipelineError(f"video id {vid!r} is given twice: {found[vid]} and {f}")
            found[vid] = f
    if not found:
        raise PipelineError(f"no videos found in {', '.join(inputs)} (extensions: {', '.join(sorted(VIDEO_EXTENSIONS))})")
    return found


_EXTRACTORS: dict[tuple, Any] = {}


def extract_task(path: str, video_id: str, key: str, settings: ExtractSettings, key_fields: dict, cache_root: str,
                 device: str, batch: int) -> dict[str, Any]:
    """Extract one video into the cache (the body of the Ray task); failures become records."""
    from ..extract.features import Extractor
    from .runtime import limit_threads

    limit_threads()
    cache = FeatureCache(cache_root)
    start = time.perf_counter()
    frames = 0

    def count(n: int) -> None:
        nonlocal frames
        frames += n

    try:
        ident = (settings, device, batch)
        if ident not in _EXTRACTORS:
            _EXTRACTORS.clear()
            _EXTRACTORS[ident] = Extractor(settings, device=device, batch=batch)
        features = _EXTRACTORS[ident].extract(path, on_frames=count)
        record = cache.put(key, video_id, features, key_fields, path)
    except Exception as exc:  # one bad video never stops the others: it is recorded instead
        reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        record = cache.put_failure(key, video_id, reason, key_fields, path)
    record["frames"] = frames
    record["seconds"] = time.perf_counter() - start
    return record


@dataclass
class ExtractSummary:
    total: int
    done: int
    skipped: int
    failed: list[dict] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def extract_videos(inputs: list[str], cache_root: str, settings: ExtractSettings, device: str = "auto", batch: int = 8,
                   ray_address: str | None = None, workers: int | None = None, progress: bool = True) -> ExtractSummary:
    """Extract every video not yet in the cache under `settings`, one Ray task per video."""
    from ..device import resolve_device

    videos = collect_videos(inputs)
    cache = FeatureCache(cache_root, create=True)
    use_gpu = resolve_device(device).type == "cuda" if ray_address is None else device == "cuda"
    key_fields = settings.key_fields("cuda" if use_gpu else "cpu")
    keys, todo = {}, []
    for vid, path in videos.items():
        keys[vid] = entry_key(file_sha256(path), key_fields)
        if not cache.has_ok(keys[vid]):
            todo.append(vid)
    skipped = len(videos) - len(todo)
    if skipped:
        cache.update_manifest({vid: keys[vid] for vid in videos if vid not in todo})
    summary = ExtractSummary(total=len(videos), done=0, skipped=skipped)
    if not todo:
        return summary
    from .runtime import init_ray

    ray = init_ray(ray_address, workers)
    task_device = "cuda" if use_gpu else "cpu"
    remote = ray.remote(extract_task).options(num_cpus=1, num_gpus=(1 if use_gpu else 0), max_retries=3,
                                              retry_exceptions=False)
    pending = {
        remote.remote(str(videos[vid].resolve()), vid, keys[vid], settings, key_fields, str(Path(cache_root).resolve()),
                      task_device, batch): vid
        for vid in todo
    }
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="extract", unit="video")
    start = time.perf_counter()
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        vid = pending.pop(ready[0])
        record = ray.get(ready[0])
        cache.update_manifest({vid: record["key"]})
        summary.frames += record.get("frames", 0)
        if record["status"] == "ok":
            summary.done += 1
        else:
            summary.failed.append(record)
            log.warning("%s failed: %s", vid, record["reason"])
        summary.seconds = time.perf_counter() - start
        if bar:
            bar.set_postfix(fps=f"{summary.fps:.1f}", failed=len(summary.failed))
            bar.update()
    if bar:
        bar.close()
    return summary


# ------------------------------------------------------------------------------ train
def _load_training_inputs(features_path: str, annotations_path: str, snippet_seconds: float | None):
    from ..data.annotations import load_annotations
    from ..data.features import open_features

    return open_features(features_path, snippet_seconds), load_annotations(annotations_path)


def _items(ann, features, subset: str, clicks: dict | None = None):
    """VideoItems for a subset; videos without features are an error listing a few."""
    from ..models.synthetic_check import build_items

    videos = ann.subset(subset)
    missing = [v.video_id for v in videos if v.video_id not in features]
    if missing:
        raise PipelineError(
            f"{features.path}: no features for {len(missing)} of {len(videos)} {subset!r} videos, e.g. {', '.join(missing[:3])}"
        )
    items = build_items(ann, features, subset, clicks)
    for it in items:
        expected = it.duration / features.snippet_seconds if it.duration else None
        if expected is not None and abs(len(it.features) - expected) > 1 + 1e-6 and features.kind != "cache":
            log.warning("%s: %d snippets but the annotated duration implies %.1f", it.video_id, len(it.features), expected)
    return items


def train_stage(features: str, annotations: str, model: str, out: str, clicks: list[str] | None = None,
                epochs: int | None = None, seed: int = 0, device: str = "auto", sets: dict[str, str] | None = None,
                val_fraction: float = 0.0, train_subset: str | None = None, snippet_seconds: float | None = None,
                annotator: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Train a localizer and write RUN/checkpoint.pt and RUN/train_log.json."""
    import torch

    from ..evaluate.metrics import evaluate
    from ..device import resolve_device
    from ..models import get_localizer, split_settings
    from ..models.checkpoint import save_checkpoint
    from ..models.train import detect_videos, seed_everything, train_localizer

    feats, ann = _load_training_inputs(features, annotations, snippet_seconds)
    default_train, default_eval = ann.default_subsets()
    train_subset = train_subset or default_train
    if not ann.class_names:
        raise PipelineError(f"{annotations}: no annotated action instances, nothing to learn")
    cls = get_localizer(model)
    sets = dict(sets or {})
    click_map = None
    if cls.needs_clicks:
        if not clicks:
            raise PipelineError(f"{model} needs background clicks: pass --clicks FILE (or create one with `wtal clicks simulate`)")
        from ..data.clicks import load_clicks

        annotator = annotator or sets.pop("annotator", None)
        files = list(clicks)
        if len(files) > 1:
            if annotator is None:
                raise PipelineError(f"{len(files)} click files given: choose one with --set annotator=NAME (file stem)")
            chosen = [f for f in files if Path(f).stem == annotator or Path(f).stem.endswith(annotator)]
            if len(chosen) != 1:
                raise PipelineError(f"--set annotator={annotator}: matches {len(chosen)} of {', '.join(Path(f).stem for f in files)}")
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
    seed_everything(seed)
    net = cls(feats.feature_dim, len(ann.class_names), **hparams)
    total_epochs = int(train_cfg["epochs"] if epochs is None else epochs)
    best = {"score": -1.0, "epoch": total_epochs - 1, "state": None}
    val_ann = None
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
    else:
        on_epoch = None
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
                    epochs=total_epochs, device=str(dev))
    log_data = {"model": model, "selection": selection, "history": history, "train_config": train_cfg,
                "test_config": {k: list(v) if isinstance(v, tuple) else v for k, v in test_cfg.items()},
                "hparams": {k: list(v) if isinstance(v, tuple) else v for k, v in hparams.items()},
                "num_train_videos": len(items), "num_val_videos": len(val_items), "seed": seed}
    (Path(out) / "train_log.json").write_text(json.dumps(log_data, indent=1))
    return log_data


# ----------------------------------------------------------------------------- detect
def detect_stage(features: str, checkpoint: str, out: str, subset: str | None = None, device: str = "auto",
                 annotations: str | None = None, snippet_seconds: float | None = None,
                 sets: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a trained localizer over a subset's videos (all feature videos without annotations)."""
    from ..data.annotations import load_annotations
    from ..data.features import open_features
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
    feats = open_features(features, snippet_seconds or payload["snippet_seconds"])
    if feats.feature_dim != payload["feature_dim"]:
        raise PipelineError(f"{features}: features are {feats.feature_dim}-d but {checkpoint} was trained on {payload['feature_dim']}-d")
    ann_path = annotations or info.get("annotations")
    if ann_path and Path(ann_path).exists():
        ann = load_annotations(ann_path)
        subset = subset or info.get("eval_subset") or ann.default_subsets()[1]
        videos = ann.subset(subset)
        missing = [v.video_id for v in videos if v.video_id not in feats]
        if missing:
            raise PipelineError(f"{features}: no features for {len(missing)} {subset!r} videos, e.g. {', '.join(missing[:3])}")
        items = [VideoItem(v.video_id, feats.load(v.video_id), np.zeros(0), v.duration) for v in videos]
    elif subset:
        raise PipelineError(f"--subset {subset} needs annotations: pass --annotations ANN")
    else:
        items = [VideoItem(vid, feats.load(vid), np.zeros(0), None) for vid in feats.ids()]
    results, _ = detect_videos(net, items, test_cfg, payload["class_names"], feats.snippet_seconds, dev)
    write_detections(out, results, {"used": True, "details": "features + wtal " + payload["model"],
                                    "checkpoint": str(Path(checkpoint).resolve()), "subset": subset,
                                    "selection": info.get("selection")})
    return {"videos": len(items), "detections": sum(len(r) for r in results.values()), "subset": subset}
