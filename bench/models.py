"""Benchmark of every registered localizer on the THUMOS14-like synthetic features, paper settings.

Each model (default: everything `wtal.models` registers; `--models` to choose) is
trained with its own defaults (the paper's optimiser, learning rate, batch, epochs, sampled
length, loss weights and test settings) on the same `wtal.data.thumos_like` dataset, once per
seed, and evaluated on the dataset's test subset after the last epoch of its fixed schedule (no
epoch or checkpoint is chosen on the evaluated videos). BackTAL trains with background clicks
(`--clicks FILE`, else simulated: `--click-protocol human`, like THUMOS14's annotators, the
default, or `uniform`, one per background gap), the others with video labels only.

CPU reductions, printed and the same for every model:
- `--width-div N` divides every layer width of every model (WIDTHS below; RSKP's embedding is the
  feature width, as in the paper, so it follows `--stream-dim`);
- `--epoch-fraction F` multiplies every model's epoch count by F and `--max-epochs N` caps it
  at N; the epoch-counted schedule (RSKP's memory warm-up, DGAM's reconstruction warm-up,
  CleanNet's stage epochs) shrinks in the same proportion; a model keeps at least min(its
  default, 3) epochs so multi-stage schedules survive;
- `--scale` and `--stream-dim` shrink the dataset (video counts, width per stream); CleanNet's
  learning-rate step, counted in videos (one THUMOS14 validation epoch = 200), scales with the
  training-set size.

`--set MODEL:KEY=VALUE` (repeatable) changes one setting of one model after the reduction, for
diagnosis (e.g. `--set ecm:aggregate=mean`); the table is then no longer at paper settings for
that model, and the printed settings line marks it.

Printed per model: mAP at each tIoU 0.1:0.7 and the average (mean +- std over seeds), the trivial
whole-video detector (each test video labelled with the model's top class), seconds per epoch, and
the ratio of the average mAP to MIL's in the same run; first the calibration line: MIL's mAP
against the band the benchmark is calibrated to (at full scale and width: mAP@0.5 in [0.25, 0.40],
above 0.5 at tIoU 0.1, below 0.25 at 0.7).

    python bench/models.py --quick                 # development: minutes on 2 cores
    python bench/models.py                         # full: 200 + 200 videos, 2048-d, paper widths
    python bench/models.py --scale 0.25 --width-div 16  # ranks: paper learning rates need 2048-d input
    python bench/models.py --scale 0.25 --width-div 16 --rectify  # non-negative features, as I3D's
    python bench/models.py --features F --annotations A.json [--clicks C.json]  # files on disk
    python bench/models.py ... --jobs 2 --json a.json; python bench/models.py --combine a.json b.json
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wtal.data.annotations import AnnotationSet, load_annotations
from wtal.data.thumos_like import ThumosLikeConfig, make_thumos_like
from wtal.device import resolve_device
from wtal.evaluate.metrics import evaluate
from wtal.models import REGISTRY, get_localizer, split_settings
from wtal.models.recipe import detect, fit
from wtal.models.train import VideoItem, build_items
from wtal.postprocess.detections import whole_video_results

BASELINE = "mil"
TIOU = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
# the band MIL's defaults land in on the default benchmark (full scale and width)
CALIBRATION = {"mAP@0.5": (0.25, 0.40), "mAP@0.1 above": 0.5, "mAP@0.7 below": 0.25}

# Every layer width per model (paper value = the model's default), divided by --width-div.
WIDTHS: dict[str, tuple[str, ...]] = {
    "mil": ("hidden",),
    "ecm": ("hidden",),
    "basnet": ("hidden", "filter_hidden"),
    "backtal": ("hidden", "filter_hidden", "embed_hidden"),
    "rskp": ("embed_dim",),  # default None = the feature width (2048 -> 2048)
    "dgam": ("attention_hidden", "latent_dim", "cvae_hidden"),
    "cleannet": ("hidden",),
}
# Settings counted in epochs, scaled with --epoch-fraction like the epoch count itself (DGAM scales
# its warm-up to the run's epochs itself: warmup_reference_epochs).
EPOCH_KEYS: dict[str, tuple[str, ...]] = {
    "rskp": ("warmup",),
    "cleannet": ("cls_epochs",),
}
QUICK = {"scale": 0.15, "stream_dim": 32, "width_div": 16, "epoch_fraction": 1.0, "max_epochs": 10}
FULL = {"scale": 1.0, "stream_dim": 1024, "width_div": 1, "epoch_fraction": 1.0, "max_epochs": None}


def registered_models() -> list[str]:
    """Names registered by `wtal.models`, baseline first."""
    return [BASELINE] + sorted(n for n in REGISTRY if n != BASELINE)


def reduced_settings(name: str, width_div: int, epoch_fraction: float, max_epochs: int | None,
                     train_videos: int, feature_dim: int) -> dict[str, Any]:
    """The overrides that apply the run's reduction to `name`'s defaults (empty at full settings)."""
    cls = get_localizer(name)
    hparams, train_cfg, _ = split_settings(cls, None)
    sets: dict[str, Any] = {}
    if width_div != 1:
        for key in WIDTHS.get(name, ()):
            sets[key] = max(1, int(hparams[key] if hparams[key] is not None else feature_dim) // width_div)
    default = int(train_cfg["epochs"])
    epochs = max(min(default, 3), round(default * epoch_fraction))
    if max_epochs is not None:
        epochs = min(epochs, max(min(default, 3), max_epochs))
    if epochs != default:
        sets["epochs"] = epochs
        for key in EPOCH_KEYS.get(name, ()):
            # a later stage starts before the last epoch, so that every stage still runs
            sets[key] = max(1, min(epochs - 1, round(int(hparams[key]) * epochs / default)))
    if "lr_step_videos" in train_cfg and train_videos != 200:
        sets["lr_step_videos"] = max(1, round(int(train_cfg["lr_step_videos"]) * train_videos / 200))
    split_settings(cls, sets)  # unknown keys fail here, naming the model
    return sets


def parse_overrides(pairs: list[str], names: list[str]) -> dict[str, dict[str, str]]:
    """`MODEL:KEY=VALUE` strings -> {model: {key: value}}; the values are parsed by each model's
    declared setting types when merged (`split_settings`). A model not in the run is an error."""
    out: dict[str, dict[str, str]] = {}
    for pair in pairs:
        model, sep, rest = pair.partition(":")
        key, eq, value = rest.partition("=")
        if not sep or not eq or not key:
            raise ValueError(f"--set {pair}: expected MODEL:KEY=VALUE, e.g. ecm:aggregate=mean")
        if model not in names:
            raise ValueError(f"--set {pair}: {model} is not among this run's models ({', '.join(names)})")
        out.setdefault(model, {})[key] = value
    return out


def items_of(ann: AnnotationSet, features: dict[str, np.ndarray], subset: str,
             clicks: dict[str, list[float]] | None, snippet_seconds: float, fps: float) -> list[VideoItem]:
    """VideoItems of one subset from in-memory arrays; clicks in seconds; one time base for all."""
    items = []
    for video in ann.subset(subset):
        times = np.asarray(sorted((clicks or {}).get(video.video_id, [])), dtype=np.float64)
        items.append(VideoItem(video.video_id, features[video.video_id], ann.label_vector(video.video_id), video.duration,
                               np.floor(times / snippet_seconds).astype(np.int64), snippet_seconds, fps))
    return items


def run_once(name: str, seed: int, sets: dict[str, Any], data: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Train with the model's defaults + `sets`, detect the test subset, evaluate: the numbers and
    the settings the run used."""
    cls = get_localizer(name)
    train_items = data["train_clicks"] if cls.needs_clicks else data["train"]
    wall, cpu = time.perf_counter(), time.process_time()
    run = fit(cls, train_items, data["class_names"], data["snippet_seconds"], sets=sets, seed=seed, device=device)
    history = run.history
    train_seconds = time.perf_counter() - wall
    results, inferences = detect(run.model, data["test"], run.test_config, data["class_names"],
                                 data["snippet_seconds"], device)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    trivial = {it.video_id: whole_video_results(inferences[it.video_id].video_scores, it.duration, data["class_names"])
               for it in data["test"]}
    report = evaluate(data["ann"], results, data["test_subset"], tious=TIOU)
    base = evaluate(data["ann"], trivial, data["test_subset"], tious=TIOU)
    last = history[-1] if history else {}
    return {
        "seed": seed,
        "mAP": [float(m) for m in report.mAP],
        "average_mAP": float(report.average_mAP),
        "trivial_mAP": [float(m) for m in base.mAP],
        "trivial_average_mAP": float(base.average_mAP),
        "epochs": len(history),
        "seconds_per_epoch": train_seconds / max(1, len(history)),
        "run_wall_seconds": wall,
        "run_cpu_seconds": cpu,
        "finite_losses": all(math.isfinite(v) for v in last.values()),
        "used": {"model": run.hparams, "train": run.train_config, "test": run.test_config},
    }


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean/std over seeds of every number the table shows."""
    return {
        "mAP": [mean_std([r["mAP"][i] for r in runs]) for i in range(len(TIOU))],
        "average_mAP": mean_std([r["average_mAP"] for r in runs]),
        "trivial_average_mAP": mean_std([r["trivial_average_mAP"] for r in runs]),
        "seconds_per_epoch": statistics.fmean(r["seconds_per_epoch"] for r in runs),
        "epochs": runs[0]["epochs"],
        "cpu_per_wall": sum(r["run_cpu_seconds"] for r in runs) / sum(r["run_wall_seconds"] for r in runs),
        "finite_losses": all(r["finite_losses"] for r in runs),
    }


def calibration_line(mil: dict[str, Any]) -> str:
    """MIL's mean mAP per tIoU and whether it is inside the calibrated band."""
    m = [v for v, _ in mil["mAP"]]
    lo, hi = CALIBRATION["mAP@0.5"]
    ok = lo <= m[4] <= hi and m[0] > CALIBRATION["mAP@0.1 above"] and m[6] < CALIBRATION["mAP@0.7 below"]
    return (f"calibration: MIL mAP@{'/'.join(f'{t:g}' for t in TIOU)} = {' '.join(f'{100 * v:.1f}' for v in m)} %; "
            f"band at full scale/width: mAP@0.5 in [{100 * lo:.0f}, {100 * hi:.0f}], "
            f"@0.1 > {100 * CALIBRATION['mAP@0.1 above']:.0f}, @0.7 < {100 * CALIBRATION['mAP@0.7 below']:.0f}: "
            f"{'inside' if ok else 'OUTSIDE'}")


def print_table(summary: dict[str, dict[str, Any]], seeds: list[int]) -> None:
    """mAP in percent, mean +- std over seeds."""
    base = summary[BASELINE]["average_mAP"][0]
    cols = " ".join(f"{'@' + format(t, 'g'):>11}" for t in TIOU)
    header = f"{'model':<9} {cols} {'avg':>11} {'trivial':>7} {'epochs':>6} {'s/epoch':>8} {'cpu/wall':>8} {'avg/mil':>7}"
    print(f"mAP in %, mean +- std over seeds {' '.join(map(str, seeds))}; trivial = whole-video detector's avg")
    print(header)
    print("-" * len(header))
    for name, s in summary.items():
        ratio = s["average_mAP"][0] / base if base > 0 else float("nan")
        cells = " ".join(f"{100 * m:5.1f}+-{100 * sd:4.1f}" for m, sd in s["mAP"])
        avg, sd = s["average_mAP"]
        flag = "" if s["finite_losses"] else "  (non-finite loss)"
        print(f"{name:<9} {cells} {100 * avg:5.1f}+-{100 * sd:4.1f} {100 * s['trivial_average_mAP'][0]:7.1f} "
              f"{s['epochs']:6d} {s['seconds_per_epoch']:8.2f} {s['cpu_per_wall']:8.2f} {ratio:7.2f}{flag}")


def load_data(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """Training/test items, annotations and a one-line description of the dataset."""
    from wtal.data.clicks import load_clicks, simulate_clicks

    if args.features:
        from wtal.data.features import open_features

        ann = load_annotations(args.annotations)
        source = open_features(args.features)
        train_subset, test_subset = ann.default_subsets()
        clicks = load_clicks(args.clicks) if args.clicks else simulate_clicks(ann, train_subset, 0, args.click_protocol)
        data = {"train": build_items(ann, source, train_subset), "train_clicks": build_items(ann, source, train_subset, clicks),
                "test": build_items(ann, source, test_subset)}
        seconds, what = source.snippet_seconds, f"features {args.features}, annotations {args.annotations}"
    else:
        cfg = ThumosLikeConfig(seed=args.data_seed, scale=args.scale, stream_dim=args.stream_dim, rectify=args.rectify)
        feats, raw = make_thumos_like(cfg)
        ann = annotations_from_dict(raw)
        train_subset, test_subset = ann.default_subsets()
        clicks = load_clicks(args.clicks) if args.clicks else simulate_clicks(ann, train_subset, 0, args.click_protocol)
        seconds = cfg.snippet_seconds
        data = {"train": items_of(ann, feats, train_subset, None, seconds, cfg.fps),
                "train_clicks": items_of(ann, feats, train_subset, clicks, seconds, cfg.fps),
                "test": items_of(ann, feats, test_subset, None, seconds, cfg.fps)}
        what = (f"wtal.data.thumos_like seed {args.data_seed}, scale {args.scale}, {cfg.feature_dim}-d"
                + (", rectified" if args.rectify else ""))
    data.update({"ann": ann, "class_names": ann.class_names, "snippet_seconds": seconds, "test_subset": test_subset})
    lengths = [len(it.features) for it in data["train"] + data["test"]]
    what += (f": {len(ann.class_names)} classes, {len(data['train'])} {train_subset} / {len(data['test'])} "
             f"{test_subset} videos, {min(lengths)}-{max(lengths)} snippets (median {int(np.median(lengths))}), "
             f"{ann.num_instances(train_subset)} / {ann.num_instances(test_subset)} instances")
    return data, what


def annotations_from_dict(raw: dict) -> AnnotationSet:
    """Parse an in-memory ActivityNet-style dict with the JSON reader's validation."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench_models_") as tmp:
        path = Path(tmp) / "annotations.json"
        path.write_text(json.dumps(raw))
        return load_annotations(path)


def code_version() -> str:
    """The checkout's commit (with `+changes` when the tree is dirty), or `unknown` outside git."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("+changes" if dirty else "")


_RUN_DATA: dict[str, Any] = {}  # the dataset, set before worker processes fork so that they share it


def _run_task(task: tuple[str, int, dict[str, Any], str]) -> tuple[str, int, dict[str, Any]]:
    """One (model, seed) run in a worker process (one torch thread each)."""
    name, seed, sets, device = task
    torch.set_num_threads(1)
    return name, seed, run_once(name, seed, sets, _RUN_DATA, torch.device(device))


def run_all(names: list[str], seeds: list[int], settings: dict[str, dict[str, Any]], data: dict[str, Any],
            device: torch.device, jobs: int) -> dict[str, list[dict[str, Any]]]:
    """Every (model, seed) run, `jobs` at a time in forked processes; a line printed as each ends."""
    import concurrent.futures
    import multiprocessing

    tasks = [(name, seed, settings[name], str(device)) for name in names for seed in seeds]
    done: dict[tuple[str, int], dict[str, Any]] = {}

    def show(name: str, seed: int, r: dict[str, Any]) -> None:
        done[name, seed] = r
        print(f"    {name:<9} seed {seed}: mAP@0.5 {100 * r['mAP'][4]:.1f}, avg {100 * r['average_mAP']:.1f}, "
              f"{r['seconds_per_epoch']:.2f} s/epoch, run {r['run_wall_seconds']:.0f} s", flush=True)

    _RUN_DATA.clear()
    _RUN_DATA.update(data)
    if jobs == 1 or device.type != "cpu":
        for task in tasks:
            show(*_run_task(task))
    else:
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
            for future in concurrent.futures.as_completed([pool.submit(_run_task, t) for t in tasks]):
                show(*future.result())
    return {name: [done[name, seed] for seed in seeds] for name in names}


def combine(paths: list[Path]) -> None:
    """Print one table from several `--json` files of the same dataset and reduction (a model in
    several files: the last file's runs)."""
    saved = [json.loads(p.read_text()) for p in paths]
    for p, d in zip(paths[1:], saved[1:]):
        for key in ("dataset", "reduction"):
            if d.get(key) != saved[0].get(key):
                sys.exit(f"{p}: {key} differs from {paths[0]}'s: {d.get(key)!r} vs {saved[0].get(key)!r}")
    runs: dict[str, list[dict[str, Any]]] = {}
    for d in saved:
        runs.update(d["runs"])
    if BASELINE not in runs:
        sys.exit(f"none of {', '.join(map(str, paths))} has the {BASELINE} baseline")
    seeds = sorted({r["seed"] for rs in runs.values() for r in rs})
    print(f"dataset: {saved[0]['dataset']}")
    print(f"reduction: {saved[0]['reduction']}")
    for p, d in zip(paths, saved):
        print(f"{p}: code {d.get('code', 'unknown')}, models {', '.join(d['runs'])}, BackTAL's clicks "
              f"{d.get('clicks', 'not recorded')}, runtime {d.get('runtime_seconds', 0):.0f} s")
    summary = {name: summarise(rs) for name, rs in sorted(runs.items(), key=lambda kv: kv[0] != BASELINE)}
    print()
    print(calibration_line(summary[BASELINE]))
    print_table(summary, seeds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", help="registered model names (default: all)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, each in its own process with one torch thread")
    parser.add_argument("--without-baseline", action="store_true",
                        help=f"skip {BASELINE}: the runs go to --json only, to be printed by --combine with a file that has it")
    parser.add_argument("--combine", type=Path, nargs="+", metavar="JSON",
                        help="print one table from earlier --json files (same dataset and reduction) and exit")
    parser.add_argument("--quick", action="store_true",
                        help="development mode: " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in QUICK.items()))
    parser.add_argument("--scale", type=float, help="fraction of the 200 + 200 videos (full: 1)")
    parser.add_argument("--stream-dim", type=int, help="feature width per stream (full: 1024)")
    parser.add_argument("--width-div", type=int, help="divide every model's layer widths by N (full: 1)")
    parser.add_argument("--epoch-fraction", type=float, help="multiply every model's epochs by F (full: 1)")
    parser.add_argument("--max-epochs", type=int, help="cap every model's epochs at N (full: no cap)")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the generated dataset")
    parser.add_argument("--rectify", action="store_true",
                        help="non-negative features, max(0, x), as I3D's (default: the calibrated zero-mean ones)")
    parser.add_argument("--features", help="read features from disk instead of generating them")
    parser.add_argument("--annotations", help="annotation JSON for --features")
    parser.add_argument("--clicks", help="background clicks for BackTAL (default: simulated)")
    parser.add_argument("--click-protocol", default="human", choices=("human", "uniform"),
                        help="simulated clicks: like THUMOS14's annotators, or one per background gap (SF-Net)")
    parser.add_argument("--set", action="append", default=[], metavar="MODEL:KEY=VALUE",
                        help="change one setting of one model after the reduction (diagnosis; repeatable)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--json", type=Path, help="write settings, per-seed and summary numbers here")
    args = parser.parse_args()
    if args.combine:
        combine(args.combine)
        return
    mode = QUICK if args.quick else FULL
    for key, value in mode.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if bool(args.features) != bool(args.annotations):
        parser.error("--features and --annotations go together")
    if args.rectify and args.features:
        parser.error("--rectify changes the generated features; --features are read as they are")
    if args.width_div < 1 or not 0 < args.epoch_fraction <= 1 or (args.max_epochs or 1) < 1 or not args.seeds or args.jobs < 1:
        parser.error("--width-div, --max-epochs and --jobs must be >= 1, --epoch-fraction in (0, 1], --seeds non-empty")
    torch.set_num_threads(1)
    available = registered_models()
    unknown = [n for n in args.models or [] if n not in available]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; registered: {', '.join(available)}")
    names = [BASELINE] + [n for n in dict.fromkeys(args.models or available) if n != BASELINE]
    if args.without_baseline:
        if not args.json or names == [BASELINE]:
            parser.error("--without-baseline needs --json (for a later --combine) and --models other than the baseline")
        names.remove(BASELINE)
    try:
        overrides = parse_overrides(args.set, names)
    except ValueError as err:
        parser.error(str(err))
    device = resolve_device(args.device)

    begin = time.perf_counter()
    data, what = load_data(args)
    code = code_version()  # the commit that runs, even if the checkout moves before the end
    print(f"command: {' '.join(sys.argv)} (code {code})")
    print(f"dataset: {what} (built in {time.perf_counter() - begin:.0f} s)")
    full = (args.scale, args.stream_dim, args.width_div, args.epoch_fraction, args.max_epochs) == (1.0, 1024, 1, 1.0, None)
    reduction = (f"scale {args.scale}, stream-dim {args.stream_dim}, width-div {args.width_div}, epoch-fraction "
                 f"{args.epoch_fraction}, max-epochs {args.max_epochs or 'none'}; "
                 f"{'quick' if args.quick else 'full' if full else 'reduced'} mode; device {device}")
    print(f"reduction (same for every model): {reduction}; torch threads 1 per run, {args.jobs} run(s) at once; "
          f"registered models: {', '.join(sorted(REGISTRY))}")
    clicks = args.clicks or f"{args.click_protocol} simulation, seed 0"
    print(f"BackTAL's clicks: {clicks}")
    print("per model: settings changed from its defaults (default in parentheses)")
    settings = {}
    for name in names:
        settings[name] = reduced_settings(name, args.width_div, args.epoch_fraction, args.max_epochs, len(data["train"]),
                                          data["train"][0].features.shape[1])
        settings[name].update(overrides.get(name, {}))
        if name in overrides:  # a bad key or value fails here, not inside a worker after the other runs
            try:
                hparams = split_settings(get_localizer(name), settings[name])[0]
                get_localizer(name)(data["train"][0].features.shape[1], len(data["class_names"]), **hparams)
            except ValueError as err:  # SettingsError is one
                parser.error(f"--set {name}: {err}")
        defaults = {k: v for group in split_settings(get_localizer(name), None) for k, v in group.items()}
        shown = " ".join(f"{k}={v} ({defaults[k]})" for k, v in settings[name].items()) or "none"
        marked = f"; --set {' '.join(f'{k}={v}' for k, v in overrides[name].items())}: not paper settings" \
            if name in overrides else ""
        print(f"  {name:<9} {shown}{marked}", flush=True)
    runs = run_all(names, args.seeds, settings, data, device, args.jobs)
    summary = {name: summarise(runs[name]) for name in names}

    if BASELINE in summary:
        print()
        print(calibration_line(summary[BASELINE]))
        print_table(summary, args.seeds)
    runtime = time.perf_counter() - begin
    print(f"runtime: {runtime:.0f} s wall, {args.jobs} run(s) at once")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": vars(args), "code": code, "dataset": what, "reduction": reduction,
                                         "clicks": clicks,
                                         "settings": settings, "runs": runs, "summary": summary,
                                         "runtime_seconds": runtime}, indent=1, default=str))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
