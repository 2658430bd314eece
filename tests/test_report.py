"""Error diagnosis against a hand-worked case, and the HTML report as `wtal report` writes it."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from wtal.data.annotations import AnnotationSet, Segment, VideoAnnotation
from wtal.data.synthetic import write_feature_dataset
from wtal.evaluate import diagnosis
from wtal.evaluate.html_report import render_html, report_data
from wtal.evaluate.metrics import evaluate, match_predictions
from wtal.evaluate.reports import EvaluationInputs
from wtal.pipeline.cli import main

ROOT = Path(__file__).resolve().parents[1]


def det(label, score, start, end):
    return {"label": label, "score": score, "segment": [start, end]}


# v1: A [10, 20], A [40, 50], B [60, 70]; v2: C [5, 7] (never detected). Outcomes worked by hand
# at tIoU 0.5 (and 0.1), with the best-overlapping ground truth of the video in brackets:
DETECTIONS = {"v1": [
    det("A", 0.9, 10, 20),  # TP (A1, tIoU 1)
    det("A", 0.8, 11, 20),  # double detection (A1 taken, tIoU 0.9)
    det("B", 0.7, 10, 20),  # wrong label (A1, tIoU 1)
    det("A", 0.6, 40, 43),  # localization (A2, tIoU 0.3); at 0.1 the TP of A2
    det("A", 0.5, 60, 63),  # confusion (B, tIoU 0.3); at 0.1 wrong label
    det("A", 0.4, 80, 90),  # background
    det("B", 0.3, 61, 70),  # TP (B, tIoU 0.9)
]}
TP, DBL, WRONG, LOC, CONF, BG = range(6)


def hand_ann() -> AnnotationSet:
    videos = {
        "v1": VideoAnnotation("v1", "test", 100.0, 25.0, [Segment("A", 10, 20), Segment("A", 40, 50), Segment("B", 60, 70)]),
        "v2": VideoAnnotation("v2", "test", 30.0, 25.0, [Segment("C", 5, 7)]),
    }
    return AnnotationSet(videos, ["A", "B", "C"], "mem.json")


def test_outcomes_follow_the_detad_types():
    m = match_predictions(hand_ann(), DETECTIONS, "test", [0.1, 0.5])
    codes = diagnosis.outcomes(m)
    assert codes[1].tolist() == [TP, DBL, WRONG, LOC, CONF, BG, TP]
    assert codes[0].tolist() == [TP, DBL, WRONG, TP, WRONG, BG, TP]
    assert m.gt_matched.tolist() == [[True, True, True, False], [True, False, True, False]]


def test_profile_gain_and_missed_lengths_by_hand():
    ann = hand_ann()
    m = match_predictions(ann, DETECTIONS, "test", [0.1, 0.5])
    codes = diagnosis.outcomes(m)
    profile = diagnosis.fp_profile(m, codes, k_max=2)
    # top-1G: A's best two (TP, double) and B's best one (wrong label); top-2G: four of A, both of B
    assert profile[1].tolist() == [[1, 1, 1, 0, 0, 0], [2, 1, 1, 1, 1, 0]]
    per_class = diagnosis.class_profile(m, codes, k_max=1)[:, 1, 0]
    assert per_class.tolist() == [[1, 1, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0]]  # A, B, C
    # AP at 0.5: A 1/2, B 1/2 (its TP ranks second), C 0; removing the wrong label lifts B to 1.
    gain = diagnosis.removal_gain(m, codes)
    np.testing.assert_allclose(gain[:, 1], [0, 0.5 / 3, 0, 0, 0], atol=1e-12)
    # at 0.1: A is 1/2 + 1/2 * 2/3; without its double detection it is 1
    np.testing.assert_allclose(gain[:, 0], [(1 - 5 / 6) / 3, 0.5 / 3, 0, 0, 0], atol=1e-12)
    report = evaluate(ann, DETECTIONS, "test", [0.1, 0.5])
    np.testing.assert_allclose(diagnosis.class_ap(m), [report.per_class_ap[c] for c in "ABC"], atol=1e-12)
    edges, total, missed = diagnosis.missed_by_length(m)
    assert edges == diagnosis.SHORT_BINS
    assert total.tolist() == [1, 0, 3, 0, 0]  # C is 2 s long (XS), the others 10 s (M)
    assert missed.tolist() == [[1, 0, 0, 0, 0], [1, 0, 1, 0, 0]]


def test_class_ap_equals_the_metric_on_random_predictions():
    rng = np.random.default_rng(0)
    videos, detections = {}, {}
    for v in range(12):
        segs = [Segment(str(rng.choice(list("PQR"))), s, s + float(rng.uniform(1, 9))) for s in rng.uniform(0, 80, 4)]
        videos[f"v{v}"] = VideoAnnotation(f"v{v}", "test", 100.0, 25.0, segs)
        starts = rng.uniform(0, 90, 30)
        detections[f"v{v}"] = [det(str(rng.choice(list("PQR"))), float(np.round(rng.random(), 2)), s,
                                   s + float(rng.uniform(0.5, 10))) for s in starts]
    ann = AnnotationSet(videos, ["P", "Q", "R"], "mem.json")
    m = match_predictions(ann, detections, "test")
    report = evaluate(ann, detections, "test")
    np.testing.assert_allclose(diagnosis.class_ap(m), [report.per_class_ap[c] for c in m.classes], atol=1e-12)
    codes = diagnosis.outcomes(m)
    assert (codes == 0).sum(axis=1).tolist() == m.pred_tp.sum(axis=1).tolist()
    assert diagnosis.fp_profile(m, codes)[:, -1].sum(axis=1).max() <= 360


def test_report_data_caps_detections_and_keeps_all_ground_truth():
    ann = hand_ann()
    data = report_data(EvaluationInputs(ann, DETECTIONS, "test", np.array([0.1, 0.5])), max_per_class=1)
    v1, v2 = data["videos"]
    assert [len(v1["gt"]), len(v2["gt"])] == [3, 1]
    # rows: A and B (ground truth); A keeps max(1, 2 * 2) = 4 detections, B max(1, 2 * 1) = 2
    assert v1["rows"] == [0, 1] and [d[0] for d in v1["det"]] == [0, 0, 0, 0, 1, 1]
    assert v1["det"][0][4] == "00" and v1["det"][1][4] == "11" and v1["det"][3][4] == "24"
    assert v1["gt"][1][3] == 1  # A2 found at tIoU 0.1 only (bit 0)
    assert data["errors"]["counts"][1] == [2, 1, 1, 1, 1, 1]
    assert data["pr"][1][0] == [1] and data["pr"][1][1] == [2] and data["pr"][0][0] == [1, 3]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny trained MIL run on synthetic features, its detections and its JSON report."""
    root = tmp_path_factory.mktemp("report")
    feat, ann = write_feature_dataset(root, num_classes=3, num_train=12, num_test=6, dim=16, length=(30, 50), seed=2)
    common = ["--features", str(feat), "--device", "cpu"]
    assert main(["train", *common, "--annotations", str(ann), "--out", str(root / "run"), "--model", "mil",
                 "--epochs", "2", "--set", "hidden=16"]) == 0
    assert main(["detect", *common, "--checkpoint", str(root / "run"), "--out", str(root / "det.json")]) == 0
    assert main(["evaluate", "--detections", str(root / "det.json"), "--annotations", str(ann),
                 "--json", str(root / "report.json")]) == 0
    return root, feat, ann


def embedded(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    block = re.search(r'<script type="application/json" id="wtal-data">(.*?)</script>', text, re.DOTALL).group(1)
    return json.loads(block)


def test_wtal_report_writes_one_self_contained_page_with_cas(run, capsys):
    root, feat, ann = run
    out = root / "report.html"
    assert main(["report", "--detections", str(root / "det.json"), "--annotations", str(ann), "--features", str(feat),
                 "--checkpoint", str(root / "run"), "--device", "cpu", "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    text = out.read_text(encoding="utf-8")
    assert not re.search(r'(src|href)\s*=\s*["\'](?!#)|@import|url\((?!#)|https?://', text)  # nothing to fetch
    data = embedded(out)
    assert data["report"] == json.loads((root / "report.json").read_text())
    assert data["model"]["model"] == "mil" and data["model"]["hparams"]["hidden"] == 16
    assert data["has_cas"] and len(data["videos"]) == 6
    for video in data["videos"]:
        length = len(np.load(feat / f"{video['id']}.npy"))
        assert video["cas"]["step"] == pytest.approx(0.64)
        assert all(len(curve) == length for curve in video["cas"]["curves"].values())


def test_evaluate_html_matches_wtal_report_without_checkpoint(run):
    root, _, ann = run
    assert main(["evaluate", "--detections", str(root / "det.json"), "--annotations", str(ann),
                 "--html", str(root / "eval.html")]) == 0
    assert main(["report", "--detections", str(root / "det.json"), "--annotations", str(ann),
                 "--out", str(root / "plain.html")]) == 0
    a, b = embedded(root / "eval.html"), embedded(root / "plain.html")
    assert a["report"] == b["report"] == json.loads((root / "report.json").read_text())
    assert a["videos"] == b["videos"] and not a["has_cas"] and a["model"] is None


def test_report_refuses_features_without_checkpoint(run, capsys):
    root, feat, ann = run
    assert main(["report", "--detections", str(root / "det.json"), "--annotations", str(ann), "--features", str(feat),
                 "--out", str(root / "x.html")]) == 2
    assert "--checkpoint" in capsys.readouterr().err and not (root / "x.html").exists()


def test_help_and_plain_report_import_no_torch():
    code = ("import sys, wtal.pipeline.cli as c, wtal.pipeline.report, wtal.evaluate.html_report\n"
            "try:\n    c.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'ray') if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_report_data_in_snippet_units_and_with_extra_videos():
    ann = hand_ann()
    detections = {**DETECTIONS, "elsewhere": [det("A", 0.95, 10, 20)]}  # a video outside the subset
    plain = report_data(EvaluationInputs(ann, detections, "test", np.array([0.5])))
    assert [v["id"] for v in plain["videos"]] == ["v1", "v2"]
    assert plain["errors"]["counts"][0] == [2, 1, 1, 1, 1, 2]  # the extra prediction is background
    assert plain["report"]["num_predictions"] == 8
    wtalc = report_data(EvaluationInputs(ann, DETECTIONS, "test", np.array([0.5]), "wtalc", ambiguous={}))
    # segments are drawn in seconds: snippet indices round(s * 25 / 16) back over 25 / 16
    assert wtalc["videos"][0]["gt"][2][1:3] == [round(94 * 16 / 25, 2), round(109 * 16 / 25, 2)]
    assert wtalc["videos"][0]["det"][0][1:3] == [round(16 * 16 / 25, 2), round(31 * 16 / 25, 2)]


def test_embedded_data_cannot_close_its_script_element():
    videos = {"v</script><!--": VideoAnnotation("v</script><!--", "test", 10.0, 25.0, [Segment("<b>x</b>", 1, 2)])}
    ann = AnnotationSet(videos, ["<b>x</b>"], "mem.json")
    html = render_html(report_data(EvaluationInputs(ann, {}, "test", np.array([0.5]))))
    block = re.search(r'id="wtal-data">(.*?)</script>', html, re.DOTALL).group(1)
    assert "<" not in block and json.loads(block)["classes"] == ["<b>x</b>"]


def test_cas_of_a_resampled_run_spans_the_video(run):
    root, feat, ann = run
    assert main(["train", "--features", str(feat), "--annotations", str(ann), "--out", str(root / "run20"), "--device",
                 "cpu", "--model", "mil", "--epochs", "1", "--set", "hidden=16", "--set", "test_sampling=interpolate",
                 "--set", "test_len=20"]) == 0
    out = root / "resampled.html"
    assert main(["report", "--detections", str(root / "det.json"), "--annotations", str(ann), "--features", str(feat),
                 "--checkpoint", str(root / "run20"), "--device", "cpu", "--out", str(out)]) == 0
    for video in embedded(out)["videos"]:
        length = len(np.load(feat / f"{video['id']}.npy"))
        assert video["cas"]["step"] == pytest.approx(round(length * 0.64 / 20, 4))
        assert all(len(curve) == 20 for curve in video["cas"]["curves"].values())


def test_cas_from_features_unlike_training_is_drawn_and_flagged(run):
    root, feat, ann = run
    out = root / "mismatch.html"
    assert main(["report", "--detections", str(root / "det.json"), "--annotations", str(ann), "--features", str(feat),
                 "--checkpoint", str(root / "run"), "--device", "cpu", "--snippet-seconds", "0.32",
                 "--out", str(out)]) == 0
    data = embedded(out)
    assert "0.32" in data["model"]["feature settings differ from training"]
    assert all(video["cas"]["step"] == pytest.approx(0.32) for video in data["videos"])


def test_localization_shapes_and_background_context_by_hand():
    ann = hand_ann()
    detections = {"v1": [
        det("A", 0.9, 8, 13),    # A1 [10, 20], tIoU 0.25: early
        det("A", 0.8, 15, 25),   # A1, tIoU 1/3: late
        det("A", 0.7, 30, 55),   # A2 [40, 50], tIoU 0.4: covers it, too long
        det("A", 0.6, 42, 45),   # A2, tIoU 0.3: inside, too short
        det("A", 0.5, 24, 26),   # background 4 s after A1 (10 s long): in context
        det("A", 0.4, 80, 85),   # background, 30 s from A2: far
        det("B", 0.3, 0, 2),     # background, 58 s from B [60, 70]: far
        det("C", 0.2, 5, 6),     # background, no C in v1
    ]}
    m = match_predictions(ann, detections, "test", [0.5])
    codes = diagnosis.outcomes(m)
    assert codes[0].tolist() == [LOC] * 4 + [BG] * 4
    assert diagnosis.localization_kinds(m, codes).tolist() == [[1, 1, 1, 1]]
    assert diagnosis.background_kinds(m, codes).tolist() == [[1, 2, 1]]
