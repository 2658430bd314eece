"""Synthetic feature datasets with known action segments, for tests, benchmarks and the demo.

Each class has a prototype direction in feature space; action snippets carry their class's
prototype (with a ramp at the boundaries and noise), background snippets carry a slowly drifting
random background. Videos hold one or two classes with several instances each, so video-level
labels are weak and localisation is not trivial: the whole-video baseline scores low at high tIoU.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from wtal._io import write_json_atomic

from .features import DEFAULT_SNIPPET_SECONDS


def make_feature_dataset(
    num_classes: int = 4,
    num_train: int = 60,
    num_test: int = 30,
    dim: int = 64,
    length: tuple[int, int] = (80, 200),
    seed: int = 0,
    snippet_seconds: float = DEFAULT_SNIPPET_SECONDS,
    noise: float = 1.0,
) -> tuple[dict[str, np.ndarray], dict]:
    """Features {video_id: (T, dim) float32} and an ActivityNet-style annotation dict.

    Subsets are `training` and `validation` (the ActivityNet convention), so the default
    evaluation subset is `validation`.
    """
    rng = np.random.default_rng(seed)
    prototypes = rng.normal(size=(num_classes, dim))
    prototypes *= 2.5 / np.linalg.norm(prototypes, axis=1, keepdims=True) * np.sqrt(dim) / 4
    classes = [f"action_{c}" for c in range(num_classes)]
    features: dict[str, np.ndarray] = {}
    database: dict[str, dict] = {}
    for subset, count in (("training", num_train), ("validation", num_test)):
        for i in range(count):
            vid = f"synth_{subset}_{i:04d}"
            T = int(rng.integers(length[0], length[1] + 1))
            bg_walk = np.cumsum(rng.normal(scale=0.15, size=(T, dim)), axis=0)
            x = rng.normal(scale=noise, size=(T, dim)) + 0.3 * bg_walk / np.sqrt(np.arange(1, T + 1))[:, None]
            present = rng.choice(num_classes, size=1 + int(rng.random() < 0.3), replace=False)
            occupied = np.zeros(T, dtype=bool)
            annotations = []
            for c in present:
                for _ in range(int(rng.integers(1, 4))):
                    seg_len = int(rng.integers(max(4, T // 20), max(6, T // 6)))
                    for _attempt in range(20):
                        start = int(rng.integers(0, T - seg_len))
                        if not occupied[max(0, start - 3): start + seg_len + 3].any():
                            break
                    else:
                        continue
                    occupied[start:start + seg_len] = True
                    ramp = np.minimum(1.0, np.minimum(np.arange(1, seg_len + 1), np.arange(seg_len, 0, -1)) / 2.0)
                    x[start:start + seg_len] += ramp[:, None] * prototypes[c]
                    annotations.append({
                        "label": classes[c],
                        "segment": [round(start * snippet_seconds, 3), round((start + seg_len) * snippet_seconds, 3)],
                    })
            if not annotations:
                continue
            features[vid] = x.astype(np.float32)
            database[vid] = {
                "subset": subset,
                "duration": round(T * snippet_seconds, 3),
                "annotations": sorted(annotations, key=lambda a: a["segment"][0]),
            }
    return features, {"version": "wtal-synthetic", "database": database}


def write_feature_dataset(out_dir: str | Path, **kwargs) -> tuple[Path, Path]:
    """Write a synthetic dataset as `features/<vid>.npy` + `features/meta.json` + `annotations.json`."""
    out_dir = Path(out_dir)
    feat_dir = out_dir / "features"
    feat_dir.mkdir(parents=True, exist_ok=True)
    features, annotations = make_feature_dataset(**kwargs)
    for vid, x in features.items():
        np.save(feat_dir / f"{vid}.npy", x)
    seconds = kwargs.get("snippet_seconds", DEFAULT_SNIPPET_SECONDS)
    write_json_atomic(feat_dir / "meta.json", {"snippet_seconds": seconds, "fps": 25}, indent=None)
    ann_path = out_dir / "annotations.json"
    write_json_atomic(ann_path, annotations)
    return feat_dir, ann_path
