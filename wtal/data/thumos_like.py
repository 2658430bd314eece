"""A THUMOS14-like synthetic snippet-feature benchmark: THUMOS14's shape plus the hard parts of WTAL.

Why: `synthetic.make_feature_dataset` is easy (plain MIL reaches ~95 % mAP@0.5), so it tells a
broken model from a working one but cannot rank methods. This generator reproduces THUMOS14's
statistics and the confusions that make weakly-supervised localisation hard, seeded and
deterministic, and writes the public layouts wtal reads (`<vid>.npy` folder + meta.json,
ActivityNet-style JSON, simulated background clicks), so `wtal train/detect/evaluate` run on it
unchanged.

Layout (constants derived once from the public THUMOS14 ground truth,
`gt_thumos14_backtal.json`, 200 validation + 210 test videos, 6314 instances, at 0.64 s per
snippet; the package does not read that file):
- video length in snippets ~ lognormal (log-mean 5.43, log-std 0.88, i.e. median ~227 snippets
  = 2.4 min), clipped to 23-2600 snippets (15 s to ~28 min);
- one class per video, two with probability 0.15 (THUMOS14: 349 of 410 videos have one class);
- fraction of snippets inside actions per video ~ Beta(1.6, 3.3) (THUMOS14 quartiles 0.17 /
  0.28 / 0.46, mean 0.33);
- instance length ~ lognormal around the class's THUMOS14 median (`CLASS_MEDIAN_SNIPPETS`),
  per-video factor and per-instance log-std 0.6, clipped to 1-300 snippets; instances are laid
  out without overlap with random gaps, so their count follows from coverage and length.

Features: each stream (rgb, flow) lives in a `latent_dim` space embedded in `stream_dim`
dimensions by a fixed random orthonormal map (scaled so one feature dimension has about unit
variance), so the difficulty barely depends on the width; `stream_dim=1024` gives the 2048-d
I3D layout, a small width is for tests. In latent units, per snippet:
    background: per-video scene offset (`scene_offset`) + AR(1) noise (`noise_std`,
        `noise_corr`) + the class's scene appearance over the whole video in rgb (`class_scene`);
    action: amplitude `action_strength` x per-instance factor (log-std `strength_spread`) x
        boundary ramp (`ramp`) x a mix (Dirichlet `subpattern_concentration`) of the class's
        `subpatterns` sub-patterns; classes of one family (`family_size`) share
        `class_similarity` of their pattern; the evidence is split between rgb and flow by a
        per-class weight drawn from `rgb_weight_range`, and rgb and flow patterns are independent;
    context: `context_span` x instance length (at least 2 snippets) before and after each
        instance carry `context_strength` (flow: x `flow_context_ratio`) of its pattern,
        decaying linearly away from the instance;
    pauses: inside instances of at least `pause_min_length` snippets a two-state chain (mean
        run `pause_length`, stationary fraction `pause_fraction`) drops the action to context level.
Isotropic noise `feature_noise` is added in feature space. The features are zero-mean; with
`rectify=True` they are max(0, x), non-negative like I3D's average-pooled post-ReLU activations
(the same dataset otherwise). Methods whose constants were tuned on raw I3D features (absolute
CAS or attention thresholds, sums over snippets) assume non-negative features.
"""
from __future__ import annotations

import argparse
import io
import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write, write_json_atomic
from .._parse import parse_value
from .features import DEFAULT_SNIPPET_SECONDS

# THUMOS14's 20 classes with their median instance length in snippets (0.64 s), from the
# validation + test ground truth.
CLASS_MEDIAN_SNIPPETS = {
    "BaseballPitch": 4.7, "BasketballDunk": 2.3, "Billiards": 3.4, "CleanAndJerk": 13.7,
    "CliffDiving": 4.2, "CricketBowling": 1.9, "CricketShot": 1.7, "Diving": 3.9,
    "FrisbeeCatch": 3.6, "GolfSwing": 6.6, "HammerThrow": 11.1, "HighJump": 7.0,
    "JavelinThrow": 9.8, "LongJump": 11.1, "PoleVault": 10.0, "Shotput": 7.3,
    "SoccerPenalty": 4.5, "TennisSwing": 2.3, "ThrowDiscus": 6.6, "VolleyballSpiking": 2.7,
}
TRAIN_SUBSET, TEST_SUBSET = "validation", "test"


@dataclass(frozen=True)
class ThumosLikeConfig:
    """Every knob of the benchmark, with the calibrated defaults (see the module docstring)."""

    seed: int = 0
    num_classes: int = 20
    num_train: int = 200
    num_test: int = 200
    scale: float = 1.0  # multiplies the video counts (smaller CPU runs)
    stream_dim: int = 1024  # per stream: features are 2 * stream_dim wide (rgb first)
    latent_dim: int = 64
    snippet_seconds: float = DEFAULT_SNIPPET_SECONDS
    fps: float = 25.0  # the frame rate the features were extracted at (16 frames per 0.64 s snippet)
    # layout
    length_log_mean: float = 5.43
    length_log_std: float = 0.88
    length_range: tuple[int, int] = (23, 2600)
    two_class_prob: float = 0.15
    coverage_beta: tuple[float, float] = (1.6, 3.3)
    coverage_range: tuple[float, float] = (0.03, 0.85)
    instance_log_std: float = 0.6
    instance_range: tuple[int, int] = (1, 300)
    # evidence
    action_strength: float = 6.0
    strength_spread: float = 0.3
    subpatterns: int = 3
    subpattern_concentration: float = 0.5
    subpattern_share: float = 0.5  # fraction of a sub-pattern that is the class's common core
    family_size: int = 3
    class_similarity: float = 0.4
    rgb_weight_range: tuple[float, float] = (0.25, 0.75)
    ramp: float = 0.25
    context_strength: float = 0.5
    context_span: float = 1.0
    flow_context_ratio: float = 0.4
    class_scene: float = 0.3
    scene_offset: float = 0.3
    noise_std: float = 0.5
    noise_corr: float = 0.7
    pause_min_length: int = 16
    pause_fraction: float = 0.15
    pause_length: float = 4.0
    feature_noise: float = 0.2
    rectify: bool = False  # max(0, x): non-negative features, as I3D's

    def __post_init__(self):
        if not 1 <= self.num_classes <= len(CLASS_MEDIAN_SNIPPETS):
            raise ValueError(f"num_classes must be 1..{len(CLASS_MEDIAN_SNIPPETS)}, got {self.num_classes}")
        if self.scale <= 0 or self.stream_dim < 1 or self.latent_dim < 1 or self.subpatterns < 1:
            raise ValueError("scale, stream_dim, latent_dim and subpatterns must be positive")

    @property
    def feature_dim(self) -> int:
        return 2 * self.stream_dim

    def counts(self) -> tuple[int, int]:
        """Training and test video counts after `scale` (at least one each)."""
        return max(1, round(self.num_train * self.scale)), max(1, round(self.num_test * self.scale))


@dataclass
class _Patterns:
    """Per-stream latent class patterns (C, K, d), class scenes (C, d), embeddings (d, D)."""

    sub: list[np.ndarray]
    scene: np.ndarray
    rgb_weight: np.ndarray
    embed: list[np.ndarray]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _patterns(cfg: ThumosLikeConfig, rng: np.random.Generator) -> _Patterns:
    C, K, d = cfg.num_classes, cfg.subpatterns, cfg.latent_dim
    family = np.arange(C) // max(1, cfg.family_size)
    sub, embed = [], []
    embed_rngs = [np.random.default_rng(q) for q in np.random.SeedSequence(int(rng.integers(2**32))).spawn(2)]
    for stream in range(2):
        fam = _unit(rng.normal(size=(family.max() + 1, d)))[family]
        core = _unit(math.sqrt(cfg.class_similarity) * fam
                     + math.sqrt(1 - cfg.class_similarity) * _unit(rng.normal(size=(C, d))))
        own = _unit(rng.normal(size=(C, K, d)))
        sub.append(_unit(math.sqrt(cfg.subpattern_share) * core[:, None]
                         + math.sqrt(1 - cfg.subpattern_share) * own))
        # (d, D) with orthonormal rows when D >= d (orthonormal columns when narrower)
        q, _ = np.linalg.qr(embed_rngs[stream].normal(size=(max(cfg.stream_dim, d), min(cfg.stream_dim, d))))
        embed.append(q.T * math.sqrt(cfg.stream_dim / d) if cfg.stream_dim >= d else q)
    scene = _unit(rng.normal(size=(C, d)))
    lo, hi = cfg.rgb_weight_range
    return _Patterns(sub, scene, rng.uniform(lo, hi, size=C), embed)


def _layout(cfg: ThumosLikeConfig, rng: np.random.Generator, class_names: list[str]) -> tuple[int, list[tuple[int, int, int]]]:
    """Video length T and its instances as (start, end, class) in snippets, sorted by start."""
    C = cfg.num_classes
    T = int(np.clip(round(rng.lognormal(cfg.length_log_mean, cfg.length_log_std)), *cfg.length_range))
    classes = [int(rng.integers(C))]
    if C > 1 and rng.random() < cfg.two_class_prob:
        classes.append(int(rng.choice([c for c in range(C) if c != classes[0]])))
    coverage = float(np.clip(rng.beta(*cfg.coverage_beta), *cfg.coverage_range))
    target = max(1, round(coverage * T))
    video_factor = rng.lognormal(0.0, 0.3, size=len(classes))
    lengths: list[int] = []
    labels: list[int] = []
    while sum(lengths) < target:
        j = 0 if len(classes) == 1 or rng.random() < 0.7 else 1
        c = classes[j]
        median = CLASS_MEDIAN_SNIPPETS[class_names[c]] * video_factor[j]
        n = int(np.clip(round(rng.lognormal(math.log(median), cfg.instance_log_std)), *cfg.instance_range))
        if sum(lengths) + n + len(lengths) > T:  # no room left with one-snippet gaps
            break
        lengths.append(n)
        labels.append(c)
    if not lengths:
        lengths, labels = [min(T, target)], [classes[0]]
    free = T - sum(lengths) - (len(lengths) - 1)  # one snippet of gap between instances at least
    gaps = np.floor(rng.dirichlet(np.ones(len(lengths) + 1)) * free).astype(int)
    instances, cursor = [], int(gaps[0])
    for n, c, gap in zip(lengths, labels, gaps[1:]):
        instances.append((cursor, cursor + n, c))
        cursor += n + 1 + int(gap)
    return T, instances


def _ar_noise(T: int, d: int, corr: float, std: float, rng: np.random.Generator) -> np.ndarray:
    """(T, d) AR(1) noise with marginal standard deviation `std` and lag-1 correlation `corr`."""
    eps = rng.normal(scale=std, size=(T, d))
    out = np.empty_like(eps)
    out[0] = eps[0]
    innovation = math.sqrt(1 - corr * corr)
    for t in range(1, T):
        out[t] = corr * out[t - 1] + innovation * eps[t]
    return out


def _pauses(n: int, cfg: ThumosLikeConfig, rng: np.random.Generator) -> np.ndarray:
    """Bool mask of background-like snippets inside one instance of length n."""
    mask = np.zeros(n, dtype=bool)
    if n < cfg.pause_min_length or cfg.pause_fraction <= 0:
        return mask
    leave = 1.0 / max(1.0, cfg.pause_length)  # pause -> action
    enter = leave * cfg.pause_fraction / max(1e-9, 1 - cfg.pause_fraction)  # action -> pause
    state = False
    for i in range(2, n - 2):  # the first and last snippets stay action
        state = rng.random() < (1 - leave if state else enter)
        mask[i] = state
    return mask


@dataclass
class _Draw:
    """Per-instance draws shared by both streams."""

    strength: float
    mix: np.ndarray
    pause: np.ndarray
    span: int


def _video(cfg: ThumosLikeConfig, pat: _Patterns, seq: np.random.SeedSequence,
           T: int, instances: list[tuple[int, int, int]]) -> np.ndarray:
    """(T, 2 * stream_dim) float32 features of one video."""
    latent_seq, feature_seq = seq.spawn(2)
    rng, feature_rng = np.random.default_rng(latent_seq), np.random.default_rng(feature_seq)
    d = cfg.latent_dim
    present = sorted({c for _, _, c in instances})
    streams = []
    draws = [_Draw(cfg.action_strength * rng.lognormal(0.0, cfg.strength_spread),
                   rng.dirichlet(np.full(cfg.subpatterns, cfg.subpattern_concentration)),
                   _pauses(end - start, cfg, rng), max(2, round(cfg.context_span * (end - start))))
             for start, end, _ in instances]
    for s in range(2):
        z = _ar_noise(T, d, cfg.noise_corr, cfg.noise_std, rng)
        z += cfg.scene_offset * rng.normal(size=d)
        if s == 0:
            for c in present:
                z += cfg.class_scene * pat.scene[c]
        context_level = cfg.context_strength * (1.0 if s == 0 else cfg.flow_context_ratio)
        for (start, end, c), dr in zip(instances, draws):
            n = end - start
            w = pat.rgb_weight[c] if s == 0 else 1 - pat.rgb_weight[c]
            pattern = dr.strength * math.sqrt(2 * w) * (dr.mix @ pat.sub[s][c])
            i = np.arange(n) + 0.5
            r = max(1.0, cfg.ramp * n)
            env = np.minimum(1.0, np.minimum(i, n - i) / r)
            env = np.where(dr.pause, context_level, np.maximum(env, context_level))
            z[start:end] += env[:, None] * pattern
            span = dr.span
            decay = context_level * (1 - np.arange(span) / span)  # index 0 = next to the instance
            before = np.arange(start - 1, start - 1 - span, -1)
            after = np.arange(end, end + span)
            for idx in (before, after):
                ok = (idx >= 0) & (idx < T)
                z[idx[ok]] += decay[ok][:, None] * pattern
        x = z @ pat.embed[s] + feature_rng.normal(scale=cfg.feature_noise, size=(T, cfg.stream_dim))
        streams.append((np.maximum(x, 0.0) if cfg.rectify else x).astype(np.float32))
    return np.concatenate(streams, axis=1)


def make_thumos_like(cfg: ThumosLikeConfig | None = None, **overrides: Any) -> tuple[dict[str, np.ndarray], dict]:
    """Features {video_id: (T, 2 * stream_dim) float32} and an ActivityNet-style annotation dict.

    Training videos are subset `validation` and test videos `test`, as in THUMOS14, so wtal's
    default subsets pick them.
    """
    cfg = replace(cfg or ThumosLikeConfig(), **overrides)
    class_names = sorted(CLASS_MEDIAN_SNIPPETS)[: cfg.num_classes]
    # independent streams: the layout and the latent evidence do not depend on the width
    layout_seq, pattern_seq, video_seq = np.random.SeedSequence(cfg.seed).spawn(3)
    rng = np.random.default_rng(layout_seq)
    pat = _patterns(cfg, np.random.default_rng(pattern_seq))
    video_seqs = iter(video_seq.spawn(sum(cfg.counts())))
    features: dict[str, np.ndarray] = {}
    database: dict[str, dict] = {}
    for subset, count in zip((TRAIN_SUBSET, TEST_SUBSET), cfg.counts()):
        for i in range(count):
            vid = f"video_{subset}_{i + 1:07d}"
            T, instances = _layout(cfg, rng, class_names)
            features[vid] = _video(cfg, pat, next(video_seqs), T, instances)
            sec = cfg.snippet_seconds
            database[vid] = {
                "subset": subset,
                "duration": round(T * sec, 3),
                "annotations": [{"label": class_names[c], "segment": [round(a * sec, 3), round(b * sec, 3)]}
                                for a, b, c in instances],
            }
    return features, {"version": "wtal-thumos-like", "config": _config_json(cfg), "database": database}


def _config_json(cfg: ThumosLikeConfig) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}


def snippet_labels(annotations: dict, video_id: str, T: int, snippet_seconds: float = DEFAULT_SNIPPET_SECONDS) -> np.ndarray:
    """(T,) bool: snippets whose centre lies inside a ground-truth instance of `video_id`."""
    centres = (np.arange(T) + 0.5) * snippet_seconds
    inside = np.zeros(T, dtype=bool)
    for a in annotations["database"][video_id]["annotations"]:
        inside |= (centres >= a["segment"][0]) & (centres < a["segment"][1])
    return inside


def write_thumos_like(out_dir: str | Path, cfg: ThumosLikeConfig | None = None, clicks_seed: int = 0,
                      **overrides: Any) -> dict[str, Path]:
    """Write `features/<vid>.npy` + `features/meta.json`, `annotations.json` and `clicks.json`
    (one simulated background click per background segment of every training video: the uniform
    protocol of `wtal.data.clicks`, noise-free clicks for a benchmark of the methods)."""
    from .annotations import load_annotations
    from .clicks import save_clicks, simulate_clicks

    cfg = replace(cfg or ThumosLikeConfig(), **overrides)
    out_dir = Path(out_dir)
    feat_dir = out_dir / "features"
    features, annotations = make_thumos_like(cfg)
    for vid, x in features.items():
        buf = io.BytesIO()
        np.save(buf, x)
        atomic_write(feat_dir / f"{vid}.npy", buf.getvalue())
    write_json_atomic(feat_dir / "meta.json", {"snippet_seconds": cfg.snippet_seconds, "fps": cfg.fps})
    ann_path = write_json_atomic(out_dir / "annotations.json", annotations)
    ann = load_annotations(ann_path)
    clicks_path = out_dir / "clicks.json"
    save_clicks(simulate_clicks(ann, TRAIN_SUBSET, clicks_seed, "uniform"), clicks_path)
    return {"features": feat_dir, "annotations": ann_path, "clicks": clicks_path}


def main(argv: list[str] | None = None) -> None:
    """`python -m wtal.data.thumos_like --out DIR [--scale S] [--stream-dim N] [--set key=value ...]`."""
    parser = argparse.ArgumentParser(description="Write the THUMOS14-like synthetic feature benchmark.")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the 200 + 200 videos")
    parser.add_argument("--stream-dim", type=int, default=1024, help="width per stream (rgb, flow)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any other generator parameter (see ThumosLikeConfig)")
    args = parser.parse_args(argv)
    types = {f.name: f.type for f in fields(ThumosLikeConfig)}
    overrides: dict[str, Any] = {"scale": args.scale, "stream_dim": args.stream_dim, "seed": args.seed}
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in types:
            parser.error(f"--set {key}: not a generator parameter; valid: {', '.join(sorted(types))}")
        default = getattr(ThumosLikeConfig(), key)
        try:
            overrides[key] = parse_value(value, type(default), default)
        except ValueError:
            parser.error(f"--set {key}={value}: expected {type(default).__name__} (default {default!r})")
    paths = write_thumos_like(args.out, ThumosLikeConfig(**overrides))
    print(json.dumps({k: str(v) for k, v in paths.items()}))


if __name__ == "__main__":
    main()
