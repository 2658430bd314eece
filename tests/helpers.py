"""Setup shared by the localizer tests: tiny padded batches, tiny synthetic training items, and
the synthetic-run checks (beats the trivial detector, checkpoint reload) that every model repeats."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from wtal.data.features import DEFAULT_SNIPPET_SECONDS
from wtal.data.synthetic import make_feature_dataset
from wtal.models.checkpoint import load_checkpoint, save_checkpoint
from wtal.models.train import VideoItem, detect_videos
from wtal.postprocess.proposals import VIDEO_FRAMES_PER_SNIPPET, VIDEO_SNIPPET_SECONDS

CLASSES = ["action_0", "action_1", "action_2"]


def tiny_batch(lengths, D, C, seed=0, label_offsets=(0, 2), video_ids=False, clicks=None) -> dict[str, Any]:
    """A padded batch of random features, zero past each length.

    Video b is labelled with classes (b + o) % C for o in `label_offsets`; `video_ids` adds ids
    v0, v1, ...; `clicks` (one tuple of snippet indices per video, cycled) adds a `background`
    mask with the clicks that fall inside each video."""
    g = torch.Generator().manual_seed(seed)
    L = max(lengths)
    feats = torch.randn(len(lengths), L, D, generator=g)
    mask = torch.arange(L)[None] < torch.tensor(lengths)[:, None]
    labels = torch.zeros(len(lengths), C)
    for b in range(len(lengths)):
        for offset in label_offsets:
            labels[b, (b + offset) % C] = 1
    batch = {"features": feats * mask[..., None], "mask": mask, "labels": labels}
    if video_ids:
        batch["video_ids"] = [f"v{b}" for b in range(len(lengths))]
    if clicks is not None:
        background = torch.zeros(len(lengths), L, dtype=torch.bool)
        for b in range(len(lengths)):
            background[b, [t for t in clicks[b % len(clicks)] if t < lengths[b]]] = True
        batch["background"] = background
    return batch


def tiny_items(n=16, dim=24, seed=0, length=(20, 40), clicks=False, snippet_seconds=DEFAULT_SNIPPET_SECONDS):
    """Training items of a tiny 3-class synthetic set, and its class names.

    With `clicks`, each video gets clicks on its first and last background snippet."""
    feats, ann = make_feature_dataset(num_classes=3, num_train=n, num_test=1, dim=dim, length=length, seed=seed,
                                      snippet_seconds=snippet_seconds)
    items = []
    for vid, x in feats.items():
        entry = ann["database"][vid]
        if entry["subset"] != "training":
            continue
        labels = np.zeros(3, dtype=np.float32)
        action = np.zeros(len(x), dtype=bool)
        for a in entry["annotations"]:
            labels[CLASSES.index(a["label"])] = 1
            action[int(round(a["segment"][0] / snippet_seconds)): int(round(a["segment"][1] / snippet_seconds))] = True
        item = VideoItem(vid, x, labels, entry["duration"])
        if clicks:
            item.clicks = np.flatnonzero(~action)[[0, -1]].astype(np.int64)
        items.append(item)
    return items, list(CLASSES)


def junk_padding(features: torch.Tensor, length: int) -> torch.Tensor:
    """A copy of a batch's features with video 0's padded slots (from `length` on) set to 100."""
    junk = features.clone()
    junk[0, length:] = 100.0
    return junk


def padded_and_alone(model, batch: dict[str, Any], length: int):
    """Outputs (no gradient) of `model` on the batch with junk in video 0's padding, and on video 0
    alone cut to its `length`: whatever sits in padded slots must not matter."""
    with torch.no_grad():
        padded = model(junk_padding(batch["features"], length), batch["mask"])
        alone = model(batch["features"][:1, :length])
    return padded, alone


def synthetic_run_fixture(name: str, overrides: dict[str, Any], epochs: int):
    """A module-scoped fixture: `run_synthetic` of localizer `name` (seed 0, one torch thread),
    shared by a test file's synthetic-mAP and checkpoint tests."""

    @pytest.fixture(scope="module")
    def synthetic_run(tmp_path_factory):
        from wtal.pipeline.synthetic_check import run_synthetic

        torch.set_num_threads(1)
        return run_synthetic(name, tmp_path_factory.mktemp(f"{name}_synth"), overrides=overrides, seed=0, epochs=epochs)

    return synthetic_run


def assert_short_videos_work(model, batch: dict[str, Any], epoch: int = 0, backward: bool = True) -> list:
    """Finite losses on a batch of very short videos (that back-propagate, with `backward`), and
    detection on a video as long as the first gives a (T, C) CAS and proposals inside it;
    returns the proposals."""
    losses = model.compute_losses(batch, epoch)
    assert all(torch.isfinite(v) for v in losses.values())
    if backward:
        losses["total"].backward()
    length = int(batch["mask"][0].sum())
    # the per-video time base detect_videos adds (wtal's 16-frame snippets at 25 fps)
    cfg = {**type(model).test_defaults, VIDEO_SNIPPET_SECONDS: 0.64, VIDEO_FRAMES_PER_SNIPPET: 16.0}
    proposals, inference = model.detect(torch.randn(length, batch["features"].shape[-1]), cfg)
    assert inference.cas.shape == (length, batch["labels"].shape[1])
    assert all(0 <= p.start < p.end <= length for p in proposals)
    return proposals


def assert_beats_trivial(run: dict[str, Any], margin: float, falling: str | None = None) -> None:
    """mAP@0.5 (index 4) and average mAP of a `run_synthetic` result beat the trivial detector's by
    `margin`; with `falling`, that training-loss term also ended below where it started."""
    report, trivial = run["report"], run["trivial"]
    assert report.mAP[4] > trivial.mAP[4] + margin, (report.mAP, trivial.mAP)
    assert report.average_mAP > trivial.average_mAP + margin, (report.average_mAP, trivial.average_mAP)
    if falling is not None:
        history = run["history"]
        assert history[-1][falling] < history[0][falling], (history[0][falling], history[-1][falling])


def assert_reload_identical(run: dict[str, Any], directory, num_videos=8):
    """Save a `run_synthetic` model, load it back on CPU and check that both give the same, non-empty
    detections on the first `num_videos` test videos; returns the loaded model and the detections."""
    model, cfg = run["model"], run["test_config"]
    names, snippet = run["annotations"].class_names, run["features"].snippet_seconds
    items = run["test_items"][:num_videos]
    save_checkpoint(directory, model, names, {}, cfg, snippet)
    loaded, payload = load_checkpoint(directory, "cpu")
    dev = torch.device("cpu")
    before, _ = detect_videos(model, items, cfg, names, snippet, dev)
    after, _ = detect_videos(loaded, items, payload["test_config"], names, snippet, dev)
    assert before == after
    assert sum(len(v) for v in before.values()) > 0
    return loaded, before
