"""Test support: fault injection that kills an extraction worker in the middle of a video, or
makes it fail as a sticky CUDA error would.

Used by the tests of retries (tests/test_ray.py); does nothing unless the environment variable
below is set.
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

FAULT_DIR_ENV = "WTAL_EXTRACT_FAULT_DIR"


def crash_if_marked(video_id: str) -> None:
    """Kill this worker process when a fault is planted for `video_id`.

    When `WTAL_EXTRACT_FAULT_DIR` names a directory that holds a file named after the video id,
    the file is deleted (so only one attempt crashes, whichever process claims it) and the
    process ends at once with `os._exit(1)`, as a segfault or an OOM kill would: nothing is
    cleaned up and Ray sees a dead worker. Unset, this does nothing.
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


STICKY_CUDA_SUFFIX = ".cuda-error"


def raise_if_marked(video_id: str) -> None:
    """Raise what PyTorch raises after a sticky CUDA error when one is planted for `video_id`.

    A file named ``<video_id>.cuda-error`` in `WTAL_EXTRACT_FAULT_DIR` is deleted (one attempt
    only) and a ``RuntimeError("CUDA error: an illegal memory access ...")`` is raised, as a
    kernel that wrote out of bounds leaves it. Unset, this does nothing.
    """
    fault_dir = os.environ.get(FAULT_DIR_ENV)
    if not fault_dir:
        return
    try:
        os.unlink(os.path.join(fault_dir, video_id + STICKY_CUDA_SUFFIX))
    except FileNotFoundError:
        return
    log.warning("%s: sticky CUDA error injected by %s in worker %d", video_id, FAULT_DIR_ENV, os.getpid())
    raise RuntimeError("CUDA error: an illegal memory access was encountered (injected for a test)")
