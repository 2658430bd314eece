"""Ray runtime: start-up (an embedded local Ray by default, a cluster when given an address),
wtal's one thread rule, and running a stage as a Ray task."""
from __future__ import annotations

import logging
import os
from typing import Any, Callable

log = logging.getLogger(__name__)


def init_ray(address: str | None = None, workers: int | None = None):
    """Start (or join) Ray once per process and return the module.

    `address` (e.g. "auto", "head:6379" or "ray://head:10001") joins that cluster; without one,
    the cluster named by the RAY_ADDRESS environment variable is joined (as in a Ray job), and
    otherwise an embedded local instance with `workers` CPUs (default: all cores) is started.
    A cluster that merely runs on this machine (`ray start`, a test cluster) is never joined
    implicitly: Ray's own `ray.init()` would, and would then ignore `workers`. When this process
    already runs Ray (a Ray worker, or a caller that initialised it), that instance is used.
    """
    import ray

    if ray.is_initialized():
        return ray
    kwargs: dict[str, Any] = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        if workers:
            log.warning("workers=%d is ignored: the cluster at %s brings its own CPUs", workers, address)
        ray.init(address=address, **kwargs)
    else:
        ray.init(address="local", num_cpus=workers or os.cpu_count() or 1, **kwargs)
    return ray


def set_threads(device: Any = "cpu", reserved: int | None = None, honour_omp: bool = True) -> int | None:
    """Set torch's and OpenCV's compute threads for this process by wtal's one rule; returns the count.

    Parallelism comes from processes first (Ray actors); threads only use cores no other worker
    would. A process that reserved CPUs (`reserved`, a Ray actor's num_cpus) gets that many
    threads. Otherwise a CPU stage gets half the host's cores (two threads on a 2-core host stall
    each other), unless OMP_NUM_THREADS says otherwise and `honour_omp` (a stage's Ray task does
    not honour it: Ray pins every 1-CPU task to one thread). A CUDA stage keeps torch's default.
    """
    if reserved is None:
        if str(device).split(":")[0] != "cpu" or (honour_omp and "OMP_NUM_THREADS" in os.environ):
            return None
        reserved = (os.cpu_count() or 2) // 2
    import cv2
    import torch

    threads = max(1, int(reserved))
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    return threads


def where() -> dict[str, Any]:
    """Which Ray node, process, GPUs and torch threads run this (for logs and tests of the scheduling)."""
    import ray
    import torch

    place: dict[str, Any] = {"node": None, "pid": os.getpid(), "gpus": [], "threads": torch.get_num_threads()}
    if ray.is_initialized():
        place["node"] = ray.get_runtime_context().get_node_id()
        place["gpus"] = [str(g) for g in ray.get_gpu_ids()]
    return place


def wants_gpu(device: str, ray_address: str | None, workers: int | None) -> bool:
    """Whether Ray tasks run on CUDA: the local device, or on a cluster its GPU resources.

    `device="auto"` with a cluster address (or RAY_ADDRESS, see `init_ray`) joins the cluster to
    ask (the flow backend, and so the cache keys, depend on the answer).
    """
    from ..device import resolve_device

    if not (ray_address or os.environ.get("RAY_ADDRESS")):
        return resolve_device(device).type == "cuda"
    if device != "auto":
        return str(device).startswith("cuda")
    return init_ray(ray_address, workers).cluster_resources().get("GPU", 0) > 0


def _stage_task(stage: Callable[..., Any], kwargs: dict) -> tuple[Any, dict[str, Any]]:
    """Body of a stage's Ray task: the stage's result and where it ran."""
    set_threads(kwargs["device"], honour_omp=False)
    return stage(**kwargs), where()


def run_stage_on_ray(stage: Callable[..., Any], device: str = "auto", ray_address: str | None = None,
                     workers: int | None = None, **kwargs) -> tuple[Any, dict[str, Any]]:
    """Run `stage(device=..., **kwargs)` (train or detect) as one Ray task; returns (result, where).

    The task declares 1 GPU when the stage runs on CUDA (on a cluster: when `device` allows it and
    the cluster has GPUs), else 1 CPU. Files are passed by path, so on a cluster they must be on
    a shared file system, like the cache. An error of the stage is raised again as itself.
    """
    ray = init_ray(ray_address, workers)
    use_gpu = wants_gpu(device, ray_address, workers)
    remote = ray.remote(_stage_task).options(num_cpus=1, num_gpus=(1 if use_gpu else 0), max_retries=0)
    kwargs["device"] = "cuda" if use_gpu else "cpu"
    try:
        return ray.get(remote.remote(stage, kwargs))
    except ray.exceptions.RayTaskError as exc:
        if isinstance(getattr(exc, "cause", None), Exception):
            raise exc.cause from None
        raise
