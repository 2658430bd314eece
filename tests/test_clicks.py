"""Background clicks: the public THUMOS14 CSVs, wtal JSON, and simulation."""
import csv
import json

import pytest

from wtal.data.annotations import (
    AnnotationError,
    AnnotationSet,
    Segment,
    VideoAnnotation,
    load_annotations,
)
from wtal.data.clicks import background_segments, choose_click_file, frame_step, load_clicks, save_clicks, simulate_clicks
from wtal.pipeline.stages import _training_clicks

from data_paths import SHARED_DATA

THUMOS = SHARED_DATA / "annotations" / "thumos14"


@pytest.mark.parametrize("annotator, count, videos", [("A1", 2264, 200), ("A2", 2323, 199), ("A3", 2344, 199)])
def test_public_click_files(annotator, count, videos):
    path = THUMOS / f"background_clicks_{annotator}.csv"
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == count
    clicks = load_clicks(path)
    assert sum(map(len, clicks.values())) == count and len(clicks) == videos
    assert clicks == load_clicks(THUMOS, annotator=annotator)
    # a point click (Start == End) is read as that time
    row = next(r for r in rows if r["Start"] == r["End"])
    assert float(row["Start"]) in clicks[row["URLID"]]
    assert all(times == sorted(times) for times in clicks.values())


def test_interval_rows_read_as_midpoint():
    clicks = load_clicks(THUMOS / "background_clicks_A1.csv")
    # row "video_validation_0000182,...,64,64.5,1,1" spans half a second
    assert 64.25 in clicks["video_validation_0000182"]


def test_folder_needs_a_known_annotator(tmp_path):
    with pytest.raises(AnnotationError, match="annotator: choose one of A1, A2, A3"):
        load_clicks(THUMOS)
    with pytest.raises(AnnotationError, match="unknown annotator 'A9'; choose one of A1, A2, A3"):
        load_clicks(THUMOS, annotator="A9")
    with pytest.raises(AnnotationError, match="only when the path is a folder"):
        load_clicks(THUMOS / "background_clicks_A1.csv", annotator="A1")


def test_one_rule_chooses_the_click_file(tmp_path):
    files = [THUMOS / f"background_clicks_A{i}.csv" for i in (1, 2, 3)]
    assert choose_click_file(files, "A2") == files[1]
    assert choose_click_file(THUMOS, "A3") == THUMOS / "background_clicks_A3.csv"
    assert choose_click_file(str(files[0])) == files[0]
    with pytest.raises(AnnotationError, match=r"annotator: 3 click files given .*: choose one with --annotator"):
        choose_click_file(files)
    with pytest.raises(AnnotationError, match=r"annotator: 'A9' matches 0 of the click files"):
        choose_click_file(files, "A9")
    twins = [tmp_path / "x_A1.json", tmp_path / "y_A1.json"]
    with pytest.raises(AnnotationError, match=r"annotator: 'A1' matches 2 of the click files x_A1, y_A1; it must match one"):
        choose_click_file(twins, "A1")
    with pytest.raises(AnnotationError, match=r"thumos14: path: a folder of click files is given alone"):
        choose_click_file([files[0], THUMOS], "A1")
    # training (`wtal train --clicks ... --annotator A`) goes through the same rule
    assert _training_clicks("backtal", [str(f) for f in files], "A2") == load_clicks(files[1])
    with pytest.raises(AnnotationError, match="annotator: 3 click files given"):
        _training_clicks("backtal", [str(f) for f in files], None)


def test_frame_step_follows_the_video_fps():
    step = {fps: frame_step(VideoAnnotation("v", "val", 10.0, fps)) for fps in (30.0, 25.0, 24.0, None, 0.0)}
    assert step == {30.0: 0.5, 25.0: 12 / 25, 24.0: 0.5, None: 0.5, 0.0: 0.5}


def test_bad_csv_names_line_and_field(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("URLID,Start,End\nv1,1.5,1.5\nv1,abc,2\n")
    with pytest.raises(AnnotationError, match=r"c.csv: line 3.Start: expected a number, got 'abc'"):
        load_clicks(path)
    path.write_text("URLID,Time\nv1,1\n")
    with pytest.raises(AnnotationError, match=r"c.csv: header: missing column\(s\) Start, End"):
        load_clicks(path)


def test_json_round_trip_and_validation(tmp_path):
    clicks = {"v2": [3.5, 1.25], "v1": []}
    path = tmp_path / "out" / "clicks.json"
    save_clicks(clicks, path)
    assert json.loads(path.read_text()) == {"v1": [], "v2": [3.5, 1.25]}
    assert load_clicks(path) == {"v1": [], "v2": [1.25, 3.5]}
    path.write_text(json.dumps({"v1": [1.0, "soon"]}))
    with pytest.raises(AnnotationError, match=r"clicks.json: v1\[1\]: expected a number, got 'soon'"):
        load_clicks(path)


def small_set(duration=100.0):
    videos = {
        "a": VideoAnnotation("a", "train", duration, None,
                             [Segment("X", 10, 20), Segment("Y", 15, 30), Segment("X", 50, 60)]),
        "b": VideoAnnotation("b", "train", 40.0, None, []),
        "c": VideoAnnotation("c", "train", 100.0, None, [Segment("X", 0, 10), Segment("X", 90, 120)]),
    }
    return AnnotationSet(videos, ["X", "Y"], "mem.json")


def test_background_segments_hand_worked():
    ann = small_set()
    # [10,20] and [15,30] merge; gaps before, between and after
    assert background_segments(ann, "a") == [(0.0, 10), (30, 50), (60, 100.0)]
    assert background_segments(ann, "b") == [(0.0, 40.0)]
    # a segment running past the end is clipped; no gap before 0 or after the end
    assert background_segments(ann, "c") == [(10, 90)]


def test_simulate_one_click_per_background_segment():
    ann = small_set()
    clicks = simulate_clicks(ann, "train", seed=0, protocol="uniform")
    assert set(clicks) == {"a", "b", "c"}
    for vid, times in clicks.items():
        gaps = background_segments(ann, vid)
        assert len(times) == len(gaps)
        assert all(lo <= t <= hi for t, (lo, hi) in zip(times, gaps))
    assert simulate_clicks(ann, "train", seed=0, protocol="uniform") == clicks
    assert simulate_clicks(ann, "train", seed=1, protocol="uniform") != clicks


def test_simulate_needs_durations():
    ann = load_annotations(THUMOS / "gt_basnet.json")
    with pytest.raises(AnnotationError, match=r"duration: missing for 200 of 200 videos of subset 'train'"):
        simulate_clicks(ann, "train", seed=0)


def test_simulate_on_real_annotations_stays_in_background():
    ann = load_annotations(THUMOS / "gt_thumos14_backtal.json")
    clicks = simulate_clicks(ann, "val", seed=3, protocol="uniform")
    assert len(clicks) == 200
    for vid, times in clicks.items():
        video = ann.videos[vid]
        assert times and all(0 <= t <= video.duration for t in times)
        for t in times:
            assert not any(s.start < t < s.end for s in video.segments)
