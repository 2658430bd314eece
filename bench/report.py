"""Benchmark of the HTML report at THUMOS14 size: build time, file size and render time.

Takes the real THUMOS14 test ground truth (`gt_basnet.json`, 210 videos, 3311 instances) with
50k synthetic predictions (bench/evaluate.py's generator), times `evaluate` alone (the baseline)
and the whole report (evaluate, diagnosis, page) in the same run and prints their ratio, the
page's size, and, when Chromium is installed, how long the page takes to load and render (wall
time from navigation to the page's ready mark, and the page's own performance.now() at that
mark, and the renderer main thread's task time for the document), twice (the first includes the
browser's warm-up). `--screenshot DIR` also writes
DIR/report.png (the top of the page) and DIR/report_videos.png (the first timelines), each
quantised to 256 colours.

    .venv/bin/python bench/report.py [--predictions 50000] [--seed 0] [--out report.html] [--screenshot docs]
"""
from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from evaluate import GT_BASNET, synthetic_detections, timed

from wtal.data.annotations import load_annotations
from wtal.evaluate.html_report import write_html_report
from wtal.evaluate.metrics import DEFAULT_TIOUS, evaluate
from wtal.evaluate.reports import EvaluationInputs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from cdp import Chromium, find_chromium


def save_png(png: bytes, path: Path, width: int | None = None) -> int:
    """Write a screenshot quantised to 256 colours (optionally scaled to `width`); its size."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    if width and image.width != width:
        image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
    image.quantize(256).save(path, optimize=True)
    return path.stat().st_size


def main_thread_seconds(browser: Chromium) -> float:
    """Seconds the renderer's main thread has spent in tasks (parse, script, style, layout) for
    the current document: the share of the load's wall time that is the page's own work."""
    metrics = {m["name"]: m["value"] for m in browser.page("Performance.getMetrics")["metrics"]}
    return float(metrics["TaskDuration"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictions", type=int, default=50000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="keep the page here (default: a temporary file)")
    parser.add_argument("--screenshot", metavar="DIR", help="write report.png and report_videos.png here")
    args = parser.parse_args()
    if not GT_BASNET.is_file():
        print(f"skipped: {GT_BASNET} not found")
        return
    ann = load_annotations(GT_BASNET)
    detections = synthetic_detections(np.random.default_rng(args.seed), ann, "test", args.predictions)
    inputs = EvaluationInputs(ann, detections, "test", DEFAULT_TIOUS)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp()) / "report.html"
    report, t_eval, c_eval = timed(lambda: evaluate(ann, detections, "test"))
    _, t_page, c_page = timed(lambda: write_html_report(out, inputs, sources={"annotations": str(GT_BASNET.resolve()),
                                                                             "detections": "bench/report.py synthetic"}))
    print(f"THUMOS14 test: {report.num_videos} videos, {ann.num_instances('test')} instances, "
          f"{report.num_predictions} predictions, average mAP {100 * report.average_mAP:.2f}")
    print(f"evaluate alone: {t_eval:.2f} s (cpu {c_eval:.2f} s)   whole report: {t_page:.2f} s (cpu {c_page:.2f} s)   "
          f"ratio {t_page / t_eval:.1f}x (cpu {c_page / c_eval:.1f}x)")
    print(f"page: {out} {out.stat().st_size / 1e6:.2f} MB")
    executable = find_chromium()
    if not executable:
        print("skipped the render timing: chromium not installed")
        return
    with Chromium(executable, width=1280, height=1500) as browser:
        browser.page("Performance.enable")
        for attempt in ("first load", "second load"):
            wall = browser.open(out)
            busy = main_thread_seconds(browser)
            page_ms, timelines, elements = browser.evaluate(
                "[window.wtalRenderMs, document.querySelectorAll('#videos .video').length, "
                "document.getElementsByTagName('*').length]")
            print(f"{attempt}: {wall:.2f} s from navigation to rendered (renderer main thread busy {busy:.2f} s); "
                  f"in-page {page_ms:.0f} ms ({timelines} timelines drawn, {elements} elements)")
        start = time.monotonic()
        browser.click("#class-table th[data-key='class']")
        print(f"sorting the class table by a click: {1000 * (time.monotonic() - start):.0f} ms round trip")
        start = time.monotonic()
        while browser.evaluate("!document.getElementById('more').hidden"):
            browser.click("#more")
        drawn = browser.evaluate("document.querySelectorAll('#videos .video').length")
        print(f"drawing all {drawn} timelines with 'show more': {time.monotonic() - start:.2f} s")
        if args.screenshot:
            folder = Path(args.screenshot)
            folder.mkdir(parents=True, exist_ok=True)
            browser.click("#class-table th[data-key='avg']")  # best class first
            top = save_png(browser.screenshot(), folder / "report.png", width=1000)
            browser.evaluate("document.getElementById('videos-section').scrollIntoView()")
            videos = save_png(browser.screenshot(), folder / "report_videos.png", width=1000)
            print(f"screenshots: {folder / 'report.png'} {top / 1e3:.0f} KB, "
                  f"{folder / 'report_videos.png'} {videos / 1e3:.0f} KB")


if __name__ == "__main__":
    main()
