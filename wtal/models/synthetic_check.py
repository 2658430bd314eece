"""Train-detect-evaluate one localizer on wtal's synthetic feature dataset.

Used by the model tests ("beats the trivial detector") and by `bench/models.py`; the trivial
detector labels each whole test video with the model's own top class, so the comparison
isolates localisation from classification.
"""
from __future__ import annotations

import time
from typing import Any

import torch

from ..data.annotations import load_annotations
from ..data.features import open_features
from ..data.synthetic import write_feature_dataset
from ..evaluate.metrics import evaluate
from ..postprocess.detections import whole_video_results
from .base import get_localizer, split_settings
from .train import build_items, detect_videos, train_localizer


def run_synthetic(name: str, workdir, overrides: dict[str, Any] | None = None, seed: int = 0, epochs: int | None = None,
                  clicks: bool = False, device: str = "cpu", dataset: dict[str, Any] | None = None) -> dict[str, Any]:
    """mAP of `name` and of the trivial detector on the synthetic test split, plus timings."""
    feat_dir, ann_path = write_feature_dataset(workdir, **(dataset or {}))
    ann = load_annotations(ann_path)
    features = open_features(feat_dir)
    train_subset, test_subset = ann.default_subsets()
    click_map = None
    if clicks:
        from ..data.clicks import simulate_clicks

        click_map = simulate_clicks(ann, train_subset, seed)
    train_items = build_items(ann, features, train_subset, click_map)
    test_items = build_items(ann, features, test_subset)
    cls = get_localizer(name)
    hparams, train_cfg, test_cfg = split_settings(cls, overrides)
    torch.manual_seed(seed)
    model = cls(features.feature_dim, len(ann.class_names), **hparams)
    dev = torch.device(device)
    start = time.perf_counter()
    history = train_localizer(model, train_items, train_cfg, dev, seed=seed, epochs=epochs)
    seconds = time.perf_counter() - start
    results, inferences = detect_videos(model, test_items, test_cfg, ann.class_names, features.snippet_seconds, dev)
    trivial = {
        it.video_id: whole_video_results(
            inferences[it.video_id].video_scores,
            it.duration if it.duration is not None else len(it.features) * features.snippet_seconds, ann.class_names)
        for it in test_items
    }
    report = evaluate(ann, results, test_subset)
    baseline = evaluate(ann, trivial, test_subset)
    return {
        "model": model,
        "history": history,
        "report": report,
        "trivial": baseline,
        "results": results,
        "seconds_per_epoch": seconds / max(1, len(history)),
        "test_items": test_items,
        "test_config": test_cfg,
        "annotations": ann,
        "features": features,
    }
