"""Weakly-supervised temporal action localizers behind one `Localizer` interface."""
from .base import REGISTRY, Inference, Localizer, get_localizer, register, split_settings

MODEL_MODULES = ("mil", "ecm", "backtal", "rskp", "cleannet", "dgam")

__all__ = ["REGISTRY", "Inference", "Localizer", "get_localizer", "register", "split_settings", "MODEL_MODULES"]
