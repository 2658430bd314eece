"""The one training-and-detection recipe every caller uses.

`fit` is the whole of training: settings split into their three groups, an optional validation
split carved from the training videos (the checkpoint's epoch is then the best one on it, never
chosen on test data), optional z-scoring with training statistics, seeding, model construction
and the epoch loop. `detect` applies a fitted run's standardisation and detects. The train
command, `wtal run`, the demo, the synthetic self-check and `bench/models.py` all go through
these two functions; scoring validation detections is the caller's (`val_score`), so this
package needs neither annotation readers nor the metric.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from ..device import resolve_device
from ..progress import Hook, report
from .base import Inference, Localizer, LocalizerError
from .settings import split_settings
from .train import VideoItem, detect_videos, feature_stats, seed_everything, standardize, train_localizer

ValScore = Callable[[list[VideoItem], dict[str, list[dict]]], float]
"""Average mAP of detections (ActivityNet result rows by video) on the validation videos."""


@dataclass
class Standardization:
    """Per-dimension z-scoring with statistics of the training videos (kept in the checkpoint)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def of(cls, items: list[VideoItem]) -> "Standardization":
        return cls(*feature_stats(items))

    def apply(self, items: list[VideoItem]) -> list[VideoItem]:
        return standardize(items, self.mean, self.std)

    def checkpoint_info(self) -> dict[str, torch.Tensor]:
        return {"feature_mean": torch.from_numpy(self.mean), "feature_std": torch.from_numpy(self.std)}

    @classmethod
    def from_checkpoint(cls, payload: dict[str, Any]) -> "Standardization | None":
        info = payload.get("info", {})
        if "feature_mean" not in info:
            return None
        return cls(info["feature_mean"].numpy(), info["feature_std"].numpy())


@dataclass
class FitResult:
    """A trained localizer and how it was obtained."""

    model: Localizer
    history: list[dict[str, float]]
    selection: str
    hparams: dict[str, Any]
    train_config: dict[str, Any]
    test_config: dict[str, Any]
    standardization: Standardization | None
    num_train_videos: int
    num_val_videos: int


def split_validation(items: list[VideoItem], fraction: float, seed: int) -> tuple[list[VideoItem], list[VideoItem]]:
    """(training, validation) videos: a seeded random `fraction` (at least one video) is held out."""
    if fraction <= 0:
        return items, []
    order = np.random.default_rng(seed).permutation(len(items))
    n_val = max(1, int(round(fraction * len(items))))
    return [items[i] for i in order[n_val:]], [items[i] for i in order[:n_val]]


def fit(cls: type[Localizer], items: list[VideoItem], class_names: list[str], snippet_seconds: float, *,
        sets: dict[str, Any] | None = None, seed: int = 0, device: torch.device | str = "cpu",
        val_fraction: float = 0.0, val_score: ValScore | None = None, val_source: str = "the training videos",
        standardize: bool = False, hook: Hook | None = None) -> FitResult:
    """Train `cls` on `items` (`sets`: `--set` overrides of any group) and return the fitted run.

    With `val_fraction`, that share of `items` (named `val_source` in the selection text) is
    detected every tenth of training and at the end, scored by `val_score`, and the best
    epoch's weights are kept; otherwise the last epoch of a fixed count is. Epochs are reported
    to `hook` (with the validation score when there is one).
    """
    hparams, train_cfg, test_cfg = split_settings(cls, sets)
    dev = resolve_device(device)
    if not items:
        raise LocalizerError(f"{cls.name}: no training videos")
    items, val_items = split_validation(items, val_fraction, seed)
    if val_items and val_score is None:
        raise ValueError("fit: val_fraction needs a val_score")
    norm = Standardization.of(items) if standardize else None
    if norm is not None:
        items, val_items = norm.apply(items), norm.apply(val_items)
    seed_everything(seed)
    model = cls(items[0].features.shape[1], len(class_names), **hparams)
    epochs = int(train_cfg["epochs"])
    every = max(1, epochs // 10)
    best: dict[str, Any] = {"score": -1.0, "epoch": epochs - 1, "state": None}

    def on_epoch(step: str, artifact: Any = None, *, completed: int | None = None, total: int | None = None) -> None:
        if val_items and val_score is not None and completed is not None and (completed % every == 0 or completed == epochs):
            results, _ = detect_videos(model, val_items, test_cfg, class_names, snippet_seconds, dev)
            score = val_score(val_items, results)
            model.train()
            if score > best["score"]:
                best.update(score=score, epoch=completed - 1,
                            state={k: v.detach().clone() for k, v in model.state_dict().items()})
            artifact = {**(artifact or {}), "val_mAP": score}
        report(hook, step, artifact, completed=completed, total=total)

    history = train_localizer(model, items, train_cfg, dev, seed=seed, hook=on_epoch)
    if best["state"] is not None:
        model.load_state_dict(best["state"])
        selection = (f"best average mAP {best['score']:.4f} on {len(val_items)} validation videos carved from "
                     f"{val_source} (val-fraction {val_fraction}), epoch {best['epoch'] + 1} of {epochs}")
    else:
        selection = f"fixed epoch count: last of {epochs} epochs"
    return FitResult(model, history, selection, hparams, train_cfg, test_cfg, norm, len(items), len(val_items))


def detect(model: Localizer, items: list[VideoItem], test_config: dict[str, Any], class_names: list[str],
           snippet_seconds: float, device: torch.device | str = "cpu",
           standardization: Standardization | None = None) -> tuple[dict[str, list[dict]], dict[str, Inference]]:
    """Detections (ActivityNet result rows, seconds) and per-video inference of a fitted model."""
    dev = resolve_device(device)
    if standardization is not None:
        items = standardization.apply(items)
    return detect_videos(model, items, test_config, class_names, snippet_seconds, dev)
