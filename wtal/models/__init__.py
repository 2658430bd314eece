"""Weakly-supervised temporal action localizers behind one `Localizer` interface.

Importing the package imports every model module, so `REGISTRY` is complete at once.
"""
from . import backtal, cleannet, dgam, ecm, mil, rskp  # noqa: F401  (each registers its localizers)
from .base import REGISTRY, Inference, Localizer, LocalizerError, get_localizer, register
from .settings import Setting, check_groups, settings, split_settings

for _cls in REGISTRY.values():
    check_groups(_cls)

__all__ = ["REGISTRY", "Inference", "Localizer", "LocalizerError", "Setting", "get_localizer", "register", "settings",
           "split_settings"]
