"""`wtal demo`: the whole pipeline on built-in synthetic videos, in minutes on a laptop CPU.

It renders a small untrimmed-video dataset (3 motion classes over moving textured backgrounds,
20 training and 10 test videos), extracts features on Ray actors, trains ECM, detects, evaluates,
and compares with the trivial detector (each whole video as one detection of its top class).

The demo profile trades fidelity for speed; it prints how it differs from real use:
crop 112 instead of 224 (I3D's final pooling adapts), the `fast` TV-L1 preset instead of OpenCV's
defaults (run by wtal's torch TV-L1, which matches OpenCV's), and random I3D weights instead of
the public Kinetics checkpoints (none can be downloaded here). Random I3D features are badly
scaled, so the demo z-scores them (`wtal train --standardize`) and trains a narrower ECM for fewer
epochs; the motion classes still separate.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..extract.features import ExtractSettings

DEMO_SETTINGS = ExtractSettings(crop_size=112, flow="torch", flow_preset="fast", precision="fp32")
DEMO_TRAIN: dict[str, Any] = {"epochs": 30, "seed": 0, "sets": {"hidden": "256"}, "standardize": True}


def _plot_cas(path: Path, video_id: str, inference, annotation, class_names: list[str], snippet_seconds: float,
              detections: list[dict]) -> None:
    """CAS of the ground-truth class of one test video against its ground truth and detections."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    label = annotation.segments[0].label
    c = class_names.index(label)
    cas = inference.cas[:, c]
    t = (np.arange(len(cas)) + 0.5) * snippet_seconds
    fig, ax = plt.subplots(figsize=(9, 3.2))
    for i, seg in enumerate(annotation.segments):
        ax.axvspan(seg.start, seg.end, color="tab:green", alpha=0.25, label="ground truth" if i == 0 else None)
    ax.plot(t, cas, color="tab:blue", lw=2, label=f"CAS ({label})")
    for i, det in enumerate([d for d in detections if d["label"] == label][:3]):
        ax.hlines(1.05 + 0.05 * i, *det["segment"], color="tab:red", lw=3,
                  label="top detections" if i == 0 else "_nolegend_")
    ax.set_xlim(0, annotation.duration or t[-1])
    ax.set_ylim(0, 1.25)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("activation")
    ax.set_title(f"{video_id}: class activation vs ground truth")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_demo(out: str, workers: int | None = None, device: str = "auto") -> int:
    """Run every stage of the demo; returns the process exit status."""
    from ..data.annotations import load_annotations
    from ..data.features import open_features
    from ..data.synthetic_videos import make_video_dataset
    from ..device import resolve_device
    from ..evaluate.html_report import write_html_report
    from ..evaluate.metrics import DEFAULT_TIOUS, evaluate
    from ..evaluate.reports import EvaluationInputs, format_table, write_json
    from ..models.checkpoint import load_checkpoint
    from ..models.train import build_items, detect_videos
    from ..postprocess.detections import whole_video_results, write_detections
    from .extraction import extract_videos
    from .progress import TqdmHook
    from .report import run_activations, run_settings
    from .runtime import set_threads
    from .stages import checkpoint_items, train_stage

    out_dir = Path(out)
    start = time.perf_counter()
    dev = resolve_device(device)
    print(f"wtal demo -> {out_dir} (device {dev})")
    print("profile: crop 112 (real: 224), TV-L1 preset 'fast' on wtal's torch TV-L1 (real: OpenCV defaults), "
          "random I3D weights (real: public Kinetics checkpoints via --i3d-rgb/--i3d-flow), fp32;\n"
          "         ECM with hidden 256 (paper: 2048), 30 epochs (paper: 150), z-scored features (random I3D "
          "features are badly scaled; pretrained ones are used raw)")
    ann_path = out_dir / "data" / "annotations.json"
    video_dir = out_dir / "data" / "videos"
    if not ann_path.exists():
        print("1/5 rendering 30 synthetic videos (3 motion classes) ...")
        video_dir, ann_path = make_video_dataset(out_dir / "data", num_classes=3, num_train=20, num_test=10,
                                                 duration=(8.0, 11.0), seed=0)
    print("2/5 extracting features (decode -> TV-L1 -> I3D) on Ray actors ...")
    cache = out_dir / "cache"
    summary = extract_videos([str(video_dir)], str(cache), DEMO_SETTINGS, device=device, batch=8, workers=workers,
                             hook=TqdmHook())
    print(f"    {summary.done} extracted, {summary.skipped} cached, {len(summary.failed)} failed; "
          f"{summary.fps:.1f} frames/s")
    if summary.failed:
        print(f"error: {len(summary.failed)} demo videos failed to extract")
        return 1
    print(f"3/5 training ECM ({DEMO_TRAIN['epochs']} epochs) ...")
    run_dir = out_dir / "run"
    set_threads(dev)
    train_stage(str(cache), str(ann_path), "ecm", str(run_dir), epochs=DEMO_TRAIN["epochs"], seed=DEMO_TRAIN["seed"],
                device=device, sets=DEMO_TRAIN["sets"], standardize=DEMO_TRAIN["standardize"], progress=True)
    print("4/5 detecting on the test split ...")
    model, payload = load_checkpoint(run_dir, dev)
    ann = load_annotations(ann_path)
    feats = open_features(cache)
    test_subset = ann.default_subsets()[1]
    items = checkpoint_items(build_items(ann, feats, test_subset), payload)
    results, inferences = detect_videos(model, items, payload["test_config"], ann.class_names, feats.snippet_seconds, dev)
    det_path = out_dir / "detections.json"
    write_detections(det_path, results, {"used": False, "details": "wtal demo: ECM on synthetic videos"})
    trivial = {it.video_id: whole_video_results(inferences[it.video_id].video_scores, it.duration, ann.class_names)
               for it in items}
    print("5/5 evaluating ...")
    report = evaluate(ann, results, test_subset)
    baseline = evaluate(ann, trivial, test_subset)
    print(format_table(report))
    print(f"ECM      mAP@0.5 {report.mAP[4]:.3f}   average mAP {report.average_mAP:.3f}")
    print(f"trivial  mAP@0.5 {baseline.mAP[4]:.3f}   average mAP {baseline.average_mAP:.3f}  (whole video, top class)")
    write_json(report, out_dir / "report.json")
    (out_dir / "trivial_report.json").write_text(json.dumps(baseline.to_json(), indent=1))
    first = items[0].video_id
    plot = out_dir / "cas.png"
    _plot_cas(plot, first, inferences[first], ann.videos[first], ann.class_names,
              items[0].snippet_seconds or feats.snippet_seconds, results[first])
    html = write_html_report(out_dir / "report.html", EvaluationInputs(ann, results, test_subset, DEFAULT_TIOUS),
                             report=report, cas=run_activations(inferences, payload, items, feats.snippet_seconds),
                             model=run_settings(payload), sources={"detections": str(det_path.resolve())})
    print(f"wrote {det_path}, {out_dir / 'report.json'}, {plot} and {html} in {time.perf_counter() - start:.0f} s")
    return 0
