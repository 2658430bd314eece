"""Extraction stage: video discovery, the extraction actor and the actor-pool scheduler.

`extract_videos` hands videos to a pool of Ray actors with declared resources, so the same code
runs on the embedded local Ray and on a cluster; only the driver writes the cache manifest.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..extract.cache import FeatureCache, entry_key
from ..extract.features import Extractor, ExtractSettings
from ..progress import Hook, report
from . import PipelineError
from .faults import crash_if_marked, raise_if_marked
from .runtime import init_ray, set_threads, wants_gpu, where

if TYPE_CHECKING:
    from ..extract.features import Extractor

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"}
EXTRACT_RETRIES = 3  # attempts after a worker dies mid-video


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


class ExtractWorker:
    """Ray actor that extracts videos into the cache one after another in one process.

    A long-lived process keeps I3D loaded across videos and keeps the device Ray gave it: Ray
    runs each GPU *task* in a fresh process (paying CUDA and model start-up per video), or, when
    told to reuse workers, may hand a process whose CUDA context is bound to one GPU a task
    scheduled on another. The Extractor is built on the first video, inside its try, so a bad
    setting (an unreadable checkpoint) becomes a per-video failure record, not a dead actor.
    A CUDA error that leaves the process's CUDA context unusable (`sticky_cuda_error`) ends the
    process instead, after recording the failure, so that Ray restarts the actor with a fresh
    context and retries the video. `threads` is the number of CPUs the actor reserved.
    """

    def __init__(self, settings: ExtractSettings, key_fields: dict, cache_root: str, device: str, batch: int | None,
                 threads: int = 1):
        set_threads(device, reserved=threads)
        self.settings, self.key_fields, self.device, self.batch = settings, key_fields, device, batch
        self.cache = FeatureCache(cache_root)
        self.extractor: Extractor | None = None

    def extract(self, path: str, video_id: str, key: str, next_path: str | None = None) -> dict[str, Any]:
        """Extract one video into the cache; failures become records. `next_path` (the video this
        actor gets next) starts decoding in the background meanwhile.

        The entry is written atomically (see wtal.extract.cache), so an actor killed at any point
        leaves no partial entry and the retry recomputes the same features. The returned record
        also holds `frames`, `seconds`, and the `node`, `pid`, `gpus` (Ray GPU ids) and
        `threads` that ran it.
        """
        start = time.perf_counter()
        frames = 0

        def count(n: int) -> None:
            nonlocal frames
            frames += n
            crash_if_marked(video_id)
            raise_if_marked(video_id)

        try:
            if self.extractor is None:
                self.extractor = Extractor(self.settings, device=self.device, batch=self.batch)
                if self.extractor.flow_backend != self.key_fields["flow"]:
                    raise PipelineError(f"this worker computes flow with {self.extractor.flow_backend!r} but the "
                                        f"cache key says {self.key_fields['flow']!r}; pass --flow explicitly")
            features = self.extractor.extract(path, on_frames=count, next_path=next_path)
            record = self.cache.put(key, video_id, features, self.key_fields, path)
        except Exception as exc:  # one bad video never stops the others: it is recorded instead
            reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            record = self.cache.put_failure(key, video_id, reason, self.key_fields, path)
            if sticky_cuda_error(exc):
                log.error("%s: %s; the CUDA context of worker %d is unusable: exiting so that Ray restarts it",
                          video_id, reason, os.getpid())
                os._exit(1)
        record["frames"] = frames
        record["seconds"] = time.perf_counter() - start
        record.update(where())
        return record


def sticky_cuda_error(exc: BaseException) -> bool:
    """Whether `exc` leaves this process's CUDA context unusable, so every later CUDA call fails
    too (an illegal address, a device-side assert, a launch failure); out of memory is not."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return False
    accelerator_error = getattr(torch, "AcceleratorError", None)
    if accelerator_error is not None and isinstance(exc, accelerator_error):
        return True
    return isinstance(exc, RuntimeError) and "CUDA error" in str(exc)


def pool_plan(nodes: list[dict], use_gpu: bool, videos: int) -> tuple[int, int]:
    """(actors, CPUs per actor) of the extraction pool that the alive `nodes` (`ray.nodes()`)
    can place at once; never more actors than `videos`.

    On GPUs: one actor per GPU, each with the CPUs of its node shared among the node's GPUs (at
    least 1: decoding, resizing and the host side of the copies run there), and no more actors on
    a node than its CPUs allow, so a node with fewer CPUs than GPUs (``--workers 2`` on an 8-GPU
    machine) starts only actors that can run: a video handed to an actor that can never be placed
    would wait forever. On CPUs: one actor per CPU; with fewer videos than CPUs each actor takes
    several CPUs (no more than a node has), and only as many actors as fit on the nodes.
    """
    alive = [(int(n["Resources"].get("CPU", 0)), int(n["Resources"].get("GPU", 0)))
             for n in nodes if n.get("Alive")]
    if use_gpu:
        gpu_nodes = [(cpus, gpus) for cpus, gpus in alive if gpus >= 1]
        per_actor = max(1, min((cpus // gpus for cpus, gpus in gpu_nodes), default=1))
        slots = sum(min(gpus, cpus // per_actor) for cpus, gpus in gpu_nodes)
    else:
        total = sum(cpus for cpus, _ in alive)
        wanted = min(total, videos)
        per_actor = max(1, min(total // wanted, max(cpus for cpus, _ in alive))) if wanted else 1
        slots = sum(cpus // per_actor for cpus, _ in alive)
    return min(slots, videos), per_actor


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


def extract_videos(inputs: list[str], cache_root: str, settings: ExtractSettings, device: str = "auto",
                   batch: int | None = None,
                   ray_address: str | None = None, workers: int | None = None, hook: Hook | None = None) -> ExtractSummary:
    """Extract every video not yet in the cache under `settings` on a pool of Ray actors.

    One `ExtractWorker` per GPU of the cluster on CUDA (each declares 1 GPU for flow and I3D and
    its share of the node's CPUs for decoding), else one per CPU, as many as can be placed
    (`pool_plan`); Ray spreads them over the nodes, so every node's GPUs (or CPUs) work. With
    fewer videos than CPUs, each CPU actor takes several CPUs (no more than a node has) and as
    many threads, so a single video still uses the machine. Nothing in the driver touches CUDA,
    so it may run on a CPU-only head node. Each actor gets
    the next video as soon as it is done with one; a GPU actor is told which one while it works
    on the current one, and decodes it ahead. `batch` is snippets per chunk (default: the
    Extractor's for the device). An actor whose process dies mid-video is
    restarted and the video retried (`EXTRACT_RETRIES` times); only the driver updates the
    manifest, after each finished video, so a killed run loses no finished video and a re-run
    skips them. Ray is not started when every video is cached. Each finished video is reported
    to `hook` as step "extract".
    """
    videos = collect_videos(inputs)
    cache = FeatureCache(cache_root, create=True)
    use_gpu = wants_gpu(device, ray_address, workers)
    key_fields = settings.key_fields("cuda" if use_gpu else "cpu")
    keys, todo = {}, []
    for vid, path in videos.items():
        keys[vid] = entry_key(cache.content_hash(path), key_fields)
        if not cache.has_ok(keys[vid]):
            todo.append(vid)
    skipped = len(videos) - len(todo)
    if skipped:
        cache.update_manifest({vid: keys[vid] for vid in videos if vid not in todo})
    summary = ExtractSummary(total=len(videos), done=0, skipped=skipped)
    if not todo:
        return summary
    ray = init_ray(ray_address, workers)
    task_device = "cuda" if use_gpu else "cpu"
    count, threads = pool_plan(ray.nodes(), use_gpu, len(todo))
    if count < 1:
        need = "a GPU with a CPU beside it" if use_gpu else "a CPU"
        raise PipelineError(f"the Ray cluster has no {need} to extract on")
    worker_class = ray.remote(ExtractWorker).options(
        num_cpus=threads, num_gpus=(1 if use_gpu else 0), max_restarts=-1, max_task_retries=EXTRACT_RETRIES,
        scheduling_strategy="SPREAD")
    root = str(Path(cache_root).resolve())
    actors = [worker_class.remote(settings, key_fields, root, task_device, batch, threads) for _ in range(count)]
    queue = list(reversed(todo))
    pending: dict[Any, tuple[str, Any]] = {}
    reserved: dict[Any, str] = {}  # GPU actor -> the video it was told it gets next

    def submit(actor) -> None:
        vid = reserved.pop(actor, None) or queue.pop()
        hint = None
        if use_gpu and queue:
            reserved[actor] = queue.pop()
            hint = str(videos[reserved[actor]].resolve())
        pending[actor.extract.remote(str(videos[vid].resolve()), vid, keys[vid], hint)] = (vid, actor)

    start = time.perf_counter()
    try:
        for actor in actors:
            if queue or actor in reserved:
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
            if queue or actor in reserved:
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
            report(hook, "extract", {"fps": round(summary.fps, 1), "failed": len(summary.failed)},
                   completed=len(summary.records), total=len(todo))
    finally:
        for actor in actors:
            ray.kill(actor)
    return summary
