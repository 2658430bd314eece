"""Hand-worked cases for grouping, OIC scoring, NMS and the detections writer."""
import json

import numpy as np
import pytest

from wtal.postprocess.detections import proposals_to_results, whole_video_results, write_detections
from wtal.postprocess.nms import nms, segment_iou
from wtal.postprocess.proposals import (
    Proposal,
    cas_proposals,
    group_runs,
    minmax_normalise,
    oic_score,
    per_class_nms,
    threshold_range,
    to_seconds,
)


def test_segment_iou_hand_values():
    ious = segment_iou(np.array([0.0, 10.0]), np.array([[0, 10], [5, 15], [10, 20], [2, 4]], dtype=float))
    np.testing.assert_allclose(ious, [1.0, 5 / 15, 0.0, 0.2])


def test_nms_keeps_best_and_suppresses_overlaps():
    segs = np.array([[0, 10], [1, 11], [20, 30], [0, 5]], dtype=float)
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    # [0,5] (0.95) vs [0,10]: IoU 0.5 -> kept at threshold 0.6, suppressed at 0.4
    assert nms(segs, scores, 0.6).tolist() == [3, 0, 2]
    assert nms(segs, scores, 0.4).tolist() == [3, 1, 2]
    assert nms(np.zeros((0, 2)), np.zeros(0), 0.5).tolist() == []


def test_nms_ties_keep_input_order():
    segs = np.array([[0, 10], [0, 10]], dtype=float)
    assert nms(segs, np.array([0.5, 0.5]), 0.5).tolist() == [0]


def test_group_runs_and_thresholds():
    assert group_runs(np.array([0, 1, 1, 0, 1, 0, 0, 1], dtype=bool)) == [(1, 3), (4, 5), (7, 8)]
    assert group_runs(np.zeros(4, dtype=bool)) == []
    np.testing.assert_allclose(threshold_range(0.01, 0.2, 0.025), 0.01 + 0.025 * np.arange(8))
    np.testing.assert_allclose(threshold_range(0.0, 0.25, 0.025), 0.025 * np.arange(10))


def test_oic_score_hand_value():
    signal = np.array([0.0, 0.2, 1.0, 1.0, 1.0, 1.0, 0.4, 0.0])
    # inner [2, 6): mean 1.0; outer 0.25 * 4 = 1 snippet each side: 0.2 and 0.4 -> mean 0.3
    assert oic_score(signal, 2, 6, 0.25) == pytest.approx(0.7)
    # whole sequence: no outer region
    assert oic_score(signal, 0, 8, 0.25) == pytest.approx(signal.mean())


def test_cas_proposals_rejects_classes_and_scores():
    cas = np.zeros((10, 2))
    cas[3:6, 0] = 1.0
    cas[:, 1] = 1.0
    props = cas_proposals(cas, np.array([0.9, 0.1]), class_threshold=0.25, thresholds=np.array([0.5]),
                          outer_ratio=0.25, class_weight=0.2)
    assert len(props) == 1
    p = props[0]
    assert (p.label, p.start, p.end) == (0, 3.0, 6.0)
    assert p.score == pytest.approx(1.0 - 0.0 + 0.2 * 0.9)


def test_per_class_nms_and_seconds():
    props = [Proposal(0, 0.9, 0, 10), Proposal(0, 0.5, 1, 10), Proposal(1, 0.8, 0, 10)]
    kept = per_class_nms(props, 0.5)
    assert [(p.label, p.score) for p in kept] == [(0, 0.9), (1, 0.8)]
    secs = to_seconds(kept, 0.64, duration=5.0)
    assert secs[0].start == 0.0 and secs[0].end == pytest.approx(5.0)


def test_minmax_normalise_constant_column():
    x = np.array([[1.0, 2.0], [3.0, 2.0]])
    np.testing.assert_allclose(minmax_normalise(x), [[0.0, 0.0], [1.0, 0.0]])


def test_write_detections_sorted(tmp_path):
    rows = proposals_to_results([Proposal(0, 0.2, 0, 1), Proposal(1, 0.7, 2, 3)], ["a", "b"])
    assert [r["label"] for r in rows] == ["b", "a"]
    write_detections(tmp_path / "d.json", {"v1": rows, "v0": whole_video_results(np.array([0.1, 0.9]), 12.5, ["a", "b"])})
    data = json.loads((tmp_path / "d.json").read_text())
    assert set(data) == {"version", "results", "external_data"}
    assert data["results"]["v0"] == [{"label": "b", "score": 0.9, "segment": [0.0, 12.5]}]
    assert [r["score"] for r in data["results"]["v1"]] == [0.7, 0.2]
    assert list(tmp_path.iterdir()) == [tmp_path / "d.json"]
