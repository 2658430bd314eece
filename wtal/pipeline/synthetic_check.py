"""Train-detect-evaluate one localizer on wtal's synthetic feature dataset.

Used by the model tests ("beats the trivial detector") and by `bench/models.py`; the trivial
detector labels each whole test video with the model's own top class, so the comparison
isolates localisation from classification. Training and detection are `wtal.models.recipe`'s.
"""
from __future__ import annotations

import time
from typing import Any

from ..data.annotations import load_annotations
from ..data.features import open_features
from ..data.synthetic import write_feature_dataset
from ..evaluate.metrics import evaluate
from ..models import get_localizer
from ..models.recipe import detect, fit
from ..models.train import build_items
from ..postprocess.detections import whole_video_results


def run_synthetic(name: str, workdir, overrides: dict[str, Any] | None = None, seed: int = 0, epochs: int | None = None,
                  clicks: bool = False, device: str = "cpu", dataset: dict[str, Any] | None = None) -> dict[str, Any]:
    """mAP of `name` and of the trivial detector on the synthetic test split, plus timings.

    `epochs` is a shorthand for `overrides["epochs"]`. `clicks` gives every training video one
    click in each background gap (the uniform protocol: a learning check, not an annotator model).
    """
    feat_dir, ann_path = write_feature_dataset(workdir, **(dataset or {}))
    ann = load_annotations(ann_path)
    features = open_features(feat_dir)
    train_subset, test_subset = ann.default_subsets()
    click_map = None
    if clicks:
        from ..data.clicks import simulate_clicks

        click_map = simulate_clicks(ann, train_subset, seed, "uniform")
    train_items = build_items(ann, features, train_subset, click_map)
    test_items = build_items(ann, features, test_subset)
    sets = {**(overrides or {}), **({"epochs": epochs} if epochs is not None else {})}
    start = time.perf_counter()
    run = fit(get_localizer(name), train_items, ann.class_names, features.snippet_seconds, sets=sets, seed=seed,
              device=device)
    seconds = time.perf_counter() - start
    results, inferences = detect(run.model, test_items, run.test_config, ann.class_names, features.snippet_seconds,
                                 device)
    trivial = {
        it.video_id: whole_video_results(
            inferences[it.video_id].video_scores,
            it.duration if it.duration is not None else len(it.features) * features.snippet_seconds, ann.class_names)
        for it in test_items
    }
    return {
        "model": run.model,
        "history": run.history,
        "report": evaluate(ann, results, test_subset),
        "trivial": evaluate(ann, trivial, test_subset),
        "results": results,
        "seconds_per_epoch": seconds / max(1, len(run.history)),
        "test_items": test_items,
        "test_config": run.test_config,
        "annotations": ann,
        "features": features,
    }
