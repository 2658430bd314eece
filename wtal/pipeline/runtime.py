"""Ray runtime: an embedded local Ray by default, a cluster when given an address."""
from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def init_ray(address: str | None = None, workers: int | None = None):
    """Start (or join) Ray once per process and return the module.

    `address=None` starts an embedded local instance with `workers` CPUs (default: all cores);
    any other value (e.g. "auto" or "ray://head:10001") connects to that cluster.
    """
    import ray

    if ray.is_initialized():
        return ray
    kwargs = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=workers or os.cpu_count() or 1, **kwargs)
    return ray


def limit_threads() -> None:
    """One compute thread per worker process: parallelism comes from processes (Ray tasks)."""
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
