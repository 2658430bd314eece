"""Saving and loading trained localizers (`RUN/checkpoint.pt`).

A checkpoint holds only tensors and plain values, so it loads with `weights_only=True`; it
records everything detection needs: the method, its constructor arguments, train and test
settings, class names, feature width, snippet length and how the epoch was chosen.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from wtal._io import atomic_write, load_torch_dict
from wtal.errors import WtalError

from .base import Localizer, get_localizer

FORMAT = "wtal-checkpoint-v1"
REQUIRED = ("format", "model", "feature_dim", "class_names", "hparams", "train_config", "test_config", "state_dict",
            "snippet_seconds")


class CheckpointError(WtalError, ValueError):
    """A checkpoint file that cannot be used; the message names the file and field."""


def checkpoint_path(run: str | os.PathLike) -> Path:
    """`RUN/checkpoint.pt` for a run directory, or the file itself."""
    run = Path(run)
    return run / "checkpoint.pt" if run.is_dir() else run


def save_checkpoint(run: str | os.PathLike, model: Localizer, class_names: list[str], train_config: dict,
                    test_config: dict, snippet_seconds: float, **info: Any) -> Path:
    """Write `RUN/checkpoint.pt` atomically; `info` adds plain metadata (seed, selection, ...)."""
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "model": model.name,
        "feature_dim": model.feature_dim,
        "class_names": list(class_names),
        "hparams": model.hparams(),
        "train_config": dict(train_config),
        "test_config": dict(test_config),
        "snippet_seconds": float(snippet_seconds),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "info": info,
    }
    return atomic_write(run / "checkpoint.pt", lambda f: torch.save(payload, f))


def load_checkpoint(run: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[Localizer, dict[str, Any]]:
    """Rebuild the localizer of a run and return it (eval mode) with the checkpoint's metadata."""
    path = checkpoint_path(run)
    if not path.exists():
        raise CheckpointError(f"{path}: no checkpoint (expected a run directory with checkpoint.pt or the file)")
    payload = load_torch_dict(path, "wtal checkpoint", CheckpointError, REQUIRED)
    if payload["format"] != FORMAT:
        raise CheckpointError(f"{path}: field 'format' is {payload['format']!r}, expected {FORMAT!r}")
    try:
        cls = get_localizer(payload["model"])
    except ValueError as exc:
        raise CheckpointError(f"{path}: field 'model': {exc}") from None
    for key, kind in (("hparams", dict), ("class_names", list), ("state_dict", dict), ("feature_dim", int)):
        if not isinstance(payload[key], kind) or isinstance(payload[key], bool):
            raise CheckpointError(f"{path}: field '{key}': expected {kind.__name__}, got {type(payload[key]).__name__}")
    hparams = dict(payload["hparams"])
    if "topk_ratio" in hparams and "topk_ratio" not in cls.hparam_defaults():
        hparams["topk_fraction"] = 1.0 / hparams.pop("topk_ratio")  # checkpoints before the float top-k
    if payload["model"] == "backtal":
        hparams.setdefault("affinity_layout", "paper")  # checkpoints before the official layout were trained per tap
    unknown = sorted(set(hparams) - set(cls.hparam_defaults()))
    if unknown:
        raise CheckpointError(f"{path}: field 'hparams': {', '.join(unknown)} not among {cls.name}'s settings "
                              f"({', '.join(sorted(cls.hparam_defaults()))})")
    model = cls(payload["feature_dim"], len(payload["class_names"]), **hparams)
    try:
        result = model.load_state_dict(payload["state_dict"], strict=False)
    except RuntimeError as exc:  # shapes unlike those the feature width and hparams give
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise CheckpointError(f"{path}: field 'state_dict' does not match {cls.name}: {lines[-1] if lines else exc}") from None
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{path}: field 'state_dict' does not match {cls.name}: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    model.to(device).eval()
    return model, payload
