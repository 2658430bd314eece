"""The `Localizer` interface, the model registry and the pieces the five methods share.

A localizer is an `nn.Module` that maps snippet features (B, T, D) plus a padding mask (B, T) to
named outputs, owns its losses, and turns one video's features into scored proposals. Three
flat groups of settings, each with the paper's defaults, are declared per method:

- constructor keyword arguments (architecture and loss weights),
- `train_defaults` (optimiser, batch, epochs, sampled length T),
- `test_defaults` (class rejection, CAS thresholds, OIC, NMS, and the post-processing
  conventions of `wtal.postprocess.proposals.POSTPROCESS_DEFAULTS`).

`--set key=value` on the command line addresses any of them by name (`split_settings`).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import SettingsError
from ..postprocess.proposals import POSTPROCESS_DEFAULTS, Proposal, cas_detections

REGISTRY: dict[str, type["Localizer"]] = {}


def register(cls: type["Localizer"]) -> type["Localizer"]:
    """Class decorator adding a localizer to the registry under `cls.name`."""
    REGISTRY[cls.name] = cls
    return cls


def get_localizer(name: str) -> type["Localizer"]:
    """The localizer class registered as `name` (imports the model modules on first use)."""
    import importlib

    from . import MODEL_MODULES

    for module in MODEL_MODULES:
        importlib.import_module(f"{__package__}.{module}")
    if name not in REGISTRY:
        raise SettingsError(f"unknown model {name!r}; choose one of {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


@dataclass
class Inference:
    """What a localizer predicts for one video.

    cas: (T, C) per-class activation in [0, 1] used for thresholding.
    video_scores: (C,) video-level class probabilities in [0, 1].
    extras: method-specific arrays (attention, background score, per-stream CAS ...).
    """

    cas: np.ndarray
    video_scores: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)


class Localizer(nn.Module):
    """Base class of every weakly-supervised temporal action localizer.

    Subclasses set `name`, `train_defaults`, `test_defaults`, implement `forward`,
    `compute_losses` and `infer`, and may override `detect` (for proposal schemes other than
    thresholding the CAS), `make_optimizers` and `fit_step` (for alternating schedules).
    """

    name: ClassVar[str] = ""
    needs_clicks: ClassVar[bool] = False
    train_defaults: ClassVar[dict[str, Any]] = {
        "lr": 1e-4,
        "weight_decay": 5e-4,
        "batch_size": 16,
        "epochs": 100,
        "max_len": 750,
        "train_sampling": "segments",
        "lr_decay_epochs": (),
        "lr_decay_factor": 0.1,
    }
    test_defaults: ClassVar[dict[str, Any]] = {
        "class_threshold": 0.25,
        "cas_thresholds": (0.0, 0.25, 0.025),
        "oic_outer_ratio": 0.25,
        "oic_class_weight": 0.2,
        "nms_threshold": 0.5,
        "test_sampling": "native",
        "test_len": 750,
        **POSTPROCESS_DEFAULTS,
    }

    def __init__(self, feature_dim: int, num_classes: int):
        super().__init__()
        self.feature_dim = feature_dim
        self.num_classes = num_classes

    # ----------------------------------------------------------------- settings
    @classmethod
    def hparam_defaults(cls) -> dict[str, Any]:
        """Constructor keyword arguments (besides feature_dim, num_classes) and their defaults."""
        params = inspect.signature(cls.__init__).parameters
        return {
            k: p.default
            for k, p in params.items()
            if k not in ("self", "feature_dim", "num_classes") and p.default is not inspect.Parameter.empty
        }

    def hparams(self) -> dict[str, Any]:
        """The constructor arguments this instance was built with (saved in checkpoints)."""
        return {k: getattr(self, k) for k in self.hparam_defaults()}

    # ----------------------------------------------------------------- training
    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def compute_losses(self, batch: dict[str, torch.Tensor], epoch: int) -> dict[str, torch.Tensor]:
        """Named loss terms for one batch; must include "total"."""
        raise NotImplementedError

    def make_optimizers(self, cfg: dict[str, Any]) -> dict[str, torch.optim.Optimizer]:
        """One Adam over all parameters (methods with alternating schedules override)."""
        return {"main": torch.optim.Adam(self.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])}

    def fit_step(self, batch: dict[str, torch.Tensor], optimizers: dict[str, torch.optim.Optimizer],
                 epoch: int) -> dict[str, float]:
        """One optimisation step; returns the loss terms as floats."""
        losses = self.compute_losses(batch, epoch)
        opt = optimizers["main"]
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        opt.step()
        return {k: float(v.detach()) for k, v in losses.items()}

    def on_train_begin(self, items) -> None:
        """Hook before the first epoch with the training VideoItems (full length, unsampled)."""

    def on_epoch_end(self, epoch: int, loader) -> None:
        """Hook after each training epoch (memory banks, schedules)."""

    # ---------------------------------------------------------------- inference
    @torch.no_grad()
    def infer(self, features: torch.Tensor) -> Inference:
        """Predict one video: `features` is (T, D) on the model's device."""
        raise NotImplementedError

    @torch.no_grad()
    def detect(self, features: torch.Tensor, cfg: dict[str, Any]) -> tuple[list[Proposal], Inference]:
        """Scored proposals in snippet units for one video, after per-class NMS (`cas_detections`)."""
        inference = self.infer(features)
        return cas_detections(inference.cas, inference.video_scores, cfg), inference


# --------------------------------------------------------------------------- settings
def _coerce(key: str, text: str, default: Any) -> Any:
    """Parse `text` to the type of `default` (bool, int, float, str or tuple of numbers)."""
    try:
        if isinstance(default, bool):
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        if isinstance(default, (tuple, list)):
            return tuple(float(p) for p in text.replace(":", ",").split(",") if p)
        if default is None:
            try:
                return float(text) if "." in text or "e" in text else int(text)
            except ValueError:
                return text
        return type(default)(text)
    except ValueError:
        raise SettingsError(f"--set {key}={text}: expected a value like {default!r}") from None


def split_settings(cls: type[Localizer], overrides: dict[str, str] | None) -> tuple[dict, dict, dict]:
    """Merge `--set` overrides into (hparams, train config, test config) of `cls`.

    Unknown keys are an error listing every valid name.
    """
    hparams = cls.hparam_defaults()
    train = dict(cls.train_defaults)
    test = dict(cls.test_defaults)
    for key, value in (overrides or {}).items():
        for group in (hparams, train, test):
            if key in group:
                group[key] = _coerce(key, value, group[key]) if isinstance(value, str) else value
                break
        else:
            valid = sorted(set(hparams) | set(train) | set(test))
            raise SettingsError(f"--set {key}: not a setting of {cls.name}; valid: {', '.join(valid)}")
    return hparams, train, test


# ----------------------------------------------------------------------- shared pieces
class TemporalConvHead(nn.Module):
    """Stack of temporal 1-D convolutions over (B, T, D) features returning (B, T, out)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int | None = None, kernel: int = 3, layers: int = 2,
                 dropout: float = 0.5, negative_slope: float = 0.2):
        super().__init__()
        blocks: list[nn.Module] = []
        dim = in_dim
        for _ in range(layers):
            blocks += [nn.Conv1d(dim, hidden, kernel, padding=kernel // 2), nn.LeakyReLU(negative_slope), nn.Dropout(dropout)]
            dim = hidden
        if out_dim is not None:
            blocks.append(nn.Conv1d(dim, out_dim, 1))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.transpose(1, 2)).transpose(1, 2)


def topk_mean(scores: torch.Tensor, k: int | torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of the k highest values along time of (B, T, C) scores, ignoring padded snippets.

    `k` is an int or a (B,) tensor of per-video k (e.g. max(1, length // 8)).
    """
    if mask is not None:
        scores = scores.masked_fill(~mask.unsqueeze(-1), float("-inf"))
    T = scores.shape[1]
    k_t = torch.as_tensor(k, device=scores.device).reshape(-1)
    k_max = int(min(T, int(k_t.max())))
    top = scores.topk(k_max, dim=1).values  # (B, k_max, C)
    keep = torch.arange(k_max, device=scores.device).view(1, -1, 1) < k_t.view(-1, 1, 1)
    top = torch.where(keep, top, torch.zeros_like(top))
    return top.sum(1) / k_t.clamp(min=1).view(-1, 1).to(top.dtype)


def topk_count(mask: torch.Tensor | None, T: int, fraction: float = 0.125, batch: int = 1, device=None) -> torch.Tensor:
    """Per-video k = max(1, int(length * fraction)) as a (B,) long tensor (the official codes'
    int(T * ratio); a float so that ActivityNet's 0.6 T is expressible, 0.125 = T // 8)."""
    if mask is None:
        return torch.full((batch,), max(1, int(T * fraction)), dtype=torch.long, device=device)
    return torch.floor(mask.sum(1).to(torch.float64) * fraction).long().clamp(min=1)


def video_label_loss(logits_or_probs: torch.Tensor, labels: torch.Tensor, probs: bool = False) -> torch.Tensor:
    """Multi-label video classification loss against normalised multi-hot labels (the MIL CE)."""
    target = labels / labels.sum(-1, keepdim=True).clamp(min=1e-8)
    logp = torch.log(logits_or_probs.clamp(min=1e-8)) if probs else F.log_softmax(logits_or_probs, dim=-1)
    return -(target * logp).sum(-1).mean()


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None, dim: int = 1) -> torch.Tensor:
    """Mean over `dim` of (B, T, ...) ignoring padded snippets."""
    if mask is None:
        return x.mean(dim)
    m = mask.to(x.dtype)
    while m.dim() < x.dim():
        m = m.unsqueeze(-1)
    return (x * m).sum(dim) / m.sum(dim).clamp(min=1)
