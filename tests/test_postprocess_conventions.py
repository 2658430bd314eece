"""Hand-worked cases for each post-processing convention of the official codes (issue 12, section 3).

Every case writes out a short CAS and the proposals and scores expected under each setting.
"""
import numpy as np
import pytest

from wtal.models import get_localizer, split_settings
from wtal.postprocess.nms import nms, overlaps
from wtal.postprocess.proposals import (
    POSTPROCESS_DEFAULTS,
    Proposal,
    cas_detections,
    cas_proposals,
    gaussian_smooth,
    per_class_nms,
    select_classes,
    to_seconds,
    upsample_linear,
)


def _props(cas, scores, thresholds, ratio=0.25, weight=0.0, **conventions):
    cas = np.asarray(cas, dtype=float).reshape(len(cas), -1)
    return [(p.label, round(p.score, 6), p.start, p.end)
            for p in cas_proposals(cas, np.asarray(scores, dtype=float), 0.1, np.asarray(thresholds, dtype=float),
                                   ratio, weight, conventions=conventions)]


CAS = [0.0, 0.2, 1.0, 1.0, 1.0, 1.0, 0.4, 0.0]


def test_oic_on_raw_vs_thresholded_cas():
    # thr 0.5: run [2, 6), pad 1 each side (0.2 and 0.4).
    #   raw: 1.0 - (0.2 + 0.4) / 2 = 0.7; thresholded: both outer values < 0.5 become 0 -> 1.0
    # thr 0.3: run [2, 7) (0.4 passes), pad round(1.25) = 1: outer 0.2 and 0.0; inner 4.4 / 5 = 0.88
    #   raw: 0.88 - 0.1 = 0.78; thresholded: 0.2 < 0.3 is zeroed -> 0.88
    assert _props(CAS, [0.9], [0.5, 0.3]) == [(0, 0.7, 2.0, 6.0), (0, 0.78, 2.0, 7.0)]
    assert _props(CAS, [0.9], [0.5, 0.3], oic_signal="thresholded") == [(0, 1.0, 2.0, 6.0), (0, 0.88, 2.0, 7.0)]
    with pytest.raises(ValueError, match="oic_signal"):
        _props(CAS, [0.9], [0.5], oic_signal="zeroed")


def test_cas_upsampling_by_factor_and_to_frames():
    # [0, 1, 1, 0] x2 with half-pixel centres: source positions j/2 - 0.25 (clipped to [0, 3])
    np.testing.assert_allclose(upsample_linear(np.array([0.0, 1.0, 1.0, 0.0]), 8),
                               [0, 0.25, 0.75, 1, 1, 0.75, 0.25, 0])
    # thr 0.5 on the fine axis: run [2, 6) = snippets [1, 3); inner (0.75 + 1 + 1 + 0.75) / 4 = 0.875,
    # outer one fine position each side (0.25, 0.25): 0.625.  thr 0.2: run [1, 7) = snippets [0.5, 3.5),
    # inner 4.0 / 6, pad round(1.5) = 2 clipped to positions 0 and 7 (both 0): 0.666667
    expected = [(0, 0.625, 1.0, 3.0), (0, 0.666667, 0.5, 3.5)]
    assert _props([0, 1, 1, 0], [0.9], [0.5, 0.2], cas_upsample="2") == expected
    # without upsampling the same thresholds give whole snippets only
    assert _props([0, 1, 1, 0], [0.9], [0.5, 0.2]) == [(0, 1.0, 1.0, 3.0), (0, 1.0, 1.0, 3.0)]
    # "frames": the video's own frames per snippet (2 here) is the factor
    cfg = {**get_localizer("mil").test_defaults, "cas_thresholds": (0.5, 0.6, 0.1), "class_threshold": 0.1,
           "oic_class_weight": 0.0, "cas_upsample": "frames", "video_frames_per_snippet": 2.0}
    kept = cas_detections(np.array([[0.0], [1.0], [1.0], [0.0]]), np.array([0.9]), cfg)
    assert [(p.start, p.end, round(p.score, 6)) for p in kept] == [(1.0, 3.0, 0.625)]
    # seconds on the fine axis: snippet 0.5 at 0.64 s per snippet is 0.32 s
    secs = to_seconds([Proposal(0, 0.75, 0.5, 3.5)], 0.64, None)
    assert (secs[0].start, secs[0].end) == pytest.approx((0.32, 2.24))
    with pytest.raises(ValueError, match="frames per snippet"):
        _props([0, 1, 1, 0], [0.9], [0.5], cas_upsample="frames")


def test_nms_overlap_definitions():
    a, b = np.array([0.0, 1.0]), np.array([[0.0, 2.0]])
    # true tIoU 1/2; "+1": (1 + 1) / (2 + 3 - 2) = 2/3; lower-scored: (1 + 1) / (2 + 1) = 2/3
    assert overlaps(a, b, "tiou")[0] == pytest.approx(0.5)
    assert overlaps(a, b, "tiou_plus_one")[0] == pytest.approx(2 / 3)
    assert overlaps(a, b, "over_lower")[0] == pytest.approx(2 / 3)
    # disjoint segments closer than one unit still overlap with "+1": [0, 1] vs [1.5, 2.5]
    assert overlaps(a, np.array([[1.5, 2.5]]), "tiou")[0] == 0.0
    assert overlaps(a, np.array([[1.5, 2.5]]), "tiou_plus_one")[0] == pytest.approx(0.5 / 3.5)
    # a short segment nested in a long one: tIoU 0.2, over the lower one's length (2 + 1) / (2 + 1) = 1
    segs, scores = np.array([[0.0, 10.0], [2.0, 4.0]]), np.array([0.9, 0.5])
    assert nms(segs, scores, 0.5, "tiou").tolist() == [0, 1]
    assert nms(segs, scores, 0.5, "over_lower").tolist() == [0]
    # "+1" suppresses at >= threshold as the official code does: 2/3 >= 2/3
    assert nms(np.array([[0.0, 1.0], [0.0, 2.0]]), np.array([0.9, 0.8]), 2 / 3, "tiou_plus_one").tolist() == [0]
    assert nms(np.array([[0.0, 1.0], [0.0, 2.0]]), np.array([0.9, 0.8]), 0.6, "tiou").tolist() == [0, 1]


def test_plus_one_nms_is_in_seconds():
    # snippets [0, 2) and [0, 4) at 0.5 s per snippet are [0, 1] s and [0, 2] s: "+1" overlap 2/3
    props = [Proposal(0, 0.9, 0.0, 2.0), Proposal(0, 0.8, 0.0, 4.0)]
    assert len(per_class_nms(props, 0.6, overlap="tiou_plus_one", snippet_seconds=0.5)) == 1
    # at 4 s per snippet they are [0, 8] s and [0, 16] s: (8 + 1) / (9 + 17 - 9) = 0.529 -> both kept
    assert len(per_class_nms(props, 0.6, overlap="tiou_plus_one", snippet_seconds=4.0)) == 2
    with pytest.raises(ValueError, match="seconds per snippet"):
        per_class_nms(props, 0.6, overlap="tiou_plus_one")


def test_end_extension_and_minimum_run_length():
    cas = [0.0, 0.8, 0.0, 0.9, 0.9, 0.3, 0.0, 0.0]
    # today: [1, 2) scores 0.8 - 0 = 0.8; [3, 5) scores 0.9 - (0 + 0.3) / 2 = 0.75
    assert _props(cas, [0.9], [0.5]) == [(0, 0.8, 1.0, 2.0), (0, 0.75, 3.0, 5.0)]
    # RSKP: [1, 2) is shorter than 2 and dropped; [3, 5) becomes [3, 6) with 0.3 in the inner mean:
    # (0.9 + 0.9 + 0.3) / 3 = 0.7, pad round(0.75) = 1: outer 0 and 0 -> 0.7
    assert _props(cas, [0.9], [0.5], end_extension=1, min_run_length=2) == [(0, 0.7, 3.0, 6.0)]
    # the extension stops at the end of the sequence
    assert _props([0.0, 0.0, 1.0, 1.0], [0.9], [0.5], end_extension=1) == [(0, 1.0, 2.0, 4.0)]


def test_class_selection_rule_and_fallback():
    assert select_classes(np.array([0.05, 0.1, 0.3]), 0.1).tolist() == [1, 2]
    assert select_classes(np.array([0.05, 0.08]), 0.1, "none").tolist() == []
    assert select_classes(np.array([0.05, 0.08]), 0.1, "top").tolist() == [1]
    cas = np.array([CAS, CAS[::-1]]).T
    assert _props(cas, [0.05, 0.08], [0.5]) == []
    assert _props(cas, [0.05, 0.08], [0.5], class_fallback="top") == [(1, 0.7, 2.0, 6.0)]
    with pytest.raises(ValueError, match="class_fallback"):
        select_classes(np.array([0.5]), 0.1, "argmax")


def test_class_score_weighted_vs_constant():
    # OIC 0.7 (see above) plus 0.2 x 0.6 = 0.82 (weighted) or 0.2 (constant, BaS-Net's binarised score)
    assert _props(CAS, [0.6], [0.5], weight=0.2) == [(0, 0.82, 2.0, 6.0)]
    assert _props(CAS, [0.6], [0.5], weight=0.2, class_score="constant") == [(0, 0.9, 2.0, 6.0)]


def test_detection_cap_is_off_by_default_and_optional():
    assert POSTPROCESS_DEFAULTS["max_detections"] is None
    cas = np.zeros((12, 1))
    cas[[1, 4, 7, 10], 0] = [0.9, 0.8, 0.7, 0.6]
    cfg = {**get_localizer("mil").test_defaults, "class_threshold": 0.1, "cas_thresholds": (0.5, 0.6, 0.1),
           "oic_class_weight": 0.0}
    assert [p.start for p in cas_detections(cas, np.array([0.9]), cfg)] == [1.0, 4.0, 7.0, 10.0]
    assert [p.start for p in cas_detections(cas, np.array([0.9]), {**cfg, "max_detections": 2})] == [1.0, 4.0]


def test_gaussian_smoothing_of_the_thresholded_signal():
    x = np.zeros(11)
    x[5] = 1.0
    # sigma 1, radius 4, weights exp(-k^2 / 2) / 2.50663: 0.39894, 0.24197, 0.05399 at k = 0, 1, 2
    np.testing.assert_allclose(gaussian_smooth(x, 1.0)[3:8], [0.05399, 0.24197, 0.39894, 0.24197, 0.05399],
                               atol=1e-5)
    np.testing.assert_allclose(gaussian_smooth(np.full(3, 0.4), 2.0), [0.4, 0.4, 0.4])
    # thr 0.2: the raw delta gives [5, 6), the smoothed signal [4, 7); OIC stays on the raw CAS:
    # inner 1/3, pad 1: outer 0 and 0 -> 1/3
    assert _props(x, [0.9], [0.2]) == [(0, 1.0, 5.0, 6.0)]
    assert _props(x, [0.9], [0.2], threshold_smoothing=1.0) == [(0, round(1 / 3, 6), 4.0, 7.0)]


@pytest.mark.parametrize("name", ["mil", "ecm", "basnet", "backtal", "rskp", "dgam", "cleannet"])
def test_models_pass_conventions_through_and_reject_unknown_keys(name):
    cls = get_localizer(name)
    _, _, test = split_settings(cls, {"nms_overlap": "over_lower", "max_detections": "50"})
    assert test["nms_overlap"] == "over_lower" and test["max_detections"] == 50
    fallback = "top" if name in ("dgam", "cleannet") else "none"
    assert cls.test_defaults["class_fallback"] == fallback and cls.test_defaults["max_detections"] is None
    with pytest.raises(ValueError, match="not a setting"):
        split_settings(cls, {"nms_overlaps": "tiou"})
