"""The pipeline's stages: extract (a pool of Ray actors), train, detect, evaluate.

Stages are plain functions; `extract_videos` hands videos to a pool of Ray actors with declared
resources, so the same code runs on the embedded local Ray and on a cluster. Train and detect
run in the calling process, on the device it is given.
"""
from __future__ import annotations

from wtal.errors import WtalError

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..extract.cache import FeatureCache, entry_key, file_sha256
from ..extract.features import ExtractSettings

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"}


class PipelineError(WtalError, RuntimeError):
    """A stage that cannot start or finish; the message is one line for the user."""


# ---------------------------------------------------------------------------- extract
def collect_videos(inputs: list[str]) -> dict[str, Path]:
    """video_id -> path for files and folders given on the command line.

    Two inputs with the same id (file name without extension) are an error.
    """
    from ..extract.decode import video_id

    found: dict[str, Path] = {}
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
        elif path.is_file():
            files = [path]
        else:
            raise PipelineError(f"{path}: no such file or directory")
        for f in files:
            vid = video_id(f)
            if vid in found and found[vid].resolve() != f.resolve():
                raise PipelineError(f"video id {vid!r} is given twice: {found[vid]} and {f}")
            found[vid] = f
    if not found:
        raise PipelineError(f"no videos found in {', '.join(inputs)} (extensions: {', '.join(sorted(VIDEO_EXTENSIONS))})")
    return found


FAULT_DIR_ENV = "WTAL_EXTRACT_FAULT_DIR"
EXTRACT_RETRIES = 3  # attempts after a worker dies mid-video


def _crash_if_marked(video_id: str) -> None:
    """Fault injection for tests of retries: kill this worker process in the middle of a video.

    When the environment variable `WTAL_EXTRACT_FAULT_DIR` names a directory that holds a file
    named after the video id, the task deletes that file (so only one attempt crashes, whichever
    process claims it) and ends its process at once with `os._exit(1)`, as a segfault or an OOM
    kill would: nothing is cleaned up and Ray sees a dead worker. Unset, this does nothing.
    """
    fault_dir = os.environ.get(FAULT_DIR_ENV)
    if not fault_dir:
        return
    try:
        os.unlink(os.path.join(fault_dir, video_id))
    except FileNotFoundError:
        return
    log.warning("%s: fault injected by %s, killing worker %d", video_id, FAULT_DIR_ENV, os.getpid())
    os._exit(1)


def _where() -> dict[str, Any]:
    """Which Ray node, process, GPUs and torch threads run this (for logs and tests of the scheduling)."""
    import ray
    import torch

    where = {"node": None, "pid": os.getpid(), "gpus": [], "threads": torch.get_num_threads()}
    if ray.is_initialized():
        where["node"] = ray.get_runtime_context().get_node_id()
        where["gpus"] = [str(g) for g in ray.get_gpu_ids()]
    return where


class ExtractWorker:
    """Ray actor that extracts videos into the cache one after another in one process.

    A long-lived process keeps I3D loaded across videos and keeps the device Ray gave it: Ray
    runs each GPU *task* in a fresh process (paying CUDA and model start-up per video), or, when
    told to reuse workers, may hand a process whose CUDA context is bound to one GPU a task
    scheduled on another. The Extractor is built on the first video, inside its try, so a bad
    setting (an unreadable checkpoint) becomes a per-video failure record, not a dead actor.
    `threads` is the number of CPUs the actor reserved.
    """

    def __init__(self, settings: ExtractSettings, key_fields: dict, cache_root: str, device: str, batch: int,
                 threads: int = 1):
        from .runtime import limit_threads

        limit_threads(threads)
        self.settings, self.key_fields, self.device, self.batch = settings, key_fields, device, batch
        self.cache = FeatureCache(cache_root)
        self.extractor = None

    def extract(self, path: str, video_id: str, key: str) -> dict[str, Any]:
        """Extract one video into the cache; failures become records.

        The entry is written atomically (see wtal.extract.cache), so an actor killed at any point
        leaves no partial entry and the retry recomputes the same features. The returned record
        also holds `frames`, `seconds`, and the `node`, `pid`, `gpus` (Ray GPU ids) and
        `threads` that ran it.
        """
        from ..extract.features import Extractor

        start = time.perf_counter()
        frames = 0

        def count(n: int) -> None:
            nonlocal frames
            frames += n
            _crash_if_marked(video_id)

        try:
            if self.extractor is None:
                self.extractor = Extractor(self.settings, device=self.device, batch=self.batch)
            features = self.extractor.extract(path, on_frames=count)
            record = self.cache.put(key, video_id, features, self.key_fields, path)
        except Exception as exc:  # one bad video never stops the others: it is recorded instead
            reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            record = self.cache.put_failure(key, video_id, reason, self.key_fields, path)
        record["frames"] = frames
        record["seconds"] = time.perf_counter() - start
        record.update(_where())
        return record


@dataclass
class ExtractSummary:
    """Outcome of `extract_videos`: counts, the task records and throughput (frames / wall s)."""

    total: int
    done: int
    skipped: int
    failed: list[dict] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0
    records: list[dict] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def _wants_gpu(device: str, ray_address: str | None, workers: int | None) -> bool:
    """Whether extraction tasks run on CUDA: the local device, or on a cluster its GPU resources.

    `device="auto"` with a cluster address (or RAY_ADDRESS, see `init_ray`) joins the cluster to
    ask (the flow backend, and so the cache keys, depend on the answer).
    """
    from ..device import resolve_device

    if not (ray_address or os.environ.get("RAY_ADDRESS")):
        return resolve_device(device).type == "cuda"
    if device != "auto":
        return str(device).startswith("cuda")
    from .runtime import init_ray

    return init_ray(ray_address, workers).cluster_resources().get("GPU", 0) > 0


def extract_videos(inputs: list[str], cache_root: str, settings: ExtractSettings, device: str = "auto", batch: int = 8,
                   ray_address: str | None = None, workers: int | None = None, progress: bool = True) -> ExtractSummary:
    """Extract every video not yet in the cache under `settings` on a pool of Ray actors.

    One `ExtractWorker` per GPU of the cluster on CUDA (each declares 1 GPU for flow and I3D and
    1 CPU for decoding), else one per CPU; Ray spreads them over the nodes, so every node's GPUs
    (or CPUs) work. With fewer videos than CPUs, each CPU actor takes several CPUs (no more than
    a node has) and as many threads, so a single video still uses the machine. Each actor gets
    the next video as soon as it is done with one. An actor whose process dies mid-video is
    restarted and the video retried (`EXTRACT_RETRIES` times); only the driver updates the
    manifest, after each finished video, so a killed run loses no finished video and a re-run
    skips them. Ray is not started when every video is cached.
    """
    videos = collect_videos(inputs)
    cache = FeatureCache(cache_root, create=True)
    use_gpu = _wants_gpu(device, ray_address, workers)
    key_fields = settings.key_fields("cuda" if use_gpu else "cpu")
    keys, todo = {}, []
    for vid, path in videos.items():
        keys[vid] = entry_key(file_sha256(path), key_fields)
        if not cache.has_ok(keys[vid]):
            todo.append(vid)
    skipped = len(videos) - len(todo)
    if skipped:
        cache.update_manifest({vid: keys[vid] for vid in videos if vid not in todo})
    summary = ExtractSummary(total=len(videos), done=0, skipped=skipped)
    if not todo:
        return summary
    from .runtime import init_ray

    ray = init_ray(ray_address, workers)
    task_device = "cuda" if use_gpu else "cpu"
    slots = int(ray.cluster_resources().get("GPU" if use_gpu else "CPU", 0))
    if slots < 1:
        raise PipelineError(f"the Ray cluster has no {'GPU' if use_gpu else 'CPU'} to extract on")
    count = min(slots, len(todo))
    threads = 1
    if not use_gpu:
        node_cpus = max(int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive"))
        threads = max(1, min(slots // count, node_cpus))
    worker_class = ray.remote(ExtractWorker).options(
        num_cpus=threads, num_gpus=(1 if use_gpu else 0), max_restarts=-1, max_task_retries=EXTRACT_RETRIES,
        scheduling_strategy="SPREAD")
    root = str(Path(cache_root).resolve())
    actors = [worker_class.remote(settings, key_fields, root, task_device, batch, threads) for _ in range(count)]
    queue = list(reversed(todo))
    pending: dict[Any, tuple[str, Any]] = {}

    def submit(actor) -> None:
        vid = queue.pop()
        pending[actor.extract.remote(str(videos[vid].resolve()), vid, keys[vid])] = (vid, actor)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="extract", unit="video")
    start = time.perf_counter()
    try:
        for actor in actors:
            if queue:
                submit(actor)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            vid, actor = pending.pop(ready[0])
            try:
                record = ray.get(ready[0])
            except ray.exceptions.RayError as exc:  # e.g. the actor died on every attempt (a decoder crash)
                detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
                reason = f"{type(exc).__name__} after {EXTRACT_RETRIES} retries: {detail}"
                record = cache.put_failure(keys[vid], vid, reason, key_fields, str(videos[vid].resolve()))
            if queue:
                submit(actor)  # a restarted actor takes the next video too
            cache.update_manifest({vid: record["key"]})
            summary.records.append(record)
            summary.frames += record.get("frames", 0)
            if record["status"] == "ok":
                summary.done += 1
            else:
                summary.failed.append(record)
                log.warning("%s failed: %s", vid, record["reason"])
            summary.seconds = time.perf_counter() - start
            if bar:
                bar.set_postfix(fps=f"{summary.fps:.1f}", failed=len(summary.failed))
                bar.update()
    finally:
        if bar:
            bar.close()
        for actor in actors:
            ray.kill(actor)
    return summary


# ---------------------------------------------------------------------- stages as tasks
def _stage_task(stage, kwargs: dict) -> tuple[Any, dict[str, Any]]:
    """Body of a stage's Ray task: the stage's result and where it ran.

    Ray pins a 1-CPU task to one thread (OMP_NUM_THREADS=1); a CPU stage gets half its node's
    cores for torch instead, as in-process runs do.
    """
    import torch

    _cpu_threads(torch.device(kwargs["device"]), honour_omp=False)
    return stage(**kwargs), _where()


def run_stage_on_ray(stage, device: str = "auto", ray_address: str | None = None, workers: int | None = None,
                     **kwargs) -> tuple[Any, dict[str, Any]]:
    """Run `stage(device=..., **kwargs)` (train or detect) as one Ray task; returns (result, where).

    The task declares 1 GPU when the stage runs on CUDA (on a cluster: when `device` allows it and
    the cluster has GPUs), else 1 CPU. Files are passed by path, so on a cluster they must be on
    a shared file system, like the cache. An error of the stage is raised again as itself.
    """
    from .runtime import init_ray

    ray = init_ray(ray_address, workers)
    use_gpu = _wants_gpu(device, ray_address, workers)
    remote = ray.remote(_stage_task).options(num_cpus=1, num_gpus=(1 if use_gpu else 0), max_retries=0)
    kwargs["device"] = "cuda" if use_gpu else "cpu"
    try:
        return ray.get(remote.remote(stage, kwargs))
    except ray.exceptions.RayTaskError as exc:
        if isinstance(getattr(exc, "cause", None), Exception):
            raise exc.cause from None
        raise


# ------------------------------------------------------------------------------ train
def _open_inputs(features_path: str, annotations_path: str, snippet_seconds: float | None, allow_pickle: bool):
    """Features and annotations; a W-TALC annotation folder also names the W-TALC feature order."""
    from ..data.annotations import load_annotations
    from ..data.features import open_features

    names = annotations_path if Path(annotations_path).is_dir() else None
    return (open_features(features_path, snippet_seconds, allow_pickle=allow_pickle, video_names=names),
            load_annotations(annotations_path, allow_pickle=allow_pickle))


def _cpu_threads(device, honour_omp: bool = True) -> None:
    """On CPU use half the cores for torch (two threads on a 2-core host stall each other),
    unless OMP_NUM_THREADS says otherwise and `honour_omp`."""
    import torch

    if device.type == "cpu" and not (honour_omp and "OMP_NUM_THREADS" in os.environ):
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))


def _items(ann, features, subset: str, clicks: dict | None = None):
    """VideoItems for a subset; videos without features are an error listing a few."""
    from ..data.features import check_lengths
    from ..models.train import build_items

    videos = ann.subset(subset)
    missing = [v.video_id for v in videos if v.video_id not in features]
    if missing:
        raise PipelineError(
            f"{features.path}: no features for {len(missing)} of {len(videos)} {subset!r} videos, e.g. {', '.join(missing[:3])}"
        )
    for message in check_lengths(features, ann, subset):
        log.warning(message)
    items = build_items(ann, features, subset, clicks)
    return items


def train_stage(features: str, annotations: str, model: str, out: str, clicks: list[str] | None = None,
                epochs: int | None = None, seed: int = 0, device: str = "auto", sets: dict[str, str] | None = None,
                val_fraction: float = 0.0, train_subset: str | None = None, snippet_seconds: float | None = None,
                annotator: str | None = None, progress: bool = True, allow_pickle: bool = False,
                standardize: bool = False) -> dict[str, Any]:
    """Train a localizer and write RUN/checkpoint.pt and RUN/train_log.json.

    `standardize` z-scores every feature dimension with statistics of the training videos
    (saved in the checkpoint and applied again by detection); off by default, as in the papers.
    """
    import torch

    from ..evaluate.metrics import evaluate
    from ..device import resolve_device
    from ..models import get_localizer, split_settings
    from ..models.checkpoint import save_checkpoint
    from ..models.train import detect_videos, feature_stats, seed_everything, standardize as zscore, train_localizer

    feats, ann = _open_inputs(features, annotations, snippet_seconds, allow_pickle)
    default_train, default_eval = ann.default_subsets()
    train_subset = train_subset or default_train
    if not ann.class_names:
        raise PipelineError(f"{annotations}: no annotated action instances, nothing to learn")
    cls = get_localizer(model)
    sets = dict(sets or {})
    click_map = None
    if cls.needs_clicks:
        if not clicks:
            raise PipelineError(f"{model} needs background clicks: pass --clicks FILE (or create one with `wtal clicks simulate`)")
        from ..data.clicks import load_clicks

        annotator = annotator or sets.pop("annotator", None)
        files = list(clicks)
        if len(files) > 1:
            if annotator is None:
                raise PipelineError(f"{len(files)} click files given: choose one with --set annotator=NAME (file stem)")
            chosen = [f for f in files if Path(f).stem == annotator or Path(f).stem.endswith(annotator)]
            if len(chosen) != 1:
                raise PipelineError(f"--set annotator={annotator}: matches {len(chosen)} of {', '.join(Path(f).stem for f in files)}")
            files = chosen
        click_map = load_clicks(files[0])
    hparams, train_cfg, test_cfg = split_settings(cls, sets)
    dev = resolve_device(device)
    _cpu_threads(dev)
    items = _items(ann, feats, train_subset, click_map)
    val_items = []
    if val_fraction > 0:
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(items))
        n_val = max(1, int(round(val_fraction * len(items))))
        val_items = [items[i] for i in order[:n_val]]
        items = [items[i] for i in order[n_val:]]
    norm = {}
    if standardize:
        mean, std = feature_stats(items)
        items, val_items = zscore(items, mean, std), zscore(val_items, mean, std)
        norm = {"feature_mean": torch.from_numpy(mean), "feature_std": torch.from_numpy(std)}
    seed_everything(seed)
    net = cls(feats.feature_dim, len(ann.class_names), **hparams)
    total_epochs = int(train_cfg["epochs"] if epochs is None else epochs)
    best = {"score": -1.0, "epoch": total_epochs - 1, "state": None}
    val_ann = None
    if val_items:
        from ..data.annotations import AnnotationSet

        val_ann = AnnotationSet(videos={it.video_id: ann.videos[it.video_id] for it in val_items},
                                class_names=ann.class_names, source=ann.source)
        every = max(1, total_epochs // 10)

        def on_epoch(epoch: int, _losses: dict) -> None:
            if (epoch + 1) % every and epoch + 1 != total_epochs:
                return
            results, _ = detect_videos(net, val_items, test_cfg, ann.class_names, feats.snippet_seconds, dev)
            score = evaluate(val_ann, results, train_subset).average_mAP
            net.train()
            if score > best["score"]:
                best.update(score=score, epoch=epoch, state={k: v.detach().clone() for k, v in net.state_dict().items()})
    else:
        on_epoch = None
    history = train_localizer(net, items, train_cfg, dev, seed=seed, epochs=total_epochs, on_epoch=on_epoch, progress=progress)
    if best["state"] is not None:
        net.load_state_dict(best["state"])
        selection = (f"best average mAP {best['score']:.4f} on {len(val_items)} validation videos carved from "
                     f"{train_subset!r} (val-fraction {val_fraction}), epoch {best['epoch'] + 1} of {total_epochs}")
    else:
        selection = f"fixed epoch count: last of {total_epochs} epochs"
    Path(out).mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, net, ann.class_names, train_cfg, test_cfg, feats.snippet_seconds, seed=seed, selection=selection,
                    annotations=str(Path(annotations).resolve()), train_subset=train_subset, eval_subset=default_eval,
                    epochs=total_epochs, device=str(dev), **norm)
    log_data = {"model": model, "selection": selection, "history": history, "train_config": train_cfg,
                "test_config": {k: list(v) if isinstance(v, tuple) else v for k, v in test_cfg.items()},
                "hparams": {k: list(v) if isinstance(v, tuple) else v for k, v in hparams.items()},
                "num_train_videos": len(items), "num_val_videos": len(val_items), "seed": seed,
                "standardize": standardize}
    (Path(out) / "train_log.json").write_text(json.dumps(log_data, indent=1))
    return log_data


# ----------------------------------------------------------------------------- detect
def checkpoint_items(items: list, payload: dict) -> list:
    """Apply the feature standardisation a run was trained with (if any) to test videos."""
    from ..models.train import standardize

    info = payload.get("info", {})
    if "feature_mean" not in info:
        return items
    return standardize(items, info["feature_mean"].numpy(), info["feature_std"].numpy())


def detect_stage(features: str, checkpoint: str, out: str, subset: str | None = None, device: str = "auto",
                 annotations: str | None = None, snippet_seconds: float | None = None,
                 sets: dict[str, str] | None = None, allow_pickle: bool = False) -> dict[str, Any]:
    """Run a trained localizer over a subset's videos (all feature videos without annotations)."""
    from ..data.features import open_features
    from ..device import resolve_device
    from ..models.checkpoint import load_checkpoint
    from ..models.train import VideoItem, detect_videos
    from ..postprocess.detections import write_detections

    dev = resolve_device(device)
    _cpu_threads(dev)
    net, payload = load_checkpoint(checkpoint, dev)
    info = payload.get("info", {})
    test_cfg = dict(payload["test_config"])
    if sets:
        from ..models import split_settings

        _, _, overrides = split_settings(type(net), sets)
        test_cfg.update({k: overrides[k] for k in sets if k in overrides})
    seconds = snippet_seconds or payload["snippet_seconds"]
    ann_path = annotations or info.get("annotations")
    if ann_path and Path(ann_path).exists():
        feats, ann = _open_inputs(features, ann_path, seconds, allow_pickle)
        subset = subset or info.get("eval_subset") or ann.default_subsets()[1]
    elif subset:
        raise PipelineError(f"--subset {subset} needs annotations: pass --annotations ANN")
    else:
        feats, ann = open_features(features, seconds, allow_pickle=allow_pickle), None
    if feats.feature_dim != payload["feature_dim"]:
        raise PipelineError(f"{features}: features are {feats.feature_dim}-d but {checkpoint} was trained on {payload['feature_dim']}-d")
    if ann is not None:
        items = _items(ann, feats, subset)
    else:
        items = [VideoItem(vid, feats.load(vid), np.zeros(0), None) for vid in feats.ids()]
    items = checkpoint_items(items, payload)
    results, _ = detect_videos(net, items, test_cfg, payload["class_names"], feats.snippet_seconds, dev)
    write_detections(out, results, {"used": True, "details": "features + wtal " + payload["model"],
                                    "checkpoint": str(Path(checkpoint).resolve()), "subset": subset,
                                    "selection": info.get("selection")})
    return {"videos": len(items), "detections": sum(len(r) for r in results.values()), "subset": subset}
