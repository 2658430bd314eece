"""`wtal` command line (README "Commands").

Heavy modules (torch, ray, cv2) are imported inside the commands that need them, so
`wtal evaluate` and `wtal cache ls` start fast. Every command ends with a one-line error and a
non-zero exit status on bad input (a `WtalError` or an `OSError`); any other exception is a bug and
keeps its traceback.
"""
from __future__ import annotations

import argparse
import collections
import json
import logging
import sys
from pathlib import Path
from typing import Any

from ..errors import SettingsError, WtalError

DEVICE_HELP = "where torch runs: auto picks cuda when a GPU is visible, else cpu"
SUBSET_HELP = "annotation subset (default: validation when training used training, otherwise test)"
SNIPPET_HELP = "seconds per feature row (default: from the cache or meta.json, else 16/25)"
FEATURES_HELP = "feature cache, or folder of <video_id>.npy (T, D) arrays, rgb/ + flow/, .npz or W-TALC layouts"
ANNOTATIONS_HELP = "annotations: ActivityNet JSON, a THUMOS14 JSON or a W-TALC folder (README: Inputs)"


def _sets(pairs: list[str] | None) -> dict[str, str]:
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise SettingsError(f"--set {pair}: expected key=value")
        key, value = pair.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def _train_sets(args) -> tuple[dict[str, str], str | None]:
    """`--set` pairs of a training command with its aliases applied, and the click annotator.

    `--epochs N` is an alias of `--set epochs=N` and `--set annotator=A` of `--annotator A`;
    giving both routes different values is an error.
    """
    sets = _sets(args.set)
    aliases = (("epochs", None if args.epochs is None else str(args.epochs), "--epochs"),)
    for key, value, option in aliases:
        if value is not None:
            if key in sets and sets[key] != value:
                raise SettingsError(f"{option} {value} and --set {key}={sets[key]} disagree: give one")
            sets[key] = value
    annotator = args.annotator
    if "annotator" in sets:
        chosen = sets.pop("annotator")
        if annotator is not None and annotator != chosen:
            raise SettingsError(f"--annotator {annotator} and --set annotator={chosen} disagree: give one")
        annotator = chosen
    return sets, annotator


# ------------------------------------------------------------------------- commands
def _extract_settings(args):
    from ..extract.features import ExtractSettings

    return ExtractSettings(fps=args.fps, crop_size=args.crop_size, flow=args.flow, flow_preset=args.flow_preset,
                           quantize_flow=args.quantize_flow, pad_last=args.pad_last, i3d_rgb=args.i3d_rgb,
                           i3d_flow=args.i3d_flow, precision=args.precision)


def _report_extract(summary, cache: str) -> int:
    print(f"extracted {summary.done}, skipped {summary.skipped} already cached, failed {len(summary.failed)} "
          f"of {summary.total} videos into {cache} ({summary.frames} frames, {summary.fps:.1f} frames/s)")
    if nodes := collections.Counter(r["node"][:8] for r in summary.records if r.get("node")):
        print("videos per Ray node: " + ", ".join(f"{node} {count}" for node, count in sorted(nodes.items())))
    for record in summary.failed:
        print(f"  failed {record['video_id']}: {record['reason']}", file=sys.stderr)
    if summary.failed:
        print(f"error: {len(summary.failed)} of {summary.total} videos failed (see `wtal cache ls {cache}`)", file=sys.stderr)
        return 1
    return 0


def cmd_extract(args) -> int:
    from .extraction import extract_videos
    from .progress import TqdmHook

    summary = extract_videos(args.inputs, args.cache, _extract_settings(args), device=args.device, batch=args.batch,
                             ray_address=args.ray_address, workers=args.workers, hook=TqdmHook())
    return _report_extract(summary, args.cache)


def cmd_train(args) -> int:
    from .progress import TqdmHook
    from .runtime import set_threads
    from .stages import train_stage

    set_threads(args.device)
    sets, annotator = _train_sets(args)
    result = train_stage(args.features, args.annotations, args.model, args.out, clicks=args.clicks, seed=args.seed,
                         device=args.device, sets=sets, val_fraction=args.val_fraction, train_subset=args.train_subset,
                         snippet_seconds=args.snippet_seconds, annotator=annotator, hook=TqdmHook(),
                         allow_pickle=args.allow_pickle, standardize=args.standardize,
                         preset=args.preset)
    print(f"trained {args.model} on {result.num_train_videos} videos; final loss {result.final_loss:.4f}; "
          f"checkpoint: {result.selection}; wrote {Path(args.out) / 'checkpoint.pt'}")
    return 0


def cmd_detect(args) -> int:
    from .runtime import set_threads
    from .stages import detect_stage

    set_threads(args.device)
    info = detect_stage(args.features, args.checkpoint, args.out, subset=args.subset, device=args.device,
                        annotations=args.annotations, snippet_seconds=args.snippet_seconds, sets=_sets(args.set),
                        allow_pickle=args.allow_pickle, allow_mismatch=args.allow_mismatch)
    print(f"wrote {info.detections} detections for {info.videos} videos to {args.out}")
    return 0


def cmd_evaluate(args) -> int:
    from ..evaluate.reports import format_per_class, format_table, load_evaluation, write_json

    inputs = load_evaluation(args.detections, args.annotations, subset=args.subset, tiou=args.tiou,
                             protocol=args.protocol, exclude=tuple(args.exclude or ()),
                             exclude_thumos14=args.exclude_thumos14, ambiguous_path=args.ambiguous,
                             allow_pickle=args.allow_pickle, ignore_extra_videos=args.ignore_extra_videos)
    report = inputs.evaluate()
    print(format_table(report))
    if args.per_class:
        print(format_per_class(report))
    if args.json:
        write_json(report, args.json)
    if args.plot:
        from ..data.annotations import load_annotations
        from ..evaluate.plots import plot_pr
        from ..evaluate.reports import read_detections

        ann = load_annotations(args.annotations, allow_pickle=args.allow_pickle)
        plot_pr(ann, read_detections(args.detections), report.subset, args.plot_tiou, args.plot)
        print(f"wrote {args.plot}")
    if args.html:
        from ..evaluate.html_report import write_html_report

        sources = {"detections": str(Path(args.detections).resolve()), "annotations": str(Path(args.annotations).resolve())}
        print(f"wrote {write_html_report(args.html, inputs, report=report, sources=sources)}")
    return 0


def cmd_report(args) -> int:
    from ..evaluate.reports import format_table
    from .report import report_stage

    report, path = report_stage(args.detections, args.annotations, args.out, subset=args.subset, tiou=args.tiou,
                                protocol=args.protocol, exclude=tuple(args.exclude or ()),
                                exclude_thumos14=args.exclude_thumos14, ambiguous_path=args.ambiguous,
                                allow_pickle=args.allow_pickle, ignore_extra_videos=args.ignore_extra_videos,
                                features=args.features, checkpoint=args.checkpoint,
                                device=args.device, snippet_seconds=args.snippet_seconds)
    print(format_table(report))
    print(f"wrote {path}")
    return 0


def cmd_run(args) -> int:
    """Extract on Ray actors, train and detect as Ray tasks, evaluate here (`run_pipeline`)."""
    from ..evaluate.reports import format_table
    from .progress import TqdmHook
    from .run import run_pipeline

    bars = TqdmHook()
    status = 0

    def hook(step: str, artifact=None, *, completed=None, total=None) -> None:
        nonlocal status
        if completed is not None:
            bars(step, artifact, completed=completed, total=total)
        elif step == "extracted":
            status = _report_extract(artifact, cache)
        elif step == "trained":
            trained, where = artifact
            print(f"trained {args.model} on {trained.num_train_videos} videos in a Ray task (node {where['node'][:8]}, "
                  f"pid {where['pid']})")
        elif step == "detected":
            detected, where = artifact
            print(f"wrote {detected.detections} detections for {detected.videos} videos in a Ray task (pid {where['pid']})")

    cache = str(Path(args.cache).resolve()) if args.cache else str(Path(args.out).resolve() / "cache")
    sets, annotator = _train_sets(args)
    result = run_pipeline([args.video_dir], args.annotations, args.model, args.out, _extract_settings(args),
                          cache=cache, batch=args.batch, device=args.device, ray_address=args.ray_address,
                          workers=args.workers, clicks=args.clicks, seed=args.seed, sets=sets,
                          val_fraction=args.val_fraction, standardize=args.standardize, annotator=annotator, hook=hook)
    print(format_table(result.report))
    print(f"wrote {result.detections} and {result.report_path}")
    return status


def cmd_models(args) -> int:
    from .model_info import model_presets, model_settings, models_table

    if args.preset and not args.name:
        raise SettingsError("wtal models --preset needs a model name: wtal models NAME --preset P")
    if args.preset:
        print("\n".join(model_presets(args.name, args.preset)))
    else:
        print("\n".join(model_settings(args.name) if args.name else models_table()))
    return 0


def cmd_cache(args) -> int:
    from ..extract.cache import FeatureCache

    cache = FeatureCache(args.cache)
    if args.action == "ls":
        records = cache.records()
        if args.json:
            for r in records:
                print(json.dumps({k: r.get(k) for k in ("video_id", "status", "reason", "key", "created", "shape")}))
        else:
            print(f"{'video_id':32s} {'status':7s} {'shape':14s} {'created':26s} reason")
            for r in records:
                shape = "x".join(map(str, r["shape"])) if r.get("shape") else "-"
                print(f"{r['video_id']:32s} {r['status']:7s} {shape:14s} {r.get('created') or '-':26s} {r.get('reason') or ''}")
            ok = sum(r["status"] == "ok" for r in records)
            print(f"{len(records)} videos, {ok} ok, {len(records) - ok} failed")
        return 0
    if args.action == "verify":
        problems = cache.verify()
        for p in problems:
            print(p)
        print(f"{len(cache.records())} entries checked, {len(problems)} problem(s)")
        return 1 if problems else 0
    if args.action == "export":
        if not args.dest:
            raise SettingsError("cache export needs a destination folder: wtal cache export CACHE OUT_DIR")
        n = cache.export(args.dest)
        print(f"exported {n} videos to {args.dest}")
        return 0
    removed, freed = cache.gc(dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {removed} files ({freed / 1e6:.1f} MB) not referenced by the manifest")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(args.out, workers=args.workers, device=args.device)


def cmd_clicks(args) -> int:
    from ..data.annotations import load_annotations
    from ..data.clicks import click_protocol, save_clicks, simulate_clicks

    protocol = click_protocol(args.protocol, _sets(args.set))
    ann = load_annotations(args.annotations, allow_pickle=args.allow_pickle)
    subset = args.subset or ann.default_subsets()[0]
    clicks = simulate_clicks(ann, subset, args.seed, protocol)
    save_clicks(clicks, args.out)
    print(f"wrote {sum(map(len, clicks.values()))} clicks for {len(clicks)} {subset!r} videos to {args.out} "
          f"({args.protocol} protocol)")
    return 0


def _share(part: int, whole: int) -> str:
    return f"{part} ({100 * part / whole:.1f} %)" if whole else str(part)


def cmd_clicks_stats(args) -> int:
    from ..data.annotations import load_annotations
    from ..data.clicks import ANNOTATION_FPS, choose_click_file, click_stats, load_clicks

    path = choose_click_file(args.clicks, args.annotator)
    clicks = load_clicks(path)
    ann = load_annotations(args.annotations, allow_pickle=args.allow_pickle)
    stats = click_stats(clicks, ann, args.subset or ann.default_subsets()[0])
    if args.json:
        print(json.dumps({"clicks_file": str(path), "annotations": args.annotations, **stats.as_dict()}, indent=1))
        return 0
    rows = [
        ("videos with clicks", f"{stats.videos_with_clicks} of {stats.videos} {stats.subset!r} videos"),
        ("clicks", str(stats.clicks)),
        ("background gaps", str(stats.gaps)),
        ("gaps covered", _share(stats.gaps_covered, stats.gaps)),
        ("clicks per covered gap", f"{stats.clicks_per_covered_gap:.3f}"),
        ("clicks inside actions", _share(stats.inside_actions, stats.clicks)),
        ("clicks on an action boundary", _share(stats.on_boundaries, stats.clicks)),
        (f"clicks on the {ANNOTATION_FPS:g} fps frame grid", _share(stats.on_grid, stats.clicks)),
        ("clicks outside the video", str(stats.outside_video)),
    ]
    for label, videos in (("videos missing from the ground truth", stats.missing_videos),
                          ("videos of another subset", stats.other_subset_videos)):
        rows.append((label, f"{len(videos)}" + (f" (e.g. {', '.join(videos[:3])})" if videos else "")))
    print(f"{path} against {args.annotations}")
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    return 0


def cmd_convert(args) -> int:
    from ..data.annotations import load_annotations, save_annotations_json

    ann = load_annotations(args.annotations, allow_pickle=args.allow_pickle)
    save_annotations_json(ann, args.out)
    print(f"wrote {len(ann.videos)} videos ({ann.num_instances()} instances) to {args.out}")
    return 0


# --------------------------------------------------------------------------- parser
class _HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to an option's help when it has a real default not already named."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if action.option_strings and default is not None and default is not False and default != argparse.SUPPRESS \
                and "default" not in text:
            text += " (default: %(default)s)"
        return text


def _add_extract_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fps", type=float, default=25.0, help="frame rate videos are resampled to before flow and I3D")
    p.add_argument("--flow", default="auto", choices=["auto", "opencv-cuda", "opencv-cpu", "torch"],
                   help="TV-L1 backend; auto: wtal's batched torch TV-L1 on a GPU, else OpenCV on the CPU")
    p.add_argument("--flow-preset", default="default", choices=["default", "fast"],
                   help="TV-L1 parameters: OpenCV's defaults, or fewer scales and warps (several times faster, coarser)")
    p.add_argument("--crop-size", type=int, default=224,
                   help="centre crop fed to I3D; frames are resized to a shorter side of crop * 8/7 first")
    p.add_argument("--quantize-flow", action="store_true", help="quantise flow to 256 levels like the original features")
    p.add_argument("--pad-last", action="store_true", help="pad the trailing partial snippet instead of dropping it")
    p.add_argument("--i3d-rgb", help="RGB I3D checkpoint (e.g. rgb_imagenet.pt); random weights when omitted")
    p.add_argument("--i3d-flow", help="flow I3D checkpoint (e.g. flow_imagenet.pt)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16"],
                   help="I3D arithmetic: strict fp32, tf32 (TF32 convolutions on CUDA; fp32 on CPU) or bf16 autocast")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help=DEVICE_HELP)
    p.add_argument("--batch", type=int,
                   help="16-frame snippets decoded and flowed at once, bounds memory (default: 8 on CPU, 32 on CUDA)")
    p.add_argument("--ray-address", help="join this Ray cluster (default: embedded local Ray)")
    p.add_argument("--workers", type=int, help="local Ray CPUs (default: all cores)")


def _add_train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="weakly-supervised localizer to train (list: wtal models)")
    p.add_argument("--clicks", nargs="+", help="background clicks (BackTAL): wtal JSON, THUMOS14 CSVs or their folder")
    p.add_argument("--annotator", help="with a folder or several --clicks files, the one whose name ends with this (e.g. A1)")
    p.add_argument("--epochs", type=int, help="alias of --set epochs=N (default: the paper's)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, batches and the validation split")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a model/training/test setting")
    p.add_argument("--standardize", action="store_true",
                   help="z-score each feature dimension with training statistics (kept in the checkpoint)")
    p.add_argument("--val-fraction", type=float, default=0.0,
                   help="carve this fraction of training videos for checkpoint selection (default: fixed epochs)")


def _add_evaluation_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--detections", required=True, help="ActivityNet result JSON (from wtal detect)")
    p.add_argument("--annotations", required=True, help=ANNOTATIONS_HELP)
    p.add_argument("--subset", help=SUBSET_HELP)
    p.add_argument("--tiou", default="0.1:0.7:0.1", help="tIoU thresholds: start:stop:step or a comma list")
    p.add_argument("--protocol", default="activitynet", choices=["activitynet", "wtalc"],
                   help="matching rules: ActivityNet's, or W-TALC's THUMOS14 conventions")
    p.add_argument("--exclude", nargs="+", metavar="VIDEO_ID", help="leave these videos out of the evaluation")
    p.add_argument("--exclude-thumos14", action="store_true", help="drop THUMOS14 test videos 270, 1292 and 1496")
    p.add_argument("--ambiguous", help="THUMOS14 Ambiguous_test.txt")
    p.add_argument("--allow-pickle", action="store_true", help="allow reading the W-TALC object .npy layout")
    p.add_argument("--ignore-extra-videos", action="store_true",
                   help="drop predictions on videos outside the subset (default: false positives, as ActivityNet's evaluator)")


class _Parser(argparse.ArgumentParser):
    """The parser of every subcommand: same help formatter as the top-level one."""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(**kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wtal", description="Raw videos to weakly-supervised temporal action detections.",
                                     formatter_class=_HelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("extract", help="decode, TV-L1 flow and I3D features into a cache")
    p.add_argument("inputs", nargs="+", metavar="VIDEO_DIR_OR_FILES", help="video files and/or folders of videos")
    p.add_argument("--cache", required=True, help="feature cache folder (created if missing; shared by re-runs)")
    _add_extract_options(p)
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("train", help="train a localizer on features + video-level labels")
    p.add_argument("--features", required=True, help=FEATURES_HELP)
    p.add_argument("--annotations", required=True, help=ANNOTATIONS_HELP)
    p.add_argument("--out", required=True, help="run folder for checkpoint.pt, settings and the training log")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help=DEVICE_HELP)
    p.add_argument("--train-subset", help="annotation subset to train on (default: training, train, validation or val)")
    p.add_argument("--snippet-seconds", type=float, help=SNIPPET_HELP)
    p.add_argument("--allow-pickle", action="store_true", help="allow W-TALC object .npy annotations/features")
    p.add_argument("--preset", default="thumos14", choices=["thumos14", "activitynet12", "activitynet13"],
                   help="dataset preset: the paper's / official values for that dataset, before --set (README: Presets)")
    _add_train_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("detect", help="write detections JSON with a trained localizer")
    p.add_argument("--features", required=True, help=FEATURES_HELP)
    p.add_argument("--checkpoint", required=True, metavar="RUN", help="run folder (or its checkpoint.pt) from wtal train")
    p.add_argument("--out", required=True, help="detections JSON to write")
    p.add_argument("--subset", help=SUBSET_HELP)
    p.add_argument("--annotations", help="annotation file (default: the one the run was trained with)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help=DEVICE_HELP)
    p.add_argument("--snippet-seconds", type=float, help=SNIPPET_HELP)
    p.add_argument("--allow-pickle", action="store_true", help="allow W-TALC object .npy annotations/features")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a test setting")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="detect on features whose time base or extraction settings differ from training")
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("evaluate", help="mAP at tIoU thresholds (ActivityNet detection metric)")
    _add_evaluation_options(p)
    p.add_argument("--per-class", action="store_true", help="also print AP per class and tIoU")
    p.add_argument("--json", metavar="REPORT.json", help="write the report (mAP, average mAP, per-class AP) as JSON")
    p.add_argument("--plot", metavar="PR.png", help="write precision-recall curves per class")
    p.add_argument("--plot-tiou", type=float, default=0.5, help="tIoU of the --plot curves")
    p.add_argument("--html", metavar="REPORT.html", help="also write the HTML report (as wtal report)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("report", help="one self-contained HTML page: mAP, per-class AP, PR curves, errors, timelines")
    _add_evaluation_options(p)
    p.add_argument("--out", required=True, metavar="REPORT.html", help="HTML file to write")
    p.add_argument("--features", help="features of the evaluated videos, to draw the run's CAS (needs --checkpoint)")
    p.add_argument("--checkpoint", metavar="RUN", help="run folder (or checkpoint.pt): its CAS and settings (needs --features)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help=DEVICE_HELP)
    p.add_argument("--snippet-seconds", type=float, help=SNIPPET_HELP)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("run", help="extract + train + detect + evaluate")
    p.add_argument("video_dir", help="folder of videos")
    p.add_argument("--annotations", required=True, help=ANNOTATIONS_HELP)
    p.add_argument("--out", required=True, help="output folder: run/, detections.json, report.json (and cache/)")
    p.add_argument("--cache", help="feature cache (default: OUT/cache)")
    _add_extract_options(p)
    _add_train_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("cache", help="inspect and maintain a feature cache")
    p.add_argument("action", choices=["ls", "verify", "export", "gc"],
                   help="ls: list entries; verify: check every file's checksum; export: write <video_id>.npy; "
                        "gc: remove entries the manifest no longer references")
    p.add_argument("cache", help="feature cache folder")
    p.add_argument("dest", nargs="?", help="export: destination folder")
    p.add_argument("--json", action="store_true", help="ls: one JSON object per line")
    p.add_argument("--dry-run", action="store_true", help="gc: only report")
    p.set_defaults(func=cmd_cache)

    p = sub.add_parser("demo", help="the whole pipeline on built-in synthetic videos")
    p.add_argument("--out", default="demo_out", help="output folder: data/ (videos, annotations), cache/, run/, "
                   "detections.json, report.json, cas.png")
    p.add_argument("--workers", type=int, help="local Ray CPUs for extraction (default: all cores)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help=DEVICE_HELP)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("models", help="the localizers, or one model's settings with defaults")
    p.add_argument("name", nargs="?", help="a model: print its model, training and test settings")
    p.add_argument("--preset", choices=["thumos14", "activitynet12", "activitynet13"],
                   help="print the values this dataset preset sets for the model, each with its source")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("clicks", help="background clicks for BackTAL")
    clicks = p.add_subparsers(dest="clicks_command", required=True, parser_class=_Parser)
    q = clicks.add_parser("simulate", help="simulated background clicks: human-like (default) or one per gap")
    q.add_argument("--annotations", required=True, help=ANNOTATIONS_HELP)
    q.add_argument("--out", required=True, help="clicks JSON to write")
    q.add_argument("--subset", help="subset to click (default: the training subset)")
    q.add_argument("--seed", type=int, default=0, help="seed of the click positions")
    q.add_argument("--protocol", default="human", choices=["human", "uniform"],
                   help="human: like BackTAL's THUMOS14 annotators (measured); uniform: one click in every gap (SF-Net)")
    q.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a protocol value: gap_fraction, short_gap_seconds, clicks_per_gap, inside_fraction, "
                        "inside_seconds, frame_rate (README: Background clicks)")
    q.add_argument("--allow-pickle", action="store_true", help="allow W-TALC object .npy annotations")
    q.set_defaults(func=cmd_clicks)
    q = clicks.add_parser("stats", help="how a click file covers the background of a ground truth")
    q.add_argument("clicks", nargs="+", help="clicks: wtal JSON or THUMOS14 CSV, several files or a folder with --annotator")
    q.add_argument("--annotations", required=True, help=ANNOTATIONS_HELP)
    q.add_argument("--subset", help="ground-truth subset (default: the training subset)")
    q.add_argument("--annotator", help="with a folder or several files, the one whose name ends with this (e.g. A1)")
    q.add_argument("--allow-pickle", action="store_true", help="allow W-TALC object .npy annotations")
    q.add_argument("--json", action="store_true", help="print the figures as JSON")
    q.set_defaults(func=cmd_clicks_stats)

    p = sub.add_parser("convert", help="write any supported annotation layout as ActivityNet JSON")
    p.add_argument("annotations", help="annotation file or folder in any supported layout")
    p.add_argument("--out", required=True, help="ActivityNet JSON to write")
    p.add_argument("--allow-pickle", action="store_true", help="allow W-TALC object .npy annotations")
    p.set_defaults(func=cmd_convert)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except (WtalError, OSError) as exc:  # the user's input or environment; anything else is a bug
        if args.verbose:
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
