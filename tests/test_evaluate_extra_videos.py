"""Predictions on videos outside the evaluated subset: false positives as in the ActivityNet
evaluator (default) or dropped (`ignore_extra_videos`, CLI `--ignore-extra-videos`)."""
import json
import logging

import pytest

from wtal.data.annotations import AnnotationSet, Segment, VideoAnnotation
from wtal.evaluate.metrics import evaluate
from wtal.pipeline.cli import main


def _ann() -> AnnotationSet:
    videos = {
        "v1": VideoAnnotation("v1", "test", 100.0, 25.0, [Segment("A", 0, 10)]),
        "t1": VideoAnnotation("t1", "train", 100.0, 25.0, [Segment("A", 0, 10)]),
    }
    return AnnotationSet(videos, ["A"], "mem.json")


def _det(score):
    return {"label": "A", "score": score, "segment": [0.0, 10.0]}


DETECTIONS = {"t1": [_det(0.9)], "absent": [_det(0.8)], "v1": [_det(0.7)]}


def test_predictions_on_other_videos_are_false_positives(caplog):
    # ranked: t1 (other subset) FP, absent (not annotated) FP, v1 TP -> precision 1/3 at recall 1
    with caplog.at_level(logging.WARNING):
        report = evaluate(_ann(), DETECTIONS, "test", [0.5])
    assert report.mAP == pytest.approx([1 / 3])
    assert report.num_predictions == 3 and report.num_videos == 1
    assert "2 predictions on 2 videos outside subset 'test' counted as false positives" in caplog.text


def test_ignore_extra_videos_drops_them():
    report = evaluate(_ann(), DETECTIONS, "test", [0.5], ignore_extra_videos=True)
    assert report.mAP == pytest.approx([1.0]) and report.num_predictions == 1


def test_excluded_videos_are_dropped_not_counted():
    report = evaluate(_ann(), {"t1": [_det(0.9)], "v1": [_det(0.7)]}, "test", [0.5], exclude=("t1",))
    assert report.mAP == pytest.approx([1.0]) and report.num_predictions == 1


def test_cli_flag(tmp_path, capsys):
    ann = {"database": {
        "v1": {"subset": "testing", "duration": 100.0, "annotations": [{"label": "A", "segment": [0, 10]}]},
        "t1": {"subset": "training", "duration": 100.0, "annotations": [{"label": "A", "segment": [0, 10]}]},
    }}
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    (tmp_path / "det.json").write_text(json.dumps({"version": "VERSION 1.3", "results": DETECTIONS,
                                                   "external_data": {}}))
    out = {}
    for flag in ([], ["--ignore-extra-videos"]):
        report = tmp_path / f"r{len(flag)}.json"
        assert main(["evaluate", "--detections", str(tmp_path / "det.json"), "--annotations", str(tmp_path / "ann.json"),
                     "--subset", "testing", "--tiou", "0.5", "--json", str(report), *flag]) == 0
        out[len(flag)] = json.loads(report.read_text())["mAP"]
    assert out[0] == pytest.approx([1 / 3]) and out[1] == pytest.approx([1.0])
