"""The HTML report rendered in headless Chromium, checked from the rendered page.

`make test` installs Debian's `chromium` when it is missing and it runs as root. Without a
browser the test is skipped, except under CI (CI=true) where that is a failure.
"""
import io
import json
import os

import numpy as np
import pytest
from cdp import Chromium, find_chromium

from wtal.data.annotations import (
    AnnotationSet,
    Segment,
    VideoAnnotation,
    load_annotations,
)
from wtal.evaluate import diagnosis
from wtal.evaluate.html_report import ClassActivations, write_html_report
from wtal.evaluate.metrics import match_predictions
from wtal.evaluate.reports import EvaluationInputs, load_evaluation
from wtal.pipeline.cli import main

CLASSES = ["Jump", "Run", "Throw"]
GROUND_TRUTH = {  # video: [(label, start, end)]
    "v_a": [("Jump", 2, 6), ("Jump", 10, 14)],
    "v_b": [("Run", 5, 9)],
    "v_c": [("Throw", 1, 3), ("Throw", 4, 6), ("Throw", 8, 10), ("Throw", 12, 14)],  # never detected
    "v_d": [("Jump", 3, 8)],
    "v_e": [("Run", 1, 4), ("Throw", 6, 9)],
    "v_f": [("Throw", 2, 5)],
}
DETECTIONS = {
    "v_a": [("Jump", 0.9, 2, 6), ("Jump", 0.8, 10, 14), ("Run", 0.2, 15, 18)],
    "v_b": [("Run", 0.95, 5, 9), ("Run", 0.4, 12, 16)],
    "v_c": [("Jump", 0.3, 15, 19)],
    "v_d": [("Jump", 0.7, 3, 5)],
    "v_e": [("Run", 0.85, 1, 4), ("Run", 0.6, 6, 9), ("Throw", 0.5, 6.5, 9)],
    "v_f": [("Throw", 0.65, 2, 5), ("Throw", 0.45, 2.2, 5)],
}


def chromium() -> str:
    found = find_chromium()
    if found:
        return found
    reason = "chromium not installed (make test installs Debian's chromium as root; or apt-get install chromium)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason + "; CI must run the browser test")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """The report of the small case open in Chromium, and the `wtal evaluate --json` report."""
    executable = chromium()
    root = tmp_path_factory.mktemp("browser")
    database = {vid: {"subset": "test", "duration": 20.0,
                      "annotations": [{"label": label, "segment": [s, e]} for label, s, e in segs]}
                for vid, segs in GROUND_TRUTH.items()}
    (root / "ann.json").write_text(json.dumps({"database": database}))
    results = {vid: [{"label": label, "score": score, "segment": [s, e]} for label, score, s, e in rows]
               for vid, rows in DETECTIONS.items()}
    (root / "det.json").write_text(json.dumps({"version": "1", "results": results}))
    files = ["--detections", str(root / "det.json"), "--annotations", str(root / "ann.json"), "--subset", "test"]
    assert main(["evaluate", *files, "--json", str(root / "report.json")]) == 0
    assert main(["report", *files, "--out", str(root / "report.html")]) == 0
    browser = Chromium(executable, width=1280, height=900)
    try:
        seconds = browser.open(root / "report.html")
        browser.root = root
        yield browser, json.loads((root / "report.json").read_text()), seconds
    finally:
        browser.close()


def texts(browser, selector: str) -> list[str]:
    return browser.evaluate(f"[...document.querySelectorAll({json.dumps(selector)})].map(e => e.textContent.trim())")


def attrs(browser, selector: str, name: str) -> list[str]:
    return browser.evaluate(f"[...document.querySelectorAll({json.dumps(selector)})].map(e => e.dataset.{name})")


def rows(browser, selector: str) -> list[list[str]]:
    return browser.evaluate(f"[...document.querySelectorAll({json.dumps(selector)})]"
                            ".map(r => [...r.cells].map(c => c.textContent.trim()))")


def visible_videos(browser) -> list[str]:
    return browser.evaluate("[...document.querySelectorAll('#videos .video')].filter(e => e.offsetParent !== null)"
                            ".map(e => e.dataset.video)")


def test_summary_numbers_are_the_json_report(rendered):
    browser, report, seconds = rendered
    assert seconds < 20
    cells = texts(browser, "#summary-map td[data-tiou]")
    assert cells == [f"{100 * m:.2f}" for m in report["mAP"]] + [f"{100 * report['average_mAP']:.2f}"]
    assert texts(browser, "#summary-map th")[1:] == [f"{t:.2f}" for t in report["tiou"]] + ["average"]
    facts = dict(zip(texts(browser, "#facts dt"), texts(browser, "#facts dd")))
    assert facts["videos"] == str(report["num_videos"]) == "6"
    assert facts["predictions"] == str(report["num_predictions"]) == "12"
    assert facts["protocol"] == "activitynet" and facts["subset"] == "test"


def test_every_class_row_with_its_ap(rendered):
    browser, report, _ = rendered
    rows = attrs(browser, "#class-table tbody tr", "class")
    assert sorted(rows) == CLASSES
    for name in CLASSES:
        cells = texts(browser, f"#class-table tbody tr[data-class='{name}'] td")
        ap = report["per_class_ap"][name]
        assert cells[4:-1] == [f"{100 * a:.2f}" for a in ap] + [f"{100 * sum(ap) / len(ap):.2f}"]
        assert cells[1] == str(sum(seg[0] == name for segs in GROUND_TRUTH.values() for seg in segs))


def test_top_g_outcomes_of_a_class(rendered):
    browser, _, _ = rendered
    # Jump's three best detections at tIoU 0.5: two true positives, then [3, 5] against [3, 8]
    bars = texts(browser, "#class-table tr[data-class='Jump'] td.top-g rect title")
    assert bars == ["true positive: 2 (66.7%)", "localization: 1 (33.3%)"]


def test_clicking_a_column_sorts_the_rows(rendered):
    browser, report, _ = rendered
    by_average = sorted(CLASSES, key=lambda c: -sum(report["per_class_ap"][c]))
    assert attrs(browser, "#class-table tbody tr", "class") == by_average != CLASSES
    browser.click("#class-table th[data-key='class']")
    assert attrs(browser, "#class-table tbody tr", "class") == CLASSES
    browser.click("#class-table th[data-key='class']")
    assert attrs(browser, "#class-table tbody tr", "class") == CLASSES[::-1]
    browser.click("#class-table th[data-key='gt']")
    assert attrs(browser, "#class-table tbody tr", "class") == ["Throw", "Jump", "Run"]  # 6, 3, 2 instances
    sort = browser.evaluate("document.querySelector(\"#class-table th[data-key='gt']\").getAttribute('aria-sort')")
    assert sort == "descending"


def test_videos_worst_first_and_filters_hide_videos(rendered):
    browser, _, _ = rendered
    shown = visible_videos(browser)
    assert sorted(shown) == sorted(GROUND_TRUTH) and shown[0] == "v_c"
    missed = [int(m) for m in attrs(browser, "#videos .video", "missed")]
    assert missed == sorted(missed, reverse=True) and missed[0] == 4
    browser.type_text("#filter-video", "v_e")
    assert visible_videos(browser) == ["v_e"]
    browser.evaluate("(e => { e.value = ''; e.dispatchEvent(new Event('input')); })(document.getElementById('filter-video'))")
    assert len(visible_videos(browser)) == 6
    browser.evaluate("(e => { e.value = '2'; e.dispatchEvent(new Event('change')); })(document.getElementById('filter-class'))")
    assert sorted(visible_videos(browser)) == ["v_c", "v_e", "v_f"]  # the videos with Throw
    assert "showing 3 of 3" in texts(browser, "#video-count")[0]
    browser.evaluate("(e => { e.value = ''; e.dispatchEvent(new Event('change')); })(document.getElementById('filter-class'))")
    browser.click("#class-table tr[data-class='Run'] a")  # a class name shows its videos
    assert sorted(visible_videos(browser)) == ["v_a", "v_b", "v_e"]
    assert browser.evaluate("document.getElementById('filter-class').selectedOptions[0].textContent") == "Run"
    browser.evaluate("(e => { e.value = ''; e.dispatchEvent(new Event('change')); })(document.getElementById('filter-class'))")


def test_screenshot_is_not_blank(rendered, tmp_path):
    from PIL import Image

    browser, _, _ = rendered
    png = browser.screenshot(full_page=True)
    (tmp_path / "report.png").write_bytes(png)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.width > 1200 and image.height > 900  # the whole page, taller than the viewport
    colours = image.getcolors(maxcolors=1 << 20)
    assert len(colours) > 100  # text, tables, curves and bars, not one flat fill
    white = max(count for count, colour in colours if colour == (255, 255, 255))
    assert white < 0.95 * image.width * image.height


def select(browser, element_id: str, value: str) -> None:
    browser.evaluate(f"(e => {{ e.value = {json.dumps(value)}; e.dispatchEvent(new Event('change')); }})"
                     f"(document.getElementById({json.dumps(element_id)}))")


def test_error_analysis_and_the_tiou_switch(rendered):
    browser, report, _ = rendered
    ann = load_annotations(browser.root / "ann.json")
    inputs = load_evaluation(browser.root / "det.json", browser.root / "ann.json", subset="test")
    m = match_predictions(ann, inputs.detections, "test", report["tiou"])
    counts = np.bincount(diagnosis.outcomes(m)[report["tiou"].index(0.5)], minlength=6)
    cell = "document.querySelector(\"#outcome-table tr[data-outcome='{}'] td:nth-child(2)\").textContent"
    shown = [int(browser.evaluate(cell.format(name))) for name in diagnosis.OUTCOMES]
    assert shown == counts.tolist() and sum(shown) == 12
    # v_d's Jump [3, 5] lies inside [3, 8]; v_b's Run [12, 16] is 3 s after its Run [5, 9] (4 s long);
    # v_a's Run and v_c's Jump fire in videos without their class
    assert [row[1] for row in rows(browser, "#loc-table tr")] == ["1", "0", "0", "0"]
    assert [row[1] for row in rows(browser, "#bg-table tr")] == ["1", "0", "2"]

    def missed():
        return browser.evaluate("document.querySelector(\"#videos .video[data-video='v_d']\").dataset.missed")

    jump_missed = "document.querySelector(\"#class-table tr[data-class='Jump'] td:nth-child(4)\").textContent"
    assert missed() == "1" and browser.evaluate(jump_missed) == "1"  # Jump [3, 8] vs [3, 5]: tIoU 0.4
    select(browser, "tiou-select", "0")
    assert texts(browser, ".tiou-label") == ["0.10", "0.10"]
    assert missed() == "0" and browser.evaluate(jump_missed) == "0"
    select(browser, "tiou-select", str(report["tiou"].index(0.5)))
    assert missed() == "1"


def test_cas_and_model_settings_are_drawn(rendered):
    browser, _, _ = rendered
    root = browser.root
    inputs = load_evaluation(root / "det.json", root / "ann.json", subset="test")
    ramp = {vid: np.tile(np.linspace(0, 1, 40)[:, None], (1, 2)) for vid in ("v_a", "v_e")}
    cas = ClassActivations(["Jump", "Run"], ramp, {"v_a": 0.5, "v_e": 0.5})  # no Throw: its rows get no curve
    write_html_report(root / "cas.html", inputs, cas=cas, model={"model": "mil", "seed": 3})
    browser.open(root / "cas.html")
    # v_a shows Jump and Run, v_e Run and Throw: three rows with a curve
    assert browser.evaluate("document.querySelectorAll('polyline.cas').length") == 3
    points = browser.evaluate("document.querySelector(\"#videos .video[data-video='v_a'] polyline.cas\")"
                              ".getAttribute('points').split(' ').length")
    assert points == 40
    facts = dict(zip(texts(browser, "#model dt"), texts(browser, "#model dd")))
    assert facts == {"model": "mil", "seed": "3"}


def test_show_more_appends_the_next_page(rendered):
    browser, _, _ = rendered
    videos = {f"w{i:02d}": VideoAnnotation(f"w{i:02d}", "test", 10.0, 25.0, [Segment("Jump", 1, 2)] * (1 + i % 3))
              for i in range(65)}
    inputs = EvaluationInputs(AnnotationSet(videos, ["Jump"], "mem.json"), {}, "test", np.array([0.5]))
    write_html_report(browser.root / "many.html", inputs)
    browser.open(browser.root / "many.html")
    first = visible_videos(browser)
    assert len(first) == 60 and browser.evaluate("!document.getElementById('more').hidden")
    browser.click("#more")
    after = visible_videos(browser)
    assert after[:60] == first and len(after) == 65 and sorted(after) == sorted(videos)
    assert browser.evaluate("document.getElementById('more').hidden")
    assert "showing 65 of 65" in texts(browser, "#video-count")[0]
