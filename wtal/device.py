"""Turn a user's device choice ("cpu", "cuda", "cuda:N", "auto") into a `torch.device`.

One place for this so every command treats `--device` the same way: "auto" picks CUDA when
it is available, and asking for CUDA on a machine without it is an error, not a silent CPU run.
"""
from __future__ import annotations

import torch

from .errors import SettingsError, UnavailableError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Return the `torch.device` for `device`; raise if CUDA is asked for but unavailable."""
    name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        try:
            resolved = torch.device(name)
        except RuntimeError as err:
            raise SettingsError(f"device: invalid CUDA device {device!r}") from err
        if not torch.cuda.is_available():
            raise UnavailableError(
                f"device: {device!r} was requested but CUDA is not available "
                f"(torch {torch.__version__}); use --device cpu or --device auto"
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise UnavailableError(
                f"device: {device!r} was requested but only "
                f"{torch.cuda.device_count()} CUDA device(s) exist"
            )
        return resolved
    raise SettingsError(f"device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
