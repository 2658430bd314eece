"""The one base class of every error meant for a user.

The CLI prints a `WtalError` (and an `OSError`) as one line, "file: field: problem", and lets any
other exception raise with its traceback: those are bugs. Each subsystem derives its own class
(`AnnotationError`, `FeatureError`, `CacheError`, ...) from `WtalError`; the `ValueError` /
`RuntimeError` second base keeps callers that caught those working.
"""
from __future__ import annotations


class WtalError(Exception):
    """An error caused by the user's input or environment; its message is one line."""


class SettingsError(WtalError, ValueError):
    """A bad option or setting value: unknown model, malformed `--set`, device, flow preset, ..."""


class UnavailableError(WtalError, RuntimeError):
    """A requested device or backend does not exist here (no CUDA, OpenCV without CUDA, ...)."""
