"""Annotation readers on every public THUMOS14 / ActivityNet layout, and on bad files."""
import json
from collections import Counter

import numpy as np
import pytest

from wtal.data.annotations import (
    AnnotationError,
    load_ambiguous,
    load_annotations,
    save_annotations_json,
)

from data_paths import SHARED_DATA

ANNOTATIONS = SHARED_DATA / "annotations"
THUMOS = ANNOTATIONS / "thumos14"
WTALC = THUMOS / "wtalc_reduced"
ACTIVITYNET = ANNOTATIONS / "activitynet" / "activity_net.v1-2.min.json"


def instances(ann, subset):
    return sorted((v.video_id, s.label, s.start, s.end) for v in ann.subset(subset) for s in v.segments)


def test_gt_basnet_counts_and_string_segments():
    ann = load_annotations(THUMOS / "gt_basnet.json")
    assert len(ann.subset("train")) == 200 and len(ann.subset("test")) == 210
    assert ann.num_instances("test") == 3311
    assert ann.default_subsets() == ("train", "test")
    assert len(ann.class_names) == 20 and ann.class_names == sorted(ann.class_names)
    video = ann.videos["video_test_0000896"]
    assert video.duration is None and video.fps is None
    raw = json.loads((THUMOS / "gt_basnet.json").read_text())["database"]["video_test_0000896"]
    assert raw["annotations"][0]["segment"] == ["18.6", "24.8"]
    assert (video.segments[0].start, video.segments[0].end) == (18.6, 24.8)
    vector = ann.label_vector("video_test_0000896")
    assert vector.dtype == np.float32 and vector.sum() == 1.0
    assert vector[ann.class_names.index("HighJump")] == 1.0


def test_backtal_variant_has_fps_duration_and_same_test_instances():
    ann = load_annotations(THUMOS / "gt_thumos14_backtal.json")
    assert ann.subsets() == ["test", "val"] and ann.default_subsets() == ("val", "test")
    video = ann.videos["video_test_0000896"]
    assert video.duration == pytest.approx(226.767) and video.fps == 30
    basnet = load_annotations(THUMOS / "gt_basnet.json")
    assert instances(ann, "test") == instances(basnet, "test")


def test_wtalc_refused_without_allow_pickle():
    with pytest.raises(AnnotationError) as err:
        load_annotations(WTALC)
    message = str(err.value)
    assert message.startswith(str(WTALC / "segments.npy"))
    assert "allow_pickle" in message and "arbitrary code" in message
    with pytest.raises(AnnotationError, match="arbitrary code"):
        load_annotations(WTALC / "labels.npy")  # a file inside the folder means the folder


def test_wtalc_counts():
    ann = load_annotations(WTALC, allow_pickle=True)
    assert len(ann.videos) == 412
    assert len(ann.subset("validation")) == 200 and len(ann.subset("test")) == 212
    assert ann.num_instances("test") == 3358
    assert ann.default_subsets() == ("validation", "test")
    first = ann.videos["video_validation_0000051"]
    assert first.duration == pytest.approx(169.794) and first.fps == 30.0
    assert [(s.label, s.start, s.end) for s in first.segments] == [
        ("Billiards", 67.5, 75.9), ("Billiards", 85.9, 90.6), ("Billiards", 139.3, 148.2)
    ]
    classlist = [c.decode() for c in np.load(WTALC / "classlist.npy")]
    assert ann.class_names == sorted(classlist)


def test_wtalc_round_trip_through_json(tmp_path):
    ann = load_annotations(WTALC, allow_pickle=True)
    out = tmp_path / "sub" / "thumos14.json"
    save_annotations_json(ann, out)
    back = load_annotations(out)
    assert list(back.videos) == list(ann.videos)
    for vid, video in ann.videos.items():
        other = back.videos[vid]
        assert (other.subset, other.duration, other.fps) == (video.subset, video.duration, video.fps)
        assert other.segments == video.segments
    assert back.class_names == ann.class_names
    assert instances(back, "test") == instances(ann, "test")


def test_activitynet_v12_counts_computed_independently():
    raw = json.loads(ACTIVITYNET.read_text())["database"]
    ann = load_annotations(ACTIVITYNET)
    assert len(ann.videos) == len(raw) == 9682
    videos_per_subset = Counter(v["subset"] for v in raw.values())
    instances_per_subset = Counter()
    for v in raw.values():
        instances_per_subset[v["subset"]] += len(v["annotations"])
    for subset, count in videos_per_subset.items():
        assert len(ann.subset(subset)) == count
        assert ann.num_instances(subset) == instances_per_subset[subset]
    labels = {a["label"] for v in raw.values() for a in v["annotations"]}
    assert ann.class_names == sorted(labels) and len(labels) == 100
    assert ann.default_subsets() == ("training", "validation")
    assert ann.videos["---9CpRcKoU"].duration == 14.07


def test_bare_database_without_wrapper(tmp_path):
    path = tmp_path / "bare.json"
    path.write_text(json.dumps({"v1": {"subset": "test", "annotations": [{"label": "A", "segment": [1, 2]}]}}))
    ann = load_annotations(path)
    assert ann.videos["v1"].segments[0].end == 2.0


def write_db(tmp_path, annotations, **video):
    path = tmp_path / "gt.json"
    entry = {"subset": "test", "duration": 100.0, "annotations": annotations}
    entry.update(video)
    path.write_text(json.dumps({"database": {"video_x": entry}}))
    return path


GOOD = {"label": "A", "segment": [1, 2]}


@pytest.mark.parametrize(
    "annotations, video, message",
    [
        ([GOOD, GOOD, {"label": "A", "segment": ["abc", 3]}], {},
         "database.video_x.annotations[2].segment: expected two numbers, got 'abc'"),
        ([GOOD, GOOD, {"label": "A", "segment": "abc"}], {},
         "database.video_x.annotations[2].segment: expected two numbers, got 'abc'"),
        ([{"label": "A", "segment": [1]}], {}, "database.video_x.annotations[0].segment: expected two numbers"),
        ([{"segment": [1, 2]}], {}, "database.video_x.annotations[0].label: missing"),
        ([{"label": "A"}], {}, "database.video_x.annotations[0].segment: missing"),
        ([{"label": "A", "segment": [5, 2]}], {}, "database.video_x.annotations[0].segment: end 2.0 is before start 5.0"),
        ([{"label": "A", "segment": [1, "inf"]}], {}, "database.video_x.annotations[0].segment: expected a finite number"),
        ([GOOD], {"duration": "long"}, "database.video_x.duration: expected a number, got 'long'"),
        ([GOOD], {"subset": 3}, "database.video_x.subset: expected a non-empty string, got 3"),
    ],
)
def test_bad_json_names_file_and_field(tmp_path, annotations, video, message):
    path = write_db(tmp_path, annotations, **video)
    with pytest.raises(AnnotationError) as err:
        load_annotations(path)
    assert str(err.value).startswith(f"{path}: {message}")


def test_missing_subset_and_annotations_fields(tmp_path):
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"database": {"video_x": {"annotations": []}}}))
    with pytest.raises(AnnotationError, match=r"gt.json: database.video_x.subset: missing$"):
        load_annotations(path)
    path.write_text(json.dumps({"database": {"video_x": {"subset": "test"}}}))
    with pytest.raises(AnnotationError, match=r"gt.json: database.video_x.annotations: missing$"):
        load_annotations(path)


def test_invalid_json_and_missing_database(tmp_path):
    path = tmp_path / "gt.json"
    path.write_text('{"database": {')
    with pytest.raises(AnnotationError, match=r"gt.json: line 1 column \d+: invalid JSON"):
        load_annotations(path)
    path.write_text('{"version": 1}')
    with pytest.raises(AnnotationError, match="gt.json: database: missing"):
        load_annotations(path)
    with pytest.raises(AnnotationError, match="no such file"):
        load_annotations(tmp_path / "nope.json")


def test_subset_errors_list_what_exists(tmp_path):
    ann = load_annotations(write_db(tmp_path, [GOOD], subset="holdout"))
    with pytest.raises(AnnotationError, match="no videos in subset 'test'; available: holdout"):
        ann.subset("test")
    with pytest.raises(AnnotationError, match=r"none of training, train, validation, val present \(available: holdout\)"):
        ann.default_subsets()
    ann.videos["video_x"].subset = "train"
    with pytest.raises(AnnotationError, match="default evaluation subset 'test' missing"):
        ann.default_subsets()


def make_wtalc(folder, labels=None):
    folder.mkdir()
    np.save(folder / "videoname.npy", np.array([b"v1", b"v2"]))
    np.save(folder / "subset.npy", np.array([b"validation", b"test"]))
    segments = np.empty(2, dtype=object)
    segments[0], segments[1] = [[1.0, 2.0]], [[3.0, 4.0], [5.0, 6.5]]
    np.save(folder / "segments.npy", segments)
    lab = np.empty(2, dtype=object)
    lab[0], lab[1] = labels or (["A"], ["B", "A"])
    np.save(folder / "labels.npy", lab)
    np.save(folder / "duration.npy", np.array([[10.0], [20.0]]))


def test_small_wtalc_folder_and_its_errors(tmp_path):
    make_wtalc(tmp_path / "ok")
    ann = load_annotations(tmp_path / "ok", allow_pickle=True)
    assert ann.class_names == ["A", "B"]
    assert [(s.label, s.start, s.end) for s in ann.videos["v2"].segments] == [("B", 3.0, 4.0), ("A", 5.0, 6.5)]
    assert ann.videos["v2"].duration == 20.0 and ann.videos["v2"].fps is None
    make_wtalc(tmp_path / "bad", labels=(["A"], ["B"]))
    with pytest.raises(AnnotationError, match=r"bad/labels.npy: \[1\] \(v2\): 1 labels for 2 segments"):
        load_annotations(tmp_path / "bad", allow_pickle=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AnnotationError, match="not a W-TALC annotation folder: missing videoname.npy"):
        load_annotations(tmp_path / "empty")


def test_load_ambiguous_counts_and_errors(tmp_path):
    lines = [line.split() for line in (WTALC / "Ambiguous_test.txt").read_text().splitlines() if line.strip()]
    ambiguous = load_ambiguous(WTALC / "Ambiguous_test.txt")
    assert sum(map(len, ambiguous.values())) == len(lines) == 99
    assert len(ambiguous) == len({fields[0] for fields in lines})
    assert ambiguous["video_test_0000278"] == [(0.0, 1.4), (95.7, 97.2)]
    bad = tmp_path / "amb.txt"
    bad.write_text("v1 1.0 2.0\nv2 x 3\n")
    with pytest.raises(AnnotationError, match=r"amb.txt: line 2: expected two numbers, got 'x'"):
        load_ambiguous(bad)
