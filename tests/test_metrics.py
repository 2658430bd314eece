"""The ActivityNet detection metric against hand-worked cases and the loop reference."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from wtal.data.annotations import AnnotationError, AnnotationSet, Segment, VideoAnnotation
from wtal.evaluate.metrics import (
    DEFAULT_TIOUS,
    EvaluationError,
    average_precision,
    evaluate,
    loop_average_precision,
    parse_tiou,
    precision_recall,
    tiou,
)
from wtal.evaluate.protocols import THUMOS14_EXCLUDED, get_protocol
from wtal.evaluate.reports import (
    evaluate_files,
    format_per_class,
    format_table,
    read_detections,
    write_json,
)


def make_ann(videos: dict, subset="test") -> AnnotationSet:
    """videos: {video_id: [(label, start, end), ...]} all in one subset, duration 100 s."""
    entries = {
        vid: VideoAnnotation(vid, subset, 100.0, 25.0, [Segment(*s) for s in segs])
        for vid, segs in videos.items()
    }
    labels = sorted({s[0] for segs in videos.values() for s in segs})
    return AnnotationSet(entries, labels, "mem.json")


def det(label, score, start, end):
    return {"label": label, "score": score, "segment": [start, end]}


def ap_both(gt, pred, tious):
    """AP from both implementations; they must agree before the value is checked."""
    fast = average_precision(gt, pred, tious)
    slow = loop_average_precision(gt, pred, tious)
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-12)
    return fast


# --- tIoU --------------------------------------------------------------------------------


def test_tiou_continuous_seconds_without_plus_one():
    got = tiou([0, 10], [[0, 10], [5, 15], [10, 20], [20, 30], [2, 4], [-5, 15]])
    np.testing.assert_allclose(got, [1.0, 5 / 15, 0.0, 0.0, 0.2, 0.5])


def test_tiou_zero_length_segments_are_zero_not_nan():
    got = tiou([3, 3], [[3, 3], [0, 10]])
    np.testing.assert_array_equal(got, [0.0, 0.0])


# --- hand-worked AP cases (one class; gt = (video, seg), pred = (video, seg, score)) ----


def test_case01_perfect_detection_ap_one():
    ap = ap_both(([0], [[0, 10]]), ([0], [[0, 10]], [0.9]), [0.5])
    assert ap.tolist() == [1.0]


def test_case02_tp_fp_tp_is_five_sixths():
    # ranks: TP (P=1, R=.5), FP (P=.5), TP (P=2/3, R=1); envelope 1, 2/3 -> .5*1 + .5*2/3
    gt = ([0, 0], [[0, 10], [20, 30]])
    pred = ([0, 0, 0], [[0, 10], [50, 60], [20, 30]], [0.9, 0.8, 0.7])
    assert ap_both(gt, pred, [0.5])[0] == pytest.approx(0.8333333333333333, abs=1e-12)


def test_case03_score_ties_keep_input_order():
    gt = ([0], [[0, 10]])
    # FP listed first, same score: ranked first -> precision 1/2 at recall 1
    assert ap_both(gt, ([0, 0], [[50, 60], [0, 10]], [0.5, 0.5]), [0.5])[0] == pytest.approx(0.5)
    # TP listed first: AP 1
    assert ap_both(gt, ([0, 0], [[0, 10], [50, 60]], [0.5, 0.5]), [0.5])[0] == pytest.approx(1.0)


def test_case04_duplicate_falls_back_to_next_unmatched_gt():
    # g1 [0,10] and g2 [8,18]; two identical predictions [0,10]: the second loses g1
    # (taken) and falls back to g2 at tIoU 2/18 = 0.111: TP at 0.1, FP at 0.5.
    gt = ([0, 0], [[0, 10], [8, 18]])
    pred = ([0, 0], [[0, 10], [0, 10]], [0.9, 0.8])
    ap = ap_both(gt, pred, [0.1, 0.5])
    assert ap[0] == pytest.approx(1.0)
    assert ap[1] == pytest.approx(0.5)  # P=1 at R=.5, then FP; R never reaches 1


def test_case05_highest_tiou_gt_is_taken_not_the_first_listed():
    # p1 [3,12]: tIoU with g1 [0,10] 7/13 = .54, with g2 [3,13] .9 -> takes g2
    # p2 [0,8]: tIoU with g1 .8 -> TP. (Taking the first listed GT would make p2 a FP: AP .5.)
    gt = ([0, 0], [[0, 10], [3, 13]])
    pred = ([0, 0], [[3, 12], [0, 8]], [0.9, 0.8])
    assert ap_both(gt, pred, [0.5])[0] == pytest.approx(1.0)


def test_case06_threshold_boundary_is_inclusive():
    gt = ([0], [[0, 10]])
    pred = ([0], [[0, 5]], [1.0])  # tIoU exactly 0.5
    assert ap_both(gt, pred, [0.5, 0.6]).tolist() == [1.0, 0.0]
    # 0.3 from the parsed default grid is the same double as 3/10
    pred = ([0], [[0, 3]], [1.0])
    ap = ap_both(gt, pred, parse_tiou("0.1:0.7:0.1"))
    assert ap.tolist() == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]


def test_case07_interpolation_lifts_earlier_precision():
    # FP, TP, TP with 2 GT: precision 0, 1/2, 2/3 -> envelope 2/3 at both recall steps
    gt = ([0, 0], [[0, 10], [20, 30]])
    pred = ([0, 0, 0], [[40, 50], [0, 10], [20, 30]], [0.9, 0.8, 0.7])
    assert ap_both(gt, pred, [0.5])[0] == pytest.approx(2 / 3, abs=1e-12)


def test_case08_missed_ground_truth_limits_recall():
    gt = ([0, 0, 1], [[0, 10], [20, 30], [0, 10]])
    pred = ([0], [[0, 10]], [0.9])
    assert ap_both(gt, pred, [0.5])[0] == pytest.approx(1 / 3, abs=1e-12)


def test_case09_predictions_match_only_gt_of_their_own_video():
    # same segment, other video: FP; then the right video: TP -> P=.5 at R=1
    gt = ([1], [[0, 10]])
    pred = ([0, 1], [[0, 10], [0, 10]], [0.9, 0.8])
    assert ap_both(gt, pred, [0.5])[0] == pytest.approx(0.5)


def test_case10_multiple_thresholds_at_once():
    # one GT [0,10], predictions with tIoU 0.9, 0.6, 0.3 in score order
    gt = ([0], [[0, 10]])
    pred = ([0, 0, 0], [[0, 9], [0, 6], [0, 3]], [0.9, 0.8, 0.7])
    # at .2 and .5 the first is TP (AP 1); at .7 first TP; at .95 none -> 0
    assert ap_both(gt, pred, [0.2, 0.5, 0.7, 0.95]).tolist() == [1.0, 1.0, 1.0, 0.0]
    # GT [0,10] with a best prediction of tIoU .6 ranked second: AP .5 at .5, 0 at .7
    pred = ([0, 0], [[0, 3], [0, 6]], [0.9, 0.8])
    assert ap_both(gt, pred, [0.2, 0.5, 0.7]).tolist() == [1.0, 0.5, 0.0]


def test_no_predictions_is_zero():
    assert ap_both(([0], [[0, 10]]), ([], np.zeros((0, 2)), []), [0.5, 0.7]).tolist() == [0.0, 0.0]


# --- evaluate(): classes, videos, exclusion, protocols -----------------------------------


def test_case11_class_without_predictions_counts_as_zero_in_map():
    ann = make_ann({"v1": [("A", 0, 10)], "v2": [("B", 0, 10)]})
    report = evaluate(ann, {"v1": [det("A", 0.9, 0, 10)]}, "test", [0.5])
    assert report.per_class_ap == {"A": [1.0], "B": [0.0]}
    assert report.mAP == [0.5] and report.average_mAP == 0.5


def test_case12_videos_outside_gt_ignored_but_video_lacking_class_is_fp():
    ann = make_ann({"v1": [("A", 0, 10)], "v2": [("B", 0, 10)]})
    detections = {
        "not_in_gt": [det("A", 1.0, 0, 10)],  # ignored with ignore_extra_videos
        "v2": [det("A", 0.9, 0, 10), det("B", 0.7, 0, 10)],  # A here is a FP
        "v1": [det("A", 0.8, 0, 10)],
    }
    report = evaluate(ann, detections, "test", [0.5], ignore_extra_videos=True)
    assert report.per_class_ap["A"] == pytest.approx([0.5])
    assert report.per_class_ap["B"] == pytest.approx([1.0])
    assert report.mAP == pytest.approx([0.75])
    assert report.num_predictions == 3 and report.num_videos == 2


def test_class_of_other_subset_is_ignored_and_unknown_label_is_an_error():
    ann = make_ann({"v1": [("A", 0, 10)]})
    ann.videos["t1"] = VideoAnnotation("t1", "train", 50.0, None, [Segment("C", 0, 5)])
    ann.class_names = ["A", "C"]
    report = evaluate(ann, {"v1": [det("C", 0.9, 0, 10), det("A", 0.5, 0, 10)]}, "test", [0.5])
    assert report.per_class_ap == {"A": [1.0]} and report.num_predictions == 1
    with pytest.raises(EvaluationError, match="'Zumba' is not a class of mem.json"):
        evaluate(ann, {"v1": [det("Zumba", 0.9, 0, 10)]}, "test", [0.5])


def test_unknown_subset_lists_available():
    ann = make_ann({"v1": [("A", 0, 10)]})
    with pytest.raises(AnnotationError, match="no videos in subset 'validation'; available: test"):
        evaluate(ann, {}, "validation")


def test_exclude_thumos14_videos_and_report_them():
    ann = make_ann({
        "video_test_0000004": [("A", 0, 10)],
        "video_test_0000270": [("A", 0, 10), ("A", 20, 30)],
        "video_test_0001496": [("A", 5, 15)],
    })
    detections = {
        "video_test_0000004": [det("A", 0.5, 0, 10)],
        "video_test_0000270": [det("A", 0.9, 50, 60)],  # FP, removed with its video
    }
    full = evaluate(ann, detections, "test", [0.5])
    assert full.per_class_ap["A"] == pytest.approx([0.5 * 0.25])  # 1 TP of 4 GT at P=.5
    reduced = evaluate(ann, detections, "test", [0.5], exclude=THUMOS14_EXCLUDED)
    assert reduced.per_class_ap["A"] == [1.0]
    assert reduced.excluded == ["video_test_0000270", "video_test_0001496"]
    assert reduced.num_videos == 1 and reduced.num_predictions == 1


def test_ambiguous_overlap_removes_predictions_touching_does_not():
    ann = make_ann({"v1": [("A", 0, 10)]})
    detections = {"v1": [det("A", 0.9, 40, 50), det("A", 0.8, 0, 10)]}
    assert evaluate(ann, detections, "test", [0.5]).per_class_ap["A"] == [0.5]
    cut = evaluate(ann, detections, "test", [0.5], ambiguous={"v1": [(45, 48)]})
    assert cut.per_class_ap["A"] == [1.0] and cut.num_predictions == 1
    touching = evaluate(ann, detections, "test", [0.5], ambiguous={"v1": [(50, 55)]})
    assert touching.per_class_ap["A"] == [0.5]


def test_wtalc_protocol_uses_snippet_indices():
    # GT [0, 1.0] s -> snippets [0, 2); prediction [0.3, 1.0] -> [0, 2): index IoU 1.
    # In seconds the tIoU is 0.7, so at 0.8 only the W-TALC protocol counts it.
    ann = make_ann({"v1": [("A", 0.0, 1.0)]})
    detections = {"v1": [det("A", 0.9, 0.3, 1.0)]}
    assert evaluate(ann, detections, "test", [0.8]).per_class_ap["A"] == [0.0]
    wtalc = evaluate(ann, detections, "test", [0.8], protocol="wtalc", ambiguous={})
    assert wtalc.per_class_ap["A"] == [1.0] and wtalc.protocol == "wtalc"
    # half-to-even rounding as in W-TALC's Python code: 0.32 s * 25/16 = 0.5 -> 0, 0.96 s -> 2
    np.testing.assert_array_equal(get_protocol("wtalc").to_units([[0.32, 0.96]]), [[0.0, 2.0]])
    with pytest.raises(EvaluationError, match="Ambiguous"):
        evaluate(ann, detections, "test", [0.8], protocol="wtalc")
    # Ambiguous overlap is judged on snippet indices: [1.0, 1.2] s -> [2, 2) is empty
    kept = evaluate(ann, detections, "test", [0.8], protocol="wtalc", ambiguous={"v1": [(1.0, 1.2)]})
    assert kept.num_predictions == 1


def test_report_json_has_exactly_the_design_keys(tmp_path):
    ann = make_ann({"v1": [("A", 0, 10)], "v2": [("B", 0, 10)]})
    report = evaluate(ann, {"v1": [det("A", 0.9, 0, 10)]}, "test")
    path = tmp_path / "r" / "report.json"
    write_json(report, path)
    data = json.loads(path.read_text())
    assert set(data) == {"tiou", "mAP", "average_mAP", "per_class_ap", "num_videos",
                         "num_predictions", "protocol", "subset", "excluded"}
    assert data["tiou"] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    assert data["mAP"] == [0.5] * 7 and data["average_mAP"] == 0.5
    assert data["per_class_ap"] == {"A": [1.0] * 7, "B": [0.0] * 7}
    table = format_table(report)
    assert "0.50       50.00" in table and "average    50.00" in table
    per_class = format_per_class(report)
    assert per_class.splitlines()[1].startswith("A ") and "100.00" in per_class.splitlines()[1]


def test_parse_tiou():
    np.testing.assert_array_equal(parse_tiou("0.1:0.7:0.1"), [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    np.testing.assert_array_equal(parse_tiou("0.1:0.7:0.1"), DEFAULT_TIOUS)
    assert len(parse_tiou("0.5:0.95:0.05")) == 10 and parse_tiou("0.5:0.95:0.05")[-1] == 0.95
    np.testing.assert_array_equal(parse_tiou("0.3,0.5"), [0.3, 0.5])
    np.testing.assert_array_equal(parse_tiou("0.5"), [0.5])
    for bad in ("a:b:c", "0.1:0.7", "0.7:0.1:0.1", "0:0.5:0.1", "1.5"):
        with pytest.raises(EvaluationError, match="--tiou"):
            parse_tiou(bad)


def test_precision_recall_curve_matches_ap():
    ann = make_ann({"v1": [("A", 0, 10), ("A", 20, 30)]})
    detections = {"v1": [det("A", 0.9, 0, 10), det("A", 0.8, 50, 60), det("A", 0.7, 20, 30)]}
    precision, recall, ap = precision_recall(ann, detections, "test", 0.5)["A"]
    np.testing.assert_allclose(precision, [1.0, 0.5, 2 / 3])
    np.testing.assert_allclose(recall, [0.5, 0.5, 1.0])
    assert ap == pytest.approx(5 / 6)


def test_plot_pr_writes_png(tmp_path):
    from wtal.evaluate.plots import plot_pr

    ann = make_ann({"v1": [("A", 0, 10)], "v2": [("B", 0, 10)]})
    out = plot_pr(ann, {"v1": [det("A", 0.9, 0, 10)]}, "test", 0.5, tmp_path / "pr.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 2000


# --- property test: vectorised == loop ---------------------------------------------------


def test_vectorised_matches_loop_on_random_inputs():
    rng = np.random.default_rng(1234)
    tious = [0.1, 0.3, 0.5, 0.7, 0.9]
    for _ in range(300):
        videos = int(rng.integers(1, 5))
        n_gt, n_pred = int(rng.integers(1, 15)), int(rng.integers(0, 40))
        # coordinates on a half-second grid: exact tIoU ties and exact threshold hits
        gt_seg = np.sort(rng.integers(0, 40, (n_gt, 2)), axis=1) / 2.0
        pred_seg = np.sort(rng.integers(0, 40, (n_pred, 2)), axis=1) / 2.0
        gt = (rng.integers(0, videos, n_gt), gt_seg)
        pred = (rng.integers(0, videos, n_pred), pred_seg, rng.integers(0, 5, n_pred) / 4.0)
        np.testing.assert_allclose(
            average_precision(gt, pred, tious), loop_average_precision(gt, pred, tious), rtol=0, atol=1e-12
        )


def test_evaluate_vectorised_matches_loop_on_random_sets():
    rng = np.random.default_rng(99)
    for _ in range(20):
        classes = [f"c{i}" for i in range(int(rng.integers(1, 6)))]
        videos = {}
        for v in range(int(rng.integers(1, 8))):
            segs = []
            for _ in range(int(rng.integers(0, 6))):
                start = float(rng.integers(0, 60))
                segs.append((str(rng.choice(classes)), start, start + float(rng.integers(1, 20))))
            videos[f"v{v}"] = segs
        videos["v_anchor"] = [(classes[0], 1.0, 5.0)]
        ann = make_ann(videos)
        detections = {}
        for vid in list(videos) + ["v_outside"]:
            detections[vid] = []
            for _ in range(int(rng.integers(0, 12))):
                start = float(rng.integers(0, 60)) + float(rng.random())
                detections[vid].append(
                    det(str(rng.choice(ann.class_names)), float(rng.integers(0, 4)) / 3, start,
                        start + float(rng.integers(1, 20)))
                )
        fast = evaluate(ann, detections, "test", parse_tiou("0.1:0.9:0.1"))
        slow = evaluate(ann, detections, "test", parse_tiou("0.1:0.9:0.1"), method="loop")
        assert fast.per_class_ap.keys() == slow.per_class_ap.keys()
        for name in fast.per_class_ap:
            np.testing.assert_allclose(fast.per_class_ap[name], slow.per_class_ap[name], rtol=0, atol=1e-12)


# --- detection files and the file-level entry point -------------------------------------


def test_read_detections_public_sample_counts(shared_data):
    path = shared_data / "annotations" / "activitynet" / "sample_detection_prediction_v1-3.json"
    raw = json.loads(path.read_text())["results"]
    detections = read_detections(path)
    assert len(detections) == len(raw) == 4926
    assert sum(map(len, detections.values())) == sum(map(len, raw.values())) == 7654
    first = next(iter(raw))
    assert detections[first][0]["segment"] == [float(x) for x in raw[first][0]["segment"]]


@pytest.mark.parametrize(
    "item, message",
    [
        ({"label": "A", "score": 0.5}, "results.v1[0].segment: missing"),
        ({"label": "A", "score": "high", "segment": [0, 1]}, "results.v1[0].score: expected a number, got 'high'"),
        ({"label": "A", "score": 0.5, "segment": [0, "x"]}, "results.v1[0].segment: expected a number, got 'x'"),
        ({"label": "A", "score": 0.5, "segment": [5, 1]}, "results.v1[0].segment: end 1.0 is before start 5.0"),
        ({"label": 3, "score": 0.5, "segment": [0, 1]}, "results.v1[0].label: expected a non-empty string"),
    ],
)
def test_read_detections_names_file_and_field(tmp_path, item, message):
    path = tmp_path / "det.json"
    path.write_text(json.dumps({"version": "x", "results": {"v1": [item]}}))
    with pytest.raises(EvaluationError) as err:
        read_detections(path)
    assert str(err.value).startswith(f"{path}: {message}")


def test_evaluate_rejects_malformed_in_memory_detections():
    ann = make_ann({"v1": [("A", 0, 10)]})
    with pytest.raises(EvaluationError, match=r"results.v1\[1\]"):
        evaluate(ann, {"v1": [det("A", 0.5, 0, 1), {"label": "A", "segment": [0, 1]}]}, "test")
    with pytest.raises(EvaluationError, match=r"results.v1\[0\].segment: end"):
        evaluate(ann, {"v1": [det("A", 0.5, 3, 1)]}, "test")
    with pytest.raises(EvaluationError, match="finite"):
        evaluate(ann, {"v1": [det("A", float("nan"), 0, 1)]}, "test")


def test_evaluate_files_real_thumos14(tmp_path, shared_data):
    gt = shared_data / "annotations" / "thumos14" / "gt_basnet.json"
    database = json.loads(gt.read_text())["database"]
    # detections = the test ground truth itself, plus one video of the three excluded ones
    results = {
        vid: [{"label": a["label"], "score": 1.0, "segment": [float(x) for x in a["segment"]]}
              for a in entry["annotations"]]
        for vid, entry in database.items() if entry["subset"] == "test"
    }
    path = tmp_path / "det.json"
    path.write_text(json.dumps({"version": "1", "results": results, "external_data": {}}))
    report = evaluate_files(path, gt, tiou="0.5,0.7", exclude_thumos14=True)
    assert report.subset == "test" and report.num_videos == 210
    assert report.num_predictions == 3311
    assert report.mAP == pytest.approx([1.0, 1.0])
    assert len(report.per_class_ap) == 20 and report.excluded == []
    # The W-TALC layout holds 270 and 1496 too; without them its test GT equals gt_basnet's.
    folder = shared_data / "annotations" / "thumos14" / "wtalc_reduced"
    same = evaluate_files(path, folder, tiou="0.5", exclude_thumos14=True, allow_pickle=True)
    assert same.excluded == ["video_test_0000270", "video_test_0001496"]
    assert same.num_videos == 210 and same.mAP == pytest.approx([1.0])
    # W-TALC protocol: segments become snippet-index ranges (W-TALC's range/set arithmetic,
    # recomputed here). Predictions whose range is empty cannot match, so they are left out;
    # those overlapping an Ambiguous span are removed by the protocol. Every other prediction
    # matches its own GT at index IoU 1, so each class keeps precision 1 up to recall
    # kept / n: AP = kept / n at every threshold.
    def snippets(start, end):
        return set(range(round(start * 25 / 16), round(end * 25 / 16)))

    ambiguous = {}
    for line in (folder / "Ambiguous_test.txt").read_text().splitlines():
        vid, start, end = line.split()
        ambiguous.setdefault(vid, []).append(snippets(float(start), float(end)))
    total, kept, nonempty = {}, {}, {}
    for vid, items in results.items():
        nonempty[vid] = [item for item in items if snippets(*item["segment"])]
        for item in items:
            label, pd = item["label"], snippets(*item["segment"])
            total[label] = total.get(label, 0) + 1
            if pd and not any(pd & a for a in ambiguous.get(vid, [])):
                kept[label] = kept.get(label, 0) + 1
    path.write_text(json.dumps({"version": "1", "results": nonempty}))
    wtalc = evaluate_files(path, folder, tiou="0.1,0.5,0.9", protocol="wtalc",
                           exclude_thumos14=True, allow_pickle=True)
    expected = np.mean([kept.get(c, 0) / total[c] for c in total])
    assert sum(kept.values()) < 3311 and wtalc.num_predictions == sum(kept.values())
    assert wtalc.mAP == pytest.approx([expected] * 3, abs=1e-12)


def test_importing_evaluation_stays_light():
    code = (
        "import sys, wtal.evaluate.metrics, wtal.evaluate.reports, wtal.evaluate.protocols, "
        "wtal.evaluate.plots; heavy = [m for m in ('torch', 'ray', 'matplotlib', 'cv2') "
        "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stdout + result.stderr
