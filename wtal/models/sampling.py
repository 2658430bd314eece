"""Bringing a video's (T, D) snippet features to the length a method trains or tests at.

Modes (`train_sampling` / `test_sampling`, with the length `max_len` / `test_len`):

- "native": every snippet, T unchanged (wtal's test path today);
- "segments": all snippets when T <= length, else one random snippet from each of `length` equal
  segments, the middle one without a generator (wtal's training sampler today);
- "interpolate": linear interpolation to exactly `length` slots with half-pixel centres (slot j
  samples source coordinate (j + 0.5) T / length - 0.5): the official ECM / BackTAL / BaS-Net test
  path, and their training path on pre-interpolated features;
- "perturb": exactly `length` snippet indices, slot j a random snippet of
  [floor(j T / length), floor((j + 1) T / length)] when those differ, else the first, so short
  videos repeat snippets (BaS-Net's training sampler); without a generator the first of each;
- "uniform": videos longer than `length` take snippets floor(j T / length), shorter ones stay
  whole (DGAM's test-time T' = 400).

Each call also returns `scale`, the number of source snippets per output slot (T / length, or 1):
slot positions times `scale` are source snippets, which the video's own seconds per snippet turn
into seconds.
"""
from __future__ import annotations

import numpy as np

from ..errors import SettingsError

SAMPLING_MODES = ("native", "segments", "interpolate", "perturb", "uniform")


def check_mode(mode: str, key: str) -> str:
    """`mode` if it is a sampling mode, else a ValueError naming the setting `key`."""
    if mode not in SAMPLING_MODES:
        raise SettingsError(f"{key}={mode!r}: choose one of {', '.join(SAMPLING_MODES)}")
    return mode


def segment_indices(T: int, length: int, rng: np.random.Generator | None) -> np.ndarray:
    """The "segments" indices (see the module docstring)."""
    if T <= length:
        return np.arange(T)
    bounds = np.floor(np.linspace(0, T, length + 1)).astype(int)
    lo, hi = bounds[:-1], np.maximum(bounds[1:], bounds[:-1] + 1)
    if rng is None:
        return (lo + hi - 1) // 2
    return lo + (rng.random(length) * (hi - lo)).astype(int)


def perturb_indices(T: int, length: int, rng: np.random.Generator | None) -> np.ndarray:
    """The "perturb" indices: exactly `length`, a random snippet of each slot's span."""
    lo = np.floor(np.arange(length) * T / length).astype(int)
    hi = np.minimum(np.floor(np.arange(1, length + 1) * T / length).astype(int), T - 1)
    if rng is None:
        return lo
    spans = np.maximum(hi - lo, 0)
    pick = lo + np.floor(rng.random(length) * (spans + 1)).astype(int)
    return np.where(spans > 0, np.minimum(pick, hi), lo)


def uniform_indices(T: int, length: int) -> np.ndarray:
    """The "uniform" indices: floor(j T / length) when T > length, else every snippet."""
    if T <= length:
        return np.arange(T)
    return np.floor(np.arange(length) * T / length).astype(int)


def interpolate(features: np.ndarray, length: int) -> np.ndarray:
    """(T, D) linearly interpolated to (length, D) with half-pixel centres."""
    x = np.asarray(features, dtype=np.float32)
    T = x.shape[0]
    pos = np.clip((np.arange(length) + 0.5) * T / length - 0.5, 0.0, T - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, T - 1)
    w = (pos - lo).astype(np.float32)[:, None]
    return x[lo] * (1 - w) + x[hi] * w


def resample(features: np.ndarray, mode: str, length: int, rng: np.random.Generator | None = None
             ) -> tuple[np.ndarray, float]:
    """(features brought to the mode's length, source snippets per output slot)."""
    T = len(features)
    check_mode(mode, "sampling")
    if mode == "native" or length < 1:
        return features, 1.0
    if mode == "interpolate":
        return interpolate(features, length), T / length
    if mode == "segments":
        idx = segment_indices(T, length, rng)
    elif mode == "perturb":
        idx = perturb_indices(T, length, rng)
    else:
        idx = uniform_indices(T, length)
    return features[idx], T / len(idx)


def click_slots(clicks: np.ndarray, T: int, slots: int, mode: str) -> np.ndarray:
    """Output slots holding each clicked source snippet (clicks outside the video are dropped)."""
    clicks = np.asarray(clicks, dtype=np.int64)
    clicks = clicks[(clicks >= 0) & (clicks < T)]
    if mode == "segments" or slots == T:
        # each sampled slot stands for one equal segment of the source video
        bounds = np.floor(np.linspace(0, T, slots + 1))
        slot = np.searchsorted(bounds, clicks, side="right") - 1
    else:
        slot = np.floor((clicks + 0.5) * slots / T).astype(np.int64)
    return slot[(slot >= 0) & (slot < slots)]
