"""Ray runtime: an embedded local Ray by default, a cluster when given an address."""
from __future__ import annotations

import logging
import os

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
    kwargs = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        if workers:
            log.warning("workers=%d is ignored: the cluster at %s brings its own CPUs", workers, address)
        ray.init(address=address, **kwargs)
    else:
        ray.init(address="local", num_cpus=workers or os.cpu_count() or 1, **kwargs)
    return ray


def limit_threads(threads: int = 1) -> None:
    """Compute threads of a worker process: the CPUs Ray reserved for it (parallelism comes from
    processes first; threads only use cores that no other worker would)."""
    import cv2
    import torch

    torch.set_num_threads(max(1, int(threads)))
    cv2.setNumThreads(max(1, int(threads)))
