"""The three groups of a localizer's settings, typed `--set` parsing, and their description.

Groups: "model" (constructor keyword arguments, typed by their annotations through
`typing.get_type_hints`), "train" (`train_defaults`) and "test" (`test_defaults`), the last two
typed by their default values. A name belongs to exactly one group. A command states which
groups it uses (`wtal detect` only the test group); a setting of another group is an error
rather than being ignored.
"""
from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any

from .._parse import parse_value
from ..errors import SettingsError
from .base import Localizer

GROUPS = ("model", "train", "test")

# short descriptions of the settings most methods share (a model's `setting_help` adds its own)
COMMON_HELP = {
    "lr": "learning rate",
    "weight_decay": "L2 weight decay of the optimiser",
    "batch_size": "videos per training batch",
    "epochs": "training epochs (the CLI's --epochs is an alias of --set epochs=N)",
    "max_len": "snippets sampled per video and epoch (longer videos: one random snippet per segment)",
    "train_sampling": "how a training video is brought to max_len snippets (see wtal.models.sampling)",
    "test_sampling": "how a test video is brought to test_len snippets (native: as it is)",
    "test_len": "snippets a test video is brought to when test_sampling is not native",
    "momentum": "SGD momentum",
    "adam_betas": "Adam's (beta1, beta2)",
    "lr_step_videos": "divide the learning rate by 10 every this many training videos",
    "class_threshold": "video score a class needs to be localised",
    "cas_thresholds": "CAS thresholds start,stop,step (stop excluded)",
    "oic_outer_ratio": "outer region of the outer-inner contrast, as a fraction of the proposal length",
    "oic_class_weight": "weight of the video class score added to a proposal's OIC score",
    "nms_threshold": "tIoU above which per-class NMS drops the lower-scored proposal",
    "max_detections": "best detections kept per video (none: no cap)",
    "class_fallback": "none: no detections when no class passes; top: the top-scoring class then",
    "cas_upsample": "CAS upsampling before thresholding: 1 (none), a factor, or frames",
    "threshold_smoothing": "sigma of a Gaussian applied to the thresholded signal (0: off)",
    "oic_signal": "raw or thresholded CAS inside the OIC means",
    "end_extension": "positions added at the end of each proposal",
    "min_run_length": "shortest run kept as a proposal",
    "class_score": "weighted (oic_class_weight x video score) or constant class-score term",
    "nms_overlap": "overlap of NMS: tiou, tiou_plus_one or over_lower",
    "hidden": "hidden width",
    "dropout": "dropout probability",
    "topk_ratio": "top-k pooling takes k = T // topk_ratio snippets",
}


@dataclass(frozen=True)
class Setting:
    """One setting of a localizer: its group, default, declared type and a short description."""

    name: str
    group: str
    default: Any
    type: Any
    help: str

    @property
    def type_name(self) -> str:
        return _type_name(self.type)


def _type_name(kind: Any) -> str:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(kind))
    if kind is type(None):
        return "None"
    if kind is Any:
        return "number or text"
    if isinstance(kind, type) and not typing.get_args(kind):
        return kind.__name__
    return str(kind).replace("typing.", "")


def _value_type(value: Any) -> Any:
    """The type a train/test default declares by its value (a tuple by its elements)."""
    if value is None:
        return typing.Optional[Any]
    if isinstance(value, tuple):
        elements = {type(v) for v in value}
        return tuple[elements.pop(), ...] if len(elements) == 1 else tuple  # type: ignore[misc]
    return type(value)


def settings(cls: type[Localizer]) -> list[Setting]:
    """Every setting of `cls`, group by group, in declaration order."""
    hints: dict[str, Any] = {}
    helps = {**COMMON_HELP}
    for klass in reversed(cls.__mro__):
        if issubclass(klass, Localizer) and "__init__" in klass.__dict__:
            hints.update(typing.get_type_hints(klass.__dict__["__init__"]))
        helps.update(klass.__dict__.get("setting_help", {}))
    out = [Setting(k, "model", v, hints.get(k, _value_type(v)), helps.get(k, "")) for k, v in cls.hparam_defaults().items()]
    out += [Setting(k, "train", v, _value_type(v), helps.get(k, "")) for k, v in cls.train_defaults.items()]
    out += [Setting(k, "test", v, _value_type(v), helps.get(k, "")) for k, v in cls.test_defaults.items()]
    return out


def split_settings(cls: type[Localizer], overrides: dict[str, Any] | None, groups: tuple[str, ...] = GROUPS,
                   command: str = "train") -> tuple[dict, dict, dict]:
    """Merge `--set` overrides into (hparams, train config, test config) of `cls`.

    String values are parsed as each setting's declared type; other values are taken as they
    are. Unknown keys are an error listing every valid name; a key of a group that `command`
    does not use (`groups`) is an error naming the groups it does use.
    """
    table = {s.name: s for s in settings(cls)}
    merged: dict[str, dict[str, Any]] = {
        "model": cls.hparam_defaults(), "train": dict(cls.train_defaults), "test": dict(cls.test_defaults)}
    for key, value in (overrides or {}).items():
        setting = table.get(key)
        if setting is None:
            raise SettingsError(f"--set {key}: not a setting of {cls.name}; valid: {', '.join(sorted(table))}")
        if setting.group not in groups:
            usable = sorted(s.name for s in table.values() if s.group in groups)
            raise SettingsError(f"--set {key}: a {setting.group} setting of {cls.name}, which `wtal {command}` would "
                                 f"ignore; it takes {' and '.join(groups)} settings: {', '.join(usable)}")
        if isinstance(value, str):
            try:
                value = parse_value(value, setting.type, setting.default)
            except (TypeError, ValueError):
                raise SettingsError(f"--set {key}={value}: expected {setting.type_name} "
                                     f"(default {setting.default!r})") from None
        merged[setting.group][key] = value
    return merged["model"], merged["train"], merged["test"]


def check_groups(cls: type[Localizer]) -> None:
    """A setting name may belong to one group only (a bug of the model module otherwise)."""
    seen: dict[str, str] = {}
    for setting in settings(cls):
        if setting.name in seen:
            raise TypeError(f"{cls.name}: setting {setting.name!r} is both a {seen[setting.name]} and a "
                            f"{setting.group} setting")
        seen[setting.name] = setting.group
