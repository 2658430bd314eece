"""The `Localizer` interface, the model registry and the pieces the five methods share.

A localizer is an `nn.Module` that maps snippet features (B, T, D) plus a padding mask (B, T) to
named outputs, owns its losses, and turns one video's features into scored proposals. Three
flat groups of settings, each with the paper's defaults, are declared per method:

- constructor keyword arguments (architecture and loss weights), recorded automatically on
  every instance (`hparams()`) and set as attributes of the same name,
- `train_defaults` (optimiser, batch, epochs, sampled length T),
- `test_defaults` (class rejection, CAS thresholds, OIC, NMS, and the post-processing
  conventions of `wtal.postprocess.proposals.POSTPROCESS_DEFAULTS`).

`--set key=value` on the command line addresses any of them by name (`wtal.models.settings`).
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import SettingsError, WtalError
from ..postprocess.proposals import POSTPROCESS_DEFAULTS, Proposal, cas_detections

REGISTRY: dict[str, type["Localizer"]] = {}
_NOT_HPARAMS = ("self", "feature_dim", "num_classes")


class LocalizerError(WtalError, ValueError):
    """Training input that a localizer cannot learn from (one line for the user)."""


def register(cls: type["Localizer"]) -> type["Localizer"]:
    """Class decorator adding a localizer to the registry under `cls.name`; an empty or
    already registered name is a bug of the model module."""
    if not cls.name:
        raise TypeError(f"{cls.__module__}.{cls.__qualname__}: a registered localizer needs a non-empty `name`")
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        other = REGISTRY[cls.name]
        raise TypeError(f"model name {cls.name!r} is registered twice: {other.__module__}.{other.__qualname__} "
                        f"and {cls.__module__}.{cls.__qualname__}")
    REGISTRY[cls.name] = cls
    return cls


def get_localizer(name: str) -> type["Localizer"]:
    """The localizer class registered as `name` (`wtal.models` imports every model module)."""
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


Batch = dict[str, Any]  # features, mask, labels, background, lengths, video_ids (see wtal.models.train.collate)


def _recording(init: Callable[..., None]) -> Callable[..., None]:
    """Wrap a localizer's `__init__` so the outermost call records its bound keyword arguments."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if "_hparams" not in self.__dict__:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            recorded: dict[str, Any] = {}
            for key, value in bound.arguments.items():
                kind = signature.parameters[key].kind
                if kind is inspect.Parameter.VAR_KEYWORD:
                    recorded.update(value)
                elif kind is not inspect.Parameter.VAR_POSITIONAL and key not in _NOT_HPARAMS:
                    recorded[key] = value
            object.__setattr__(self, "_hparams", recorded)
        init(self, *args, **kwargs)

    return __init__


class Localizer(nn.Module):
    """Base class of every weakly-supervised temporal action localizer.

    Subclasses set `name` (and `paper`), `train_defaults`, `test_defaults`, implement `forward`,
    `compute_losses` and `infer`, and may override `detect` (for proposal schemes other than
    thresholding the CAS), `make_optimizers` and `fit_step` (for alternating schedules),
    `check_items` (pre-flight checks of the training videos) and `on_epoch_end`. Constructor
    keyword arguments need no copying: they are recorded and set as attributes before the
    subclass's own `__init__` body runs past `super().__init__(feature_dim, num_classes)`.
    `setting_help` gives a short description of a setting for `wtal models NAME`.
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    needs_clicks: ClassVar[bool] = False
    setting_help: ClassVar[dict[str, str]] = {}
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

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _recording(cls.__dict__["__init__"])  # type: ignore[method-assign]

    def __init__(self, feature_dim: int, num_classes: int):
        super().__init__()
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        for key, value in self.hparams().items():
            setattr(self, key, value)

    if TYPE_CHECKING:  # recorded constructor arguments are set as attributes at run time
        def __getattr__(self, name: str) -> Any: ...

    # ----------------------------------------------------------------- settings
    @classmethod
    def hparam_defaults(cls) -> dict[str, Any]:
        """Constructor keyword arguments (besides feature_dim, num_classes) and their defaults.

        A subclass whose `__init__` takes `**kwargs` inherits the rest from its parents.
        """
        defaults: dict[str, Any] = {}
        for klass in cls.__mro__:
            if klass is Localizer or not issubclass(klass, Localizer) or "__init__" not in klass.__dict__:
                continue
            params = inspect.signature(klass.__dict__["__init__"]).parameters
            for key, p in params.items():
                if key not in _NOT_HPARAMS and p.default is not inspect.Parameter.empty:
                    defaults.setdefault(key, p.default)
            if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
                break
        return defaults

    def hparams(self) -> dict[str, Any]:
        """The constructor arguments this instance was built with (saved in checkpoints)."""
        return {**self.hparam_defaults(), **self.__dict__.get("_hparams", {})}

    # ----------------------------------------------------------------- training
    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def compute_losses(self, batch: Batch, epoch: int) -> dict[str, torch.Tensor]:
        """Named loss terms for one batch; must include "total"."""
        raise NotImplementedError

    def make_optimizers(self, cfg: dict[str, Any]) -> dict[str, torch.optim.Optimizer]:
        """One Adam over all parameters (methods with alternating schedules override)."""
        return {"main": torch.optim.Adam(self.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])}

    def fit_step(self, batch: Batch, optimizers: dict[str, torch.optim.Optimizer], epoch: int) -> dict[str, float]:
        """One optimisation step; returns the loss terms as floats."""
        losses = self.compute_losses(batch, epoch)
        opt = optimizers["main"]
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        opt.step()
        return {k: float(v.detach()) for k, v in losses.items()}

    def on_train_begin(self, items) -> None:
        """Hook before the first epoch with the training VideoItems (full length, unsampled)."""

    def check_items(self, items: list[Any]) -> None:
        """Refuse training videos this method cannot learn from, before the first epoch
        (`items` are `wtal.models.train.VideoItem`s); raise `LocalizerError`."""

    def on_epoch_end(self, epoch: int, batches: Callable[[], Iterator[Batch]]) -> None:
        """Hook after each training epoch (memory banks, schedules); `batches()` collates the
        epoch's batches again, one at a time, on the model's device."""

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
