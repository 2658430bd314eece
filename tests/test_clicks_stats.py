"""Click statistics (`click_stats`, `wtal clicks stats`) and the human-like click simulation.

The figures of the three public THUMOS14 annotator files are measured against both shared ground
truths of the validation videos (they agree: 2880 background gaps); the `human` protocol's
defaults are their means, and its simulated clicks reproduce them within stated tolerances.
"""
import json
import math

import numpy as np
import pytest
from test_clicks import small_set

from wtal.data.annotations import VideoAnnotation, load_annotations
from wtal.data.clicks import (
    PROTOCOLS,
    ClickProtocol,
    action_spans,
    background_segments,
    click_stats,
    load_clicks,
    simulate_clicks,
)
from wtal.pipeline.cli import main

from data_paths import SHARED_DATA

THUMOS = SHARED_DATA / "annotations" / "thumos14"
GROUND_TRUTHS = [("gt_thumos14_backtal.json", "val"), ("wtalc_reduced", "validation")]
FIELDS = ("videos", "videos_with_clicks", "clicks", "gaps", "gaps_covered", "clicks_in_gaps", "inside_actions",
          "on_boundaries", "on_grid", "outside_video")
MEASURED = {  # wtal clicks stats background_clicks_A?.csv --annotations gt_thumos14_backtal.json
    "A1": (200, 200, 2264, 2880, 1853, 2142, 122, 53, 2261, 0),
    "A2": (200, 199, 2323, 2880, 2269, 2283, 40, 12, 2323, 0),
    "A3": (200, 199, 2344, 2880, 2074, 2208, 136, 39, 2342, 0),
}


@pytest.fixture(scope="module")
def thumos_val():
    return load_annotations(THUMOS / "gt_thumos14_backtal.json")


@pytest.mark.parametrize("gt, subset", GROUND_TRUTHS)
@pytest.mark.parametrize("annotator", sorted(MEASURED))
def test_public_annotator_statistics(gt, subset, annotator):
    ann = load_annotations(THUMOS / gt, allow_pickle=True)
    stats = click_stats(load_clicks(THUMOS, annotator=annotator), ann, subset)
    assert tuple(getattr(stats, f) for f in FIELDS) == MEASURED[annotator]
    assert stats.missing_videos == [] and stats.other_subset_videos == []
    # every click is in a gap, inside an action or outside the video
    assert stats.clicks_in_gaps + stats.inside_actions + stats.outside_video == stats.clicks


def test_review_shares_count_boundary_clicks_as_inside():
    # review 3.4's 7.7 % / 2.2 % / 7.5 % are (inside + on a boundary) / clicks
    shares = [round(100 * (m[6] + m[7]) / m[2], 1) for m in MEASURED.values()]
    assert shares == [7.7, 2.2, 7.5]


def _inside_depths(clicks, ann, subset):
    return [min(t - s, e - t) for v in ann.subset(subset) for t in clicks.get(v.video_id, [])
            for s, e in action_spans(ann, v.video_id) if s + 1e-6 < t < e - 1e-6]


def test_human_defaults_are_the_annotator_means(thumos_val):
    stats = [click_stats(load_clicks(THUMOS, annotator=a), thumos_val, "val") for a in sorted(MEASURED)]
    human = PROTOCOLS["human"]
    assert human == ClickProtocol()
    assert human.gap_fraction == pytest.approx(np.mean([s.gaps_covered / s.gaps for s in stats]), abs=5e-5)
    assert human.clicks_per_gap == pytest.approx(np.mean([s.clicks_per_covered_gap for s in stats]), abs=5e-5)
    assert human.inside_fraction == pytest.approx(np.mean([s.inside_share for s in stats]), abs=5e-5)
    depths = [np.mean(_inside_depths(load_clicks(THUMOS, annotator=a), thumos_val, "val")) for a in sorted(MEASURED)]
    assert human.inside_seconds == pytest.approx(np.mean(depths), abs=5e-4)
    assert human.frame_rate == 2.0


def _coverage(clicks, ann, subset, keep):
    covered = [any(a - 1e-6 <= t <= b + 1e-6 for t in clicks.get(v.video_id, []))
               for v in ann.subset(subset) for a, b in background_segments(ann, v.video_id) if keep(b - a)]
    return sum(covered) / len(covered)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_human_simulation_reproduces_the_annotators(thumos_val, seed):
    human = PROTOCOLS["human"]
    clicks = simulate_clicks(thumos_val, "val", seed)
    stats = click_stats(clicks, thumos_val, "val")
    assert stats.gaps == 2880 and stats.missing_videos == [] and stats.outside_video == 0
    assert abs(stats.gaps_covered / stats.gaps - human.gap_fraction) < 0.015
    assert abs(stats.clicks_per_covered_gap - human.clicks_per_gap) < 0.02
    assert abs(stats.inside_share - human.inside_fraction) < 0.008
    assert stats.on_grid == stats.clicks  # every click on a frame of the 2 fps grid
    assert abs(np.mean(_inside_depths(clicks, thumos_val, "val")) - human.inside_seconds) < 0.2
    # annotators skip short gaps: 9.5 % of gaps under 0.5 s clicked, 95.5 % of those over 16 s
    assert _coverage(clicks, thumos_val, "val", lambda length: length < 0.5) < 0.25
    assert _coverage(clicks, thumos_val, "val", lambda length: length > 16) > 0.88
    assert simulate_clicks(thumos_val, "val", seed) == clicks
    assert simulate_clicks(thumos_val, "val", seed + 10) != clicks


def test_uniform_protocol_clicks_every_gap_once(thumos_val):
    clicks = simulate_clicks(thumos_val, "val", 0, "uniform")
    stats = click_stats(clicks, thumos_val, "val")
    assert (stats.clicks, stats.gaps_covered, stats.clicks_in_gaps, stats.inside_actions) == (2880, 2880, 2880, 0)
    for vid, times in clicks.items():
        gaps = background_segments(thumos_val, vid)
        assert len(times) == len(gaps) and all(a <= t <= b for t, (a, b) in zip(times, gaps))


def test_clicks_outside_a_long_segment_are_clipped():
    # two W-TALC segments run past the video's end: no gap (and no click) beyond it
    ann = load_annotations(THUMOS / "wtalc_reduced", allow_pickle=True)
    video = ann.videos["video_validation_0000364"]
    assert max(s.end for s in video.segments) > video.duration
    assert background_segments(ann, video.video_id)[-1][1] <= video.duration
    assert all(t <= video.duration for t in simulate_clicks(ann, "validation", 0, "uniform")[video.video_id])


def test_stats_hand_worked():
    ann = small_set()
    ann.videos["d"] = VideoAnnotation("d", "test", 10.0, None, [])
    clicks = {"a": [5.0, 10.0, 12.25, 55.0, 70.0, 70.5, 120.0], "b": [], "c": [50.1], "d": [1.0], "zz": [1.0]}
    stats = click_stats(clicks, ann, "train")
    # a: gaps (0,10) (30,50) (60,100); 10.0 is the start of action [10,30]; 120 is past the end
    assert tuple(getattr(stats, f) for f in FIELDS) == (3, 2, 8, 5, 3, 5, 2, 1, 6, 1)
    assert stats.missing_videos == ["zz"] and stats.other_subset_videos == ["d"]
    assert stats.clicks_per_covered_gap == pytest.approx(5 / 3)
    assert stats.inside_share == 0.25 and stats.grid_share == 0.75
    assert stats.as_dict()["gap_fraction"] == 0.6


def test_human_clicks_lie_on_the_video_frame_grid():
    # 25 fps: the annotators' frames are every 12th, 0.48 s apart
    ann = small_set()
    for video in ann.videos.values():
        video.fps = 25.0
    clicks = simulate_clicks(ann, "train", 4, ClickProtocol(short_gap_seconds=0.0, gap_fraction=1.0))
    times = [t for ts in clicks.values() for t in ts]
    assert times and all(math.isclose(t / 0.48, round(t / 0.48), abs_tol=1e-9) for t in times)
    assert click_stats(clicks, ann, "train").gaps_covered == 5


def _stats_cli(*args):
    return main(["clicks", "stats", *args])


def test_cli_prints_the_statistics(capsys):
    gt = str(THUMOS / "gt_thumos14_backtal.json")
    assert _stats_cli(str(THUMOS / "background_clicks_A1.csv"), "--annotations", gt) == 0
    out = capsys.readouterr().out
    for line in ("videos with clicks  200 of 200 'val' videos", "clicks  2264", "background gaps  2880",
                 "gaps covered  1853 (64.3 %)", "clicks per covered gap  1.156", "clicks inside actions  122 (5.4 %)",
                 "clicks on an action boundary  53 (2.3 %)", "clicks on the 2 fps frame grid  2261 (99.9 %)",
                 "clicks outside the video  0", "videos missing from the ground truth  0"):
        assert " ".join(line.split()) in " ".join(out.split()), line
    assert _stats_cli(str(THUMOS), "--annotator", "A2", "--annotations", gt, "--json") == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["clicks_file"].endswith("background_clicks_A2.csv")
    assert (figures["clicks"], figures["gaps_covered"], figures["inside_actions"]) == (2323, 2269, 40)


def test_cli_bad_click_files_are_one_line(tmp_path, capsys):
    gt = str(THUMOS / "gt_thumos14_backtal.json")
    bad = tmp_path / "bad.csv"
    bad.write_text("URLID,Start,End\nv1,1.5,oops\n")
    cases = [(tmp_path / "none.json", "none.json: path: no such file"),
             (bad, "bad.csv: line 2.End: expected a number, got 'oops'")]
    for path, message in cases:
        assert _stats_cli(str(path), "--annotations", gt) == 2
        captured = capsys.readouterr()
        assert captured.err.count("\n") == 1 and message in captured.err and "Traceback" not in captured.err
    assert _stats_cli(str(THUMOS), "--annotations", gt) == 2
    assert "annotator: choose one of A1, A2, A3" in capsys.readouterr().err
    # gaps need durations, which gt_basnet.json lacks
    assert _stats_cli(str(THUMOS / "background_clicks_A1.csv"), "--annotations", str(THUMOS / "gt_basnet.json")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gt_basnet.json: database.video_validation_" in err and ".duration: missing" in err


def test_cli_simulate_protocols(tmp_path, capsys):
    gt = str(THUMOS / "gt_thumos14_backtal.json")
    out = tmp_path / "clicks.json"
    assert main(["clicks", "simulate", "--annotations", gt, "--out", str(out), "--protocol", "uniform"]) == 0
    assert sum(map(len, json.loads(out.read_text()).values())) == 2880
    assert main(["clicks", "simulate", "--annotations", gt, "--out", str(out), "--set", "clicks_per_gap=1"]) == 0
    assert "(human protocol)" in capsys.readouterr().out
    stats = click_stats(load_clicks(out), load_annotations(gt), "val")
    assert stats.clicks_in_gaps == stats.gaps_covered
    for setting, message in (("inside_fraction=0.9", "clicks: inside_fraction: 0.9 is not a number in [0.0, 0.5]"),
                             ("gap_fraction=1", "clicks: gap_fraction: 1.0 is more than these 2880 gaps can reach"),
                             ("depth=1", "clicks: depth: unknown setting")):
        assert main(["clicks", "simulate", "--annotations", gt, "--out", str(out), "--set", setting]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
