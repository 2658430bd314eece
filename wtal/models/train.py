"""Training and inference loops shared by every localizer.

Videos are brought to `max_len` snippets per epoch by `train_sampling` (default "segments": at
most `max_len`, one random snippet per equal segment, as the public WTAL code does; see
`wtal.models.sampling` for the other modes), padded to the longest video of the batch and masked,
so padded snippets never enter pooling or losses. Detection brings each video to `test_len` by
`test_sampling` (default "native") and maps its proposals back with the video's own scale.
Only one batch is on the device at a time: an epoch keeps each batch's random-generator state,
not the batch, so `on_epoch_end` can collate exactly the same batches again. The recipe around
these loops (seeding, validation, standardisation) is `wtal.models.recipe`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from ..postprocess.detections import proposals_to_results
from ..postprocess.proposals import VIDEO_FRAMES_PER_SNIPPET, VIDEO_SNIPPET_SECONDS, to_seconds
from ..progress import Hook, report
from .base import Batch, Localizer
from .sampling import check_mode, click_slots, resample


@dataclass
class VideoItem:
    """One training or test video: features, multi-hot labels and optional background clicks.

    `snippet_seconds` / `fps` are the video's own time base (`FeatureSource.time_base`); None
    falls back to the source-wide value given to `detect_videos`.
    """

    video_id: str
    features: np.ndarray
    labels: np.ndarray
    duration: float | None = None
    clicks: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    snippet_seconds: float | None = None
    fps: float | None = None


def build_items(ann, features, subset: str, clicks: dict[str, list[float]] | None = None) -> list[VideoItem]:
    """VideoItems of one subset of an AnnotationSet from a FeatureSource; click times (seconds)
    become snippet indices with each video's own seconds per snippet. A video's frame rate is
    the features' where they know it, else the annotation's."""
    items = []
    for video in ann.subset(subset):
        x = features.load(video.video_id)
        tb = features.time_base(video.video_id, video.duration)
        snip = np.asarray(sorted(clicks.get(video.video_id, [])) if clicks else [], dtype=np.float64)
        items.append(VideoItem(video.video_id, x, ann.label_vector(video.video_id), video.duration,
                               np.floor(snip / tb.seconds_per_snippet).astype(np.int64), tb.seconds_per_snippet,
                               tb.fps or video.fps))
    return items


def feature_stats(items: list[VideoItem]) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and standard deviation over every snippet of `items`."""
    count, total, squares = 0, np.zeros(()), np.zeros(())
    for it in items:
        x = it.features.astype(np.float64)
        count += len(x)
        total = total + x.sum(0)
        squares = squares + (x * x).sum(0)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)


def standardize(items: list[VideoItem], mean: np.ndarray, std: np.ndarray) -> list[VideoItem]:
    """Copies of `items` with z-scored features (statistics from the training videos)."""
    return [replace(it, features=(it.features - mean) / std) for it in items]


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch so CPU runs repeat exactly."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def collate(items: list[VideoItem], max_len: int, rng: np.random.Generator | None, device: torch.device,
            mode: str = "segments") -> Batch:
    """Batch of videos brought to `max_len` by the sampling `mode` (`wtal.models.sampling`), padded.

    Keys: features (B, L, D), mask (B, L) bool, labels (B, C), background (B, L) bool marking
    slots holding a background click, lengths (B,), video_ids.
    """
    picks = [resample(it.features, mode, max_len, rng)[0] for it in items]
    L = max(len(p) for p in picks)
    D = items[0].features.shape[1]
    feats = np.zeros((len(items), L, D), dtype=np.float32)
    mask = np.zeros((len(items), L), dtype=bool)
    background = np.zeros((len(items), L), dtype=bool)
    for b, (it, x) in enumerate(zip(items, picks)):
        feats[b, : len(x)] = x
        mask[b, : len(x)] = True
        if len(it.clicks):
            background[b, click_slots(it.clicks, len(it.features), len(x), mode)] = True
    return {
        "features": torch.from_numpy(feats).to(device),
        "mask": torch.from_numpy(mask).to(device),
        "labels": torch.from_numpy(np.stack([it.labels for it in items]).astype(np.float32)).to(device),
        "background": torch.from_numpy(background).to(device),
        "lengths": torch.tensor([len(p) for p in picks], device=device),
        "video_ids": [it.video_id for it in items],
    }


def train_localizer(
    model: Localizer,
    items: list[VideoItem],
    cfg: dict[str, Any],
    device: torch.device,
    seed: int = 0,
    hook: Hook | None = None,
) -> list[dict[str, float]]:
    """Train `model` for cfg["epochs"] epochs; returns mean loss terms per epoch.

    Each epoch is reported to `hook` as step "train NAME" with its mean loss terms, after
    `model.on_epoch_end`, so a hook may evaluate the model of that epoch.
    """
    seed_everything(seed)
    rng = np.random.default_rng(seed)
    model.check_items(items)
    model.to(device).train()
    optimizers = model.make_optimizers(cfg)
    model.on_train_begin(items)
    # step decay: every optimizer's learning rate x lr_decay_factor at each epoch of lr_decay_epochs
    milestones = sorted(int(e) for e in cfg.get("lr_decay_epochs", ()))
    schedulers = [torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=float(cfg.get("lr_decay_factor", 0.1)))
                  for opt in optimizers.values()] if milestones else []
    epochs = int(cfg["epochs"])
    batch_size, max_len = int(cfg["batch_size"]), int(cfg["max_len"])
    sampling = check_mode(str(cfg.get("train_sampling", "segments")), "train_sampling")
    history = []
    for epoch in range(epochs):
        model.train()
        order = rng.permutation(len(items))
        plan: list[tuple[list[VideoItem], Mapping[str, Any]]] = []
        sums: dict[str, float] = {}
        n_batches = -(-len(order) // batch_size)
        for i in range(0, len(order), batch_size):
            chosen = [items[j] for j in order[i: i + batch_size]]
            plan.append((chosen, rng.bit_generator.state))  # a snapshot: the batch can be drawn again
            terms = model.fit_step(collate(chosen, max_len, rng, device, sampling), optimizers, epoch)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v / n_batches

        def batches(plan=plan) -> Iterator[Batch]:
            for chosen, state in plan:
                replay = np.random.Generator(type(rng.bit_generator)())
                replay.bit_generator.state = state
                yield collate(chosen, max_len, replay, device, sampling)

        model.on_epoch_end(epoch, batches)
        for scheduler in schedulers:
            scheduler.step()
        history.append(sums)
        report(hook, f"train {model.name}", {"loss": sums.get("total", float("nan"))}, completed=epoch + 1, total=epochs)
    model.eval()
    return history


@torch.no_grad()
def detect_videos(
    model: Localizer,
    items: list[VideoItem],
    cfg: dict[str, Any],
    class_names: list[str],
    snippet_seconds: float,
    device: torch.device,
) -> tuple[dict[str, list[dict]], dict[str, Any]]:
    """Detections (ActivityNet result rows, seconds) and per-video inference of each item.

    Each video is first brought to `test_len` by `test_sampling` (`wtal.models.sampling`, default
    "native"); proposals on that axis go back to source snippets with the video's own scale, and
    to seconds with its own `snippet_seconds` (else the source-wide `snippet_seconds`). The
    inferences stay on the sampled axis.
    """
    model.to(device).eval()
    mode = check_mode(str(cfg.get("test_sampling", "native")), "test_sampling")
    results, inferences = {}, {}
    for it in items:
        x, scale = resample(it.features, mode, int(cfg.get("test_len", 0)))
        seconds = it.snippet_seconds or snippet_seconds
        frames = seconds * it.fps * scale if it.fps else None
        feats = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
        proposals, inference = model.detect(feats, {**cfg, VIDEO_SNIPPET_SECONDS: seconds * scale,
                                                    VIDEO_FRAMES_PER_SNIPPET: frames})
        if scale != 1.0:
            proposals = [replace(p, start=p.start * scale, end=p.end * scale) for p in proposals]
        duration = it.duration if it.duration is not None else len(it.features) * seconds
        results[it.video_id] = proposals_to_results(to_seconds(proposals, seconds, duration), class_names)
        inferences[it.video_id] = inference
    return results, inferences
