"""The THUMOS14-like benchmark generator: determinism, promised statistics, public layouts."""
import json

import numpy as np
import pytest

from wtal.data.annotations import load_annotations
from wtal.data.clicks import load_clicks
from wtal.data.features import open_features
from wtal.data.thumos_like import CLASS_MEDIAN_SNIPPETS, ThumosLikeConfig, make_thumos_like, snippet_labels, write_thumos_like

SECONDS = ThumosLikeConfig().snippet_seconds


@pytest.fixture(scope="module")
def half_scale():
    """100 + 100 videos at 8 dims per stream (the layout does not depend on the width)."""
    return make_thumos_like(scale=0.5, stream_dim=8)


def test_same_seed_same_dataset_other_seed_another():
    a_feat, a_ann = make_thumos_like(scale=0.05, stream_dim=8, seed=3)
    b_feat, b_ann = make_thumos_like(scale=0.05, stream_dim=8, seed=3)
    c_feat, c_ann = make_thumos_like(scale=0.05, stream_dim=8, seed=4)
    assert a_ann == b_ann
    assert a_feat.keys() == b_feat.keys()
    assert all(np.array_equal(a_feat[v], b_feat[v]) for v in a_feat)
    assert a_ann["database"] != c_ann["database"]


def test_layout_does_not_depend_on_width():
    _, narrow = make_thumos_like(scale=0.05, stream_dim=4)
    wide_feat, wide = make_thumos_like(scale=0.05, stream_dim=96)
    assert narrow["database"] == wide["database"]
    assert {x.shape[1] for x in wide_feat.values()} == {192}


def test_shape_counts_and_classes(half_scale):
    features, ann = half_scale
    db = ann["database"]
    subsets = [v["subset"] for v in db.values()]
    assert subsets.count("validation") == 100 and subsets.count("test") == 100
    labels = {a["label"] for v in db.values() for a in v["annotations"]}
    assert labels == set(CLASS_MEDIAN_SNIPPETS)  # the 20 THUMOS14 classes, all present
    for vid, x in features.items():
        assert x.dtype == np.float32 and x.shape == (round(db[vid]["duration"] / SECONDS), 16)
    per_video = [len({a["label"] for a in v["annotations"]}) for v in db.values()]
    assert set(per_video) <= {1, 2}
    assert 0.05 <= per_video.count(2) / len(per_video) <= 0.3  # promised 0.15


def test_length_and_action_statistics(half_scale):
    features, ann = half_scale
    db = ann["database"]
    T = np.array([len(x) for x in features.values()])
    assert T.min() >= 23 and T.max() <= 2600
    assert 150 <= np.median(T) <= 320  # THUMOS14: median 227 snippets (2.4 min)
    assert T.max() > 900  # long tail: videos of ten minutes and more
    action = sum(int(snippet_labels(ann, v, len(x)).sum()) for v, x in features.items())
    assert 0.25 <= action / T.sum() <= 0.40  # THUMOS14: 0.33 of the snippets
    lengths = np.array([(a["segment"][1] - a["segment"][0]) / SECONDS for v in db.values() for a in v["annotations"]])
    assert lengths.min() >= 1 - 1e-6 and lengths.max() <= 300 + 1e-6
    assert 2 <= np.median(lengths) <= 8  # THUMOS14: median 4.7 snippets
    assert np.percentile(lengths, 99) <= 60  # most instances are short
    counts = np.array([len(v["annotations"]) for v in db.values()])
    assert counts.min() >= 1 and np.median(counts) >= 3  # several instances per video
    for v in db.values():  # instances inside the video and disjoint
        segs = sorted(a["segment"] for a in v["annotations"])
        assert segs[0][0] >= 0 and segs[-1][1] <= v["duration"] + 1e-6
        assert all(a[1] < b[0] for a, b in zip(segs, segs[1:]))


def _noise_free(**kw):
    """A dataset whose background is exactly 0 apart from action context."""
    return make_thumos_like(scale=0.1, stream_dim=64, feature_noise=0.0, noise_std=0.0, scene_offset=0.0,
                            class_scene=0.0, **kw)


def _distance_to_action(inside: np.ndarray) -> np.ndarray:
    idx = np.flatnonzero(inside)
    return np.array([np.abs(idx - t).min() for t in range(len(inside))])


def test_context_and_pauses_are_the_parameters_effect():
    """Snippets next to an instance carry its pattern (action-context confusion) and background
    does not; without context every background snippet is exactly zero, and long instances
    hold background-like (here: zero) pauses at about the promised fraction."""
    features, ann = _noise_free()
    ratios = []
    for vid, x in features.items():
        inside = snippet_labels(ann, vid, len(x))
        norm = np.linalg.norm(x, axis=1)
        dist = _distance_to_action(inside)
        assert norm[dist == 1].min() > 0
        ratios.append(np.median(norm[dist == 1]) / np.median(norm[inside]))
    assert 0.1 < np.median(ratios) < 0.6  # context_strength 0.5 of the pattern, decaying

    features, ann = _noise_free(context_strength=0.0)
    paused = long_snippets = 0
    for vid, x in features.items():
        inside = snippet_labels(ann, vid, len(x))
        norm = np.linalg.norm(x, axis=1)
        assert np.abs(norm[~inside]).max() < 1e-5
        for a in ann["database"][vid]["annotations"]:
            s, e = round(a["segment"][0] / SECONDS), round(a["segment"][1] / SECONDS)
            if e - s >= ThumosLikeConfig().pause_min_length:
                paused += int((norm[s:e] < 1e-5).sum())
                long_snippets += e - s
    assert long_snippets > 100 and 0.05 <= paused / long_snippets <= 0.25  # pause_fraction 0.15


def test_written_layouts_read_back(tmp_path):
    paths = write_thumos_like(tmp_path, scale=0.03, stream_dim=8, seed=1)
    features, raw = make_thumos_like(scale=0.03, stream_dim=8, seed=1)
    source = open_features(paths["features"])
    assert source.ids() == sorted(features) and source.feature_dim == 16
    assert source.snippet_seconds == pytest.approx(SECONDS)
    assert all(np.array_equal(source.load(v), features[v]) for v in features)
    ann = load_annotations(paths["annotations"])
    assert ann.default_subsets() == ("validation", "test")
    assert json.loads(paths["annotations"].read_text())["database"] == raw["database"]
    clicks = load_clicks(paths["clicks"])
    train = [v.video_id for v in ann.subset("validation")]
    assert sorted(clicks) == sorted(train)
    for vid in train:  # every click on background
        for t in clicks[vid]:
            assert not any(s.start <= t <= s.end for s in ann.videos[vid].segments)
