"""Per-video time base (issue 12 section 1): fixed-length `.npz` features and native-rate features of
the same 300 s video give detections and click snippets at the same seconds."""
import json

import numpy as np
import pytest
import torch

from wtal.data.annotations import load_annotations
from wtal.data.features import FeatureError, open_features, require_lengths
from wtal.models.base import Inference, Localizer
from wtal.models.mil import MIL
from wtal.models.train import build_items, detect_videos

DURATION, ACTION = 300.0, (120.0, 150.0)


class FeatureChannelCAS(Localizer):
    """A localizer whose CAS is feature channel 0 and whose one class always scores 1."""

    name = "feature_channel"
    test_defaults = {**MIL.test_defaults, "class_threshold": 0.5, "cas_thresholds": (0.5, 0.6, 0.1),
                     "oic_class_weight": 0.0}

    def __init__(self):
        super().__init__(2048, 1)

    @torch.no_grad()
    def infer(self, features):
        return Inference(cas=features[:, :1].cpu().numpy(), video_scores=np.ones(1, np.float32))


def _annotations(tmp_path):
    ann = {"database": {"v": {"subset": "testing", "duration": DURATION,
                              "annotations": [{"label": "Jump", "segment": list(ACTION)}]}}}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(ann))
    return load_annotations(path)


def _signal(T, seconds):
    """(T,) 1 where the snippet's centre lies inside the action, else 0."""
    centres = (np.arange(T) + 0.5) * seconds
    return ((centres >= ACTION[0]) & (centres < ACTION[1])).astype(np.float32)


def _npz(folder, T=750, **fields):
    folder.mkdir()
    spa = np.zeros((1024, T), np.float32)
    spa[0] = _signal(T, DURATION / T)
    np.savez(folder / "v.npz", feat_spa=spa, feat_tem=np.zeros((1024, T), np.float32), **fields)
    return open_features(folder)


def _detect(feats, ann, clicks=None):
    items = build_items(ann, feats, "testing", clicks)
    results, _ = detect_videos(FeatureChannelCAS(), items, FeatureChannelCAS.test_defaults, ["Jump"], feats.snippet_seconds,
                               torch.device("cpu"))
    return items[0], results["v"]


@pytest.mark.parametrize("fields", [{"frame_num": 7500, "fps": 25.0}, {"duration": DURATION}, {}])
def test_fixed_length_npz_of_a_300s_video_detects_at_the_right_seconds(tmp_path, fields):
    ann = _annotations(tmp_path)
    feats = _npz(tmp_path / "npz", **fields)  # 750 snippets of 0.4 s, from the file or the annotation
    assert feats.time_base("v", DURATION).seconds_per_snippet == pytest.approx(0.4)
    require_lengths(feats, ann, "testing")  # fixed-length: never a length error
    item, rows = _detect(feats, ann, {"v": [130.0, 299.9]})
    assert item.snippet_seconds == pytest.approx(0.4) and item.clicks.tolist() == [325, 749]
    assert rows[0]["segment"] == pytest.approx(list(ACTION))  # snippets [300, 375) x 0.4 s


def test_native_rate_features_of_the_same_video_agree(tmp_path):
    ann = _annotations(tmp_path)
    folder = tmp_path / "native"
    folder.mkdir()
    T = int(DURATION / 0.64)  # 468 snippets of 0.64 s
    x = np.zeros((T, 2048), np.float32)
    x[:, 0] = _signal(T, 0.64)
    np.save(folder / "v.npy", x)
    feats = open_features(folder)
    item, rows = _detect(feats, ann, {"v": [130.0]})
    assert item.snippet_seconds == pytest.approx(0.64) and item.clicks.tolist() == [203]
    start, end = rows[0]["segment"]
    assert abs(start - ACTION[0]) <= 0.64 and abs(end - ACTION[1]) <= 0.64
    assert (start, end) == pytest.approx((187 * 0.64, 234 * 0.64))


def test_native_rate_length_disagreeing_with_the_duration_is_an_error(tmp_path):
    ann = _annotations(tmp_path)
    folder = tmp_path / "native"
    folder.mkdir()
    np.save(folder / "v.npy", np.zeros((750, 8), np.float32))  # 750 x 0.64 s = 480 s, not 300 s
    with pytest.raises(FeatureError, match=r"v\.npy: v has T=750 snippets, but its annotated duration 300\.00 s"):
        require_lengths(open_features(folder), ann, "testing")
    require_lengths(open_features(folder, snippet_seconds=0.4), ann, "testing")  # the right rate is accepted


def test_npz_without_time_fields_needs_an_annotated_duration(tmp_path):
    feats = _npz(tmp_path / "npz")
    with pytest.raises(FeatureError, match=r"v\.npz: fields 'frame_num'/'fps' and 'duration' missing"):
        feats.time_base("v")
    bad = _npz(tmp_path / "bad", fps=np.array([25.0, 30.0]))
    with pytest.raises(FeatureError, match=r"v\.npz: field 'fps': expected one number"):
        bad.time_base("v", DURATION)


def test_a_fixed_length_video_without_fps_takes_the_annotated_frame_rate(tmp_path):
    ann_path = tmp_path / "ann.json"
    ann_path.write_text(json.dumps({"database": {"v": {"subset": "testing", "duration": DURATION, "fps": 30.0,
                                                       "annotations": [{"label": "Jump", "segment": list(ACTION)}]}}}))
    feats = _npz(tmp_path / "npz", duration=DURATION)  # 0.4 s per snippet, fps unknown to the file
    item = build_items(load_annotations(ann_path), feats, "testing")[0]
    assert (item.snippet_seconds, item.fps) == (pytest.approx(0.4), 30.0)  # 12 frames per snippet


def test_frame_level_upsampling_uses_the_video_frames_per_snippet(tmp_path):
    ann = _annotations(tmp_path)
    feats = _npz(tmp_path / "npz", frame_num=7500, fps=25.0)  # 10 frames per snippet
    assert feats.time_base("v").frames_per_snippet == pytest.approx(10.0)
    items = build_items(ann, feats, "testing")
    cfg = {**FeatureChannelCAS.test_defaults, "cas_upsample": "frames"}
    results, _ = detect_videos(FeatureChannelCAS(), items, cfg, ["Jump"], feats.snippet_seconds, torch.device("cpu"))
    # 7500 frame positions; the step edges interpolate over one frame, so the >0.5 run is exact
    start, end = results["v"][0]["segment"]
    assert (start, end) == pytest.approx(ACTION, abs=0.04)
